//! The `tai-autonomics` binary: `serve` (default), `mcp-stdio`, `verify`, `config` and
//! `token-digest`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tai_autonomics::config::{LedgerBackend, Settings};
use tai_autonomics::receipts::chain::tenant_anchor;
use tai_autonomics::receipts::sqlite::SqliteStore;
use tai_autonomics::receipts::{Anchor, AnyStore};
use tai_autonomics::startup::Application;
use tai_autonomics::telemetry;
use tai_autonomics::tenant::TenantId;

/// Per-tenant autonomic governance service.
#[derive(Parser)]
#[command(name = "tai-autonomics", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve,
    /// Print the effective configuration (secrets masked) and exit.
    Config,
    /// Verify receipt chains offline against the configured store, or saved as JSON; exit 1
    /// if any is broken.
    Verify {
        /// The tenant whose chain to verify.
        #[arg(long, conflicts_with = "all", required_unless_present_any = ["all", "file"])]
        tenant: Option<String>,
        /// Verify every tenant's chain.
        #[arg(long)]
        all: bool,
        /// Verify the receipts in this JSON file instead (`-`: standard input): receipts,
        /// arrays of them or pages of `GET /v1/tenants/{t}/receipts`, one after another, each
        /// tenant's chain from seq 1 (or from right after its --anchor, as an export
        /// `?after_seq=` the anchor's seq gives). No configuration or store is read.
        #[arg(long, conflicts_with_all = ["tenant", "all"])]
        file: Option<std::path::PathBuf>,
        /// Also require TENANT's chain to hold the receipt at SEQ with receipt_hash HASH (a
        /// `head_seq` and `head_hash` recorded from an earlier report): a chain rewritten and
        /// sealed again since then verifies by itself, but not against its anchor. Repeat for
        /// more tenants.
        #[arg(long, value_name = "TENANT:SEQ:HASH")]
        anchor: Vec<String>,
        /// Anchors from a file, one a line: the JSON reports an earlier `verify` or `backup`
        /// printed (each valid chain's head_seq and head_hash; so yesterday's output, kept
        /// where the ledger's writers cannot reach it, checks today's ledger), or
        /// TENANT:SEQ:HASH. With --tenant only that tenant's anchor counts; with --all or
        /// --file a tenant in it whose chain is not there is broken.
        #[arg(long, value_name = "FILE")]
        anchors: Option<std::path::PathBuf>,
    },
    /// Copy the SQLite ledger into a new file, while the service may be running (one
    /// consistent snapshot), then verify every chain in the copy; exit 1 if one is broken.
    Backup {
        /// The new file (it must not exist yet).
        #[arg(long, value_name = "FILE")]
        to: std::path::PathBuf,
    },
    /// Replace the SQLite ledger with a backup, once every chain in the backup verifies; the
    /// ledger it replaces is kept beside it as `<ledger>.replaced-<unix ms>`. Refused while
    /// another process (a running service) has the ledger open.
    Restore {
        /// The backup (a file `backup` wrote, or a ledger file).
        #[arg(long, value_name = "FILE")]
        from: std::path::PathBuf,
        /// Also require the backup's chains to hold the heads in this file, as `verify
        /// --anchors` does: what `backup` printed when it took the backup, kept apart from it,
        /// so that a backup rewritten and sealed again since is refused.
        #[arg(long, value_name = "FILE")]
        anchors: Option<std::path::PathBuf>,
    },
    /// Serve the MCP tools over stdin/stdout (logs go to stderr), on the configured ledger.
    McpStdio,
    /// Print the SHA-256 digest of a bearer token, as `auth.tokens` wants it.
    TokenDigest {
        /// The token (read from the TAI_TOKEN environment variable when omitted).
        token: Option<String>,
    },
}

/// `EX_CONFIG` from sysexits.h: the configuration is wrong.
const EX_CONFIG: u8 = 78;
/// `EX_USAGE`: the command line names no valid tenant, or an anchor that is not valid, or
/// `token-digest` has no token, or `backup`/`restore` is asked of a Firestore ledger, or the
/// backup to restore is the ledger itself.
const EX_USAGE: u8 = 64;
/// `EX_DATAERR`: the file to verify is not receipts, the file of anchors is not anchors, the
/// ledger to back up is damaged, the backup to restore is not a ledger, or the file at the
/// ledger's path is not a database that a restore can lock.
const EX_DATAERR: u8 = 65;
/// `EX_NOINPUT`: the tenant has no chain, there is no ledger file, the file to verify is
/// missing or holds no receipts, the file of anchors cannot be read, or there is no backup to
/// restore.
const EX_NOINPUT: u8 = 66;
/// `EX_UNAVAILABLE`: the store (or the backup to restore) could not be read.
const EX_UNAVAILABLE: u8 = 69;
/// `EX_CANTCREAT`: the backup's file exists already or cannot be written, or the ledger cannot
/// be restored in place.
const EX_CANTCREAT: u8 = 73;
/// `EX_TEMPFAIL`: the ledger to restore is open in another process (a running service).
const EX_TEMPFAIL: u8 = 75;

/// Makes `firestore.emulator_host` visible to the Firestore client, which reads only the
/// environment variable. Runs before any thread starts.
fn export_emulator_hosts(settings: &Settings) {
    if !settings.firestore.emulator_host.is_empty()
        && std::env::var_os("FIRESTORE_EMULATOR_HOST").is_none()
    {
        std::env::set_var("FIRESTORE_EMULATOR_HOST", &settings.firestore.emulator_host);
    }
}

/// The `--anchor` arguments, one per tenant; `Err` is the usage message.
fn parse_anchors(args: &[String]) -> Result<HashMap<String, Anchor>, String> {
    let mut anchors = HashMap::new();
    for arg in args {
        let (tenant, anchor) = tenant_anchor(arg).map_err(|m| format!("--anchor {arg:?}: {m}"))?;
        TenantId::parse(&tenant).map_err(|m| format!("--anchor {arg:?}: {m}"))?;
        if anchors.insert(tenant.clone(), anchor).is_some() {
            return Err(format!("--anchor names tenant {tenant} twice"));
        }
    }
    Ok(anchors)
}

/// The `--anchor` arguments and the anchors of the `--anchors` file (with `--tenant`, only
/// that tenant's), or the message and exit code that refuse them.
fn all_anchors(
    args: &[String],
    file: Option<&std::path::Path>,
    tenant: Option<&str>,
) -> Result<HashMap<String, Anchor>, (String, u8)> {
    use tai_autonomics::receipts::chain::{read_anchors_file, AnchorsError};
    let mut anchors = parse_anchors(args).map_err(|m| (m, EX_USAGE))?;
    let Some(path) = file else {
        return Ok(anchors);
    };
    let from_file = match read_anchors_file(path) {
        Ok(f) => f,
        Err(AnchorsError::Read(e)) => {
            return Err((format!("cannot read {}: {e}", path.display()), EX_NOINPUT))
        }
        Err(e) => return Err((format!("{}: {e}", path.display()), EX_DATAERR)),
    };
    if from_file.skipped > 0 {
        eprintln!(
            "verify: {} report(s) in {} are of a broken or empty chain, which gives no anchor",
            from_file.skipped,
            path.display()
        );
    }
    for (t, a) in from_file.anchors {
        if tenant.is_some_and(|only| only != t) {
            continue;
        }
        if anchors.insert(t.clone(), a).is_some() {
            return Err((
                format!(
                    "tenant {t} has an --anchor and a line in {}",
                    path.display()
                ),
                EX_USAGE,
            ));
        }
    }
    Ok(anchors)
}

/// A Firestore ledger with no project configured takes the environment's, as the operations
/// guide's "auto-detected" has it: gcloud's look-up (its project variables, the application
/// default credentials file, and on Cloud Run the metadata server, which answers within
/// milliseconds; elsewhere the look-up gives up after at most 5 s). `Ok(Some(project))` when
/// one was found, `Err` with the line for the operator when none was.
fn find_project(settings: &mut Settings) -> Result<Option<String>, String> {
    if !settings.needs_project() {
        return Ok(None);
    }
    let found = actix_web::rt::System::new()
        .block_on(firestore::gcloud_sdk::GoogleEnvironment::detect_google_project_id())
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty());
    match found {
        Some(project) => {
            settings.gcp.project_id.clone_from(&project);
            Ok(Some(project))
        }
        None => Err("invalid configuration: firestore.project_id is not set (FIRESTORE_PROJECT_ID, GOOGLE_CLOUD_PROJECT) and the environment names none (GCP_PROJECT, PROJECT_ID, GCP_PROJECT_ID, the application default credentials, the metadata server): ledger.backend = firestore needs one".into()),
    }
}

/// What naming the node after the Cloud Run instance came to, for the log once it runs.
enum InstanceName {
    /// Not on Cloud Run (no `K_SERVICE`), or `node.name` is configured.
    NotAsked,
    /// The node's name, and the whole instance id.
    Named(String, String),
    Unread(String),
}

/// On Cloud Run every instance's hostname is `localhost`, so the default node name
/// `tai@<hostname>`, which `/health` shows and every receipt records, named all instances
/// alike. There the node is named after the metadata server's instance id (what Cloud
/// Logging labels `instanceId`), its last 16 characters (the tail, in case ids share a
/// prefix; the log line of the start gives the whole id). A
/// configured `node.name` is kept; an id that cannot be read within 2 s leaves the default.
fn name_instance(settings: &mut Settings) -> InstanceName {
    if !settings.node.name.is_empty() || std::env::var_os("K_SERVICE").is_none() {
        return InstanceName::NotAsked;
    }
    let host = std::env::var("GCE_METADATA_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "metadata.google.internal".to_owned());
    let url = format!("http://{host}/computeMetadata/v1/instance/id");
    let read = actix_web::rt::System::new().block_on(async move {
        let client = awc::Client::builder()
            .timeout(std::time::Duration::from_secs(2))
            .finish();
        let mut res = (client.get(&url))
            .insert_header(("Metadata-Flavor", "Google"))
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let flavored = (res.headers().get("metadata-flavor")).is_some_and(|v| v == "Google");
        if !res.status().is_success() || !flavored {
            return Err(format!(
                "{url}: {} without Metadata-Flavor: Google",
                res.status()
            ));
        }
        let body = res
            .body()
            .limit(1024)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let id = String::from_utf8_lossy(&body).trim().to_owned();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!("{url}: not an instance id"));
        }
        Ok(id)
    });
    match read {
        Ok(id) => {
            let tail = &id[id.len().saturating_sub(16)..];
            settings.node.name = format!("tai@{tail}");
            InstanceName::Named(settings.node.name.clone(), id)
        }
        Err(e) => InstanceName::Unread(e),
    }
}

impl InstanceName {
    fn log(&self, settings: &Settings) {
        match self {
            InstanceName::NotAsked => {}
            InstanceName::Named(node, instance_id) => {
                tracing::info!(%node, %instance_id, "node named after the Cloud Run instance");
            }
            InstanceName::Unread(error) => tracing::warn!(
                %error,
                node = settings.node_name(),
                "the Cloud Run instance id could not be read; the node keeps the host's name"
            ),
        }
    }
}

fn verify(
    settings: Settings,
    tenant: Option<String>,
    anchors: HashMap<String, Anchor>,
) -> ExitCode {
    // Opening a SQLite ledger creates it: a mistyped path would verify an empty new file and
    // report success (and leave the file behind).
    let path = &settings.ledger.sqlite_path;
    if settings.ledger.backend == LedgerBackend::Sqlite && !path.exists() {
        eprintln!(
            "verify: there is no ledger at {} (ledger.sqlite_path, TAI_LEDGER__SQLITE_PATH)",
            path.display()
        );
        return ExitCode::from(EX_NOINPUT);
    }
    if let Some(t) = tenant.as_deref().filter(|t| TenantId::parse(t).is_err()) {
        eprintln!("verify: {t:?} is not a tenant id (^[a-z0-9][a-z0-9._-]{{0,62}}$)");
        return ExitCode::from(EX_USAGE);
    }
    if let Some(other) = tenant
        .as_deref()
        .and_then(|t| anchors.keys().find(|a| a.as_str() != t))
    {
        eprintln!("verify: --anchor names tenant {other}, which --tenant does not verify");
        return ExitCode::from(EX_USAGE);
    }
    actix_web::rt::System::new().block_on(async move {
        // Once: an operator running `verify` wants the answer, not a wait.
        let once = std::time::Duration::ZERO;
        // A SQLite ledger is read without being migrated or written (the service that owns it
        // may be running, and may be an older build).
        let store = match settings.ledger.backend {
            LedgerBackend::Sqlite => SqliteStore::open_read_only(&settings.ledger.sqlite_path)
                .map(AnyStore::Sqlite)
                .map_err(anyhow::Error::from),
            LedgerBackend::Firestore => tai_autonomics::tree::open_store(&settings, once).await,
        };
        match store {
            Ok(store) => verify_on(store, tenant, anchors).await,
            Err(e) => {
                eprintln!("verify: {e:#}");
                ExitCode::from(EX_UNAVAILABLE)
            }
        }
    })
}

/// Most tenants `verify --all` verifies in one read of a SQLite ledger (a few hundred bytes
/// each); a ledger of more is verified chain by chain.
const SCAN_TENANTS: usize = 250_000;

/// [`verify`] on an open store: `tenant`'s chain, or every chain.
async fn verify_on(
    store: AnyStore,
    tenant: Option<String>,
    anchors: HashMap<String, Anchor>,
) -> ExitCode {
    use tai_autonomics::receipts::chain::unreached_anchors;
    use tai_autonomics::receipts::{verify_chain, LedgerStore, StoreError, Verifier};
    let every = tenant.is_none();
    let tenants = match tenant {
        Some(t) => vec![t],
        None => {
            let mut all: Vec<String> = Vec::new();
            loop {
                let after = all.last().cloned().unwrap_or_default();
                match store.tenants(&after, 1000).await {
                    Ok(page) if page.is_empty() => break,
                    Ok(page) => all.extend(page),
                    Err(e) => {
                        eprintln!("verify: listing tenants: {e}");
                        return ExitCode::from(EX_UNAVAILABLE);
                    }
                }
            }
            all
        }
    };
    let tty = std::io::stderr().is_terminal();
    // Every chain of a SQLite ledger in one read of the file, front to back; a chain it finds
    // valid is reported so, any other is verified again by itself below.
    let mut scanned = match (&store, every) {
        (AnyStore::Sqlite(s), true) if tenants.len() <= SCAN_TENANTS => {
            let progress = move |n: u64| {
                if tty {
                    eprint!("\r\x1b[2Kverifying every chain in one read: {n} receipts");
                    let _ = std::io::stderr().flush();
                }
            };
            let scan = s.verify_all(anchors.clone(), progress).await;
            if tty {
                eprint!("\r\x1b[2K");
            }
            match scan {
                Ok(reports) => reports.unwrap_or_default(),
                Err(e) => {
                    eprintln!("verify: {e}");
                    return ExitCode::from(EX_UNAVAILABLE);
                }
            }
        }
        _ => HashMap::new(),
    };
    let mut broken = 0;
    for (i, t) in tenants.iter().enumerate() {
        if let Some(report) = scanned.remove(t).filter(|r| r.valid) {
            print_report(&report);
            continue;
        }
        let head = match store.head(t).await {
            // An anchored chain that is not there does not reach its anchor.
            Ok(None) if anchors.contains_key(t) => {
                let anchor = anchors.get(t).cloned();
                let report = Verifier::new(t.clone()).with_anchor(anchor).finish(None);
                print_report(&report);
                broken += 1;
                continue;
            }
            Ok(None) => {
                eprintln!("verify: tenant {t} has no receipts");
                return ExitCode::from(EX_NOINPUT);
            }
            // Damaged data where the head is read: this chain is broken, the others are
            // still checked.
            Err(e @ StoreError::Corrupt(_)) => {
                eprintln!("chain of {t} is BROKEN: its head cannot be read: {e}");
                broken += 1;
                continue;
            }
            Err(e) => {
                eprintln!("verify: {e}");
                return ExitCode::from(EX_UNAVAILABLE);
            }
            Ok(Some(head)) => head.seq,
        };
        let progress = |n: u64| {
            if tty {
                let line = progress_line(t, i + 1, tenants.len(), n, head);
                eprint!("\r\x1b[2K{line}");
                let _ = std::io::stderr().flush();
            }
        };
        match verify_chain(&store, t, anchors.get(t).cloned(), 5000, progress).await {
            Ok(report) => {
                if tty {
                    eprint!("\r\x1b[2K");
                }
                if !print_report(&report) {
                    broken += 1;
                }
            }
            Err(e @ StoreError::Corrupt(_)) => {
                eprintln!("chain of {t} is BROKEN: it cannot be read: {e}");
                broken += 1;
            }
            Err(e) => {
                eprintln!("verify: {e}");
                return ExitCode::from(EX_UNAVAILABLE);
            }
        }
    }
    // An anchored tenant the ledger has no chain for: its chain does not reach the anchor.
    let listed: std::collections::HashSet<&str> = tenants.iter().map(String::as_str).collect();
    let unreached = unreached_anchors(&anchors, |t| listed.contains(t));
    for report in &unreached {
        print_report(report);
    }
    verdict(tenants.len() + unreached.len(), broken + unreached.len())
}

/// `backup --to FILE`: the SQLite ledger copied while the service may run, then every chain in
/// the copy verified as `verify --all` would (a broken chain is copied as it is, and reported).
fn backup(settings: Settings, to: std::path::PathBuf) -> ExitCode {
    use tai_autonomics::receipts::backup::{backup, BackupError};
    if settings.ledger.backend != LedgerBackend::Sqlite {
        eprintln!(
            "backup: copies the SQLite ledger, and this configuration's is on Firestore: use \
             Firestore's managed export (gcloud firestore export gs://BUCKET)"
        );
        return ExitCode::from(EX_USAGE);
    }
    let bytes = match backup(&settings.ledger.sqlite_path, &to) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("backup: {e}");
            return ExitCode::from(match e {
                BackupError::NoLedger(_) => EX_NOINPUT,
                BackupError::Exists(_) | BackupError::Write { .. } => EX_CANTCREAT,
                BackupError::Read { .. } => EX_UNAVAILABLE,
                BackupError::Damaged { .. } => EX_DATAERR,
            });
        }
    };
    println!(
        "{}",
        serde_json::json!({"backup": to.display().to_string(), "bytes": bytes})
    );
    eprintln!(
        "backup: wrote {} ({bytes} bytes); verifying every chain in it",
        to.display()
    );
    // Read-only: the copy stays as written (rollback journal, nothing beside it).
    actix_web::rt::System::new().block_on(async move {
        match SqliteStore::open_read_only(&to) {
            Ok(store) => verify_on(AnyStore::Sqlite(store), None, HashMap::new()).await,
            Err(e) => {
                eprintln!("backup: {e}");
                ExitCode::from(EX_UNAVAILABLE)
            }
        }
    })
}

/// `restore --from FILE`: every chain in the backup verified as `verify --all` would, against
/// `anchors` (their reports are printed: the restored ledger's heads), then the ledger replaced
/// with it, the old one kept beside it. A backup with a broken chain, one that does not reach
/// its anchor, or one that cannot be read changes nothing.
fn restore(
    settings: Settings,
    from: std::path::PathBuf,
    anchors: HashMap<String, Anchor>,
) -> ExitCode {
    use tai_autonomics::receipts::restore::{restore, RestoreError};
    if settings.ledger.backend != LedgerBackend::Sqlite {
        eprintln!(
            "restore: replaces the SQLite ledger, and this configuration's is on Firestore: use \
             Firestore's managed import (gcloud firestore import gs://BUCKET/EXPORT)"
        );
        return ExitCode::from(EX_USAGE);
    }
    if !from.is_file() {
        eprintln!("restore: there is no backup at {}", from.display());
        return ExitCode::from(EX_NOINPUT);
    }
    let ledger = settings.ledger.sqlite_path.clone();
    eprintln!(
        "restore: verifying every chain in {} before it replaces {}",
        from.display(),
        ledger.display()
    );
    let checked = actix_web::rt::System::new().block_on(async {
        match SqliteStore::open_read_only(&from) {
            Ok(store) => verify_on(AnyStore::Sqlite(store), None, anchors).await,
            Err(e) => {
                eprintln!(
                    "restore: {} is not a ledger this build reads: {e}",
                    from.display()
                );
                ExitCode::from(EX_DATAERR)
            }
        }
    });
    if checked != ExitCode::SUCCESS {
        eprintln!("restore: the ledger was not changed");
        return checked;
    }
    match restore(&from, &ledger) {
        Ok(done) => {
            println!(
                "{}",
                serde_json::json!({
                    "restored": from.display().to_string(),
                    "ledger": ledger.display().to_string(),
                    "bytes": done.bytes,
                    "replaced": done.replaced.as_ref().map(|p| p.display().to_string()),
                })
            );
            match &done.replaced {
                Some(old) => eprintln!(
                    "restore: {} now holds {}; the ledger it replaced is kept as {}",
                    ledger.display(),
                    from.display(),
                    old.display()
                ),
                None => eprintln!(
                    "restore: {} now holds {} (there was no ledger before)",
                    ledger.display(),
                    from.display()
                ),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("restore: {e}");
            ExitCode::from(match e {
                RestoreError::NoBackup(_) => EX_NOINPUT,
                RestoreError::SameFile(_) => EX_USAGE,
                RestoreError::InUse(_) => EX_TEMPFAIL,
                RestoreError::NotADatabase { .. } => EX_DATAERR,
                RestoreError::Read { .. } => EX_UNAVAILABLE,
                RestoreError::Write { .. } => EX_CANTCREAT,
            })
        }
    }
}

/// Prints a chain's report (JSON on stdout, a break on stderr); whether the chain is valid.
fn print_report(report: &tai_autonomics::receipts::VerifyReport) -> bool {
    if let Some(b) = &report.first_broken {
        eprintln!(
            "chain of {} is BROKEN at seq {}: {}",
            report.tenant_id, b.seq, b.reason
        );
    }
    println!("{}", serde_json::to_string(report).unwrap_or_default());
    report.valid
}

/// The closing line of `verify`, and its exit code.
fn verdict(chains: usize, broken: usize) -> ExitCode {
    eprintln!("verified {chains} chain(s): {broken} broken");
    if broken > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `verify --file`: the chains in saved JSON, without configuration or store.
fn verify_file(path: &std::path::Path, anchors: &HashMap<String, Anchor>) -> ExitCode {
    let input: Box<dyn std::io::Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        match std::fs::File::open(path) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("verify: cannot read {}: {e}", path.display());
                return ExitCode::from(EX_NOINPUT);
            }
        }
    };
    use tai_autonomics::receipts::offline::OfflineError;
    match tai_autonomics::receipts::offline::verify_json(std::io::BufReader::new(input), anchors) {
        Err(OfflineError::Read(e)) => {
            eprintln!("verify: cannot read {}: {e}", path.display());
            ExitCode::from(EX_NOINPUT)
        }
        Err(e) => {
            eprintln!("verify: {}: {e}", path.display());
            ExitCode::from(EX_DATAERR)
        }
        Ok(reports) if reports.is_empty() => {
            eprintln!("verify: {} holds no receipts", path.display());
            ExitCode::from(EX_NOINPUT)
        }
        Ok(reports) => {
            let broken = reports.iter().filter(|r| !print_report(r)).count();
            verdict(reports.len(), broken)
        }
    }
}

/// `verify`'s progress bar on a terminal: the chain (n of how many), then the receipts checked
/// against the head seq read before the check began (a live chain may grow past it meanwhile).
/// A long tenant id is cut to 16 characters, so that the line stays within 80 columns (up to
/// ten million receipts in one of a thousand chains): a line that wraps is not redrawn in place.
fn progress_line(tenant: &str, chain: usize, chains: usize, checked: u64, head: u64) -> String {
    const WIDTH: u64 = 16;
    let shown = match tenant.chars().nth(16) {
        Some(_) => format!("{}…", tenant.chars().take(15).collect::<String>()),
        None => tenant.to_owned(),
    };
    let of = head.max(checked).max(1);
    let filled = (checked * WIDTH / of) as usize;
    format!(
        "verifying {shown} ({chain}/{chains}) [{}{}] {:>3}% {checked}/{head}",
        "#".repeat(filled),
        "-".repeat(WIDTH as usize - filled),
        checked * 100 / of
    )
}

/// The supervision tree without the HTTP server, and the MCP registry on stdin/stdout. Whoever
/// starts the process owns it, so calls run as admin. Ends when the client closes stdin.
///
/// Without the ledger audit: the process lives as long as one client's session, has no
/// `/metrics` or alert to report through, and would read the whole ledger, which a service
/// may be auditing already, 10 s into every session.
async fn mcp_stdio(mut settings: Settings) -> anyhow::Result<()> {
    use rmcp::ServiceExt as _;
    use tai_autonomics::mcp::TaiMcp;
    settings.ledger.audit_interval_secs = 0;
    let tree = tai_autonomics::tree::start(&settings).await?;
    tracing::info!("MCP over stdio: ready");
    let relay = tai_autonomics::mcp::stdio::relay(tokio::io::stdin(), tokio::io::stdout());
    // A client that does not close stdin in time sends SIGTERM (the MCP stdio transport's
    // shutdown); it stops the server as a closed stdin does, the tree shut down in order. Its
    // handlers are in place before the handshake, so that a signal that comes before the
    // client's `initialize` stops the process as cleanly as one after it.
    let (told, mut signalled) = tokio::sync::watch::channel(None::<&'static str>);
    let signals = actix_web::rt::spawn(async move {
        let _ = told.send(Some(tai_autonomics::startup::wait_for_signal().await));
    });
    let handshake = TaiMcp::with_caller(
        tree.mcp.clone(),
        tai_autonomics::auth::Caller::Admin,
        settings.mcp.tool_names,
    )
    .serve(relay.transport);
    let server = tokio::select! {
        served = handshake => served,
        _ = signalled.changed() => {
            let signal = signalled.borrow().unwrap_or("none");
            tracing::info!(signal, "MCP over stdio: stopping on a signal, before the client initialized");
            signals.abort();
            stop_stdio_tree(&tree).await;
            return Ok(());
        }
    };
    let server = match server {
        Ok(server) => server,
        Err(e) => {
            // The client went away, or spoke no MCP, before it initialized: the tree is
            // stopped in order all the same, and the process ends non-zero.
            signals.abort();
            stop_stdio_tree(&tree).await;
            return Err(e.into());
        }
    };
    // As `serve`: a root supervisor that gives up ends the process (non-zero), rather than
    // leaving a client talking to a server whose every call fails.
    let gave_up: std::sync::Arc<std::sync::OnceLock<String>> = Default::default();
    let (root, cancel, gave) = (
        tree.root.clone(),
        server.cancellation_token(),
        gave_up.clone(),
    );
    let watch = actix_web::rt::spawn(async move {
        let reason = root
            .join()
            .await
            .map_or_else(|| "unknown".into(), |r| r.to_string());
        tracing::error!(%reason, "the supervision tree exited on its own; stopping");
        let _ = gave.set(reason);
        cancel.cancel();
    });
    let cancel = server.cancellation_token();
    let mut on_signal = signalled.clone();
    let stop_on_signal = actix_web::rt::spawn(async move {
        if on_signal.changed().await.is_ok() {
            cancel.cancel();
        }
    });
    let reason = server.waiting().await;
    watch.abort();
    stop_on_signal.abort();
    signals.abort();
    let signal = *signalled.borrow();
    match (gave_up.get(), signal) {
        (Some(_), _) => {}
        (None, Some(signal)) => tracing::info!(signal, "MCP over stdio: stopping on a signal"),
        (None, None) => tracing::info!(?reason, "MCP over stdio: the client went away; stopping"),
    }
    // The last answers are on their way to stdout. After a signal stdin is still open, so the
    // relay does not end by itself: what is queued is written within this shorter wait.
    let flush = if signal.is_some() { 250 } else { 2000 };
    let _ = actix_web::rt::time::timeout(std::time::Duration::from_millis(flush), relay.done).await;
    stop_stdio_tree(&tree).await;
    match gave_up.get() {
        Some(reason) => anyhow::bail!("the supervision tree exited on its own ({reason})"),
        None => Ok(()),
    }
}

/// `mcp-stdio`'s tree stopped in order, then, as a service's stop does, the log copied into
/// the ledger file and the store closed.
async fn stop_stdio_tree(tree: &tai_autonomics::tree::Tree) {
    tree.root.shutdown().await;
    tree.ledger.store().at_stop().await;
    tree.ledger_arbiter.stop();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::TokenDigest { token }) = &cli.command {
        let Some(token) = token
            .clone()
            .or_else(|| std::env::var("TAI_TOKEN").ok())
            .filter(|t| !t.is_empty())
        else {
            eprintln!("token-digest: give the token as an argument or in TAI_TOKEN");
            return ExitCode::from(EX_USAGE);
        };
        println!("{}", tai_autonomics::auth::token_digest(&token));
        return ExitCode::SUCCESS;
    }
    let anchors = match &cli.command {
        Some(Command::Verify {
            anchor,
            anchors,
            tenant,
            ..
        }) => match all_anchors(anchor, anchors.as_deref(), tenant.as_deref()) {
            Ok(anchors) => anchors,
            Err((m, code)) => {
                eprintln!("verify: {m}");
                return ExitCode::from(code);
            }
        },
        Some(Command::Restore {
            anchors: Some(file),
            ..
        }) => match all_anchors(&[], Some(file), None) {
            Ok(anchors) => anchors,
            Err((m, code)) => {
                eprintln!("restore: {m}");
                return ExitCode::from(code);
            }
        },
        _ => HashMap::new(),
    };
    if let Some(Command::Verify {
        file: Some(path), ..
    }) = &cli.command
    {
        return verify_file(path, &anchors);
    }
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    export_emulator_hosts(&settings);
    let mut settings = settings;
    let detected = if matches!(
        cli.command,
        Some(Command::Config | Command::TokenDigest { .. })
    ) {
        None
    } else {
        match find_project(&mut settings) {
            Ok(found) => found,
            Err(line) => {
                eprintln!("{line}");
                return ExitCode::from(EX_CONFIG);
            }
        }
    };
    let told = |detected: &Option<String>| {
        if let Some(project) = detected {
            tracing::info!(%project, "Firestore project taken from the environment");
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Verify { tenant, .. } => verify(settings, tenant, anchors),
        Command::Backup { to } => backup(settings, to),
        Command::Restore { from, .. } => restore(settings, from, anchors),
        Command::TokenDigest { .. } => ExitCode::SUCCESS,
        Command::McpStdio => {
            let named = name_instance(&mut settings);
            telemetry::init_tracing(&settings, true);
            telemetry::install_panic_hook();
            told(&detected);
            named.log(&settings);
            let runtime = actix_web::rt::System::new();
            let code = match runtime.block_on(mcp_stdio(settings)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("tai-autonomics mcp-stdio: {e:#}");
                    1
                }
            };
            // Everything is stopped and written by now. The runtime is not dropped: its drop
            // waits for the thread that reads stdin, which a client that stopped us with a
            // signal (or whose tree gave up) has not closed, so the process never ended.
            let _ = std::io::stdout().flush();
            std::process::exit(code)
        }
        Command::Config => {
            println!("{}", settings.masked_json());
            ExitCode::SUCCESS
        }
        Command::Serve => {
            let named = name_instance(&mut settings);
            telemetry::init_tracing(&settings, false);
            telemetry::install_panic_hook();
            told(&detected);
            named.log(&settings);
            if let Some((from, to)) = tai_autonomics::startup::raise_open_file_limit() {
                tracing::info!(from, to, "open-file limit raised to the hard limit");
            }
            let result = actix_web::rt::System::new().block_on(async move {
                let app = Application::build(settings).await?;
                app.run_until_stopped(true).await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "tai-autonomics stopped with an error"
                    );
                    eprintln!("tai-autonomics: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::progress_line;

    #[test]
    fn the_progress_bar_fills_with_the_receipts_checked() {
        assert_eq!(
            progress_line("acme", 2, 5, 0, 10_000),
            "verifying acme (2/5) [----------------]   0% 0/10000"
        );
        assert_eq!(
            progress_line("acme", 2, 5, 5_000, 10_000),
            "verifying acme (2/5) [########--------]  50% 5000/10000"
        );
        assert_eq!(
            progress_line("acme", 5, 5, 10_000, 10_000),
            "verifying acme (5/5) [################] 100% 10000/10000"
        );
        // A chain that grew while it was checked stays at a full bar; an empty head divides by one.
        assert!(progress_line("acme", 1, 1, 12_000, 10_000).contains("[################] 100%"));
        assert!(progress_line("acme", 1, 1, 0, 0).contains("  0% 0/0"));
    }

    #[test]
    fn a_long_tenant_id_is_cut_so_that_the_line_fits_80_columns() {
        let tenant = format!("a{}", "b".repeat(62));
        let line = progress_line(&tenant, 999, 1000, 9_999_999, 10_000_000);
        assert!(
            line.starts_with("verifying abbbbbbbbbbbbbb… (999/1000)"),
            "{line}"
        );
        assert!(
            line.chars().count() <= 80,
            "{} columns: {line}",
            line.chars().count()
        );
        assert!(progress_line("sixteen-chars-id", 1, 1, 0, 1).contains(" sixteen-chars-id "));
    }
}
