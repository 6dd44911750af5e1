//! The tools a governor runs for a tool call (Phase 1, eval-only): each returns a structured
//! result and changes nothing outside the governor.

use serde_json::{json, Value};

/// Runs `tool` for `tenant`; `Err` is a tool failure (recorded as `tool_call_failed`).
pub fn run(tool: &str, args: &Value, tenant: &str) -> Result<Value, String> {
    match tool {
        "health" => Ok(json!({"status": "healthy", "tenant_id": tenant})),
        "support_model" => Ok(support_model()),
        "receipts_verify" => Ok(
            json!({"receipt_id": args["receipt_id"], "advice": "verify with GET /v1/tenants/{tenant}/receipts/verify"}),
        ),
        "entitlement_apply" => Ok(
            json!({"decision": "advised", "customer_id": args["customer_id"], "feature_key": args["feature_key"]}),
        ),
        "policy_evaluate" | "audit_log" | "custom_integrations" => {
            Ok(json!({"decision": "advised", "tool": tool}))
        }
        other => Err(format!("unknown tool {other:?}")),
    }
}

/// The original's static support tiers.
pub fn support_model() -> Value {
    json!({
        "support_model": "tiered_enterprise",
        "tiers": [
            {"name": "basic", "response_time_minutes": 480, "availability": 99.0, "channels": ["email", "community", "docs"]},
            {"name": "professional", "response_time_minutes": 120, "availability": 99.5, "channels": ["email", "community", "docs", "phone"], "account_manager": true, "priority_queue": true},
            {"name": "enterprise", "response_time_minutes": 15, "availability": 99.99, "channels": ["email", "community", "docs", "phone_24x7"], "dedicated_engineering": true, "custom_sla": true, "quarterly_reviews": true, "training": true}
        ],
        "capabilities": {"incident_tracking": true, "knowledge_base": true, "api_access": true, "custom_integrations": true, "sso_support": true, "audit_logging": true},
        "slo": {"target_availability": 99.99, "max_recovery_time_hours": 1, "incident_severity_levels": ["critical", "high", "medium", "low"]}
    })
}
