//! Per-tenant ingest rate limits: a token bucket of bytes per tenant (after decompression), as Tempo's distributor
//! keeps one per tenant. A request its tenant's bucket cannot pay for is refused whole, before it is decoded, with
//! a retryable `RESOURCE_EXHAUSTED` + `RetryInfo` / 429 + `Retry-After` saying when it would fit. Limits are per
//! gateway: behind a load balancer spreading over N gateways, a tenant may write up to N times its limit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tailgate_config::{ByteSize, Problems};

use crate::error::ExportError;
use crate::metrics as m;
use crate::tenant::Tenant;

/// Buckets kept at most; past it, the full ones (which a new bucket would equal) are forgotten first.
const MAX_TENANTS: usize = 10_000;

/// The `ingest.rate_limit:` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// What each tenant may write per second, sustained.
    pub bytes_per_second: ByteSize,
    /// What it may write at once; at least `ingest.max_request_bytes`, or the largest requests never pass.
    pub burst_bytes: ByteSize,
    /// Other limits for some tenants, by tenant ID (`default` for requests without a tenant).
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantLimit>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimit {
    pub bytes_per_second: ByteSize,
    pub burst_bytes: ByteSize,
}

impl RateLimitConfig {
    pub fn validate(&self, path: &str, max_request_bytes: ByteSize, problems: &mut Problems) {
        let default = TenantLimit { bytes_per_second: self.bytes_per_second, burst_bytes: self.burst_bytes };
        let limits = std::iter::once((path.to_owned(), &default))
            .chain(self.tenants.iter().map(|(tenant, limit)| (format!("{path}.tenants.{tenant}"), limit)));
        for (at, limit) in limits {
            if limit.bytes_per_second.get() == 0 {
                problems.push(format!("{at}.bytes_per_second"), "must be more than 0");
            }
            if limit.burst_bytes.get() < max_request_bytes.get() {
                problems.push(
                    format!("{at}.burst_bytes"),
                    format!("must be at least ingest.max_request_bytes ({max_request_bytes}), or the largest requests could never pass"),
                );
            }
        }
        for tenant in self.tenants.keys() {
            if tenant != "default" {
                if let Err(message) = crate::tenant::validate(tenant) {
                    problems.push(format!("{path}.tenants.{tenant}"), message);
                }
            }
        }
    }
}

/// The gateway's buckets.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    config: RateLimitConfig,
    buckets: Mutex<HashMap<Tenant, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
    limit: TenantLimit,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        let burst = self.limit.burst_bytes.get() as f64;
        self.tokens = (self.tokens + elapsed * self.limit.bytes_per_second.get() as f64).min(burst);
        self.updated = now;
    }

    fn full(&self) -> bool {
        self.tokens >= self.limit.burst_bytes.get() as f64
    }
}

impl RateLimiter {
    pub(crate) fn new(config: RateLimitConfig) -> Self {
        RateLimiter { config, buckets: Mutex::new(HashMap::new()) }
    }

    fn limit(&self, tenant: &Tenant) -> TenantLimit {
        self.config.tenants.get(tenant.id().unwrap_or("default")).copied().unwrap_or(TenantLimit {
            bytes_per_second: self.config.bytes_per_second,
            burst_bytes: self.config.burst_bytes,
        })
    }

    /// Takes `bytes` from `tenant`'s bucket, or refuses the request (taking nothing) with when it would fit.
    pub(crate) fn take(&self, tenant: &Tenant, bytes: usize) -> Result<(), ExportError> {
        self.take_at(tenant, bytes, Instant::now())
    }

    fn take_at(&self, tenant: &Tenant, bytes: usize, now: Instant) -> Result<(), ExportError> {
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !buckets.contains_key(tenant) && buckets.len() >= MAX_TENANTS {
            buckets.retain(|_, bucket| {
                bucket.refill(now);
                !bucket.full()
            });
            if buckets.len() >= MAX_TENANTS {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(tenant.clone()).or_insert_with(|| {
            let limit = self.limit(tenant);
            Bucket { tokens: limit.burst_bytes.get() as f64, updated: now, limit }
        });
        bucket.refill(now);
        let wanted = bytes as f64;
        if bucket.tokens >= wanted {
            bucket.tokens -= wanted;
            return Ok(());
        }
        let missing = wanted - bucket.tokens;
        let retry_after = Duration::from_secs_f64(missing / bucket.limit.bytes_per_second.get() as f64);
        drop(buckets);
        let label = tenant.label();
        metrics::counter!(m::RATE_LIMITED_REQUESTS, "tenant" => label.clone()).increment(1);
        metrics::counter!(m::RATE_LIMITED_BYTES, "tenant" => label.clone()).increment(bytes as u64);
        Err(ExportError::RateLimited { tenant: label, retry_after: retry_after.max(Duration::from_secs(1)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> RateLimiter {
        let limit = |rate, burst| TenantLimit { bytes_per_second: ByteSize::b(rate), burst_bytes: ByteSize::b(burst) };
        RateLimiter::new(RateLimitConfig {
            bytes_per_second: ByteSize::b(1000),
            burst_bytes: ByteSize::b(4000),
            tenants: [("big".to_owned(), limit(10_000, 40_000))].into(),
        })
    }

    #[test]
    fn each_tenant_has_its_own_bucket_refilled_at_its_rate() {
        let limiter = limiter();
        let start = Instant::now();
        let (a, b, big) = (Tenant::new("a").unwrap(), Tenant::new("b").unwrap(), Tenant::new("big").unwrap());
        // The burst, exactly, then nothing more.
        for _ in 0..4 {
            limiter.take_at(&a, 1000, start).unwrap();
        }
        let refused = limiter.take_at(&a, 1000, start).unwrap_err();
        assert!(
            matches!(refused, ExportError::RateLimited { ref tenant, retry_after } if tenant == "a" && retry_after == Duration::from_secs(1)),
            "{refused:?}"
        );
        // Another tenant is not affected; the default tenant has its own bucket too.
        limiter.take_at(&b, 4000, start).unwrap();
        limiter.take_at(&Tenant::DEFAULT, 4000, start).unwrap();
        // An override.
        limiter.take_at(&big, 40_000, start).unwrap();
        // Half a second refills 500 bytes: 500 pass, 501 more do not, and are told to wait for the rest.
        let later = start + Duration::from_millis(500);
        limiter.take_at(&a, 500, later).unwrap();
        let refused = limiter.take_at(&a, 3000, later).unwrap_err();
        assert_eq!(refused.retry_after(), Some(Duration::from_secs(3)));
        // A refusal takes nothing.
        limiter.take_at(&a, 1000, later + Duration::from_secs(1)).unwrap();
    }
}
