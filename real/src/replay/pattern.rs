//! The bytes a replay stores: a pattern of the object's name, so that a
//! reader can tell not only that bytes are intact (the store's checksum)
//! but that they are the object it asked for.

/// The pattern's seed for an object name.
pub fn seed(name: &str) -> u64 {
    twox_hash::XxHash3_64::oneshot(name.as_bytes())
}

fn word(seed: u64, i: u64) -> u64 {
    // splitmix64 of (seed, index)
    let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `buf` with `name`'s pattern.
pub fn fill(name: &str, buf: &mut [u8]) {
    let s = seed(name);
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        let w = word(s, i as u64).to_le_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
}

/// Bytes of `buf` that differ from `name`'s pattern (0: the right object).
pub fn wrong_bytes(name: &str, buf: &[u8]) -> u64 {
    let s = seed(name);
    let mut wrong = 0u64;
    for (i, chunk) in buf.chunks(8).enumerate() {
        let w = word(s, i as u64).to_le_bytes();
        wrong += chunk
            .iter()
            .zip(&w[..chunk.len()])
            .filter(|(a, b)| a != b)
            .count() as u64;
    }
    wrong
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_checks_against_its_own_name_only() {
        let mut a = vec![0u8; 1001];
        fill("run/b0/1", &mut a);
        assert_eq!(wrong_bytes("run/b0/1", &a), 0);
        assert!(wrong_bytes("run/b0/2", &a) > 900);
        a[1000] ^= 1;
        assert_eq!(wrong_bytes("run/b0/1", &a), 1);
    }
}
