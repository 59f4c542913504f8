//! Seeded randomness without a dependency: the splitmix64 mixer and a stream of distinct 64-bit
//! values per process, shared by error ids and retry jitter.
//!
//! Invariants:
//!
//! 1. `fresh()` never returns the same value twice in one process (a counter fed through a
//!    bijective mix), and differs between processes and runs (the counter starts from a seed of
//!    the process id and the start time).
//! 2. Nothing here needs to be unpredictable: ids only need to be distinct, jitter only spread.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::sync::{Ordering, StaticAtomicU64};

/// The golden-ratio increment of splitmix64's sequence.
pub(crate) const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// Sebastiano Vigna's splitmix64 finaliser: a bijective mix of 64 bits.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A value no other call in this process returns (invariant 1).
pub(crate) fn fresh() -> u64 {
    static COUNTER: StaticAtomicU64 = StaticAtomicU64::new(0);
    // Relaxed: only the uniqueness of the returned value matters, which fetch_add gives.
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    splitmix64(process_seed().wrapping_add(n))
}

fn process_seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        splitmix64(nanos ^ (u64::from(std::process::id()) << 32))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_values_are_distinct() {
        let values: std::collections::HashSet<u64> = (0..100_000).map(|_| fresh()).collect();
        assert_eq!(values.len(), 100_000);
    }

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // The first outputs of splitmix64 seeded with 0 (Vigna's reference implementation).
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(GOLDEN), 0x6e78_9e6a_a1b9_65f4);
    }
}
