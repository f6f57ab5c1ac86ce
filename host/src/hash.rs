//! FNV-1a, the one general-purpose hash of the host: stable across builds
//! and platforms (a Call-ID picks the same worker and the same destination
//! after a restart), cheap for the short keys SIP hands it, and no seed to
//! share between threads. Used for worker ownership, loop hashes, stateless
//! branch ids, lock shards and the dispatcher's hash algorithms (which are
//! not bit-exact with Kamailio's core hash; see the README).

/// 32-bit FNV-1a over the concatenation of `parts`.
pub fn fnv1a(parts: &[&[u8]]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for part in parts {
        for &b in *part {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h
}

/// 64-bit FNV-1a with a splitmix64 finaliser (good avalanche for
/// rendezvous scores, where the top bits matter).
pub fn fnv1a_64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors_and_part_concatenation() {
        // FNV-1a test vectors (Fowler/Noll/Vo).
        assert_eq!(fnv1a(&[b""]), 0x811c_9dc5);
        assert_eq!(fnv1a(&[b"a"]), 0xe40c_292c);
        assert_eq!(fnv1a(&[b"foobar"]), 0xbf9c_f968);
        assert_eq!(fnv1a(&[b"foo", b"bar"]), fnv1a(&[b"foobar"]));
        assert_ne!(fnv1a_64(&[b"a"]), fnv1a_64(&[b"b"]));
    }
}
