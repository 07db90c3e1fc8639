//! numpy's legacy global random stream (`np.random.seed(s)` then `power`, `randint`, `gamma`, ...) reproduced
//! bit for bit, so S-LoRA's benchmark workload (`super::slora`) replays exactly the requests its published
//! runs saw. Checked against fixtures written by numpy 2.4.6 itself (tests/numpy_fixtures.rs,
//! tests/fixtures/numpy/fixtures.py).
//!
//! Bit-exactness caveat: `ln`, `exp` and `powf` go to the platform libm. The fixtures match exactly on x86_64
//! Linux with glibc; with another libm (macOS, musl) or a numpy build that fuses multiply-adds, a draw could
//! differ in its last bit, and a gamma rejection test could then flip.

mod legacy;
mod mt19937;

pub use legacy::LegacyRandomState;
pub use mt19937::Mt19937;
