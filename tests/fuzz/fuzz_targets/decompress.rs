//! A compressed request body as the gateway inflates it (`Admission::inflate`): gzip (members concatenated) and
//! zstd, under the size limit and paying its budget on the way. Whatever the bytes: no panic, never more than the
//! limit out, and never more budget held than the budget has.
//! `tests/fuzz/run.sh decompress 60`

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tailgate_ingest::{Admission, Budget, Compression};

const LIMIT: usize = 256 * 1024;
const BUDGET: u64 = 16 << 20;

fuzz_target!(|data: &[u8]| {
    let budget = Budget::new(BUDGET);
    let admission = Admission::new(budget.clone(), LIMIT, Duration::from_secs(1), Duration::from_secs(1), None);
    for compression in [Compression::Gzip, Compression::Zstd, Compression::Identity] {
        let mut permit = budget.empty();
        if let Ok(out) = admission.inflate(compression, data, Vec::new(), &mut permit) {
            assert!(out.len() <= LIMIT, "{} bytes inflated past the {LIMIT}-byte limit", out.len());
        }
        assert!(budget.in_use() <= BUDGET);
    }
});
