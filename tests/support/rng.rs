//! The tests' one deterministic PRNG (xorshift64*): reproducible damage patterns, workloads and
//! kill moments, seeded from a fixed number or from the clock (printed, to replay a failure).

/// A small deterministic PRNG (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded with `seed` as the state (0 becomes 1).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// Seeded with `seed` spread over the state by an odd multiplier (low bit set), so that
    /// small fixed seeds (3, 5, 7…) start far apart. The damage tests use it.
    pub fn mixed(seed: u64) -> Rng {
        Rng::new(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1)
    }

    /// Seeded from the environment variable `var` if set (to replay a failure), else from the
    /// clock and the pid. Returns the seed so that the caller can print it.
    pub fn from_env_or_time(var: &str) -> (Rng, u64) {
        match std::env::var(var).ok().and_then(|s| s.parse().ok()) {
            Some(seed) => (Rng::new(seed), seed),
            None => Rng::from_time(),
        }
    }

    /// Seeded from the clock and the pid; print the seed so a failure can be replayed.
    pub fn from_time() -> (Rng, u64) {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let seed = nanos ^ (u64::from(std::process::id()) << 32);
        (Rng::new(seed), seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// In `0..n` (`n` at least 1).
    pub fn below(&mut self, n: u64) -> u64 {
        self.range(0, n)
    }

    /// In `lo..hi` (`lo` if the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi.saturating_sub(lo)).max(1)
    }

    /// In `lo..hi`, as `usize`.
    pub fn urange(&mut self, lo: usize, hi: usize) -> usize {
        self.range(lo as u64, hi as u64) as usize
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.next_u64().is_multiple_of(n.max(1))
    }

    /// True or false, evenly.
    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }

    /// Fills `buf` with random bytes, one draw a byte (its low byte).
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next_u64() as u8;
        }
    }
}
