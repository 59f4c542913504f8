//! Redis Cluster's key → hash slot function (pure): CRC16-XMODEM of the key's hash tag, mod 16384.
//!
//! Invariants:
//!
//! 1. Exactly Redis's `keyHashSlot`: when the key holds a `{` followed later by a `}` with at
//!    least one byte between them, only the bytes between the first `{` and the first `}` after it
//!    are hashed; otherwise the whole key. (`CLUSTER KEYSLOT` agrees; checked against a live
//!    cluster in `cluster.rs`'s tests.)
//! 2. Pure: no I/O, no state, so it is unit-tested against the published check values.

/// Number of hash slots in a Redis Cluster.
pub(crate) const SLOTS: usize = 16_384;

/// The hash slot of `key` (invariant 1).
pub(crate) fn of(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) & (SLOTS as u16 - 1)
}

/// The bytes Redis hashes: the first non-empty `{…}` section, or the whole key.
fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    match key[open + 1..].iter().position(|&b| b == b'}') {
        Some(len) if len > 0 => &key[open + 1..open + 1 + len],
        _ => key,
    }
}

/// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, no reflection.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_the_xmodem_check_value() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn slots_match_the_redis_documentation() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(of(b"foo"), 12_182);
        assert_eq!(of(b"somekey"), 11_058);
        assert_eq!(of(b"{user1000}.following"), of(b"{user1000}.followers"));
        assert_eq!(of(b"{user1000}.following"), of(b"user1000"));
    }

    #[test]
    fn hash_tags_follow_the_redis_rules() {
        assert_eq!(hash_tag(b"{a}b"), b"a");
        assert_eq!(hash_tag(b"x{a}{b}"), b"a");
        // An empty tag hashes the whole key.
        assert_eq!(hash_tag(b"{}a"), b"{}a");
        assert_eq!(hash_tag(b"{a"), b"{a");
        // The first `}` after the first `{`, whatever comes between.
        assert_eq!(hash_tag(b"{{a}}"), b"{a");
        assert_eq!(hash_tag(b"{tollgate:api}:w0"), b"tollgate:api");
        assert!(usize::from(of(&[0xff; 100])) < SLOTS);
    }
}
