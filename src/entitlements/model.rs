//! The entitlement model (SPEC §5), pure: SKUs, packs, tools and IAM roles, the record of one
//! tenant, the marketplace lifecycle and the entitlement events with their errors.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The SKUs on sale.
pub const SKUS: [&str; 3] = ["base", "professional", "enterprise"];
/// The packs a SKU is made of.
pub const PACKS: [&str; 3] = ["base", "professional", "enterprise"];
/// Every IAM role a pack can grant.
pub const ROLES: [&str; 4] = ["read_only", "write_rollback", "admin", "custom_role"];

/// What one pack grants: `(tools, roles)`.
pub fn pack_grants(pack: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    Some(match pack {
        "base" => (&["health", "support_model"], &["read_only"]),
        "professional" => (
            &["entitlement_apply", "receipts_verify"],
            &["write_rollback"],
        ),
        "enterprise" => (
            &["policy_evaluate", "audit_log", "custom_integrations"],
            &["admin", "custom_role"],
        ),
        _ => return None,
    })
}

/// The packs of a SKU.
pub fn sku_packs(sku: &str) -> Option<&'static [&'static str]> {
    Some(match sku {
        "base" => &["base"],
        "professional" => &["base", "professional"],
        "enterprise" => &["base", "professional", "enterprise"],
        _ => return None,
    })
}

/// Lifecycle status of an entitlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Active,
    Suspended,
    Revoked,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Suspended => "suspended",
            Status::Revoked => "revoked",
        }
    }
}

/// One tenant's entitlement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entitlement {
    pub tenant_id: String,
    pub entitlement_id: String,
    pub customer_id: Option<String>,
    pub sku: String,
    pub packs: BTreeSet<String>,
    pub tools: BTreeSet<String>,
    pub iam_roles: BTreeSet<String>,
    pub status: Status,
    /// RFC 3339; after it the entitlement is inactive.
    pub expires_at: Option<String>,
    pub updated_at: String,
}

/// A client's value as an error message quotes it: at most 64 characters of it.
fn shown(v: &str) -> String {
    match v.char_indices().nth(64) {
        Some((end, _)) => format!("{:?}…", &v[..end]),
        None => format!("{v:?}"),
    }
}

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntitlementError {
    #[error("unknown sku {} (expected base, professional or enterprise)", shown(.0))]
    UnknownSku(String),
    #[error("unknown pack {} (expected base, professional or enterprise)", shown(.0))]
    UnknownPack(String),
    #[error("unknown IAM role {} (expected read_only, write_rollback, admin or custom_role)", shown(.0))]
    UnknownRole(String),
    #[error("pack {0} is already enabled")]
    PackAlreadyEnabled(String),
    #[error("pack {0} is not enabled")]
    PackNotEnabled(String),
    #[error("IAM role {0} is already enabled")]
    RoleAlreadyEnabled(String),
    #[error("IAM role {0} is not enabled")]
    RoleNotEnabled(String),
    #[error("cannot {action} an entitlement that is {status}")]
    InvalidTransition {
        action: &'static str,
        status: &'static str,
    },
    #[error("the entitlement is revoked; revoke is final")]
    Revoked,
    #[error("entitlement {} is not this tenant's (the tenant's is {})", shown(.named), shown(.current))]
    OtherEntitlement { named: String, current: String },
}

impl EntitlementError {
    /// Input errors (unknown names) are the caller's mistake (400); the rest are governed
    /// refusals of a valid request against the current state (409, with a receipt).
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            EntitlementError::UnknownSku(_)
                | EntitlementError::UnknownPack(_)
                | EntitlementError::UnknownRole(_)
        )
    }

    /// A stable snake_case name for metrics and receipts.
    pub fn code(&self) -> &'static str {
        match self {
            EntitlementError::UnknownSku(_) => "unknown_sku",
            EntitlementError::UnknownPack(_) => "unknown_pack",
            EntitlementError::UnknownRole(_) => "unknown_role",
            EntitlementError::PackAlreadyEnabled(_) => "pack_already_enabled",
            EntitlementError::PackNotEnabled(_) => "pack_not_enabled",
            EntitlementError::RoleAlreadyEnabled(_) => "role_already_enabled",
            EntitlementError::RoleNotEnabled(_) => "role_not_enabled",
            EntitlementError::InvalidTransition { .. } => "invalid_transition",
            EntitlementError::Revoked => "entitlement_revoked",
            EntitlementError::OtherEntitlement { .. } => "entitlement_mismatch",
        }
    }
}

/// An entitlement event (`POST /v1/tenants/{t}/entitlement/events`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "event",
    content = "value",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum Event {
    SkuChanged(String),
    PackEnabled(String),
    PackDisabled(String),
    IamRoleAdded(String),
    IamRoleRemoved(String),
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::SkuChanged(_) => "sku_changed",
            Event::PackEnabled(_) => "pack_enabled",
            Event::PackDisabled(_) => "pack_disabled",
            Event::IamRoleAdded(_) => "iam_role_added",
            Event::IamRoleRemoved(_) => "iam_role_removed",
        }
    }
}

/// A marketplace action (`POST /marketplace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Grant,
    Suspend,
    Resume,
    Revoke,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Grant => "grant",
            Action::Suspend => "suspend",
            Action::Resume => "resume",
            Action::Revoke => "revoke",
        }
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

impl Entitlement {
    /// A fresh, active entitlement with the SKU's defaults.
    pub fn new(
        tenant_id: &str,
        entitlement_id: &str,
        customer_id: Option<String>,
        sku: &str,
        expires_at: Option<String>,
        now: &str,
    ) -> Result<Entitlement, EntitlementError> {
        let mut e = Entitlement {
            tenant_id: tenant_id.to_owned(),
            entitlement_id: entitlement_id.to_owned(),
            customer_id,
            sku: String::new(),
            packs: BTreeSet::new(),
            tools: BTreeSet::new(),
            iam_roles: BTreeSet::new(),
            status: Status::Active,
            expires_at,
            updated_at: now.to_owned(),
        };
        e.reset_to_sku(sku)?;
        Ok(e)
    }

    fn reset_to_sku(&mut self, sku: &str) -> Result<(), EntitlementError> {
        let packs = sku_packs(sku).ok_or_else(|| EntitlementError::UnknownSku(sku.to_owned()))?;
        self.sku = sku.to_owned();
        self.packs = set(packs);
        self.tools.clear();
        self.iam_roles.clear();
        for p in packs {
            let (tools, roles) = pack_grants(p).expect("every SKU pack is a known pack");
            self.tools.extend(set(tools));
            self.iam_roles.extend(set(roles));
        }
        Ok(())
    }

    /// Active and not past `expires_at` (RFC 3339 strings of the same format compare in order).
    pub fn is_active(&self, now: &str) -> bool {
        self.status == Status::Active && self.expires_at.as_deref().is_none_or(|exp| now <= exp)
    }

    /// Applies an entitlement event, or says why not. A revoked entitlement takes no events.
    pub fn apply(&self, event: &Event, now: &str) -> Result<Entitlement, EntitlementError> {
        if self.status == Status::Revoked {
            return Err(EntitlementError::Revoked);
        }
        let mut e = self.clone();
        match event {
            Event::SkuChanged(sku) => e.reset_to_sku(sku)?,
            Event::PackEnabled(p) => {
                let (tools, roles) =
                    pack_grants(p).ok_or_else(|| EntitlementError::UnknownPack(p.clone()))?;
                if !e.packs.insert(p.clone()) {
                    return Err(EntitlementError::PackAlreadyEnabled(p.clone()));
                }
                e.tools.extend(set(tools));
                e.iam_roles.extend(set(roles));
            }
            Event::PackDisabled(p) => {
                let (tools, roles) =
                    pack_grants(p).ok_or_else(|| EntitlementError::UnknownPack(p.clone()))?;
                if !e.packs.remove(p) {
                    return Err(EntitlementError::PackNotEnabled(p.clone()));
                }
                // A tool or role that another enabled pack grants stays.
                let kept: (BTreeSet<&str>, BTreeSet<&str>) =
                    e.packs.iter().filter_map(|q| pack_grants(q)).fold(
                        (BTreeSet::new(), BTreeSet::new()),
                        |(mut t, mut r), (qt, qr)| {
                            t.extend(qt.iter().copied());
                            r.extend(qr.iter().copied());
                            (t, r)
                        },
                    );
                for t in tools {
                    if !kept.0.contains(t) {
                        e.tools.remove(*t);
                    }
                }
                for r in roles {
                    if !kept.1.contains(r) {
                        e.iam_roles.remove(*r);
                    }
                }
            }
            Event::IamRoleAdded(r) => {
                if !ROLES.contains(&r.as_str()) {
                    return Err(EntitlementError::UnknownRole(r.clone()));
                }
                if !e.iam_roles.insert(r.clone()) {
                    return Err(EntitlementError::RoleAlreadyEnabled(r.clone()));
                }
            }
            Event::IamRoleRemoved(r) => {
                if !ROLES.contains(&r.as_str()) {
                    return Err(EntitlementError::UnknownRole(r.clone()));
                }
                if !e.iam_roles.remove(r) {
                    return Err(EntitlementError::RoleNotEnabled(r.clone()));
                }
            }
        }
        e.updated_at = now.to_owned();
        Ok(e)
    }

    /// The status after a marketplace action on an existing entitlement.
    /// The status after a marketplace `action` that names `entitlement_id`, at `now`. Only
    /// `grant` may name another entitlement (a new purchase, which re-activates a suspended
    /// tenant under its id); `suspend`, `resume` and `revoke` must name the tenant's own, so
    /// that a late message about an earlier entitlement cannot suspend or revoke the current
    /// one. A `grant` of an active entitlement that has expired renews it.
    pub fn marketplace_transition(
        &self,
        action: Action,
        entitlement_id: &str,
        now: &str,
    ) -> Result<Status, EntitlementError> {
        if action != Action::Grant && entitlement_id != self.entitlement_id {
            return Err(EntitlementError::OtherEntitlement {
                named: entitlement_id.to_owned(),
                current: self.entitlement_id.clone(),
            });
        }
        if action == Action::Grant && self.status == Status::Active && self.is_expired(now) {
            return Ok(Status::Active);
        }
        self.transition(action)
    }

    /// Whether the entitlement has an `expires_at` that `now` is past.
    pub fn is_expired(&self, now: &str) -> bool {
        self.expires_at.as_deref().is_some_and(|exp| now > exp)
    }

    pub fn transition(&self, action: Action) -> Result<Status, EntitlementError> {
        use Status::*;
        match (self.status, action) {
            (Revoked, _) => Err(EntitlementError::Revoked),
            (Suspended, Action::Grant | Action::Resume) => Ok(Active),
            (Active, Action::Suspend) => Ok(Suspended),
            (Active | Suspended, Action::Revoke) => Ok(Revoked),
            (status, action) => Err(EntitlementError::InvalidTransition {
                action: action.as_str(),
                status: status.as_str(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_value_is_quoted_up_to_64_characters() {
        assert_eq!(
            EntitlementError::UnknownPack("gold".into()).to_string(),
            r#"unknown pack "gold" (expected base, professional or enterprise)"#
        );
        let long = EntitlementError::UnknownSku("é".repeat(5000)).to_string();
        assert!(
            long.starts_with(&format!("unknown sku \"{}\"…", "é".repeat(64))),
            "{long}"
        );
        assert!(long.chars().count() < 140, "{long}");
    }

    const NOW: &str = "2026-01-26T14:30:45.123Z";

    fn ent(sku: &str) -> Entitlement {
        Entitlement::new("t", "e", None, sku, None, NOW).unwrap()
    }

    #[test]
    fn sku_tables_match_the_originals_counts() {
        for (sku, tools, roles, packs) in [
            ("base", 2, 1, 1),
            ("professional", 4, 2, 2),
            ("enterprise", 7, 4, 3),
        ] {
            let e = ent(sku);
            assert_eq!(
                (e.tools.len(), e.iam_roles.len(), e.packs.len()),
                (tools, roles, packs),
                "{sku}"
            );
        }
        let e = ent("enterprise");
        assert!(e.tools.contains("custom_integrations") && e.iam_roles.contains("custom_role"));
        assert_eq!(
            Entitlement::new("t", "e", None, "gold", None, NOW),
            Err(EntitlementError::UnknownSku("gold".into()))
        );
    }

    #[test]
    fn every_event_has_its_effect_and_its_error() {
        let base = ent("base");
        let pro = base
            .apply(&Event::SkuChanged("professional".into()), NOW)
            .unwrap();
        assert_eq!((pro.sku.as_str(), pro.tools.len()), ("professional", 4));
        assert_eq!(
            base.apply(&Event::SkuChanged("x".into()), NOW),
            Err(EntitlementError::UnknownSku("x".into()))
        );

        let with_ent = base
            .apply(&Event::PackEnabled("enterprise".into()), NOW)
            .unwrap();
        assert!(with_ent.tools.contains("audit_log") && with_ent.iam_roles.contains("admin"));
        assert_eq!(
            with_ent.apply(&Event::PackEnabled("enterprise".into()), NOW),
            Err(EntitlementError::PackAlreadyEnabled("enterprise".into()))
        );
        assert_eq!(
            base.apply(&Event::PackEnabled("gold".into()), NOW),
            Err(EntitlementError::UnknownPack("gold".into()))
        );

        let back = with_ent
            .apply(&Event::PackDisabled("enterprise".into()), NOW)
            .unwrap();
        assert_eq!(
            (back.tools.clone(), back.iam_roles.clone()),
            (base.tools.clone(), base.iam_roles.clone())
        );
        assert_eq!(
            base.apply(&Event::PackDisabled("professional".into()), NOW),
            Err(EntitlementError::PackNotEnabled("professional".into()))
        );

        let plus = base
            .apply(&Event::IamRoleAdded("admin".into()), NOW)
            .unwrap();
        assert!(plus.iam_roles.contains("admin"));
        assert_eq!(
            plus.apply(&Event::IamRoleAdded("admin".into()), NOW),
            Err(EntitlementError::RoleAlreadyEnabled("admin".into()))
        );
        assert_eq!(
            base.apply(&Event::IamRoleAdded("root".into()), NOW),
            Err(EntitlementError::UnknownRole("root".into()))
        );
        let minus = plus
            .apply(&Event::IamRoleRemoved("admin".into()), NOW)
            .unwrap();
        assert!(!minus.iam_roles.contains("admin"));
        assert_eq!(
            minus.apply(&Event::IamRoleRemoved("admin".into()), NOW),
            Err(EntitlementError::RoleNotEnabled("admin".into()))
        );
    }

    #[test]
    fn disabling_a_pack_keeps_what_another_enabled_pack_grants() {
        // read_only comes from base; if a custom pack set grants it twice it must stay.
        let mut e = ent("professional");
        e.packs.insert("enterprise".into());
        e.tools.extend(set(&[
            "policy_evaluate",
            "audit_log",
            "custom_integrations",
        ]));
        let after = e
            .apply(&Event::PackDisabled("professional".into()), NOW)
            .unwrap();
        assert!(after.tools.contains("health") && after.iam_roles.contains("read_only"));
        assert!(
            !after.tools.contains("entitlement_apply")
                && !after.iam_roles.contains("write_rollback")
        );
        assert!(after.tools.contains("audit_log"));
    }

    #[test]
    fn the_marketplace_lifecycle_and_its_invalid_transitions() {
        let mut e = ent("base");
        assert_eq!(e.transition(Action::Suspend), Ok(Status::Suspended));
        assert!(matches!(
            e.transition(Action::Resume),
            Err(EntitlementError::InvalidTransition { .. })
        ));
        assert!(matches!(
            e.transition(Action::Grant),
            Err(EntitlementError::InvalidTransition { .. })
        ));
        e.status = Status::Suspended;
        assert_eq!(e.transition(Action::Resume), Ok(Status::Active));
        assert_eq!(e.transition(Action::Grant), Ok(Status::Active));
        assert_eq!(e.transition(Action::Revoke), Ok(Status::Revoked));
        e.status = Status::Revoked;
        for a in [
            Action::Grant,
            Action::Suspend,
            Action::Resume,
            Action::Revoke,
        ] {
            assert_eq!(
                e.transition(a),
                Err(EntitlementError::Revoked),
                "revoke is final"
            );
        }
        assert_eq!(
            e.apply(&Event::IamRoleAdded("admin".into()), NOW),
            Err(EntitlementError::Revoked)
        );
    }

    #[test]
    fn only_a_grant_may_name_another_entitlement() {
        let mut e = ent("base");
        for a in [Action::Suspend, Action::Resume, Action::Revoke] {
            assert_eq!(
                e.marketplace_transition(a, "e-old", NOW)
                    .map_err(|x| x.code()),
                Err("entitlement_mismatch"),
                "{a:?}"
            );
        }
        assert_eq!(
            e.marketplace_transition(Action::Suspend, "e", NOW),
            Ok(Status::Suspended)
        );
        e.status = Status::Suspended;
        // A new purchase re-activates a suspended tenant under its own id.
        assert_eq!(
            e.marketplace_transition(Action::Grant, "e-new", NOW),
            Ok(Status::Active)
        );
        // An active entitlement is granted only once, unless it has expired (a renewal).
        e.status = Status::Active;
        assert!(e.marketplace_transition(Action::Grant, "e", NOW).is_err());
        e.expires_at = Some("2026-01-26T14:30:45.122Z".into());
        assert_eq!(
            e.marketplace_transition(Action::Grant, "e", NOW),
            Ok(Status::Active)
        );
    }

    #[test]
    fn expiry_makes_an_active_entitlement_inactive() {
        let mut e = ent("base");
        assert!(e.is_active(NOW));
        e.expires_at = Some("2026-01-26T14:30:45.122Z".into());
        assert!(!e.is_active(NOW));
        e.expires_at = Some("2026-01-26T14:30:45.123Z".into());
        assert!(e.is_active(NOW), "expiry is inclusive");
        e.status = Status::Suspended;
        assert!(!e.is_active(NOW));
    }
}
