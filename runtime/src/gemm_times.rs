//! An opt-in record of the matrix products a program runs, by shape: how often each ran
//! and how long it took on the thread that called it (`gpt bench --products`).
//!
//! Why: a step's GEMMs run at a different rate than the same shapes in `gemm_bench`
//! (their operands come from L3 or memory, and in a split step the other core is busy
//! with the other half), and the step's share of the SGEMM ceiling alone does not say
//! which products lose. Switched off, a product pays one relaxed atomic load.
//!
//! Times are wall time on the calling thread, so products that run side by side (the
//! two halves of a split step) each count in full: per shape, `calls · flops / seconds`
//! is the rate on the `threads` the product was given.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::gemm::{Kernel, MatRef};

/// One shape of product, and its calls while recording.
#[derive(Clone, Debug, PartialEq)]
pub struct ProductTime {
    /// `a` is `m × k`, `b` is `k × n`.
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// Whether `a` (`b`) was read through a transposed view (column stride ≠ 1).
    pub a_transposed: bool,
    pub b_transposed: bool,
    /// Whether a fused epilogue ran on the rows as they were finished (its time counts).
    pub epilogue: bool,
    pub kernel: Kernel,
    /// The threads the product could split over (1 inside a half of a split step).
    pub threads: usize,
    pub calls: usize,
    pub seconds: f64,
}

impl ProductTime {
    /// Multiply-adds times two, per call (a causal product skips some; not subtracted).
    pub fn flops(&self) -> f64 {
        2.0 * (self.m * self.k * self.n) as f64
    }

    /// The rate over all calls, in GFLOP/s.
    pub fn gflops(&self) -> f64 {
        self.flops() * self.calls as f64 / self.seconds / 1e9
    }
}

static RECORDING: AtomicBool = AtomicBool::new(false);
static TIMES: Mutex<Vec<ProductTime>> = Mutex::new(Vec::new());

/// Starts or stops recording every product; what was recorded is kept.
pub fn record_products(on: bool) {
    RECORDING.store(on, Ordering::Relaxed);
}

/// What was recorded, the longest total first (ties in a fixed order, by shape); the
/// record is emptied.
pub fn take_product_times() -> Vec<ProductTime> {
    let mut times = std::mem::take(&mut *TIMES.lock().unwrap_or_else(|e| e.into_inner()));
    times.sort_by(|x, y| y.seconds.total_cmp(&x.seconds).then_with(|| key(x).cmp(&key(y))));
    times
}

/// What tells two records apart: everything but the counts.
fn key(t: &ProductTime) -> (usize, usize, usize, bool, bool, bool, u8, usize) {
    (t.m, t.k, t.n, t.a_transposed, t.b_transposed, t.epilogue, t.kernel as u8, t.threads)
}

/// When recording: the moment a product starts.
pub(crate) fn start() -> Option<Instant> {
    RECORDING.load(Ordering::Relaxed).then(Instant::now)
}

/// Adds a product that started at `started` (`start()`'s answer) to the record.
pub(crate) fn finish(
    started: Option<Instant>,
    a: MatRef,
    b: MatRef,
    kernel: Kernel,
    epilogue: bool,
    threads: usize,
) {
    let Some(started) = started else { return };
    let seconds = started.elapsed().as_secs_f64();
    let transposed = |v: MatRef| v.col_stride != 1 && v.cols > 1;
    let new = ProductTime {
        m: a.rows,
        k: a.cols,
        n: b.cols,
        a_transposed: transposed(a),
        b_transposed: transposed(b),
        epilogue,
        kernel,
        threads,
        calls: 1,
        seconds,
    };
    let mut times = TIMES.lock().unwrap_or_else(|e| e.into_inner());
    match times.iter_mut().find(|t| key(t) == key(&new)) {
        Some(t) => {
            t.calls += 1;
            t.seconds += seconds;
        }
        None => times.push(new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::sgemm;

    #[test]
    fn products_are_recorded_by_shape_only_while_recording() {
        // No test forces another kernel meanwhile (the shape would be recorded twice).
        let _serial = crate::gemm::tests::KERNEL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // Shapes no other test uses: tests run in parallel and would add their own.
        let (a, b) = (vec![1.0f32; 13 * 29], vec![2.0f32; 29 * 31]);
        let mut c = vec![0.0f32; 13 * 31];
        let a_t = vec![1.0f32; 29 * 11];
        let ours = |t: &&ProductTime| (t.m, t.k) == (13, 29) || (t.m, t.k) == (11, 29);
        take_product_times();
        record_products(true);
        sgemm(MatRef::row_major(&a, 13, 29), MatRef::row_major(&b, 29, 31), &mut c).unwrap();
        record_products(false);
        sgemm(MatRef::row_major(&a, 13, 29), MatRef::row_major(&b, 29, 31), &mut c).unwrap();
        record_products(true);
        sgemm(MatRef::row_major(&a, 13, 29), MatRef::row_major(&b, 29, 31), &mut c).unwrap();
        sgemm(MatRef::row_major(&a_t, 29, 11).t(), MatRef::row_major(&b, 29, 31), &mut c[..11 * 31]).unwrap();
        record_products(false);
        let times = take_product_times();
        let mine: Vec<&ProductTime> = times.iter().filter(ours).collect();
        assert_eq!(mine.len(), 2, "{mine:?}");
        let plain = mine.iter().find(|t| t.m == 13).unwrap();
        assert_eq!((plain.n, plain.calls, plain.a_transposed, plain.b_transposed), (31, 2, false, false));
        assert!(plain.seconds > 0.0 && plain.gflops().is_finite());
        assert_eq!(plain.flops(), 2.0 * (13 * 29 * 31) as f64);
        let transposed = mine.iter().find(|t| t.m == 11).unwrap();
        assert_eq!((transposed.calls, transposed.a_transposed), (1, true));
        assert!(!take_product_times().iter().any(|t| ours(&t)), "taking the record empties it");
    }
}
