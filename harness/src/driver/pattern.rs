//! The deterministic payload: byte `i` of a direction's stream is a function
//! of `i` and the direction's seed, so any reader can verify any byte
//! without the writer's buffer, and a shifted, duplicated or misdirected
//! byte shows up as corrupted.

/// Byte at stream offset `offset`.
pub(crate) fn byte_at(offset: u64, seed: u8) -> u8 {
    // Fibonacci hashing: no short period, cheap, and stable across versions.
    let x = (offset ^ (u64::from(seed) << 56)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8
}

/// `len` bytes starting at stream offset `offset`.
pub fn bytes(offset: u64, len: usize, seed: u8) -> Vec<u8> {
    (0..len as u64).map(|i| byte_at(offset + i, seed)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_has_no_short_period_and_differs_per_direction() {
        let a = bytes(0, 4096, 1);
        for period in 1..=512 {
            assert!(a[..4096 - period] != a[period..], "period {period}");
        }
        assert_ne!(bytes(0, 64, 1), bytes(0, 64, 2));
        assert_eq!(bytes(100, 10, 1), a[100..110]);
    }
}
