//! Per-tenant token buckets (`rate_limit`): one set for the process, taken from by every HTTP
//! route that names a tenant, by `/marketplace`, and by MCP's tools that name one, so a tenant
//! has one rate whichever way it comes in. Pub/Sub is not limited here (flow control is).

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::http::error::{ApiError, ErrorCode};
use crate::tenant::TenantId;

/// The buckets, keyed by tenant id.
pub struct TenantLimits(DefaultKeyedRateLimiter<String>);

impl TenantLimits {
    /// Buckets of `burst` requests, refilled at `per_second` (a zero takes the smallest).
    pub fn new(per_second: u32, burst: u32) -> TenantLimits {
        let per = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(per);
        TenantLimits(DefaultKeyedRateLimiter::keyed(
            Quota::per_second(per).allow_burst(burst),
        ))
    }

    /// Takes one request from `tenant`'s bucket, or 429 `rate_limited` with `Retry-After`.
    pub fn check(&self, tenant: &TenantId) -> Result<(), ApiError> {
        match self.0.check_key(&tenant.as_str().to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                crate::telemetry::events::refused("rate_limited");
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(ApiError::new(
                    ErrorCode::RateLimited,
                    format!("tenant {tenant} is over its request rate; retry later"),
                )
                .retry_after(wait.as_secs_f64().ceil() as u64))
            }
        }
    }

    /// Tenants holding a bucket.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no tenant holds a bucket.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Forgets the buckets that are full again (no different from new ones).
    pub fn forget_idle(&self) {
        self.0.retain_recent();
        self.0.shrink_to_fit();
    }
}
