//! The MCP tool table (names verbatim from the issue), pure: each tool's `name`, `title`,
//! `description`, `inputSchema`, `outputSchema` and annotations, and the check of call
//! arguments against the input schema (missing required, wrong type, value out of the enum or
//! range, unknown property), with a message that says what is wrong; and the names' two
//! spellings (SPEC §10's dotted ones, or underscored for clients that refuse a dot).

use std::borrow::Cow;

use serde_json::{json, Map, Value};

use crate::config::ToolNames;

/// Who may call a tool (checked against the caller's token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone with a valid token.
    Anyone,
    /// Admin, operator, or the tenant named in `tenant_id`.
    TenantRead,
    /// Admin or the tenant named in `tenant_id`.
    TenantAct,
    /// Admin or operator.
    Operator,
    /// Admin only.
    Admin,
}

/// One tool.
pub struct ToolDef {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub access: Access,
    pub input: Value,
    pub output: Value,
    /// `readOnlyHint`, `destructiveHint`, `idempotentHint`, `openWorldHint`.
    pub hints: (bool, bool, bool, bool),
}

/// A tool's name as `tools/list` spells it: SPEC §10's as written, or with every dot an
/// underscore (Claude Desktop, GitHub Copilot CLI and the OpenAI API refuse a tool list with a
/// name outside `^[a-zA-Z0-9_-]{1,64}$`).
pub fn spelled(name: &str, names: ToolNames) -> Cow<'_, str> {
    match names {
        ToolNames::Dotted => Cow::Borrowed(name),
        ToolNames::Underscored => Cow::Owned(name.replace('.', "_")),
    }
}

/// The tool a call names, in either spelling.
pub fn find<'a>(tools: &'a [ToolDef], name: &str) -> Option<&'a ToolDef> {
    tools
        .iter()
        .find(|d| d.name == name || spelled(d.name, ToolNames::Underscored) == name)
}

impl ToolDef {
    /// The MCP `Tool` object, its name spelled as `names` says.
    pub fn to_json(&self, names: ToolNames) -> Value {
        let (read_only, destructive, idempotent, open_world) = self.hints;
        json!({
            "name": spelled(self.name, names),
            "title": self.title,
            "description": self.description,
            "inputSchema": self.input,
            "outputSchema": self.output,
            "annotations": {
                "title": self.title,
                "readOnlyHint": read_only,
                "destructiveHint": destructive,
                "idempotentHint": idempotent,
                "openWorldHint": open_world,
            },
        })
    }

    /// The SKU tool a tenant must be entitled to for this call (SPEC §5 gates): the audit log is
    /// the enterprise `audit_log` tool; verifying one receipt is `receipts_verify`; the others
    /// need only an active entitlement.
    pub fn gate_tool(&self, args: &Value) -> Option<&'static str> {
        match self.name {
            "taiea.audit.log" => Some("audit_log"),
            "taiea.receipts.verify_chain" if args.get("receipt_id").is_some() => {
                Some("receipts_verify")
            }
            _ => None,
        }
    }

    /// Whether the tool acts on one tenant (its calls leave a `tool_call` receipt there).
    pub fn tenant_scoped(&self) -> bool {
        matches!(self.access, Access::TenantRead | Access::TenantAct)
            || self.name == "taiea.entitlement.apply_event"
    }
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

/// An output schema: the listed members, more allowed (a tool may add a receipt id or detail).
fn output(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required})
}

fn tenant_property() -> Value {
    json!({"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,62}$", "description": "The tenant id."})
}

fn any_object() -> Value {
    json!({"type": "object"})
}

/// The table, in a stable order.
pub fn table() -> Vec<ToolDef> {
    // (read-only, destructive, idempotent, open-world)
    const READ: (bool, bool, bool, bool) = (true, false, true, false);
    vec![
        ToolDef {
            name: "taiea.health.check",
            title: "Health check",
            description: "The service's health: status, node, uptime and the checks of GET /health.",
            access: Access::Anyone,
            input: object(json!({}), &[]),
            output: output(
                json!({"status": {"type": "string"}, "node": {"type": "string"}, "uptime_ms": {"type": "integer"}, "checks": any_object()}),
                &["status", "node", "checks"],
            ),
            hints: READ,
        },
        ToolDef {
            name: "taiea.support.model",
            title: "Support model",
            description: "The static support tiers (basic, professional, enterprise) with response times, availability and channels.",
            access: Access::Anyone,
            input: object(json!({}), &[]),
            output: output(
                json!({"support_model": {"type": "string"}, "tiers": {"type": "array"}}),
                &["support_model", "tiers"],
            ),
            hints: READ,
        },
        ToolDef {
            name: "taiea.entitlement.apply_event",
            title: "Apply an entitlement event",
            description: "Changes a tenant's entitlement: provision (grant; event_data.sku, entitlement_id, expires_at), deprovision (revoke, final), suspend, resume, modify (SKU change; event_data.sku). Without event_data.entitlement_id the event acts on the tenant's own entitlement; another id is refused. Each change is a receipt in the tenant's chain.",
            access: Access::Admin,
            input: object(
                json!({
                    "tenant_id": tenant_property(),
                    "event_type": {"type": "string", "enum": ["provision", "deprovision", "suspend", "resume", "modify"]},
                    "event_data": {"type": "object", "description": "sku, entitlement_id, customer_id, reason, expires_at (as POST /marketplace)"},
                }),
                &["tenant_id", "event_type"],
            ),
            output: output(
                json!({"tenant_id": {"type": "string"}, "status": {"type": "string"}, "entitlement": any_object(), "receipt": any_object()}),
                &["tenant_id", "status", "receipt"],
            ),
            hints: (false, true, false, false),
        },
        ToolDef {
            name: "taiea.receipts.verify_chain",
            title: "Verify a receipt chain",
            description: "Recomputes every hash of the tenant's chain and checks seq continuity and prev_hash links; with receipt_id, also that this receipt is in the chain and its hash matches its content; with anchor_seq and anchor_hash (a head_seq and head_hash recorded from an earlier check), also that the chain still holds that receipt, which a ledger sealed again after a change does not.",
            access: Access::TenantRead,
            input: object(
                json!({"tenant_id": tenant_property(), "receipt_id": {"type": "string", "maxLength": 64},
                    "anchor_seq": {"type": "integer", "minimum": 1},
                    "anchor_hash": {"type": "string", "minLength": 64, "maxLength": 64, "description": "64 lowercase hex digits."}}),
                &["tenant_id"],
            ),
            output: output(
                json!({"tenant_id": {"type": "string"}, "valid": {"type": "boolean"}, "receipts_checked": {"type": "integer"}, "head_seq": {"type": "integer"}, "head_hash": {"type": "string"}, "first_broken": {"anyOf": [{"type": "object"}, {"type": "null"}]}, "anchor": {"type": "object"}, "receipt": {"anyOf": [{"type": "object"}, {"type": "null"}]}}),
                &["tenant_id", "valid", "receipts_checked", "head_seq"],
            ),
            hints: READ,
        },
        ToolDef {
            name: "taiea.governor.state",
            title: "Governor state",
            description: "The tenant's governor: state (boot, stable, warning, intervening, refusing), seq, head hash, action in flight, postponed signals.",
            access: Access::TenantRead,
            input: object(json!({"tenant_id": tenant_property()}), &["tenant_id"]),
            output: output(
                json!({"tenant_id": {"type": "string"}, "state": {"type": "string"}, "seq": {"type": "integer"}, "head_hash": {"type": "string"}, "action_in_flight": {"anyOf": [{"type": "object"}, {"type": "null"}]}, "postponed": {"type": "integer"}, "entitlement_active": {"type": "boolean"}}),
                &["tenant_id", "state", "seq"],
            ),
            hints: READ,
        },
        ToolDef {
            name: "taiea.governor.signal",
            title: "Send a signal",
            description: "Sends a metric value to the tenant's governor, which decides (stable, warning, an action at the action threshold) and records the decision as a receipt.",
            access: Access::TenantAct,
            input: object(
                json!({
                    "tenant_id": tenant_property(),
                    "metric": {"type": "string", "minLength": 1, "maxLength": 128},
                    "value": {"type": "number"},
                    "timestamp_ms": {"type": "integer", "minimum": 0},
                    "idempotency_key": {"type": "string", "pattern": "^[!-~]{1,128}$",
                        "description": "One decision per key and tenant: a repeat of the same signal gets the first call's receipt (decision duplicate); another signal with a used key is an error (idempotency_key_reused)"},
                }),
                &["tenant_id", "metric", "value"],
            ),
            output: output(
                json!({"decision": {"type": "string"}, "state": {"type": "string"}, "postponed": {"type": "boolean"}, "reason": {"anyOf": [{"type": "string"}, {"type": "null"}]}, "receipt": {"anyOf": [{"type": "object"}, {"type": "null"}]},
                    "receipts": {"type": "array", "items": {"type": "object"}, "description": "Every receipt appended for the signal, in order (the last is receipt)"}}),
                &["decision", "state"],
            ),
            hints: (false, false, false, false),
        },
        ToolDef {
            name: "taiea.governors.list",
            title: "List governors",
            description: "The running governors in tenant order, paged (hibernated governors are rebuilt on demand and not listed).",
            access: Access::Operator,
            input: object(
                json!({"limit": {"type": "integer", "minimum": 1, "maximum": 1000}, "after": {"type": "string"}}),
                &[],
            ),
            output: output(
                json!({"total": {"type": "integer"}, "governors": {"type": "array"}, "next_after": {"anyOf": [{"type": "string"}, {"type": "null"}]}}),
                &["total", "governors"],
            ),
            hints: READ,
        },
        ToolDef {
            name: "taiea.supervision.tree",
            title: "Supervision tree",
            description: "The supervision tree: supervisors, strategies, intensities, children with their state, restarts and last exit.",
            access: Access::Operator,
            input: object(
                json!({"limit": {"type": "integer", "minimum": 1, "maximum": 1000}}),
                &[],
            ),
            output: output(
                json!({"name": {"type": "string"}, "strategy": {"type": "string"}, "children": {"type": "array"}}),
                &["name", "children"],
            ),
            hints: READ,
        },
        ToolDef {
            name: "taiea.audit.log",
            title: "Audit log",
            description: "The tenant's receipts in chain order, paged by seq (next_after_seq is the cursor).",
            access: Access::TenantRead,
            input: object(
                json!({"tenant_id": tenant_property(), "after_seq": {"type": "integer", "minimum": 0}, "limit": {"type": "integer", "minimum": 1, "maximum": 1000}}),
                &["tenant_id"],
            ),
            output: output(
                json!({"tenant_id": {"type": "string"}, "head_seq": {"type": "integer"}, "receipts": {"type": "array"}, "next_after_seq": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}),
                &["tenant_id", "receipts"],
            ),
            hints: READ,
        },
    ]
}

/// Checks `args` against `schema` (the subset the table uses); the message names the argument.
pub fn validate(schema: &Value, args: &Value) -> Result<(), String> {
    let Some(obj) = args.as_object() else {
        return Err("arguments must be an object".into());
    };
    let empty = Map::new();
    let props = schema["properties"].as_object().unwrap_or(&empty);
    for r in schema["required"].as_array().into_iter().flatten() {
        let name = r.as_str().unwrap_or_default();
        if !obj.contains_key(name) {
            return Err(format!("missing required argument `{name}`"));
        }
    }
    for (name, value) in obj {
        let Some(p) = props.get(name) else {
            return Err(format!("unknown argument `{name}`"));
        };
        check(name, p, value)?;
    }
    Ok(())
}

fn check(name: &str, p: &Value, v: &Value) -> Result<(), String> {
    let want = p["type"].as_str();
    let ok = match want {
        Some("string") => v.is_string(),
        Some("number") => v.as_f64().is_some_and(f64::is_finite),
        // JSON Schema's integer: any number with no fraction (`5.0` too).
        Some("integer") => {
            v.is_i64()
                || v.is_u64()
                || v.as_f64()
                    .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
        }
        Some("boolean") => v.is_boolean(),
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        _ => true,
    };
    if !ok {
        return Err(format!(
            "argument `{name}` must be {} (got {})",
            match want {
                Some("integer") => "an integer",
                Some("object") => "an object",
                Some("array") => "an array",
                Some(t) => t,
                None => "valid",
            },
            kind(v)
        ));
    }
    if v.is_object() || v.is_array() {
        crate::intake::check_recorded_json(&format!("argument `{name}`"), v)?;
    }
    if let (Some(allowed), Some(s)) = (p["enum"].as_array(), v.as_str()) {
        if !allowed.iter().any(|a| a == s) {
            let list: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
            return Err(format!(
                "argument `{name}` must be one of {}",
                list.join(", ")
            ));
        }
    }
    if let Some(s) = v.as_str() {
        let len = s.chars().count() as u64;
        if p["minLength"].as_u64().is_some_and(|m| len < m) {
            return Err(format!("argument `{name}` is too short"));
        }
        if p["maxLength"].as_u64().is_some_and(|m| len > m) {
            return Err(format!("argument `{name}` is too long"));
        }
        if p["pattern"].is_string()
            && name == "tenant_id"
            && crate::tenant::TenantId::parse(s).is_err()
        {
            return Err(format!(
                "argument `{name}` must match ^[a-z0-9][a-z0-9._-]{{0,62}}$"
            ));
        }
    }
    if let Some(n) = v.as_f64() {
        if p["minimum"].as_f64().is_some_and(|m| n < m)
            || p["maximum"].as_f64().is_some_and(|m| n > m)
        {
            return Err(match (&p["minimum"], &p["maximum"]) {
                (Value::Null, max) => format!("argument `{name}` must be at most {max}"),
                (min, Value::Null) => format!("argument `{name}` must be at least {min}"),
                (min, max) => format!("argument `{name}` is out of range ({min}..={max})"),
            });
        }
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_the_nine_tools_with_schemas_and_truthful_hints() {
        let t = table();
        let names: Vec<&str> = t.iter().map(|d| d.name).collect();
        assert_eq!(
            names,
            [
                "taiea.health.check",
                "taiea.support.model",
                "taiea.entitlement.apply_event",
                "taiea.receipts.verify_chain",
                "taiea.governor.state",
                "taiea.governor.signal",
                "taiea.governors.list",
                "taiea.supervision.tree",
                "taiea.audit.log"
            ]
        );
        for d in &t {
            let j = d.to_json(ToolNames::Dotted);
            assert_eq!(j["inputSchema"]["type"], "object", "{}", d.name);
            assert_eq!(j["outputSchema"]["type"], "object", "{}", d.name);
            let a = &j["annotations"];
            // Only the two tools that change something are not read-only.
            let writes = matches!(
                d.name,
                "taiea.entitlement.apply_event" | "taiea.governor.signal"
            );
            assert_eq!(a["readOnlyHint"], !writes, "{}", d.name);
            assert_eq!(a["openWorldHint"], false, "{}", d.name);
        }
    }

    #[test]
    fn underscored_names_suit_strict_clients_and_a_call_may_use_either_spelling() {
        let t = table();
        // `^[a-zA-Z0-9_-]{1,64}$`, what the strict clients check.
        let strict = |n: &str| {
            (1..=64).contains(&n.len())
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        let mut seen = std::collections::HashSet::new();
        for d in &t {
            let listed = d.to_json(ToolNames::Underscored)["name"].clone();
            let name = listed.as_str().unwrap();
            assert!(strict(name), "{name}");
            assert!(seen.insert(name.to_owned()), "{name} twice");
            assert_eq!(find(&t, name).map(|f| f.name), Some(d.name));
            assert_eq!(find(&t, d.name).map(|f| f.name), Some(d.name));
            assert_eq!(d.to_json(ToolNames::Dotted)["name"], d.name);
        }
        assert_eq!(
            spelled("taiea.governor.signal", ToolNames::Underscored),
            "taiea_governor_signal"
        );
        // One spelling or the other, not a mix, and nothing else.
        for name in [
            "taiea.governor_signal",
            "taiea-governor-signal",
            "governor.signal",
            "",
        ] {
            assert!(find(&t, name).is_none(), "{name}");
        }
    }

    #[test]
    fn arguments_are_checked_against_the_schema() {
        let t = table();
        let signal = t
            .iter()
            .find(|d| d.name == "taiea.governor.signal")
            .unwrap();
        assert!(validate(
            &signal.input,
            &json!({"tenant_id": "acme", "metric": "cpu", "value": 50})
        )
        .is_ok());
        for (args, says) in [
            (
                json!({"tenant_id": "acme", "metric": "cpu"}),
                "missing required argument `value`",
            ),
            (
                json!({"tenant_id": "acme", "metric": "cpu", "value": "high"}),
                "`value` must be number",
            ),
            (
                json!({"tenant_id": "Bad Id", "metric": "cpu", "value": 1}),
                "`tenant_id` must match",
            ),
            (
                json!({"tenant_id": "acme", "metric": "", "value": 1}),
                "`metric` is too short",
            ),
            (
                json!({"tenant_id": "acme", "metric": "cpu", "value": 1, "x": 1}),
                "unknown argument `x`",
            ),
            (
                json!({"tenant_id": "acme", "metric": "cpu", "value": 1, "timestamp_ms": -5}),
                "`timestamp_ms` must be at least 0",
            ),
            (
                json!({"tenant_id": "acme", "metric": "cpu", "value": 1, "timestamp_ms": 1.5}),
                "`timestamp_ms` must be an integer",
            ),
            (json!([1]), "must be an object"),
        ] {
            let e = validate(&signal.input, &args).unwrap_err();
            assert!(e.contains(says), "{e} should say {says}");
        }
        // JSON Schema's integer is any number without a fraction.
        validate(
            &signal.input,
            &json!({"tenant_id": "acme", "metric": "cpu", "value": 1, "timestamp_ms": 1.7e12}),
        )
        .unwrap();
        let apply = t
            .iter()
            .find(|d| d.name == "taiea.entitlement.apply_event")
            .unwrap();
        let e = validate(
            &apply.input,
            &json!({"tenant_id": "acme", "event_type": "explode"}),
        )
        .unwrap_err();
        assert!(e.contains("one of provision, deprovision"), "{e}");
    }
}
