//! How work spreads over the cores: the persistent rayon pool every kernel splits over,
//! a serial mode that keeps a kernel's work on the calling thread, and the batch split
//! of a training step (the generated `grads` runs the two halves of a batch as two
//! steps side by side, when the compiler proved the loss a sum over examples:
//! `adjoint_compiler::backend::split`).
//!
//! Why split the batch: on the 2-core machines this targets, handing each product and
//! loop to the pool costs a wake-up per call and leaves one core idle through every
//! copy, sum and small loop (17% idle through the small config's step, `time`). Two
//! half-batch steps, each on one core in serial mode, hand off once per step. The two
//! take the same time only on average (on small, one waited 0–8% of the step for the
//! other), so when one finishes, the other's remaining kernels spread over the pool and
//! the finished core takes its share (`threads`).
//!
//! The split does not depend on the thread count: a batch of `n ≥ 2` always runs as
//! `n/2` and `n - n/2` examples (one after the other when there is one thread), so the
//! same inputs give the same gradients at any thread count (across instruction sets
//! they may differ in the last bits: the AVX2 and AVX-512 builds fuse multiply-adds,
//! the portable one does not).

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::error::{Result, bail};
use crate::ops::Real;

thread_local! {
    static SERIAL: Cell<bool> = const { Cell::new(false) };
    /// In one part of a split step (`join_parts`): how many of the step's two parts are
    /// still running.
    static PARTS_RUNNING: Cell<Option<Arc<AtomicU8>>> = const { Cell::new(None) };
    /// Set inside `whole_batch`.
    static WHOLE: Cell<bool> = const { Cell::new(false) };
    /// Split steps this thread has run (`split_steps`).
    static SPLIT_STEPS: Cell<usize> = const { Cell::new(0) };
}

/// When generated `grads` splits a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchSplit {
    /// Never: the whole batch at once.
    Off = 0,
    /// When the second half's gradients (one more set of the parameters' size) fit in
    /// `AUTO_MAX_SPARE_BYTES` (the default).
    Auto = 1,
    /// Whenever the model allows it.
    Always = 2,
}

/// The largest extra gradient set `BatchSplit::Auto` accepts. Measured on the 2-core
/// Xeon (BENCHMARKS.md): the small config (14 MiB of gradients) ran 15–20% faster split;
/// GPT-2 (472 MiB) between 11% faster and 5% slower, with about 800 MiB more peak
/// memory, above PyTorch's.
pub const AUTO_MAX_SPARE_BYTES: usize = 64 << 20;

static BATCH_SPLIT: AtomicU8 = AtomicU8::new(BatchSplit::Auto as u8);

/// The threads a kernel may split its work over: the pool's, or 1 in serial mode,
/// except in a part of a split step whose other part has finished: the two parts take
/// the same time only on average (small's waited 0–8% of the step for each other), so
/// the one still running spreads its remaining kernels over the pool, where the core
/// that finished takes its share. Kernels give the same results at any thread count.
pub fn threads() -> usize {
    if SERIAL.with(Cell::get) && !partner_done() { 1 } else { rayon::current_num_threads() }
}

/// Whether this thread runs a part of a split step whose other part has finished.
fn partner_done() -> bool {
    PARTS_RUNNING.with(|cell| {
        let running = cell.take();
        let done = running.as_ref().is_some_and(|n| n.load(Ordering::Acquire) == 1);
        cell.set(running);
        done
    })
}

/// Runs `f` with every kernel it calls on the calling thread.
pub fn serial<R>(f: impl FnOnce() -> R) -> R {
    with_cell(&PARTS_RUNNING, None, || with_cell(&SERIAL, true, f))
}

/// `f` in serial mode as one of the two parts of a split step counted by `running`,
/// its kernels spreading over the pool once the other part has finished.
fn part<R>(running: &Arc<AtomicU8>, f: impl FnOnce() -> R) -> R {
    let out = serial(|| with_cell(&PARTS_RUNNING, Some(running.clone()), f));
    running.fetch_sub(1, Ordering::Release);
    out
}

/// Whether this thread is in serial mode (`serial`: each half of a split batch is).
pub(crate) fn is_serial() -> bool {
    SERIAL.with(Cell::get)
}

/// Runs `f` with the `grads` it calls on this thread taking whole batches (tests
/// compare the two paths; `set_batch_split` is the process-wide switch).
pub fn whole_batch<R>(f: impl FnOnce() -> R) -> R {
    with_cell(&WHOLE, true, f)
}

/// How many split steps (`join_parts`) this thread has run: tests check a step split.
pub fn split_steps() -> usize {
    SPLIT_STEPS.with(Cell::get)
}

/// `f` with the thread-local `cell` holding `value`, its old value restored after (also
/// on a panic).
fn with_cell<T: 'static, R>(
    cell: &'static std::thread::LocalKey<Cell<T>>,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    struct Restore<T: 'static>(&'static std::thread::LocalKey<Cell<T>>, Option<T>);
    impl<T: 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            if let Some(old) = self.1.take() {
                self.0.set(old);
            }
        }
    }
    let _restore = Restore(cell, Some(cell.replace(value)));
    f()
}

/// Sets when generated `grads` splits batches, process-wide (benchmarks compare the
/// modes; the default is `Auto`).
pub fn set_batch_split(mode: BatchSplit) {
    BATCH_SPLIT.store(mode as u8, Ordering::Relaxed);
}

/// The mode `set_batch_split` set.
pub fn batch_split() -> BatchSplit {
    match BATCH_SPLIT.load(Ordering::Relaxed) {
        0 => BatchSplit::Off,
        2 => BatchSplit::Always,
        _ => BatchSplit::Auto,
    }
}

/// Where `grads` splits a batch whose inputs have `sizes` examples, for a model with
/// `param_elems()` parameters (the second half's gradients take as many floats; asked
/// only in `Auto` mode, after the cheap checks):
/// `Some(n / 2)` when the mode allows it and every input has the same `n ≥ 2`. Inputs
/// that disagree are not split, so the whole-batch path reports the mismatch.
pub fn split_point(sizes: &[usize], param_elems: impl FnOnce() -> usize) -> Option<usize> {
    let n = *sizes.first()?;
    if WHOLE.with(Cell::get) || n < 2 || sizes.iter().any(|&s| s != n) {
        return None;
    }
    let on = match batch_split() {
        BatchSplit::Off => false,
        BatchSplit::Auto => param_elems().saturating_mul(4) <= AUTO_MAX_SPARE_BYTES,
        BatchSplit::Always => true,
    };
    on.then_some(n / 2)
}

/// Runs the two parts of a step, side by side when the pool has a thread for each:
/// then each runs in serial mode on its own thread (with more threads, each part's
/// kernels still split over the pool). In serial mode, one after the other.
pub fn join_parts<A: Send, B: Send>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
    SPLIT_STEPS.with(|n| n.set(n.get() + 1));
    match threads() {
        1 => (a(), b()),
        2 => {
            let running = Arc::new(AtomicU8::new(2));
            rayon::join(|| part(&running, a), || part(&running, b))
        }
        _ => rayon::join(a, b),
    }
}

/// Makes the calling thread one of the pool's threads (thread 0; the pool's size is
/// rayon's default, `RAYON_NUM_THREADS` or one per core), so the steps and kernels it
/// calls run here, with no hand-off. Call it first thing in `main`, before anything
/// uses the pool; once the pool exists it is an error.
///
/// Why: a step called from a thread outside the pool hands itself to a pool thread and
/// the caller sleeps until it is done; on this KVM guest, waking the caller took
/// 8–25 µs of a 0.7 ms tiny step (timers around `on_pool`'s hand-off), and the whole
/// step ran 2–4% faster with the caller in the pool (`examples/gpt/ab.sh` tiny 2000 12:
/// 0.956 and 0.978). Work that other threads hand to the pool then runs on its other threads:
/// this one does not wait for work between its own calls.
pub fn pool_on_this_thread() -> Result<()> {
    rayon::ThreadPoolBuilder::new().use_current_thread().build_global().map_err(|e| {
        crate::error::Error::new(format!(
            "cannot make this thread a pool thread: {e} (call `pool_on_this_thread` before \
             anything uses the thread pool)"
        ))
    })
}

/// Runs `f` on a thread of the pool (here, if this is one), with this thread's modes
/// (`whole_batch`) and split count carried there and the count carried back. A
/// training step called from outside the pool otherwise hands work to the pool, and
/// sleeps until it is done, twice: once for the two parts and once for the update
/// (`pool_on_this_thread` makes the caller a pool thread, so there is no hand-off).
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() || SERIAL.with(Cell::get) || rayon::current_num_threads() < 2 {
        return f();
    }
    let (whole, steps) = (WHOLE.with(Cell::get), SPLIT_STEPS.with(Cell::get));
    let (out, steps) = rayon::scope(|_| {
        with_cell(&WHOLE, whole, || {
            with_cell(&SPLIT_STEPS, steps, || {
                let out = f();
                (out, SPLIT_STEPS.with(Cell::get))
            })
        })
    });
    SPLIT_STEPS.with(|n| n.set(steps));
    out
}

/// The weights of the two parts' losses and gradients in the whole batch's: a loss
/// `B^(exponent/2) · Σ examples` over `n` examples, split at `first`.
pub fn part_weights(n: usize, first: usize, exponent: i32) -> (f32, f32) {
    let weight = |part: usize| (n as f64 / part as f64).powf(f64::from(exponent) / 2.0) as f32;
    (weight(first), weight(n - first))
}

/// Elements per task of the elementwise passes over whole tensors (`combine`, the
/// optimizer's updates): large tensors (GPT-2's 38M-element embedding) are split over
/// the pool.
pub(crate) const CHUNK: usize = 1 << 16;

/// How two parts' gradients add, element by element: `w_dst · d + w_src · s` (one
/// place, so every pass that adds them gives the same bits).
#[inline(always)]
pub(crate) fn weighted(d: f32, w_dst: f32, s: f32, w_src: f32) -> f32 {
    w_dst * d + w_src * s
}

/// `dst[i] = weighted(dst[i], w_dst, src[i], w_src)` for every element.
#[inline(always)]
pub(crate) fn weighted_add(dst: &mut [f32], w_dst: f32, src: &[f32], w_src: f32) {
    dst.iter_mut().zip(src).for_each(|(d, &s)| *d = weighted(*d, w_dst, s, w_src));
}

/// `dst[i] = w_dst · dst[i] + w_src · src[i]` for every tensor, `src[k]` added into
/// `dst[k]` (the two parts' gradients into the whole batch's, each list in the
/// parameters' order): the chunks of every tensor in one pass over the pool (one
/// hand-off per step, not one per tensor), or on the calling thread when there are only
/// a few. Lists of different lengths, or a pair of different shapes, are an error
/// before anything changes.
pub fn combine(dst: Vec<&mut Real>, w_dst: f32, src: &[&Real], w_src: f32) -> Result<()> {
    if dst.len() != src.len() {
        bail!("combine: {} gradients and {} to add", dst.len(), src.len());
    }
    if let Some(k) = (0..dst.len()).find(|&k| dst[k].shape() != src[k].shape()) {
        bail!("combine: tensor {k} has shapes {:?} and {:?}", dst[k].shape(), src[k].shape());
    }
    let mut chunks: Vec<(&mut [f32], &[f32])> = Vec::new();
    for (k, (d, s)) in dst.into_iter().zip(src).enumerate() {
        let (Some(d), Some(s)) = (d.as_slice_mut(), s.as_slice()) else {
            bail!("combine: tensor {k} is not contiguous");
        };
        chunks.extend(d.chunks_mut(CHUNK).zip(s.chunks(CHUNK)));
    }
    for_each_chunk(chunks, |(d, s)| weighted_add(d, w_dst, s, w_src));
    Ok(())
}

/// `f` on every chunk: by every thread of the pool that comes to help, each taking the
/// next chunk left, or on the calling thread when there are only a few (a hand-off
/// costs more than they do).
///
/// Why not a parallel iterator: it gives the other thread a fixed half, and the caller
/// waits for that half even when the thread was asleep and took 20–40 µs to wake (the
/// optimizer's pass after a split step, tiny config: 15% of the process's context
/// switches were the caller sleeping there, `perf record -e context-switches`). Here a
/// thread that comes late takes only what is left, and the caller waits at most for
/// the chunk it is on. Each chunk's work is the same whichever thread does it.
pub(crate) fn for_each_chunk<T: Send>(chunks: Vec<T>, f: impl Fn(T) + Sync + Send) {
    let helpers = threads().saturating_sub(1);
    if chunks.len() <= 4 || helpers == 0 {
        chunks.into_iter().for_each(f);
        return;
    }
    let left = std::sync::Mutex::new(chunks.into_iter());
    let take_all = || {
        // A poisoned lock means another taker panicked; the scope re-raises that panic.
        while let Some(chunk) = left.lock().ok().and_then(|mut it| it.next()) {
            f(chunk);
        }
    };
    rayon::scope(|scope| {
        for _ in 0..helpers {
            scope.spawn(|_| take_all());
        }
        take_all();
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    #[test]
    fn serial_mode_is_per_thread_and_restored() {
        let outside = threads();
        serial(|| {
            assert_eq!(threads(), 1);
            serial(|| assert_eq!(threads(), 1));
            assert_eq!(threads(), 1);
        });
        assert_eq!(threads(), outside);
        assert_eq!(rayon::join(|| serial(threads), threads), (1, rayon::current_num_threads()));
    }

    #[test]
    fn a_part_spreads_over_the_pool_once_the_other_part_has_finished() {
        let pool = rayon::current_num_threads();
        if pool < 2 {
            return;
        }
        // Large enough for the product to be split between threads.
        let (m, k, n) = (300, 200, 600);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 23) as f32 - 11.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 104_729) % 19) as f32 / 7.0).collect();
        let product = || {
            use crate::gemm::MatRef;
            let mut c = vec![0f32; m * n];
            crate::gemm::sgemm(MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n), &mut c).unwrap();
            c
        };
        let want = serial(product);
        // The second part waits for the first to finish (side by side or after it on
        // the same thread), so the first always runs alone on its core.
        let (first, (during, nested, got)) = join_parts(
            || (threads(), partner_done()),
            || {
                let started = std::time::Instant::now();
                while !partner_done() && started.elapsed() < std::time::Duration::from_secs(20) {
                    std::thread::yield_now();
                }
                (threads(), serial(threads), product())
            },
        );
        assert_eq!(first, (1, false));
        assert_eq!(during, pool, "the remaining part spreads over the pool");
        assert_eq!(nested, 1, "serial inside a part is serial");
        assert!(got.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()), "the same bits");
        assert_eq!((threads(), partner_done()), (pool, false), "restored after the step");
    }

    #[test]
    fn split_points_and_weights() {
        assert_eq!(split_point(&[8, 8], || 100), Some(4));
        assert_eq!(split_point(&[5], || 100), Some(2));
        assert_eq!(split_point(&[1, 1], || 100), None);
        assert_eq!(split_point(&[8, 6], || 100), None);
        assert_eq!(split_point(&[], || 100), None);
        assert_eq!(whole_batch(|| split_point(&[8, 8], || 100)), None);
        assert_eq!(split_point(&[8, 8], || 100), Some(4));
        // The default mode leaves out models whose extra gradient set is too big.
        assert_eq!(batch_split(), BatchSplit::Auto);
        assert_eq!(split_point(&[8, 8], || AUTO_MAX_SPARE_BYTES / 4), Some(4));
        assert_eq!(split_point(&[8, 8], || AUTO_MAX_SPARE_BYTES / 4 + 1), None);
        // A mean over 5 examples split 2 + 3: weights 2/5 and 3/5; a sum: 1 and 1.
        let (a, b) = part_weights(5, 2, -2);
        assert!((a - 0.4).abs() < 1e-7 && (b - 0.6).abs() < 1e-7);
        assert_eq!(part_weights(5, 2, 0), (1.0, 1.0));
    }

    #[test]
    fn on_pool_carries_the_modes_there_and_the_split_count_back() {
        let before = split_steps();
        let (index, whole) = on_pool(|| {
            join_parts(|| (), || ());
            (rayon::current_thread_index(), WHOLE.with(Cell::get))
        });
        assert_eq!(split_steps(), before + 1, "the split is counted on the calling thread");
        assert!(!whole);
        if rayon::current_num_threads() >= 2 {
            assert!(index.is_some(), "ran on a pool thread");
        }
        assert!(whole_batch(|| on_pool(|| WHOLE.with(Cell::get))), "whole_batch holds inside");
        // Serial mode stays on the calling thread.
        assert_eq!(serial(|| on_pool(rayon::current_thread_index)), rayon::current_thread_index());
    }

    #[test]
    fn combine_weights_matching_tensors_and_refuses_others() {
        let t = |v: Vec<f32>| ArrayD::from_shape_vec(IxDyn(&[v.len()]), v).unwrap();
        let big: Vec<f32> = (0..CHUNK * 2 + 3).map(|i| i as f32).collect();
        let (mut a, mut b) = (t(vec![1.0, 2.0]), t(big.clone()));
        let (c, d) = (t(vec![10.0, 20.0]), t(vec![1.0; big.len()]));
        combine(vec![&mut a, &mut b], 0.5, &[&c, &d], 2.0).unwrap();
        assert_eq!(a.as_slice().unwrap(), &[20.5, 41.0]);
        assert!(b.iter().zip(&big).all(|(&x, &y)| x == 0.5 * y + 2.0));
        // A shape mismatch anywhere changes nothing.
        let (mut e, before) = (t(vec![1.0; 3]), a.clone());
        assert!(combine(vec![&mut a, &mut e], 1.0, &[&c, &c], 1.0).is_err());
        assert_eq!(a, before);
        assert!(combine(vec![], 1.0, &[&c], 1.0).is_err());
        let strided = ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1.0; 4]).unwrap();
        let mut strided = strided.reversed_axes();
        let square = ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1.0; 4]).unwrap();
        assert!(combine(vec![&mut strided], 1.0, &[&square], 1.0).is_err());
    }

    #[test]
    fn every_chunk_is_taken_once_whoever_takes_it() {
        use std::sync::atomic::AtomicUsize;
        // From outside the pool, on a pool thread, in serial mode, and with too few
        // chunks to share: each chunk runs exactly once.
        let run = |n: usize| {
            let counts: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            let takers = std::sync::Mutex::new(std::collections::HashSet::new());
            for_each_chunk((0..n).collect(), |i: usize| {
                counts[i].fetch_add(1, Ordering::Relaxed);
                takers.lock().unwrap().insert(std::thread::current().id());
            });
            assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1), "{n} chunks");
            takers.into_inner().unwrap().len()
        };
        for n in [0, 3, 5, 1000] {
            run(n);
            rayon::scope(|_| run(n));
            assert_eq!(serial(|| run(n)), n.min(1), "serial mode keeps {n} chunks on one thread");
        }
    }
}
