//! What the sampler's policies decide, written out from their specification (not called from the sampler), so that
//! tests check the sampler against the spec rather than against itself.

/// The Collector's default `hash_seed` salt of the probabilistic policy.
pub const DEFAULT_SALT: &str = "default-hash-seed";

/// Whether the probabilistic policy at `percentage` with the default salt keeps trace `id`: FNV-1a 64 over the salt
/// then the 16 ID bytes, kept when at most `percentage / 100 × u64::MAX`.
pub fn probabilistic_keeps(id: &[u8], percentage: f64) -> bool {
    let hash = DEFAULT_SALT
        .as_bytes()
        .iter()
        .chain(id)
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3));
    hash <= tailgate_sampler::policy::probabilistic_threshold(percentage)
}
