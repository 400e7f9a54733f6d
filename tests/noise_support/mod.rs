//! Pseudo-random input shared by the chunk and pipeline tests and the chunk and key benches.

/// `len` bytes of xorshift64 noise from `state` (made odd, so never the all-zero state that
/// xorshift cannot leave): different states give different bytes, and no stretch repeats, so
/// no chunk of it matches another chunk's key.
pub fn noise(len: usize, state: u64) -> Vec<u8> {
    let mut x = state | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
