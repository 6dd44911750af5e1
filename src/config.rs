//! Configuration: layered loading, validation and the masked printout.
//!
//! Owns [`Settings`] and the layering `config/default.toml` → `config/{TAI_PROFILE}.toml` →
//! environment (`TAI_SECTION__KEY` plus the operations guide's plain variables such as `PORT`);
//! without `config/` in the working directory, the files built into the binary are used.
//! An empty variable counts as unset. Every problem is reported as one line naming the key, the
//! value and what was expected; `main` turns that into exit code 78.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

/// The guide's plain environment variables and the keys they set. `TAI_*` variables are applied
/// after these, so the more specific form wins.
pub const PLAIN_ENV: &[(&str, &str)] = &[
    ("PORT", "http.port"),
    ("NODE_NAME", "node.name"),
    ("LOG_LEVEL", "log.level"),
    ("GOOGLE_CLOUD_PROJECT", "gcp.project_id"),
    ("FIRESTORE_PROJECT_ID", "firestore.project_id"),
    ("FIRESTORE_EMULATOR_HOST", "firestore.emulator_host"),
    ("PUBSUB_EMULATOR_HOST", "pubsub.emulator_host"),
    ("PUBSUB_SUBSCRIPTION", "pubsub.subscription"),
    ("PUBSUB_TOPIC", "pubsub.topic"),
];

/// The whole effective configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// `local` or `cloud` (from `TAI_PROFILE`).
    #[serde(default = "default_profile")]
    pub profile: String,
    pub node: NodeSettings,
    pub http: HttpSettings,
    pub log: LogSettings,
    pub ledger: LedgerSettings,
    pub auth: AuthSettings,
    pub marketplace: MarketplaceSettings,
    pub rate_limit: RateLimitSettings,
    pub governance: GovernanceSettings,
    pub actions: ActionSettings,
    pub supervision: SupervisionSettings,
    pub chaos: ChaosSettings,
    pub gcp: GcpSettings,
    pub firestore: FirestoreSettings,
    pub pubsub: PubsubSettings,
    pub mcp: McpSettings,
}

/// `/mcp`'s DNS-rebinding protection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct McpSettings {
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
    /// How `tools/list` spells the tools' names; calls take either spelling.
    #[serde(default)]
    pub tool_names: ToolNames,
}

/// The spelling of the MCP tools' names in `tools/list`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolNames {
    /// SPEC §10's names as written: `taiea.governor.signal`.
    #[default]
    Dotted,
    /// Dots written as underscores (`taiea_governor_signal`), for clients that accept only
    /// names of `[a-zA-Z0-9_-]`.
    Underscored,
}

impl ToolNames {
    /// The setting's value as written in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolNames::Dotted => "dotted",
            ToolNames::Underscored => "underscored",
        }
    }
}

fn default_profile() -> String {
    "local".to_owned()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeSettings {
    /// Node name; empty means `tai@<hostname>`.
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpSettings {
    pub host: String,
    pub port: u16,
    /// HTTP worker threads; 0 = one per core.
    pub workers: usize,
    pub max_body_bytes: usize,
    /// A request body that sends nothing for this long is refused (408 `request_timeout`).
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    pub drain_delay_ms: u64,
    pub shutdown_grace_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty on a terminal, JSON otherwise.
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogSettings {
    /// A level (`debug`, `info`, `warning`, `error`, …) or `tracing` filter directives.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LedgerBackend {
    Sqlite,
    Firestore,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LedgerSettings {
    pub backend: LedgerBackend,
    /// The embedded ledger file (relative paths are relative to the working directory).
    pub sqlite_path: PathBuf,
    /// Most receipts per commit (Firestore caps it further to stay within 500 writes).
    pub max_batch: usize,
    /// How long the writer waits for more receipts before committing, in microseconds.
    pub linger_us: u64,
    /// Receipts that may wait for a commit; beyond, appends are refused at once (503).
    pub queue_capacity: usize,
    /// How often the ledger audit verifies every chain again, in seconds (0: never).
    pub audit_interval_secs: u64,
    /// The ledger audit's pace: receipts verified per second, at most.
    pub audit_receipts_per_sec: u32,
    /// Anchors the audit checks every chain against from its first pass (the output of an
    /// earlier `verify`, or TENANT:SEQ:HASH lines); empty: none until a pass finds them.
    pub audit_anchors_file: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthSettings {
    pub mode: crate::auth::AuthMode,
    /// `[{ sha256 = "<hex SHA-256 of the token>", role = "admin" | "operator" | "tenant", tenant = "…" }]`
    #[serde(default)]
    pub tokens: Vec<crate::auth::TokenConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MarketplaceSettings {
    /// Require and check the JWT in `signature`.
    pub verify: bool,
    /// A PEM public key (RSA or EC P-256) the marketplace signs with.
    pub public_key_file: String,
    /// Or a JWKS file.
    pub jwks_file: String,
    /// Expected `iss` (empty: not checked).
    pub issuer: String,
    /// Expected `aud` (empty: not checked).
    pub audience: String,
    pub leeway_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RateLimitSettings {
    /// Sustained requests per second per tenant.
    pub per_second: u32,
    /// Burst per tenant.
    pub burst: u32,
    /// Tenants with a bucket above which idle buckets are swept within a second (else once a
    /// minute). Every syntactically valid tenant id takes a bucket, known or not.
    #[serde(default = "default_max_tracked_tenants")]
    pub max_tracked_tenants: usize,
}

fn default_body_timeout_ms() -> u64 {
    10_000
}

fn default_max_tracked_tenants() -> usize {
    65_536
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GovernanceSettings {
    /// Arbiters (threads) governors are spread over by tenant hash; 0 = one per core.
    pub arbiters: usize,
    /// A governor with nothing to do for this long stops (and comes back on demand).
    pub idle_hibernate_secs: u64,
    /// Signals queued while an action runs; beyond, 429.
    pub postpone_capacity: usize,
    /// The state timeout of `intervening`.
    pub action_timeout_ms: u64,
    /// How long an HTTP caller waits for a governor's decision before 503.
    pub decision_timeout_ms: u64,
    /// Inputs a governor's mailbox holds; beyond, callers get 503 at once.
    pub mailbox: usize,
    /// Restart intensity of the governance supervisor.
    pub intensity: u32,
    pub period_secs: u64,
    /// Inclusive thresholds per SKU.
    pub thresholds: std::collections::HashMap<String, crate::governor::Thresholds>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionSettings {
    /// `eval` (Phase 1: actions are advice, completed at once) or `webhook` (Phase 2).
    pub executor: String,
    /// Where the webhook executor POSTs `{action_id, tenant_id, type, params}`.
    pub webhook_url: String,
    pub webhook_timeout_ms: u64,
    /// Signs every webhook POST (`X-Tai-Signature`, see `governor::webhook`); empty: unsigned.
    pub webhook_secret: String,
    /// PEM certificates an `https` webhook's certificate may chain to, besides the bundled
    /// Mozilla roots (an internal CA); empty: the bundled roots only.
    pub webhook_ca_file: String,
    /// Actions in flight across all tenants; beyond, 429 `actions_saturated`.
    pub max_in_flight: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SupervisionSettings {
    pub root_intensity: u32,
    pub root_period_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChaosSettings {
    pub enabled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GcpSettings {
    pub project_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FirestoreSettings {
    pub project_id: String,
    pub emulator_host: String,
    /// How long the service tries to connect at start before it gives up (exit 1).
    pub connect_patience_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PubsubSettings {
    pub topic: String,
    pub subscription: String,
    pub emulator_host: String,
    pub max_outstanding: u32,
    pub lease_extension_secs: u64,
    pub max_lease_secs: u64,
    pub health_interval_ms: u64,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    pub push: PushSettings,
}

/// Authentication of push deliveries (`POST /pubsub`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushSettings {
    pub verify: bool,
    pub issuer: String,
    pub audience: String,
    pub service_account_email: String,
    pub jwks_file: String,
    pub jwks_url: String,
    pub leeway_secs: u64,
}

impl PubsubSettings {
    /// `name` as `projects/{project}/{kind}/{name}` unless it is a full resource name already.
    fn qualify(&self, kind: &str, name: &str, project: Option<&str>) -> Option<String> {
        if name.starts_with("projects/") {
            return Some(name.to_owned());
        }
        Some(format!("projects/{}/{kind}/{name}", project?))
    }

    /// The subscription's full name, when pull is configured.
    pub fn subscription_path(&self, project: Option<&str>) -> Option<String> {
        (!self.subscription.is_empty())
            .then(|| self.qualify("subscriptions", &self.subscription, project))
            .flatten()
    }

    /// The topic's full name.
    pub fn topic_path(&self, project: Option<&str>) -> Option<String> {
        self.qualify("topics", &self.topic, project)
    }
}

/// Whether `url` is an absolute `http` or `https` URL with a host, as the outbound client
/// reads it (`http://exa mple` or `https://` alone would fail every request instead).
fn http_url(url: &str) -> bool {
    url.parse::<http::Uri>().is_ok_and(|u| {
        matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty())
    })
}

/// Most threads `http.workers` and `governance.arbiters` may ask for.
const MAX_THREADS: usize = 256;

/// A configuration problem, printed as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The environment as a figment provider: empty values dropped, plain guide variables and
/// `TAI_SECTION__KEY` mapped to keys, values parsed the way figment parses environment values.
struct Environment {
    vars: Vec<(String, String)>,
}

/// For a variable without `__` whose name (lower-cased, `TAI_` cut: `key`) begins with a
/// section of the `effective` configuration and one underscore: the variable meant, as a hint
/// (`TAI_AUTH__MODE`, found by walking the settings' names through the rest of the name), or
/// the form to use when no setting fits. `None` when the name begins with no section.
fn one_underscore_too_few(effective: &serde_json::Value, key: &str) -> Option<String> {
    /// The path of setting names that spells `rest` joined by `_`, longest names first.
    fn path(at: &serde_json::Value, rest: &str) -> Option<Vec<String>> {
        let map = at.as_object()?;
        let mut names: Vec<&String> = map.keys().collect();
        names.sort_by_key(|n| std::cmp::Reverse(n.len()));
        names.into_iter().find_map(|name| {
            if rest == name.as_str() {
                return Some(vec![name.clone()]);
            }
            let tail = rest.strip_prefix(name.as_str())?.strip_prefix('_')?;
            let mut p = path(&map[name.as_str()], tail)?;
            p.insert(0, name.clone());
            Some(p)
        })
    }
    let sections = effective.as_object()?;
    let section = sections
        .iter()
        .filter(|(name, v)| v.is_object() && key.starts_with(&format!("{name}_")))
        .map(|(name, _)| name)
        .max_by_key(|name| name.len())?;
    let variable = |p: &[String]| format!("TAI_{}", p.join("__").to_ascii_uppercase());
    Some(match path(effective, key) {
        Some(p) if p.len() > 1 => format!("did you mean {}?", variable(&p)),
        _ => format!(
            "the settings of {section} are set as TAI_{}__<SETTING>",
            section.to_ascii_uppercase()
        ),
    })
}

impl Environment {
    fn from_process() -> Self {
        Environment {
            vars: std::env::vars().collect(),
        }
    }

    /// `(key, variable, value)` for every non-empty variable we read, in application order.
    fn entries(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for (var, key) in PLAIN_ENV {
            if let Some((_, v)) = self.vars.iter().find(|(k, v)| k == var && !v.is_empty()) {
                out.push(((*key).to_owned(), (*var).to_owned(), v.clone()));
            }
        }
        let mut prefixed: Vec<_> = self
            .vars
            .iter()
            .filter(|(k, v)| !v.is_empty() && k.starts_with("TAI_") && k.len() > 4)
            .map(|(k, v)| {
                (
                    k[4..].to_ascii_lowercase().replace("__", "."),
                    k.clone(),
                    v.clone(),
                )
            })
            .collect();
        prefixed.sort();
        out.extend(prefixed);
        out
    }

    /// The variable that set `key`, if any (the last one applied wins).
    fn source_of(&self, key: &str) -> Option<(String, String)> {
        self.entries()
            .into_iter()
            .rev()
            .find(|(k, _, _)| k == key)
            .map(|(_, var, v)| (var, v))
    }
}

impl Provider for Environment {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, _, raw) in self.entries() {
            let value: Value = raw.parse().unwrap_or_else(|_| Value::from(raw.clone()));
            let nested = figment::util::nest(&key, value);
            if let Value::Dict(_, d) = nested {
                dict = merge(dict, d);
            }
        }
        let mut map = Map::new();
        map.insert(Profile::Default, dict);
        Ok(map)
    }
}

fn merge(mut base: Dict, other: Dict) -> Dict {
    for (k, v) in other {
        match (base.remove(&k), v) {
            (Some(Value::Dict(t, a)), Value::Dict(_, b)) => {
                base.insert(k, Value::Dict(t, merge(a, b)));
            }
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
    base
}

impl Settings {
    /// Loads from `config/` in the working directory and the process environment.
    pub fn load() -> Result<Settings, ConfigError> {
        Self::load_from(Path::new("config"), Environment::from_process())
    }

    /// Loads the files of `profile` under `dir` plus the process environment.
    pub fn load_profile(dir: &Path, profile: &str) -> Result<Settings, ConfigError> {
        let mut env = Environment::from_process();
        env.vars.retain(|(k, _)| k != "TAI_PROFILE");
        env.vars.push(("TAI_PROFILE".into(), profile.into()));
        Self::load_from(dir, env)
    }

    fn load_from(dir: &Path, env: Environment) -> Result<Settings, ConfigError> {
        const EMBEDDED_DEFAULT: &str = include_str!("../config/default.toml");
        const EMBEDDED_LOCAL: &str = include_str!("../config/local.toml");
        const EMBEDDED_CLOUD: &str = include_str!("../config/cloud.toml");
        let profile = env
            .vars
            .iter()
            .find(|(k, v)| k == "TAI_PROFILE" && !v.is_empty())
            .map(|(_, v)| v.clone())
            .unwrap_or_else(default_profile);
        if !matches!(profile.as_str(), "local" | "cloud")
            && !dir.join(format!("{profile}.toml")).exists()
        {
            return Err(ConfigError(format!("invalid configuration: profile = {profile:?} (from TAI_PROFILE): expected local, cloud or a config/<profile>.toml file")));
        }
        let default_file = dir.join("default.toml");
        let figment = if default_file.exists() {
            Figment::new()
                .merge(Toml::file(&default_file))
                .merge(Toml::file(dir.join(format!("{profile}.toml"))))
        } else {
            // Started elsewhere (an MCP client running `mcp-stdio`, a container without the
            // folder): the files this binary was built with.
            let profile_text = match profile.as_str() {
                "cloud" => EMBEDDED_CLOUD,
                _ => EMBEDDED_LOCAL,
            };
            Figment::new()
                .merge(Toml::string(EMBEDDED_DEFAULT))
                .merge(Toml::string(profile_text))
        }
        .merge(&env);
        let mut settings: Settings = figment.extract().map_err(|e| describe(&e, &env))?;
        settings.profile = profile;
        settings.validate(&env)?;
        Ok(settings)
    }

    /// A `TAI_SECTION__KEY` variable that names no setting is refused, so that a misspelled
    /// variable (`TAI_AUTH__MDOE`) cannot leave its setting at the default unseen. A setting
    /// is known when the effective configuration has it: a map's new entries (a threshold for
    /// another SKU) are known once they are read. Of the variables without `__`, those that
    /// begin with a section's name (`TAI_AUTH_MODE`, one underscore where two belong) are
    /// refused too, naming the variable meant; any other (`TAI_TOKEN`, `TAI_PROFILE`) is not
    /// ours to judge.
    fn check_variables(&self, env: &Environment) -> Result<(), ConfigError> {
        // (Settings always serialise; were that to fail, nothing would be judged.)
        let Ok(effective) = serde_json::to_value(self) else {
            return Ok(());
        };
        for (key, var, _) in env.entries() {
            if !var.starts_with("TAI_") {
                continue;
            }
            if !var.contains("__") {
                if let Some(meant) = one_underscore_too_few(&effective, &key) {
                    return Err(ConfigError(format!(
                        "invalid configuration: {var} names no setting: a section and each \
                         setting in it are joined by two underscores; {meant}"
                    )));
                }
                continue;
            }
            let mut at = Some(&effective);
            for part in key.split('.') {
                at = at.and_then(|v| v.get(part));
            }
            if at.is_some() {
                continue;
            }
            let section = key.split('.').next().unwrap_or_default();
            let hint = match effective.get(section).and_then(|v| v.as_object()) {
                Some(m) => format!(
                    "; the settings of {section} are {}",
                    m.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
                ),
                None => "; see the configuration table in README.md".to_owned(),
            };
            return Err(ConfigError(format!(
                "invalid configuration: {var} names no setting ({key}){hint}"
            )));
        }
        Ok(())
    }

    fn validate(&self, env: &Environment) -> Result<(), ConfigError> {
        self.check_variables(env)?;
        let bad = |key: &str, value: String, expected: &str| {
            let from = env
                .source_of(key)
                .map(|(var, _)| format!(" (from {var})"))
                .unwrap_or_default();
            Err(ConfigError(format!(
                "invalid configuration: {key} = {value:?}{from}: expected {expected}"
            )))
        };
        if self.http.host.parse::<IpAddr>().is_err() {
            return bad(
                "http.host",
                self.http.host.clone(),
                "an IP address such as 127.0.0.1 or 0.0.0.0",
            );
        }
        if self.http.max_body_bytes == 0 {
            return bad(
                "http.max_body_bytes",
                "0".into(),
                "a positive number of bytes",
            );
        }
        if self.http.body_timeout_ms == 0 {
            return bad(
                "http.body_timeout_ms",
                "0".into(),
                "a positive number of milliseconds",
            );
        }
        if self.http.drain_delay_ms + self.http.shutdown_grace_ms > 9_000 {
            return bad(
                "http.shutdown_grace_ms",
                self.http.shutdown_grace_ms.to_string(),
                "drain_delay_ms + shutdown_grace_ms <= 9000 (Cloud Run kills at 10 s)",
            );
        }
        let directives = crate::telemetry::filter_directives(&self.log.level);
        // A bare word that is no level parses as a target's name (`verbose` means "everything
        // of the target `verbose`"), which would leave the service silent.
        let bare_target = directives.split(',').map(str::trim).any(|d| {
            !d.is_empty()
                && !d.contains(['=', '['])
                && d.parse::<tracing_subscriber::filter::LevelFilter>()
                    .is_err()
        });
        if bare_target || tracing_subscriber::EnvFilter::try_new(&directives).is_err() {
            return bad(
                "log.level",
                self.log.level.clone(),
                "debug, info, warning, error or tracing filter directives",
            );
        }
        if self.ledger.max_batch == 0 {
            return bad(
                "ledger.max_batch",
                "0".into(),
                "at least 1 receipt per commit",
            );
        }
        if self.ledger.queue_capacity < self.ledger.max_batch {
            return bad(
                "ledger.queue_capacity",
                self.ledger.queue_capacity.to_string(),
                "at least ledger.max_batch",
            );
        }
        if self.ledger.audit_interval_secs == 0 && !self.ledger.audit_anchors_file.is_empty() {
            return bad(
                "ledger.audit_anchors_file",
                self.ledger.audit_anchors_file.clone(),
                "empty while the ledger audit is off (ledger.audit_interval_secs = 0), which would never read it",
            );
        }
        if self.ledger.audit_interval_secs > 0 && self.ledger.audit_receipts_per_sec == 0 {
            return bad(
                "ledger.audit_receipts_per_sec",
                "0".into(),
                "a positive number of receipts per second (ledger.audit_interval_secs = 0 turns the audit off)",
            );
        }
        if let Err(e) = crate::auth::Authenticator::new(self.auth.mode, &self.auth.tokens) {
            return Err(ConfigError(format!("invalid configuration: {e}")));
        }
        if self.marketplace.verify
            && self.marketplace.public_key_file.is_empty()
            && self.marketplace.jwks_file.is_empty()
        {
            return bad(
                "marketplace.public_key_file",
                String::new(),
                "a PEM public key or marketplace.jwks_file when marketplace.verify = true",
            );
        }
        if self.rate_limit.max_tracked_tenants == 0 {
            return bad(
                "rate_limit.max_tracked_tenants",
                "0".into(),
                "a positive number of tenants",
            );
        }
        if self.rate_limit.per_second == 0 || self.rate_limit.burst == 0 {
            return bad(
                "rate_limit.per_second",
                self.rate_limit.per_second.to_string(),
                "positive per_second and burst",
            );
        }
        if !matches!(self.actions.executor.as_str(), "eval" | "webhook") {
            return bad(
                "actions.executor",
                self.actions.executor.clone(),
                "eval or webhook",
            );
        }
        if self.actions.executor == "webhook" && !http_url(&self.actions.webhook_url) {
            return bad(
                "actions.webhook_url",
                crate::outbound::shown_url(&self.actions.webhook_url),
                "an http(s) URL when actions.executor = webhook",
            );
        }
        if self.actions.executor == "webhook" && !self.actions.webhook_ca_file.is_empty() {
            if let Err(e) =
                crate::outbound::Tls::new(Some(Path::new(&self.actions.webhook_ca_file)))
            {
                return bad(
                    "actions.webhook_ca_file",
                    self.actions.webhook_ca_file.clone(),
                    &format!("a readable PEM file of CA certificates ({e})"),
                );
            }
        }
        let secret = self.actions.webhook_secret.chars().count();
        if secret > 0 && secret < 16 {
            // The value itself is never printed.
            return bad(
                "actions.webhook_secret",
                "***".into(),
                "at least 16 characters (or empty: webhooks unsigned)",
            );
        }
        let g = &self.governance;
        for (key, value) in [
            ("governance.mailbox", g.mailbox as u64),
            ("governance.postpone_capacity", g.postpone_capacity as u64),
            ("governance.idle_hibernate_secs", g.idle_hibernate_secs),
            ("governance.action_timeout_ms", g.action_timeout_ms),
            ("governance.decision_timeout_ms", g.decision_timeout_ms),
            ("governance.period_secs", g.period_secs),
            (
                "actions.webhook_timeout_ms",
                self.actions.webhook_timeout_ms,
            ),
        ] {
            if value == 0 {
                return bad(key, "0".into(), "a positive number");
            }
        }
        for (key, value) in [
            ("governance.arbiters", g.arbiters),
            ("http.workers", self.http.workers),
        ] {
            if value > MAX_THREADS {
                return bad(
                    key,
                    value.to_string(),
                    &format!("0 (one per core) up to {MAX_THREADS} threads"),
                );
            }
        }
        for (sku, t) in &self.governance.thresholds {
            if !(t.warning.is_finite() && t.action.is_finite() && t.warning <= t.action) {
                return bad(
                    &format!("governance.thresholds.{sku}"),
                    format!("{t:?}"),
                    "finite warning <= action",
                );
            }
        }
        let p = &self.pubsub;
        if !p.subscription.is_empty()
            && p.subscription_path(self.gcp_project().as_deref()).is_none()
        {
            return bad(
                "pubsub.subscription",
                p.subscription.clone(),
                "a full projects/p/subscriptions/s name, or a project id in GOOGLE_CLOUD_PROJECT",
            );
        }
        if !(10..=600).contains(&p.lease_extension_secs) || p.max_lease_secs == 0 {
            return bad(
                "pubsub.lease_extension_secs",
                p.lease_extension_secs.to_string(),
                "10-600 seconds, and a positive max_lease_secs",
            );
        }
        if p.max_outstanding == 0
            || p.health_interval_ms == 0
            || p.reconnect_min_ms == 0
            || p.reconnect_max_ms < p.reconnect_min_ms
        {
            return bad("pubsub", String::new(), "positive max_outstanding, health_interval_ms and reconnect_min_ms <= reconnect_max_ms");
        }
        if p.push.verify && p.push.audience.is_empty() {
            return bad(
                "pubsub.push.audience",
                String::new(),
                "the push subscription's audience when pubsub.push.verify = true",
            );
        }
        if p.push.verify && p.push.jwks_file.is_empty() && !http_url(&p.push.jwks_url) {
            return bad(
                "pubsub.push.jwks_url",
                crate::outbound::shown_url(&p.push.jwks_url),
                "an http(s) URL or pubsub.push.jwks_file when pubsub.push.verify = true",
            );
        }
        let ledger = &self.ledger.sqlite_path;
        if self.ledger.backend == LedgerBackend::Sqlite
            && (ledger.is_dir() || ledger.as_os_str().as_encoded_bytes().ends_with(b"/"))
        {
            return bad(
                "ledger.sqlite_path",
                ledger.display().to_string(),
                "the ledger's file, such as data/ledger.db (this names a folder)",
            );
        }
        if self.supervision.root_period_secs == 0 {
            return bad(
                "supervision.root_period_secs",
                "0".into(),
                "a period of at least 1 second",
            );
        }
        Ok(())
    }

    /// The Google Cloud project (`gcp.project_id`, GOOGLE_CLOUD_PROJECT), else Firestore's.
    pub fn gcp_project(&self) -> Option<String> {
        [&self.gcp.project_id, &self.firestore.project_id]
            .into_iter()
            .find(|p| !p.is_empty())
            .cloned()
    }

    /// Whether the ledger is Firestore and no project is configured, so one must be found in
    /// the environment before the store opens (the binary does that; without one it stops
    /// with exit code 78).
    pub fn needs_project(&self) -> bool {
        self.ledger.backend == LedgerBackend::Firestore && self.firestore_project().is_none()
    }

    /// The Firestore project: `firestore.project_id`, else `gcp.project_id`.
    pub fn firestore_project(&self) -> Option<String> {
        [&self.firestore.project_id, &self.gcp.project_id]
            .into_iter()
            .find(|p| !p.is_empty())
            .cloned()
    }

    /// The node name: configured, or `tai@<hostname>`.
    pub fn node_name(&self) -> String {
        if !self.node.name.is_empty() {
            return self.node.name.clone();
        }
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|s| s.trim().to_owned())
                    .filter(|h| !h.is_empty())
            })
            .unwrap_or_else(|| "localhost".to_owned());
        format!("tai@{host}")
    }

    /// The effective configuration as pretty JSON with secrets masked.
    pub fn masked_json(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        mask(&mut v);
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }
}

/// Replaces the values of secret-looking keys with `"***"`, and the password and query of
/// URLs (`outbound::shown_url`).
fn mask(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if let (true, Some(url)) = (k.ends_with("_url"), val.as_str()) {
                    *val = crate::outbound::shown_url(url).into();
                    continue;
                }
                let secret = ["token", "secret", "password", "key"]
                    .iter()
                    .any(|s| k.contains(s))
                    && !k.ends_with("_path")
                    && !k.ends_with("_file")
                    && !k.ends_with("_url");
                if secret && !val.is_null() && val.as_str() != Some("") {
                    *val = serde_json::Value::String("***".into());
                } else {
                    mask(val);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(mask),
        _ => {}
    }
}

/// One line for the first extraction error: key, value, where it came from, what was expected.
fn describe(err: &figment::Error, env: &Environment) -> ConfigError {
    let e = err
        .clone()
        .into_iter()
        .next()
        .unwrap_or_else(|| err.clone());
    let key = e.path.join(".");
    let (value, from) = match env.source_of(&key) {
        Some((var, raw)) => (format!("{raw:?}"), format!(" (from {var})")),
        None => (
            String::new(),
            e.metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default(),
        ),
    };
    let expected = match &e.kind {
        figment::error::Kind::InvalidType(actual, exp) => format!("expected {exp}, found {actual}"),
        figment::error::Kind::InvalidValue(actual, exp) => {
            format!("expected {exp}, found {actual}")
        }
        figment::error::Kind::UnknownVariant(v, expected) => format!(
            "unknown value {v:?}, expected one of {}",
            expected.join(", ")
        ),
        figment::error::Kind::MissingField(f) => format!("missing key {f}"),
        other => other.to_string(),
    };
    let shown = if value.is_empty() {
        String::new()
    } else {
        format!(" = {value}")
    };
    ConfigError(format!(
        "invalid configuration: {key}{shown}{from}: {expected}"
    ))
}

#[cfg(test)]
#[expect(
    clippy::result_large_err,
    reason = "figment::Jail fixes the closure's error type"
)]
mod tests {
    use super::*;
    use figment::Jail;

    fn project_config(jail: &mut Jail) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        jail.create_dir("config").unwrap();
        for f in ["default.toml", "local.toml", "cloud.toml"] {
            jail.create_file(
                format!("config/{f}"),
                &std::fs::read_to_string(root.join(f)).unwrap(),
            )
            .unwrap();
        }
    }

    fn load() -> Result<Settings, ConfigError> {
        Settings::load()
    }

    #[test]
    fn defaults_are_the_local_profile_on_port_8080() {
        Jail::expect_with(|jail| {
            project_config(jail);
            let s = load().unwrap();
            assert_eq!(
                (s.profile.as_str(), s.http.host.as_str(), s.http.port),
                ("local", "127.0.0.1", 8080)
            );
            assert_eq!(s.pubsub.topic, "erlang-autonomics-events");
            assert_eq!(
                (s.ledger.backend, s.ledger.sqlite_path.to_str()),
                (LedgerBackend::Sqlite, Some("data/ledger.db"))
            );
            Ok(())
        });
    }

    #[test]
    fn without_a_config_folder_the_built_in_files_are_used() {
        Jail::expect_with(|jail| {
            // No config/ in the working directory (an MCP client starting `mcp-stdio`).
            jail.set_env("TAI_PROFILE", "cloud");
            let s = load().unwrap();
            assert_eq!(
                (
                    s.profile.as_str(),
                    s.http.host.as_str(),
                    s.mcp.allowed_hosts.len()
                ),
                ("cloud", "0.0.0.0", 0)
            );
            Ok(())
        });
    }

    #[test]
    fn the_guides_variables_and_tai_variables_override_files() {
        Jail::expect_with(|jail| {
            project_config(jail);
            jail.set_env("PORT", "9090");
            jail.set_env("NODE_NAME", "tai@box");
            jail.set_env("PUBSUB_TOPIC", "other-topic");
            jail.set_env("TAI_HTTP__MAX_BODY_BYTES", "1024");
            let s = load().unwrap();
            assert_eq!(
                (
                    s.http.port,
                    s.node_name().as_str(),
                    s.pubsub.topic.as_str(),
                    s.http.max_body_bytes
                ),
                (9090, "tai@box", "other-topic", 1024)
            );
            jail.set_env("TAI_HTTP__PORT", "7070");
            assert_eq!(
                load().unwrap().http.port,
                7070,
                "TAI_ form wins over the plain one"
            );
            Ok(())
        });
    }

    #[test]
    fn cloud_profile_listens_everywhere_and_logs_json() {
        Jail::expect_with(|jail| {
            project_config(jail);
            jail.set_env("TAI_PROFILE", "cloud");
            let s = load().unwrap();
            assert_eq!(
                (s.http.host.as_str(), s.log.format, s.ledger.backend),
                ("0.0.0.0", LogFormat::Json, LedgerBackend::Firestore)
            );
            Ok(())
        });
    }

    #[test]
    fn an_empty_variable_counts_as_unset() {
        Jail::expect_with(|jail| {
            project_config(jail);
            jail.set_env("PORT", "");
            jail.set_env("TAI_LOG__LEVEL", "");
            let s = load().unwrap();
            assert_eq!((s.http.port, s.log.level.as_str()), (8080, "info"));
            Ok(())
        });
    }

    #[test]
    fn a_bad_value_is_one_line_naming_key_value_and_expectation() {
        Jail::expect_with(|jail| {
            project_config(jail);
            jail.set_env("PORT", "abc");
            let e = load().unwrap_err().0;
            assert!(
                e.contains("http.port")
                    && e.contains("\"abc\"")
                    && e.contains("PORT")
                    && e.contains("expected"),
                "{e}"
            );
            assert!(!e.contains('\n'));
            jail.set_env("PORT", "70000");
            let e = load().unwrap_err().0;
            assert!(e.contains("http.port") && e.contains("70000"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn a_ledger_path_that_names_a_folder_is_refused() {
        Jail::expect_with(|jail| {
            project_config(jail);
            // It failed later, as "unable to open database file".
            for folder in ["config", "data/"] {
                jail.set_env("TAI_LEDGER__SQLITE_PATH", folder);
                let e = load().unwrap_err().0;
                assert!(
                    e.contains("ledger.sqlite_path") && e.contains("names a folder"),
                    "{e}"
                );
            }
            jail.set_env("TAI_LEDGER__SQLITE_PATH", "data/ledger.db");
            assert!(load().is_ok());
            Ok(())
        });
    }

    #[test]
    fn the_ledger_audit_runs_hourly_on_the_embedded_ledger_and_not_on_cloud_run() {
        Jail::expect_with(|jail| {
            project_config(jail);
            let local = load().unwrap();
            assert_eq!(
                (
                    local.ledger.audit_interval_secs,
                    local.ledger.audit_receipts_per_sec
                ),
                (3600, 20_000)
            );
            jail.set_env("TAI_PROFILE", "cloud");
            assert_eq!(load().unwrap().ledger.audit_interval_secs, 0);
            jail.set_env("TAI_PROFILE", "local");
            // A pace of nothing would never end a pass: refused, unless the audit is off.
            jail.set_env("TAI_LEDGER__AUDIT_RECEIPTS_PER_SEC", "0");
            let e = load().unwrap_err().0;
            assert!(
                e.contains("ledger.audit_receipts_per_sec")
                    && e.contains("TAI_LEDGER__AUDIT_RECEIPTS_PER_SEC"),
                "{e}"
            );
            jail.set_env("TAI_LEDGER__AUDIT_INTERVAL_SECS", "0");
            assert!(load().is_ok());
            // Anchors for an audit that does not run would be ignored without a word.
            jail.set_env("TAI_LEDGER__AUDIT_ANCHORS_FILE", "heads.jsonl");
            let e = load().unwrap_err().0;
            assert!(e.contains("TAI_LEDGER__AUDIT_ANCHORS_FILE"), "{e}");
            jail.set_env("TAI_LEDGER__AUDIT_INTERVAL_SECS", "60");
            jail.set_env("TAI_LEDGER__AUDIT_RECEIPTS_PER_SEC", "100");
            assert_eq!(load().unwrap().ledger.audit_anchors_file, "heads.jsonl");
            Ok(())
        });
    }

    #[test]
    fn a_variable_that_names_no_setting_is_refused_with_the_settings_it_could_mean() {
        Jail::expect_with(|jail| {
            project_config(jail);
            // Not in our `TAI_SECTION__KEY` form: left alone.
            jail.set_env("TAI_BENCH_GOVERNORS", "5");
            assert!(load().is_ok());
            jail.set_env("TAI_AUTH__MDOE", "bearer");
            let e = load().unwrap_err().0;
            assert!(
                e.contains("TAI_AUTH__MDOE names no setting (auth.mdoe)")
                    && e.contains("the settings of auth are mode, tokens"),
                "{e}"
            );
            jail.set_env("TAI_AUTH__MDOE", "");
            jail.set_env("TAI_GOVERNANCES__MAILBOX", "4");
            let e = load().unwrap_err().0;
            assert!(
                e.contains("TAI_GOVERNANCES__MAILBOX") && e.contains("README"),
                "{e}"
            );
            jail.set_env("TAI_GOVERNANCES__MAILBOX", "");
            // One underscore where two belong: refused, naming the variable meant.
            for (var, meant) in [
                ("TAI_AUTH_MODE", "did you mean TAI_AUTH__MODE?"),
                ("TAI_CHAOS_ENABLED", "did you mean TAI_CHAOS__ENABLED?"),
                (
                    "TAI_RATE_LIMIT_PER_SECOND",
                    "did you mean TAI_RATE_LIMIT__PER_SECOND?",
                ),
                (
                    "TAI_GOVERNANCE_ACTION_TIMEOUT_MS",
                    "did you mean TAI_GOVERNANCE__ACTION_TIMEOUT_MS?",
                ),
                (
                    "TAI_GOVERNANCE_THRESHOLDS_BASE_WARNING",
                    "did you mean TAI_GOVERNANCE__THRESHOLDS__BASE__WARNING?",
                ),
                (
                    "TAI_LEDGER_SQLITE_PAHT",
                    "the settings of ledger are set as TAI_LEDGER__<SETTING>",
                ),
            ] {
                jail.set_env(var, "1");
                let e = load().unwrap_err().0;
                assert!(
                    e.contains(&format!("{var} names no setting")) && e.contains(meant),
                    "{e}"
                );
                jail.set_env(var, "");
            }
            // Ours without a section, and others that begin with none: left alone.
            jail.set_env("TAI_TOKEN", "t");
            jail.set_env("TAI_HTTPX", "1");
            assert!(load().is_ok());
            // A new entry of a map is a setting.
            jail.set_env("TAI_GOVERNANCE__THRESHOLDS__GOLD__WARNING", "50");
            jail.set_env("TAI_GOVERNANCE__THRESHOLDS__GOLD__ACTION", "70");
            let s = load().unwrap();
            assert_eq!(s.governance.thresholds["gold"].warning, 50.0);
            Ok(())
        });
    }

    #[test]
    fn zero_where_a_positive_number_is_needed_and_thread_counts_name_their_key() {
        Jail::expect_with(|jail| {
            project_config(jail);
            for (var, key) in [
                ("TAI_GOVERNANCE__MAILBOX", "governance.mailbox"),
                (
                    "TAI_GOVERNANCE__DECISION_TIMEOUT_MS",
                    "governance.decision_timeout_ms",
                ),
                (
                    "TAI_ACTIONS__WEBHOOK_TIMEOUT_MS",
                    "actions.webhook_timeout_ms",
                ),
            ] {
                jail.set_env(var, "0");
                let e = load().unwrap_err().0;
                assert!(e.contains(key) && e.contains(var), "{e}");
                jail.set_env(var, "");
            }
            jail.set_env("TAI_GOVERNANCE__ARBITERS", "100000");
            let e = load().unwrap_err().0;
            assert!(
                e.contains("governance.arbiters") && e.contains("256"),
                "{e}"
            );
            Ok(())
        });
    }

    #[test]
    fn enum_and_semantic_errors_name_the_allowed_values() {
        Jail::expect_with(|jail| {
            project_config(jail);
            jail.set_env("TAI_LOG__FORMAT", "xml");
            let e = load().unwrap_err().0;
            assert!(
                e.contains("log.format") && e.contains("json") && e.contains("TAI_LOG__FORMAT"),
                "{e}"
            );
            jail.set_env("TAI_LOG__FORMAT", "json");
            jail.set_env("TAI_HTTP__HOST", "not-an-ip");
            let e = load().unwrap_err().0;
            assert!(
                e.contains("http.host") && e.contains("not-an-ip") && e.contains("TAI_HTTP__HOST"),
                "{e}"
            );
            jail.set_env("TAI_HTTP__HOST", "0.0.0.0");
            jail.set_env("TAI_PROFILE", "staging");
            assert!(load().unwrap_err().0.contains("TAI_PROFILE"));
            jail.set_env("TAI_PROFILE", "local");
            jail.set_env("TAI_LEDGER__BACKEND", "firestore");
            assert!(load().unwrap().needs_project(), "to be found at start");
            jail.set_env("FIRESTORE_PROJECT_ID", "demo");
            let s = load().unwrap();
            assert_eq!(s.ledger.backend, LedgerBackend::Firestore);
            assert!(!s.needs_project());
            jail.set_env("TAI_AUTH__MODE", "bearer");
            let e = load().unwrap_err().0;
            assert!(e.contains("auth.tokens"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn log_levels_that_would_silence_the_service_are_refused() {
        Jail::expect_with(|jail| {
            project_config(jail);
            for good in [
                "DEBUG",
                "warning",
                "critical",
                "info,tai_autonomics=debug",
                "off",
            ] {
                jail.set_env("LOG_LEVEL", good);
                assert!(load().is_ok(), "{good}");
            }
            // A bare word that is no level is a target's name: nothing else would be logged.
            for bad in ["verbose", "info,verbose", "info=["] {
                jail.set_env("LOG_LEVEL", bad);
                let e = load().unwrap_err().0;
                assert!(
                    e.contains("log.level") && e.contains("LOG_LEVEL"),
                    "{bad}: {e}"
                );
            }
            Ok(())
        });
    }

    #[test]
    fn webhook_urls_must_be_usable_and_a_ca_file_must_hold_certificates() {
        Jail::expect_with(|jail| {
            project_config(jail);
            jail.set_env("TAI_ACTIONS__EXECUTOR", "webhook");
            for bad in [
                "ftp://x",
                "http://exa mple/a",
                "https://",
                "hooks.example/a",
            ] {
                jail.set_env("TAI_ACTIONS__WEBHOOK_URL", bad);
                let e = load().unwrap_err().0;
                assert!(e.contains("actions.webhook_url"), "{bad}: {e}");
            }
            jail.set_env("TAI_ACTIONS__WEBHOOK_URL", "https://hooks.example:8443/a");
            assert!(load().is_ok());
            let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys");
            for (file, says) in [
                (keys.join("missing.pem"), "No such file"),
                (keys.join("rsa_public.pem"), "no PEM certificate"),
            ] {
                jail.set_env("TAI_ACTIONS__WEBHOOK_CA_FILE", file.display().to_string());
                let e = load().unwrap_err().0;
                assert!(
                    e.contains("actions.webhook_ca_file") && e.contains(says),
                    "{e}"
                );
            }
            let ca = keys.join("tls_ca.pem");
            jail.set_env("TAI_ACTIONS__WEBHOOK_CA_FILE", ca.display().to_string());
            assert!(load().is_ok());
            Ok(())
        });
    }

    #[test]
    fn a_short_webhook_secret_is_refused_without_being_printed_and_a_good_one_is_masked() {
        Jail::expect_with(|jail| {
            project_config(jail);
            jail.set_env("TAI_ACTIONS__WEBHOOK_SECRET", "tooshort");
            let e = load().unwrap_err().0;
            assert!(
                e.contains("actions.webhook_secret") && !e.contains("tooshort"),
                "{e}"
            );
            jail.set_env("TAI_ACTIONS__WEBHOOK_SECRET", "a-secret-long-enough");
            let s = load().unwrap();
            assert!(!s.masked_json().contains("a-secret-long-enough"));
            // A URL's password and query are secrets too, in the printout and in errors.
            jail.set_env(
                "TAI_ACTIONS__WEBHOOK_URL",
                "https://ops:pa55@h.example/x?token=t0k",
            );
            let printed = load().unwrap().masked_json();
            assert!(
                printed.contains("https://ops:***@h.example/x?***"),
                "{printed}"
            );
            jail.set_env("TAI_ACTIONS__EXECUTOR", "webhook");
            jail.set_env(
                "TAI_ACTIONS__WEBHOOK_URL",
                "ftp://ops:pa55@h.example/x?token=t0k",
            );
            let e = load().unwrap_err().0;
            assert!(
                e.contains("ftp://ops:***@h.example/x?***") && !e.contains("pa55"),
                "{e}"
            );
            Ok(())
        });
    }

    #[test]
    fn bearer_tokens_can_come_from_the_environment() {
        Jail::expect_with(|jail| {
            project_config(jail);
            jail.set_env("TAI_AUTH__MODE", "bearer");
            jail.set_env("TAI_AUTH__TOKENS", format!("[{{sha256=\"{}\",role=\"admin\"}},{{sha256=\"{}\",role=\"tenant\",tenant=\"acme\"}}]", "a".repeat(64), "b".repeat(64)));
            let s = load().unwrap();
            assert_eq!(s.auth.tokens.len(), 2);
            assert_eq!(s.auth.tokens[1].tenant.as_deref(), Some("acme"));
            assert!(
                !s.masked_json().contains(&"a".repeat(64)),
                "digests are masked"
            );
            Ok(())
        });
    }

    #[test]
    fn secrets_are_masked_in_the_printout() {
        let mut v = serde_json::json!({"auth": {"tokens": [{"token_sha256": "abc"}], "mode": "bearer"}, "ledger": {"sqlite_path": "data/x"}, "k": {"api_key": "s3cret"},
            "actions": {"webhook_url": "https://ops:pa55@hooks.example.com/h?token=t0k"}});
        mask(&mut v);
        let s = v.to_string();
        assert!(
            !s.contains("s3cret") && s.contains("data/x") && s.contains("bearer"),
            "{s}"
        );
        assert_eq!(
            v["actions"]["webhook_url"],
            "https://ops:***@hooks.example.com/h?***"
        );
    }
}
