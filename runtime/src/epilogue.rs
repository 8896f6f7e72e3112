//! A product with a fused epilogue: `c = a·b`, then a fused loop's row body on each row
//! of `c` as soon as the GEMM has finished it, while the row is still in cache.
//!
//! The compiler emits this for a product whose only reader is one fused loop over the
//! product's own rows (bias, GELU, residual add, layernorm, softmax + cross-entropy
//! after a product; GELU′ times the gradient in the backward pass): the loop then never
//! reads the product back from memory, and product and loop are one parallel region.
//! The body is the same closure `fused::rows` would run, plus the product's row.
//!
//! Rows are split between threads in blocks of whole rows (each thread packs all of `b`
//! for its rows), so every row is computed, and then handed to the body, by one thread.
//! Where `b` has more elements than `c` (`k > m`: GPT-2's MLP and projections at 256
//! rows, `b` a 9 MiB weight), packing it once per thread costs more than the epilogue
//! gains by reading rows in cache: there the product is split by columns, as a plain
//! one is (`b` packed once in all), and the body then runs over the finished `c`, rows
//! split between threads. Each element is the same in-order dot product as in
//! `gemm::sgemm` either way, so results do not depend on the thread count.

use rayon::prelude::*;

use crate::column_sums::Partials;
use crate::error::{Result, bail};
use crate::fused::{RowBody, RowRun, row_runs, run_chunk, split_outputs, take_rows};
use crate::gemm::{MatRef, sgemm_strips};
use crate::math::Arith;
use crate::ops::{Operand, Real};

/// `c = permute(a, pa) · permute(b, pb)` (2-D; an empty permutation leaves its operand
/// as it is), then `body(r, c_row, outs_r, scratch, arith)` for every row `r`, as in
/// `fused::rows` with `c`'s row as an extra argument. `c` is never the caller's: held
/// a block of rows at a time where the product allows (`gemm::sgemm_strips`), else a
/// pooled buffer, returned to the pool afterwards.
pub fn product_rows<const K: usize, F>(
    a: &Real,
    pa: &[usize],
    b: &Real,
    pb: &[usize],
    scratch_rows: usize,
    outs: [(&mut [f32], usize); K],
    body: F,
) -> Result<()>
where
    F: Fn(usize, &[f32], [&mut [f32]; K], &mut [f32], Arith) + Sync,
{
    product_rows_with_sums(
        a,
        pa,
        b,
        pb,
        scratch_rows,
        outs,
        [],
        #[inline(always)]
        |r, c_row, outs, [], scratch, arith| body(r, c_row, outs, scratch, arith),
    )
}

/// `product_rows` with column sums, as `fused::rows_with_sums` adds them.
#[allow(clippy::too_many_arguments)]
pub fn product_rows_with_sums<const K: usize, const A: usize, F>(
    a: &Real,
    pa: &[usize],
    b: &Real,
    pb: &[usize],
    scratch_rows: usize,
    outs: [(&mut [f32], usize); K],
    sums: [(&mut [f32], usize); A],
    body: F,
) -> Result<()>
where
    F: Fn(usize, &[f32], [&mut [f32]; K], [&mut [f32]; A], &mut [f32], Arith) + Sync,
{
    let (av, bv) = (Operand::new(a, pa)?, Operand::new(b, pb)?);
    if av.shape.len() != 2 || bv.shape.len() != 2 || av.shape[1] != bv.shape[0] {
        bail!("product epilogue: shapes {:?} and {:?} are not a 2-D product", &av.shape[..], &bv.shape[..]);
    }
    let (m, k, n) = (av.shape[0], av.shape[1], bv.shape[1]);
    let (a_mat, b_mat) = (av.matrix(0), bv.matrix(0));
    let (chunks, by_columns) = split(m, k, n, crate::gemm::threads().max(1));
    if by_columns {
        // Split by columns as a plain product is, then the body over the finished rows.
        let mut c = crate::pool::take(m * n);
        let done = crate::gemm::sgemm(a_mat, b_mat, &mut c).and_then(|()| {
            crate::fused::rows_with_sums(m, n, scratch_rows, outs, sums, with_row(&body, &c, 0, n))
        });
        crate::pool::give(c);
        return done;
    }
    let (bufs, per_row) = split_outputs(m, outs)?;
    let mut partials = Partials::new(m, &sums)?;
    // Whole 8-row strips per thread, so each thread's strips are the GEMM's strips (and
    // its rows start a block of the column sums' partials, `column_sums::BLOCK`).
    let per_chunk = m.div_ceil(chunks).div_ceil(8) * 8;
    let tasks = row_runs(m, per_chunk, bufs, &per_row, &mut partials);
    let run = |RowRun { first: r0, end: r1, outs: mut part, mut sums }: RowRun<K, A>| -> Result<()> {
        let a_rows =
            MatRef { data: a_mat.data.get(r0 * a_mat.row_stride..).unwrap_or(&[]), rows: r1 - r0, ..a_mat };
        // Scratch rows are written before they are read: a pooled buffer will do.
        let mut scratch = crate::pool::take(scratch_rows * n);
        let mut on_strip = |i0: usize, rows: usize, c_rows: &[f32]| {
            let outs_rows = take_rows(&mut part, &per_row, rows);
            let first = r0 + i0;
            run_chunk(
                first,
                first + rows,
                outs_rows,
                &per_row,
                &mut sums,
                &mut scratch,
                &with_row(&body, c_rows, first, n),
            );
        };
        let done = sgemm_strips(a_rows, b_mat, &mut on_strip);
        crate::pool::give(scratch);
        done
    };
    let done = if tasks.len() == 1 {
        tasks.into_iter().try_for_each(run)
    } else {
        tasks.into_par_iter().try_for_each(run)
    };
    partials.finish(sums);
    done
}

/// How an `m × k × n` product with an epilogue is split over `threads`: the number of
/// blocks of rows, and whether the product is split by columns first (`k > m`: the
/// module doc).
fn split(m: usize, k: usize, n: usize, threads: usize) -> (usize, bool) {
    let chunks = if m * n * k < crate::gemm::PARALLEL_MIN_WORK || m < 16 { 1 } else { threads.min(m / 8) };
    (chunks, chunks > 1 && k > m)
}

/// The loop body for rows from `first`, handed its row of `c_rows` (rows `n` apart).
#[inline(always)]
fn with_row<'a, const K: usize, const A: usize, F>(
    body: &'a F,
    c_rows: &'a [f32],
    first: usize,
    n: usize,
) -> impl RowBody<K, A> + 'a
where
    F: Fn(usize, &[f32], [&mut [f32]; K], [&mut [f32]; A], &mut [f32], Arith),
{
    #[inline(always)]
    move |r, outs, sums, scratch, arith| body(r, &c_rows[(r - first) * n..][..n], outs, sums, scratch, arith)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    fn tensor(shape: &[usize], seed: usize) -> Real {
        let n = shape.iter().product();
        ArrayD::from_shape_vec(
            IxDyn(shape),
            (0..n).map(|i| (((i + seed) * 7919) % 997) as f32 / 997.0 - 0.5).collect(),
        )
        .unwrap()
    }

    /// `a · permute(b, pb)` through an epilogue whose body writes `c + r` for each
    /// element of row `r` (through a scratch row) and each row's sum.
    fn plus_row_index(a: &Real, b: &Real, pb: &[usize]) -> (Vec<f32>, Vec<f32>) {
        let (m, n) = (a.shape()[0], Operand::new(b, pb).unwrap().shape[1]);
        let (mut out, mut sums) = (vec![f32::NAN; m * n], vec![f32::NAN; m]);
        product_rows(
            a,
            &[],
            b,
            pb,
            1,
            [(&mut out[..], n), (&mut sums[..], 1)],
            |r, c, [o, s], scratch, _| {
                scratch[..n].copy_from_slice(c);
                for (x, &v) in o.iter_mut().zip(&scratch[..n]) {
                    *x = v + r as f32;
                }
                s[0] = c.iter().sum();
            },
        )
        .unwrap();
        (out, sums)
    }

    #[test]
    fn a_product_split_by_columns_hands_the_same_rows_to_the_body_on_any_thread_count() {
        let _serial = crate::gemm::tests::KERNEL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // More of `b` than of `c`, and work enough to split: on two or more threads the
        // product is split by columns and the body runs over its finished rows.
        let (m, k, n) = (41, 1100, 390);
        assert_eq!(split(m, k, n, 2), (2, true));
        assert_eq!(split(m, k, n, 1), (1, false));
        assert_eq!(split(1100, 41, 390, 2), (2, false), "more rows than steps: split by rows");
        let (a, b) = (tensor(&[m, k], 1), tensor(&[k, n], 2));
        let run = || plus_row_index(&a, &b, &[]);
        let (want_out, want_sums) = crate::parallel::serial(run);
        let product = crate::ops::matmul(&a, &b).unwrap();
        let product = product.as_slice().unwrap();
        for (i, (&p, &q)) in want_out.iter().zip(product).enumerate() {
            let q = q + (i / n) as f32;
            assert!((p - q).abs() <= 1e-4 * (1.0 + q.abs()), "at {i}: {p} vs {q}");
        }
        for threads in [2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let (out, sums) = pool.install(run);
            let same = |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits());
            assert!(same(&out, &want_out) && same(&sums, &want_sums), "{threads} threads");
        }
    }

    #[test]
    fn epilogues_see_every_finished_row_on_every_kernel_and_split() {
        let _serial = crate::gemm::tests::KERNEL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // Odd sizes (edge tiles, partial strips), more than one block of `k` and of `b`'s
        // columns, a product large enough to be split between threads, and one whose
        // rows span three blocks of `b`'s columns with more rows than a block of `c`
        // holds (all of `b` packed at once, `c` in blocks of rows); `b` read transposed
        // (packed) and row-major (packed, or read in place).
        for &(m, k, n) in &[(1, 1, 1), (37, 29, 45), (9, 300, 530), (1030, 130, 150), (300, 300, 1100)] {
            let a = tensor(&[m, k], 1);
            let bt = tensor(&[n, k], 2);
            let b = crate::ops::permute(&bt, &[1, 0]).unwrap();
            let want = crate::ops::matmul_t(&a, false, &bt, true).unwrap();
            let want = want.as_slice().unwrap();
            for (right, perm) in [(&bt, &[1usize, 0][..]), (&b, &[][..])] {
                crate::gemm::tests::on_every_path(|| {
                    let kernel = crate::gemm::kernel();
                    let (out, sums) = plus_row_index(&a, right, perm);
                    for r in 0..m {
                        for j in 0..n {
                            let (p, q) = (out[r * n + j], want[r * n + j] + r as f32);
                            assert!(
                                (p - q).abs() <= 1e-4 * (1.0 + q.abs()),
                                "{kernel:?} {m}×{k}×{n} at ({r}, {j}): {p} vs {q}"
                            );
                        }
                        let q: f32 = want[r * n..(r + 1) * n].iter().sum();
                        assert!((sums[r] - q).abs() <= 1e-3 * (1.0 + q.abs()), "{kernel:?} row {r} sum");
                    }
                });
            }
        }
        let (a, b) = (tensor(&[3, 4], 0), tensor(&[5, 2], 0));
        let mut out = [0f32; 6];
        let e = product_rows(&a, &[], &b, &[], 0, [(&mut out[..], 2)], |_, _, _, _, _| {}).unwrap_err();
        assert!(e.message.contains("not a 2-D product"), "{e}");
        let e = product_rows(&a, &[], &tensor(&[4, 2], 0), &[], 0, [(&mut out[..5], 2)], |_, _, _, _, _| {});
        assert!(e.is_err(), "an output of the wrong size");
    }
}
