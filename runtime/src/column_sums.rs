//! Column sums computed inside a fused loop: `out[c] = Σ_r v[r, c]` for values the loop
//! body computes row by row, without the `rows × n` tensor of them ever being written.
//!
//! Why: a layernorm's weight gradients are column sums of row values its backward loop
//! computes anyway (`colsum(dx̂ ⊙ x̂)`, `colsum(dx̂)`), and a bias gradient is the column
//! sum of a gradient the loop writes. As separate kernels each sum wrote the values out
//! and read them back (`ops::sum`: 1.0% of the small config's samples, 1.3% of tiny's,
//! `perf`), and the values it alone read were a `rows × n` tensor written for nothing.
//!
//! The loop adds each row into the partial sum of its block of [`BLOCK`] rows, and the
//! partials are added in block order at the end. Blocks never straddle two threads'
//! rows (each thread's rows start at a multiple of `BLOCK`), so every sum is the same
//! sequence of additions on any number of threads, as every other fused value is.

use crate::error::{Result, bail};

/// Rows per block of partial sums: also the granularity of the row split between
/// threads in a loop that sums columns (`fused::rows_with_sums`, `epilogue`).
pub const BLOCK: usize = 8;

/// The partial sums of a loop's column sums: for sum `k`, one row of `widths[k]` floats
/// per block of rows, from a pooled buffer.
pub(crate) struct Partials<const A: usize> {
    bufs: [Vec<f32>; A],
    widths: [usize; A],
}

impl<const A: usize> Partials<A> {
    /// Room for the partials of `rows` rows, after checking each output holds its width.
    pub(crate) fn new(rows: usize, sums: &[(&mut [f32], usize); A]) -> Result<Partials<A>> {
        for (k, (out, w)) in sums.iter().enumerate() {
            if out.len() != *w {
                bail!("fused loop: column sum {k} has {} elements, expected {w}", out.len());
            }
        }
        let widths = std::array::from_fn(|k| sums[k].1);
        // Every block's partials are zeroed by its first row before they are added to.
        let bufs = std::array::from_fn(|k| crate::pool::take(rows.div_ceil(BLOCK) * widths[k]));
        Ok(Partials { bufs, widths })
    }

    /// Each sum's partials, for [`Sums::split_off`] to hand out by thread.
    pub(crate) fn parts(&mut self) -> Sums<'_, A> {
        Sums { partials: self.bufs.each_mut().map(|b| &mut b[..]), widths: self.widths, first_block: 0 }
    }

    /// Adds each sum's partials, in block order (`ops::column_sums`), into its output.
    pub(crate) fn finish(self, sums: [(&mut [f32], usize); A]) {
        for ((out, w), buf) in sums.into_iter().zip(self.bufs) {
            if buf.is_empty() {
                out.fill(0.0);
            } else {
                crate::ops::column_sums(&buf, w, out);
            }
            crate::pool::give(buf);
        }
    }
}

/// The partials of a run of rows: the block of each row, in row order.
pub(crate) struct Sums<'a, const A: usize> {
    partials: [&'a mut [f32]; A],
    widths: [usize; A],
    first_block: usize,
}

impl<'a, const A: usize> Sums<'a, A> {
    /// The partials of rows `first..end` (`first` a multiple of [`BLOCK`]: the first row
    /// this run has left), split off its front for the thread that runs those rows.
    pub(crate) fn split_off(&mut self, first: usize, end: usize) -> Sums<'a, A> {
        debug_assert!(A == 0 || first.is_multiple_of(BLOCK), "a thread's rows start a block");
        let blocks = end.div_ceil(BLOCK) - first / BLOCK;
        let partials = crate::fused::take_rows(&mut self.partials, &self.widths, blocks);
        Sums { partials, widths: self.widths, first_block: first / BLOCK }
    }

    /// Row `r`'s partial sums (its block's), zeroed at the block's first row.
    #[inline(always)]
    pub(crate) fn row(&mut self, r: usize) -> [&mut [f32]; A] {
        let (block, fresh) = (r / BLOCK - self.first_block, r.is_multiple_of(BLOCK));
        let mut widths = self.widths.into_iter();
        self.partials.each_mut().map(|partials| {
            let w = widths.next().unwrap_or(0);
            let row = &mut partials[block * w..][..w];
            if fresh {
                row.fill(0.0);
            }
            row
        })
    }
}

#[cfg(test)]
mod tests {
    use super::BLOCK;
    use crate::fused::{force_path, paths, rows_with_sums};
    use crate::gemm::{Kernel, force_kernel};

    /// Each column summed as the loops sum it: rows in blocks of `BLOCK`, in order, then
    /// the blocks in order.
    fn in_blocks(values: &[f32], rows: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0f32; n];
        for block in (0..rows).step_by(BLOCK) {
            let mut partial = vec![0f32; n];
            for r in block..(block + BLOCK).min(rows) {
                partial.iter_mut().zip(&values[r * n..][..n]).for_each(|(p, &v)| *p += v);
            }
            out.iter_mut().zip(&partial).for_each(|(o, &p)| *o += p);
        }
        out
    }

    fn value(r: usize, c: usize) -> f32 {
        (((r * 31 + c * 17) * 7919) % 1009) as f32 / 101.0 - 5.0
    }

    fn same(x: &[f32], y: &[f32]) -> bool {
        x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
    }

    #[test]
    fn loops_sum_columns_in_blocks_of_rows_on_any_thread_count_and_every_build() {
        let n = 19;
        // The last size is split over the pool; 13 ends inside a block.
        for rows in [1usize, 13, 8, (1 << 17) / n + 13] {
            let doubled: Vec<f32> = (0..rows * n).map(|i| 2.0 * value(i / n, i % n)).collect();
            let want = (in_blocks(&doubled, rows, n), (0..rows).map(|r| value(r, 0)).sum::<f32>());
            for cap in paths() {
                force_path(Some(cap));
                for threads in [1, 2, 3] {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                    let (mut out, mut sum2, mut sum1) = (vec![0f32; rows * n], vec![f32::NAN; n], [f32::NAN]);
                    pool.install(|| {
                        rows_with_sums(
                            rows,
                            n,
                            0,
                            [(&mut out[..], n)],
                            [(&mut sum2[..], n), (&mut sum1[..], 1)],
                            |r, [o], [s2, s1], _, _| {
                                for c in 0..n {
                                    o[c] = value(r, c);
                                    s2[c] += 2.0 * o[c];
                                }
                                s1[0] += o[0];
                            },
                        )
                        .unwrap()
                    });
                    let label = format!("{rows} rows, {threads} threads, {cap:?}");
                    assert!(out.iter().enumerate().all(|(i, &v)| v == value(i / n, i % n)), "{label}");
                    assert!(same(&sum2, &want.0), "{label}: {sum2:?} vs {:?}", want.0);
                    let close = (sum1[0] - want.1).abs() <= 1e-4 * (1.0 + want.1.abs());
                    assert!(close, "{label}: {} vs {}", sum1[0], want.1);
                }
                force_path(None);
            }
        }
        // No columns, or no rows: the sums are empty, or zeros.
        let mut none: [f32; 0] = [];
        rows_with_sums(5, 0, 0, [], [(&mut none[..], 0)], |_, [], [_], _, _| {}).unwrap();
        let mut zeros = [f32::NAN; 3];
        rows_with_sums(0, 3, 0, [], [(&mut zeros[..], 3)], |_, [], [_], _, _| {}).unwrap();
        assert_eq!(zeros, [0.0; 3]);
        let mut short = [0f32; 2];
        let e = rows_with_sums(4, 3, 0, [], [(&mut short[..], 3)], |_, [], [_], _, _| {}).unwrap_err();
        assert!(e.message.contains("column sum 0 has 2 elements, expected 3"), "{e}");
    }

    #[test]
    fn product_epilogues_sum_columns_alike_on_every_kernel_and_thread_count() {
        let _serial = crate::gemm::tests::KERNEL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let tensor = |shape: &[usize], seed: usize| {
            let len = shape.iter().product();
            ndarray::ArrayD::from_shape_vec(
                ndarray::IxDyn(shape),
                (0..len).map(|i| (((i + seed) * 7919) % 997) as f32 / 997.0 - 0.5).collect(),
            )
            .unwrap()
        };
        // Rows in strips of one block of `b`, in blocks of rows (`b` packed whole), split
        // between threads, and split by columns (`k > m`).
        for &(m, k, n) in &[(1, 3, 5), (37, 29, 45), (300, 300, 1100), (41, 1100, 390)] {
            let (a, b) = (tensor(&[m, k], 1), tensor(&[k, n], 2));
            let product = crate::ops::matmul(&a, &b).unwrap();
            let product = product.as_slice().unwrap();
            for kernel in Kernel::all_available() {
                force_kernel(Some(kernel));
                let run = || {
                    let mut sums = vec![f32::NAN; n];
                    crate::epilogue::product_rows_with_sums(&a, &[], &b, &[], 0, [], [(&mut sums[..], n)], {
                        |_, c: &[f32], [], [s], _, _| s.iter_mut().zip(c).for_each(|(s, &x)| *s += x)
                    })
                    .unwrap();
                    sums
                };
                let one = crate::parallel::serial(run);
                let want = in_blocks(product, m, n);
                for (c, (&got, &w)) in one.iter().zip(&want).enumerate() {
                    assert!((got - w).abs() <= 1e-4 * (1.0 + w.abs()), "{m}x{k}x{n} {kernel:?} column {c}");
                }
                for threads in [2, 3] {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                    assert!(same(&pool.install(run), &one), "{m}x{k}x{n} {kernel:?} on {threads} threads");
                }
            }
            force_kernel(None);
        }
    }
}
