//! MT19937 exactly as numpy's legacy `RandomState` drives it
//! (numpy/random/src/mt19937/mt19937.c, `_legacy_seeding` in `_mt19937.pyx`).

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// The 32-bit Mersenne Twister with numpy's integer seeding.
#[derive(Clone)]
pub struct Mt19937 {
    key: [u32; N],
    /// Index of the next word to temper; `N` means "regenerate first".
    pos: usize,
}

impl std::fmt::Debug for Mt19937 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The 624-word key is noise in debug output; the position is enough.
        f.debug_struct("Mt19937").field("pos", &self.pos).finish()
    }
}

impl Mt19937 {
    /// `RandomState.seed(seed)` for an integer seed. numpy accepts 0..=2**32-1
    /// and calls `mt19937_seed`, which is Matsumoto-Nishimura `init_genrand`
    /// (not `init_by_array`, which is used only for array seeds).
    pub fn new(seed: u32) -> Self {
        let mut key = [0u32; N];
        let mut s = seed;
        for (i, k) in key.iter_mut().enumerate() {
            *k = s;
            // Wrapping arithmetic mirrors the C `& 0xffffffff`.
            s = 1_812_433_253u32
                .wrapping_mul(s ^ (s >> 30))
                .wrapping_add(i as u32 + 1);
        }
        // pos = N forces a full regeneration before the first output, as in numpy.
        Mt19937 { key, pos: N }
    }

    /// Regenerates all N words (numpy's `mt19937_gen`).
    fn generate(&mut self) {
        let twist = |k: &mut [u32; N], i: usize| {
            let y = (k[i] & UPPER_MASK) | (k[(i + 1) % N] & LOWER_MASK);
            // `-(y & 1) & MATRIX_A` in C: add MATRIX_A only when the low bit is set.
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            k[i] = k[(i + M) % N] ^ (y >> 1) ^ mag;
        };
        // In-place, in index order: words at i+M past N wrap to already-updated
        // words, which is exactly what the reference three-loop form does.
        for i in 0..N {
            twist(&mut self.key, i);
        }
        self.pos = 0;
    }

    /// Next tempered 32-bit output (numpy's `mt19937_next32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.pos == N {
            self.generate();
        }
        let mut y = self.key[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// numpy's `mt19937_next64`: first draw is the HIGH word.
    pub fn next_u64(&mut self) -> u64 {
        let hi = self.next_u32() as u64;
        let lo = self.next_u32() as u64;
        (hi << 32) | lo
    }

    /// numpy's `mt19937_next_double`: 27 + 26 bits -> a 53-bit double in [0, 1).
    pub fn next_double(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67_108_864.0 + b) / 9_007_199_254_740_992.0
    }
}
