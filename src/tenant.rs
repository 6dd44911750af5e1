//! Tenant ids: `^[a-z0-9][a-z0-9._-]{0,62}$` (SPEC §8). Holding a [`TenantId`] proves the id is
//! valid, so hostile ids never reach a store key, a log field or a document path.

use std::fmt;

/// A validated tenant id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    /// Validates `s`.
    ///
    /// ```
    /// use tai_autonomics::tenant::TenantId;
    /// assert!(TenantId::parse("acme-corp").is_ok());
    /// assert!(TenantId::parse("Acme").is_err());
    /// assert!(TenantId::parse("../etc").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<TenantId, String> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 63
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
            });
        if ok {
            Ok(TenantId(s.to_owned()))
        } else {
            Err("tenant ids are 1-63 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit".to_owned())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_exactly_the_spec_pattern() {
        for ok in ["a", "0", "acme-corp", "t.1_x-y", &"a".repeat(63)] {
            assert!(TenantId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "A",
            "a b",
            "a/b",
            "ä",
            "a\0",
            &"a".repeat(64),
            "..",
            "a%2f",
        ] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
