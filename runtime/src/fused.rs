//! What fused loops call: the row driver, checked flat views of tensors, and the row
//! reductions a loop body uses (its elementwise functions are in `math`).
//!
//! The code generator turns each chain of elementwise ops and last-axis reductions into
//! one closure run per row (`rows`). This module owns everything about running it:
//! splitting the rows over the persistent thread pool, handing each row its slice of
//! every output, and compiling the closure for AVX2+FMA when the CPU has it. That last
//! part works because `rows` is generic over the closure: the closure's body is inlined
//! into a `#[target_feature]` function here (AVX-512, AVX2+FMA, or the portable build,
//! chosen at run time), so the loops the user's crate emitted are vectorised for the
//! machine they run on without the user's crate enabling anything. Each build also
//! hands the body its `math::Arith` as a constant (fused multiply-adds in the AVX2 and
//! AVX-512 builds), which the inlined body's polynomials fold in.
//!
//! Every view is checked against the shape the generated code expects: a tensor of the
//! wrong shape is an `Err`, never an out-of-bounds read.

use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::column_sums::{self, Partials, Sums};
use crate::error::{Result, bail};
use crate::math::Arith;
use crate::ops::{Index, Real};

/// Below this many elements per output row block, a loop stays on the calling thread:
/// waking the pool costs more than it saves. Measured (`gpt bench`, interleaved): at
/// 2^15 the tiny config's 128×256 loops went to the pool and its step took 1.92–2.12 ms,
/// at 2^17 1.51–1.56 ms; the small config's step did not move beyond noise.
pub(crate) const PARALLEL_MIN_ELEMENTS: usize = 1 << 17;

/// The builds of a fused loop, from the most portable up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Path {
    /// Baseline x86-64 (SSE2), or whatever the target offers elsewhere.
    Portable = 1,
    /// AVX2 and FMA.
    Avx2 = 2,
    /// AVX-512 (F, BW, DQ, VL) on top of AVX2 and FMA.
    Avx512 = 3,
}

/// The highest build fused loops may use (0: no cap): for tests that must exercise
/// every build on one machine.
static CAP: AtomicU8 = AtomicU8::new(0);

/// Caps the build fused loops use, process-wide (`None` lifts the cap). A cap above
/// what the CPU has changes nothing.
pub fn force_path(cap: Option<Path>) {
    CAP.store(cap.map_or(0, |p| p as u8), Ordering::Relaxed);
}

/// The build fused loops run on this CPU, under the cap.
pub fn path() -> Path {
    let best = best_path();
    match CAP.load(Ordering::Relaxed) {
        1 => Path::Portable,
        2 => best.min(Path::Avx2),
        _ => best,
    }
}

/// Every build this CPU can run, for tests.
pub fn paths() -> Vec<Path> {
    [Path::Portable, Path::Avx2, Path::Avx512].into_iter().filter(|&p| p <= best_path()).collect()
}

fn best_path() -> Path {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f")
            && has!("avx512bw")
            && has!("avx512dq")
            && has!("avx512vl")
            && has!("avx2")
            && has!("fma")
        {
            return Path::Avx512;
        }
        if has!("avx2") && has!("fma") {
            return Path::Avx2;
        }
    }
    Path::Portable
}

/// A tensor for a fused loop's output, its buffer taken from the pool: its contents are
/// unspecified until the loop, which writes every element, has run.
pub fn output(shape: &[usize]) -> Result<Real> {
    let len = shape.iter().product();
    ArrayD::from_shape_vec(IxDyn(shape), crate::pool::take(len))
        .map_err(|e| crate::Error::new(format!("fused loop: {e}")))
}

/// `t`'s elements in row-major order, after checking it has `shape`.
pub fn read<'a>(t: &'a Real, shape: &[usize]) -> Result<&'a [f32]> {
    if t.shape() != shape {
        bail!("fused loop: expected shape {shape:?}, got {:?}", t.shape());
    }
    match t.as_slice() {
        Some(s) => Ok(s),
        None => bail!("fused loop: an operand of shape {shape:?} is not contiguous"),
    }
}

/// `t`'s indices in row-major order, after checking its shape and that every index is
/// below `bound` (a one-hot's depth): the loop then reads them without checks.
pub fn read_index<'a>(t: &'a Index, shape: &[usize], bound: usize) -> Result<&'a [i32]> {
    if t.shape() != shape {
        bail!("fused loop: expected indices of shape {shape:?}, got {:?}", t.shape());
    }
    let Some(s) = t.as_slice() else { bail!("fused loop: indices are not contiguous") };
    if let Some(bad) = s.iter().find(|&&i| i < 0 || i as usize >= bound) {
        bail!("one_hot: index {bad} is out of range 0..{bound}");
    }
    Ok(s)
}

/// A fused loop's output, as a flat mutable slice.
pub fn write(t: &mut Real) -> Result<&mut [f32]> {
    match t.as_slice_mut() {
        Some(s) => Ok(s),
        None => bail!("fused loop: an output is not contiguous"),
    }
}

/// The offset of row `r`'s first element in a tensor read through broadcasts: `dims` are
/// the loop's leading axes (outermost first), `strides` the tensor's stride along each
/// (0 where it is broadcast).
#[inline]
pub fn offset(mut r: usize, dims: &[usize], strides: &[usize]) -> usize {
    let mut off = 0;
    for (d, s) in dims.iter().zip(strides).rev() {
        let d = (*d).max(1);
        off += (r % d) * s;
        r /= d;
    }
    off
}

/// Runs `body(r, outs, scratch, arith)` for every row `r < rows`. Output `k` is
/// `outs[k].0`, `outs[k].1` elements per row; `body` gets row `r`'s part of each,
/// `scratch_rows` rows of `width` scratch floats it may use freely, and the arithmetic
/// the build running it may use for `math`'s functions. Rows are split over the pool when
/// there is enough work; each row is computed the same way on any thread, so results do
/// not depend on the thread count.
pub fn rows<const K: usize, F>(
    rows: usize,
    width: usize,
    scratch_rows: usize,
    outs: [(&mut [f32], usize); K],
    body: F,
) -> Result<()>
where
    F: Fn(usize, [&mut [f32]; K], &mut [f32], Arith) + Sync,
{
    rows_with_sums(
        rows,
        width,
        scratch_rows,
        outs,
        [],
        #[inline(always)]
        |r, outs, [], scratch, arith| body(r, outs, scratch, arith),
    )
}

/// `rows`, with `A` column sums besides: `sums[k].0` (`sums[k].1` floats) ends up
/// holding the sum over all rows of what `body` adds into its `k`th sum row (handed
/// after the outputs), in a fixed order whatever the thread count (`column_sums`).
pub fn rows_with_sums<const K: usize, const A: usize, F>(
    rows: usize,
    width: usize,
    scratch_rows: usize,
    outs: [(&mut [f32], usize); K],
    sums: [(&mut [f32], usize); A],
    body: F,
) -> Result<()>
where
    F: Fn(usize, [&mut [f32]; K], [&mut [f32]; A], &mut [f32], Arith) + Sync,
{
    let (bufs, per_row) = split_outputs(rows, outs)?;
    let mut partials = Partials::new(rows, &sums)?;
    let threads = crate::gemm::threads().max(1);
    let work = rows * width.max(1);
    let chunks = if work < PARALLEL_MIN_ELEMENTS || rows < 2 { 1 } else { threads.min(rows) };
    let mut per_chunk = rows.div_ceil(chunks.max(1)).max(1);
    if A > 0 {
        // Each thread's rows start a block of partial sums.
        per_chunk = per_chunk.next_multiple_of(column_sums::BLOCK);
    }
    let tasks = row_runs(rows, per_chunk, bufs, &per_row, &mut partials);
    let run = |mut run: RowRun<K, A>| {
        // Scratch rows are written before they are read: a pooled buffer will do.
        let mut scratch = crate::pool::take(scratch_rows * width);
        run_chunk(run.first, run.end, run.outs, &per_row, &mut run.sums, &mut scratch, &body);
        crate::pool::give(scratch);
    };
    if tasks.len() == 1 {
        tasks.into_iter().for_each(run);
    } else {
        tasks.into_par_iter().for_each(run);
    }
    partials.finish(sums);
    Ok(())
}

/// A loop body as `rows_with_sums` runs it: row, outputs, column sums, scratch, arithmetic.
pub(crate) trait RowBody<const K: usize, const A: usize>:
    Fn(usize, [&mut [f32]; K], [&mut [f32]; A], &mut [f32], Arith)
{
}

impl<const K: usize, const A: usize, F> RowBody<K, A> for F where
    F: Fn(usize, [&mut [f32]; K], [&mut [f32]; A], &mut [f32], Arith)
{
}

/// One thread's run of a loop's rows, `first..end`: its rows of every output and its
/// column sums' partials.
pub(crate) struct RowRun<'a, const K: usize, const A: usize> {
    pub first: usize,
    pub end: usize,
    pub outs: [&'a mut [f32]; K],
    pub sums: Sums<'a, A>,
}

/// Rows `0..rows` in runs of `per_run` rows (the last shorter), one for each thread.
pub(crate) fn row_runs<'a, const K: usize, const A: usize>(
    rows: usize,
    per_run: usize,
    mut bufs: [&'a mut [f32]; K],
    per_row: &[usize; K],
    partials: &'a mut Partials<A>,
) -> Vec<RowRun<'a, K, A>> {
    let mut rest = partials.parts();
    let mut runs = Vec::with_capacity(rows.div_ceil(per_run.max(1)));
    let mut first = 0;
    while first < rows {
        let end = (first + per_run).min(rows);
        let outs = take_rows(&mut bufs, per_row, end - first);
        runs.push(RowRun { first, end, outs, sums: rest.split_off(first, end) });
        first = end;
    }
    runs
}

/// A loop's outputs as buffers and their widths, each checked to hold `rows` rows.
pub(crate) fn split_outputs<const K: usize>(
    rows: usize,
    outs: [(&mut [f32], usize); K],
) -> Result<([&mut [f32]; K], [usize; K])> {
    let mut per_row = [0usize; K];
    let mut bufs: [&mut [f32]; K] = std::array::from_fn(|_| <&mut [f32]>::default());
    for (k, (buf, w)) in outs.into_iter().enumerate() {
        if buf.len() != rows * w {
            bail!("fused loop: output {k} has {} elements, expected {rows} × {w}", buf.len());
        }
        per_row[k] = w;
        bufs[k] = buf;
    }
    Ok((bufs, per_row))
}

/// Splits `n` rows off the front of every buffer.
pub(crate) fn take_rows<'a, const K: usize>(
    bufs: &mut [&'a mut [f32]; K],
    per_row: &[usize; K],
    n: usize,
) -> [&'a mut [f32]; K] {
    std::array::from_fn(|k| {
        let (head, tail) = std::mem::take(&mut bufs[k]).split_at_mut(n * per_row[k]);
        bufs[k] = tail;
        head
    })
}

/// Rows `r0..r1` of a loop on this thread, in the best build the CPU has.
pub(crate) fn run_chunk<const K: usize, const A: usize, F>(
    r0: usize,
    r1: usize,
    part: [&mut [f32]; K],
    per_row: &[usize; K],
    sums: &mut Sums<A>,
    scratch: &mut [f32],
    body: &F,
) where
    F: Fn(usize, [&mut [f32]; K], [&mut [f32]; A], &mut [f32], Arith),
{
    in_best_build(
        #[inline(always)]
        |arith| chunk(r0, r1, part, per_row, sums, scratch, body, arith),
    )
}

/// `f(arith)` in the best build the CPU has, under the cap: inlined into a
/// `#[target_feature]` function for AVX-512 or AVX2+FMA (with `Arith::FMA`), or run as
/// the portable build (with `Arith::NATIVE`). Every loop outside the GEMM that wants
/// the wider vectors goes through here: fused loops, `ops::sum`'s column sums.
#[inline(always)]
pub(crate) fn in_best_build<R>(f: impl FnOnce(Arith) -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
        fn avx512<R>(f: impl FnOnce(Arith) -> R) -> R {
            f(Arith::FMA)
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2<R>(f: impl FnOnce(Arith) -> R) -> R {
            f(Arith::FMA)
        }
        match path() {
            // SAFETY: `path` returns `Avx512` only after `is_x86_feature_detected!` found
            // every feature `avx512` enables; the function itself is safe code.
            Path::Avx512 => return unsafe { avx512(f) },
            // SAFETY: as above, for AVX2 and FMA, all `avx2` enables.
            Path::Avx2 => return unsafe { avx2(f) },
            Path::Portable => {}
        }
    }
    f(Arith::NATIVE)
}

/// The rows `r0..r1`, in order; inlined into each dispatch variant so the loop body is
/// compiled once per instruction set.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn chunk<const K: usize, const A: usize, F>(
    r0: usize,
    r1: usize,
    mut part: [&mut [f32]; K],
    per_row: &[usize; K],
    sums: &mut Sums<A>,
    scratch: &mut [f32],
    body: &F,
    arith: Arith,
) where
    F: Fn(usize, [&mut [f32]; K], [&mut [f32]; A], &mut [f32], Arith),
{
    for r in r0..r1 {
        let row = take_rows(&mut part, per_row, 1);
        body(r, row, sums.row(r), scratch, arith);
    }
}

/// `S` scratch rows of `n` floats from a loop's scratch buffer.
#[inline]
pub fn scratch<const S: usize>(buf: &mut [f32], n: usize) -> [&mut [f32]; S] {
    let mut rest = buf;
    std::array::from_fn(|_| {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(n);
        rest = tail;
        head
    })
}

/// The sum of a row, in eight interleaved partial sums (so it vectorises), added in a
/// fixed order: the same row always gives the same bits.
#[inline]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut blocks = x.chunks_exact(8);
    for b in &mut blocks {
        for l in 0..8 {
            acc[l] += b[l];
        }
    }
    let mut tail = 0f32;
    for &v in blocks.remainder() {
        tail += v;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// The maximum of a row (−∞ for an empty row); NaN if any element is NaN.
#[inline]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let mut nan = false;
    let mut blocks = x.chunks_exact(8);
    for b in &mut blocks {
        for l in 0..8 {
            nan |= b[l].is_nan();
            acc[l] = if b[l] > acc[l] { b[l] } else { acc[l] };
        }
    }
    let mut best = f32::NEG_INFINITY;
    for &v in blocks.remainder() {
        nan |= v.is_nan();
        best = if v > best { v } else { best };
    }
    for a in acc {
        best = if a > best { a } else { best };
    }
    if nan { f32::NAN } else { best }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_match_sequential_ones_on_every_tail_length() {
        for n in 0..40 {
            let x: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.25).collect();
            let want: f32 = x.iter().sum();
            assert!((sum(&x) - want).abs() < 1e-5, "n = {n}");
            let want = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&x), want, "n = {n}");
        }
        assert!(max(&[1.0, f32::NAN, 2.0]).is_nan());
        assert!(max(&[0.0; 9].iter().chain([f32::NAN].iter()).copied().collect::<Vec<_>>()).is_nan());
    }

    #[test]
    fn offsets_follow_broadcast_strides() {
        // Loop axes [2, 3]: a [3]-shaped tensor broadcast over the first axis.
        let got: Vec<usize> = (0..6).map(|r| offset(r, &[2, 3], &[0, 1])).collect();
        assert_eq!(got, [0, 1, 2, 0, 1, 2]);
        let got: Vec<usize> = (0..6).map(|r| offset(r, &[2, 3], &[5, 0])).collect();
        assert_eq!(got, [0, 0, 0, 5, 5, 5]);
    }

    #[test]
    fn rows_hands_each_row_its_slices_on_one_or_many_threads_and_every_build() {
        let width = 17;
        // The last size is above the threshold at which rows are split over the pool.
        let many = PARALLEL_MIN_ELEMENTS / width + 5;
        for (cap, rows_n) in paths().into_iter().flat_map(|p| [(p, 1usize), (p, 3), (p, many)]) {
            force_path(Some(cap));
            assert_eq!(path(), cap);
            let mut a = vec![0f32; rows_n * width];
            let mut b = vec![0f32; rows_n];
            rows(rows_n, width, 2, [(&mut a[..], width), (&mut b[..], 1)], |r, [a, b], s, _| {
                let [s0, s1] = scratch::<2>(s, width);
                for c in 0..width {
                    s0[c] = (r * width + c) as f32;
                    s1[c] = 1.0;
                    a[c] = s0[c] + s1[c];
                }
                b[0] = sum(s1);
            })
            .unwrap();
            force_path(None);
            assert!(a.iter().enumerate().all(|(i, &v)| v == i as f32 + 1.0), "{cap:?}");
            assert!(b.iter().all(|&v| v == width as f32), "{cap:?}");
        }
        let mut short = [0f32; 5];
        assert!(rows(2, 3, 0, [(&mut short[..], 3)], |_, _, _, _| {}).is_err());
    }

    #[test]
    fn views_are_checked() {
        let t = output(&[2, 3]).unwrap();
        assert!(read(&t, &[2, 3]).is_ok());
        assert!(read(&t, &[3, 2]).is_err());
        let i = ArrayD::from_shape_vec(IxDyn(&[2]), vec![1, 4]).unwrap();
        assert!(read_index(&i, &[2], 5).is_ok());
        assert!(read_index(&i, &[2], 4).is_err());
        assert!(read_index(&i, &[1, 2], 5).is_err());
    }
}
