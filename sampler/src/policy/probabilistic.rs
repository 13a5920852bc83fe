//! `probabilistic`: a deterministic choice on the trace ID, so every worker and every replay agrees.
//!
//! As in the Collector: FNV-1a 64 over the salt then the 16 trace-ID bytes, kept when the hash is at most
//! `percentage / 100 × u64::MAX`.

/// The Collector's default `hash_salt`.
pub const DEFAULT_SALT: &str = "default-hash-seed";

pub fn hash(salt: &str, trace_id: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    salt.as_bytes().iter().chain(trace_id).fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

pub fn probabilistic_threshold(percentage: f64) -> u64 {
    let ratio = (percentage / 100.0).clamp(0.0, 1.0);
    if ratio >= 1.0 {
        u64::MAX
    } else {
        (ratio * u64::MAX as f64) as u64
    }
}

/// The OpenTelemetry consistent-probability threshold (`ot=th:…` in `tracestate`) for a sampling percentage:
/// `(1 - p) × 2^56` in hex, trailing zeros removed; `0` means "keep everything".
pub fn tracestate_threshold(percentage: f64) -> String {
    // Exact to a millionth of a percent: (100 - p) / 100 × 2^56, rounded, in integers.
    let kept_micro = (percentage.clamp(0.0, 100.0) * 1e6).round() as u128;
    let denominator = 100_000_000u128;
    let reject = ((((denominator - kept_micro) << 56) + denominator / 2) / denominator) as u64;
    if reject == 0 {
        return "0".to_owned();
    }
    let hex = format!("{:014x}", reject.min((1u64 << 56) - 1));
    hex.trim_end_matches('0').to_owned()
}
