//! The gates every governed input passes, in order, first refusal wins (SPEC §5). Pure: the
//! caller supplies the entitlement, the time and the input; the result says what each gate
//! decided, for the receipt's `metadata.gates`.
//!
//! 1. `entitlement`: the tenant's entitlement is active and not expired;
//! 2. `tool`: the tool (or action) is entitled for the tenant, and the tenant holds the IAM
//!    role the tool requires;
//! 3. `preconditions`: the input carries what the tool needs (`entitlement_apply` needs
//!    `customer_id` and `feature_key`; `receipts_verify` needs `receipt_id`).

use serde_json::{Map, Value};

use super::model::Entitlement;

/// The IAM role a tool requires (actions not listed need `read_only`).
pub fn required_role(tool: &str) -> &'static str {
    match tool {
        "entitlement_apply" => "write_rollback",
        "policy_evaluate" | "audit_log" | "custom_integrations" => "admin",
        _ => "read_only",
    }
}

/// What the gates decided.
#[derive(Debug, Clone, PartialEq)]
pub struct GateOutcome {
    /// `None` when every gate passed; else the refusing gate's reason (snake_case).
    pub refusal: Option<&'static str>,
    /// `{"entitlement": "pass", "tool": "refuse", "preconditions": "skipped"}` for the receipt.
    pub gates: Value,
}

impl GateOutcome {
    pub fn passed(&self) -> bool {
        self.refusal.is_none()
    }
}

/// Runs the gates for `tool` with `args` against `entitlement` at `now` (RFC 3339). `tool` is
/// `None` for plain signals, which need only the entitlement gate.
pub fn evaluate(
    entitlement: Option<&Entitlement>,
    now: &str,
    tool: Option<&str>,
    args: &Value,
) -> GateOutcome {
    let mut gates = Map::new();
    let mut refusal = None;
    let mut record =
        |name: &str, result: Result<(), &'static str>, refusal: &mut Option<&'static str>| {
            let verdict = match (refusal.is_some(), result) {
                (true, _) => "skipped",
                (false, Ok(())) => "pass",
                (false, Err(reason)) => {
                    *refusal = Some(reason);
                    "refuse"
                }
            };
            gates.insert(name.to_owned(), Value::from(verdict));
        };

    let entitled = match entitlement {
        None => Err("tenant_not_entitled"),
        Some(e) if e.status != super::model::Status::Active => Err(match e.status {
            super::model::Status::Suspended => "entitlement_suspended",
            _ => "entitlement_revoked",
        }),
        Some(e) if !e.is_active(now) => Err("entitlement_expired"),
        Some(_) => Ok(()),
    };
    record("entitlement", entitled, &mut refusal);

    if let Some(tool) = tool {
        let allowed = match entitlement {
            Some(e) if !e.tools.contains(tool) => Err("tool_not_entitled"),
            Some(e) if !e.iam_roles.contains(required_role(tool)) => Err("role_insufficient"),
            Some(_) => Ok(()),
            None => Err("tool_not_entitled"),
        };
        record("tool", allowed, &mut refusal);
        let has = |k: &str| {
            args.get(k)
                .is_some_and(|v| !v.is_null() && v.as_str() != Some(""))
        };
        let pre = match tool {
            "entitlement_apply" if !has("customer_id") => Err("missing_customer_id"),
            "entitlement_apply" if !has("feature_key") => Err("missing_feature_key"),
            "receipts_verify" if !has("receipt_id") => Err("missing_receipt_id"),
            _ => Ok(()),
        };
        record("preconditions", pre, &mut refusal);
    }
    GateOutcome {
        refusal,
        gates: Value::Object(gates),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entitlements::model::{Entitlement, Event, Status};
    use serde_json::json;

    const NOW: &str = "2026-01-26T14:30:45.123Z";

    /// (name, entitlement, tool, args, expected refusal, expected gates)
    type Case<'a> = (
        &'a str,
        Option<&'a Entitlement>,
        Option<&'a str>,
        Value,
        Option<&'a str>,
        Value,
    );

    fn ent(sku: &str) -> Entitlement {
        Entitlement::new("t", "e", None, sku, None, NOW).unwrap()
    }

    #[test]
    fn every_gate_outcome() {
        let base = ent("base");
        let pro = ent("professional");
        let mut suspended = ent("professional");
        suspended.status = Status::Suspended;
        let mut revoked = ent("professional");
        revoked.status = Status::Revoked;
        let mut expired = ent("professional");
        expired.expires_at = Some("2026-01-01T00:00:00.000Z".into());
        let pro_without_role = pro
            .apply(&Event::IamRoleRemoved("write_rollback".into()), NOW)
            .unwrap();
        let full = json!({"customer_id": "c-1", "feature_key": "f", "receipt_id": "r"});

        let table: Vec<Case> = vec![
            (
                "signal, active",
                Some(&base),
                None,
                json!({}),
                None,
                json!({"entitlement": "pass"}),
            ),
            (
                "signal, unknown tenant",
                None,
                None,
                json!({}),
                Some("tenant_not_entitled"),
                json!({"entitlement": "refuse"}),
            ),
            (
                "signal, suspended",
                Some(&suspended),
                None,
                json!({}),
                Some("entitlement_suspended"),
                json!({"entitlement": "refuse"}),
            ),
            (
                "signal, revoked",
                Some(&revoked),
                None,
                json!({}),
                Some("entitlement_revoked"),
                json!({"entitlement": "refuse"}),
            ),
            (
                "signal, expired",
                Some(&expired),
                None,
                json!({}),
                Some("entitlement_expired"),
                json!({"entitlement": "refuse"}),
            ),
            (
                "tool, all pass",
                Some(&pro),
                Some("entitlement_apply"),
                full.clone(),
                None,
                json!({"entitlement": "pass", "tool": "pass", "preconditions": "pass"}),
            ),
            (
                "tool, suspended skips the rest",
                Some(&suspended),
                Some("health"),
                full.clone(),
                Some("entitlement_suspended"),
                json!({"entitlement": "refuse", "tool": "skipped", "preconditions": "skipped"}),
            ),
            (
                "tool not in the SKU",
                Some(&base),
                Some("entitlement_apply"),
                full.clone(),
                Some("tool_not_entitled"),
                json!({"entitlement": "pass", "tool": "refuse", "preconditions": "skipped"}),
            ),
            (
                "role missing",
                Some(&pro_without_role),
                Some("entitlement_apply"),
                full.clone(),
                Some("role_insufficient"),
                json!({"entitlement": "pass", "tool": "refuse", "preconditions": "skipped"}),
            ),
            (
                "missing customer_id",
                Some(&pro),
                Some("entitlement_apply"),
                json!({"feature_key": "f"}),
                Some("missing_customer_id"),
                json!({"entitlement": "pass", "tool": "pass", "preconditions": "refuse"}),
            ),
            (
                "missing feature_key",
                Some(&pro),
                Some("entitlement_apply"),
                json!({"customer_id": "c"}),
                Some("missing_feature_key"),
                json!({"entitlement": "pass", "tool": "pass", "preconditions": "refuse"}),
            ),
            (
                "missing receipt_id",
                Some(&pro),
                Some("receipts_verify"),
                json!({"receipt_id": ""}),
                Some("missing_receipt_id"),
                json!({"entitlement": "pass", "tool": "pass", "preconditions": "refuse"}),
            ),
            (
                "no preconditions for health",
                Some(&base),
                Some("health"),
                json!({}),
                None,
                json!({"entitlement": "pass", "tool": "pass", "preconditions": "pass"}),
            ),
        ];
        for (name, e, tool, args, refusal, gates) in table {
            let out = evaluate(e, NOW, tool, &args);
            assert_eq!(out.refusal, refusal, "{name}");
            assert_eq!(out.gates, gates, "{name}");
        }
    }

    #[test]
    fn tools_require_the_roles_of_their_packs() {
        assert_eq!(required_role("health"), "read_only");
        assert_eq!(required_role("entitlement_apply"), "write_rollback");
        assert_eq!(required_role("audit_log"), "admin");
    }
}
