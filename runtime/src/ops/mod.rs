//! Reference kernels: one function per IR op, in f32 on `ndarray`, called one per graph
//! node by the generated code.
//!
//! These are straightforward on purpose: they define what the generated code computes,
//! and the fused kernels of the code generator are checked against them. Every shape
//! or index problem is an `Err`, never a panic: the generated code checks its inputs'
//! shapes up front, so these errors only fire on a bug or on bad index data (a token id
//! outside the vocabulary).
//!
//! The products live in `matmul.rs` and the layout kernels in `layout.rs`; both are
//! re-exported here, so every kernel is `ops::NAME`.

mod layout;
mod matmul;

pub use layout::{Element, broadcast, concat, pad, permute, reshape, reshape_owned, slice};
pub(crate) use matmul::Operand;
pub use matmul::{matmul, matmul_perm, matmul_perm_out, matmul_structured, matmul_t};

use ndarray::{ArrayD, Axis, IxDyn, Zip};

use crate::error::{Error, Result, bail};
use crate::math::Arith;

/// Real tensors.
pub type Real = ArrayD<f32>;
/// Index tensors (token ids, targets).
pub type Index = ArrayD<i32>;

fn same_shape(op: &str, a: &Real, b: &Real) -> Result<()> {
    if a.shape() != b.shape() {
        bail!("{op}: shapes {:?} and {:?} differ", a.shape(), b.shape());
    }
    Ok(())
}

fn shape_err(op: &'static str) -> impl Fn(ndarray::ShapeError) -> Error {
    move |e| Error::new(format!("{op}: {e}"))
}

/// Whether `perm` lists each of `rank` axes exactly once. No allocation: products
/// check their operands' permutations on every call, and ranks are a handful.
fn is_permutation(perm: &[usize], rank: usize) -> bool {
    perm.len() == rank && perm.iter().enumerate().all(|(i, &p)| p < rank && !perm[..i].contains(&p))
}

fn need_axis(op: &str, ndim: usize, axis: usize) -> Result<()> {
    if axis >= ndim {
        bail!("{op}: axis {axis} out of range for {ndim} axes");
    }
    Ok(())
}

fn zip(op: &str, a: &Real, b: &Real, f: impl Fn(f32, f32) -> f32) -> Result<Real> {
    same_shape(op, a, b)?;
    Ok(Zip::from(a).and(b).map_collect(|&x, &y| f(x, y)))
}

pub fn add(a: &Real, b: &Real) -> Result<Real> {
    zip("add", a, b, |x, y| x + y)
}
pub fn sub(a: &Real, b: &Real) -> Result<Real> {
    zip("sub", a, b, |x, y| x - y)
}
pub fn mul(a: &Real, b: &Real) -> Result<Real> {
    zip("mul", a, b, |x, y| x * y)
}
pub fn div(a: &Real, b: &Real) -> Result<Real> {
    zip("div", a, b, |x, y| x / y)
}
pub fn neg(a: &Real) -> Real {
    a.mapv(|v| -v)
}
pub fn scale(a: &Real, c: f32) -> Real {
    a.mapv(|v| v * c)
}
pub fn shift(a: &Real, c: f32) -> Real {
    a.mapv(|v| v + c)
}
pub fn exp(a: &Real) -> Real {
    a.mapv(f32::exp)
}
pub fn log(a: &Real) -> Real {
    a.mapv(f32::ln)
}
pub fn tanh(a: &Real) -> Real {
    a.mapv(|x| Arith::NATIVE.tanh(x))
}

pub fn sqrt(a: &Real) -> Real {
    a.mapv(f32::sqrt)
}
pub fn relu(a: &Real) -> Real {
    a.mapv(|v| v.max(0.0))
}
/// 1 where positive, else 0: ReLU's derivative.
pub fn step(a: &Real) -> Real {
    a.mapv(|v| if v > 0.0 { 1.0 } else { 0.0 })
}
/// GELU, tanh form: `½x(1 + tanh(√(2/π)(x + 0.044715x³)))`.
pub fn gelu(a: &Real) -> Real {
    a.mapv(|x| Arith::NATIVE.gelu(x))
}
/// GELU's derivative.
pub fn gelu_grad(a: &Real) -> Real {
    a.mapv(|x| Arith::NATIVE.gelu_grad(x))
}

pub fn sum(a: &Real, axis: usize) -> Result<Real> {
    need_axis("sum", a.ndim(), axis)?;
    let Some(data) = a.as_slice() else { return Ok(a.sum_axis(Axis(axis))) };
    // A contiguous tensor is `[outer, n, inner]` around the axis: each output row is the
    // in-order sum of `n` contiguous rows of `inner` floats (column sums of a gradient:
    // one pass over memory, vectorised; ndarray's `sum_axis` strides down columns).
    let shape = a.shape();
    let (outer, n, inner) =
        (shape[..axis].iter().product::<usize>(), shape[axis], shape[axis + 1..].iter().product::<usize>());
    let mut out_shape = shape.to_vec();
    out_shape.remove(axis);
    // Every element is written below, so a pooled buffer will do.
    let mut out = crate::pool::take(outer * inner);
    for (o, dst) in out.chunks_exact_mut(inner.max(1)).enumerate().take(outer) {
        let block = &data[o * n * inner..(o + 1) * n * inner];
        if n == 0 {
            dst.fill(0.0);
        } else if inner == 1 {
            dst[0] = crate::fused::sum(block);
        } else {
            column_sums(block, inner, dst);
        }
    }
    ArrayD::from_shape_vec(IxDyn(&out_shape), out).map_err(shape_err("sum"))
}

/// Columns `column_sums` keeps in registers down the rows.
const W: usize = 64;

/// `dst[j] = Σ_r block[r·inner + j]`, each column summed in row order, in the best
/// build the CPU has (the baseline build adds 4 floats at a time and goes through
/// `dst` in memory for every row; this one keeps 64 columns in registers down all the
/// rows: tiny config, per-statement harness, the bias gradients' sums 0.043 → 0.022–0.024 ms
/// of core time a step). A large block is split by columns over the pool (each column
/// still one in-order sum, so the bits do not depend on the split): in a whole-batch
/// step a sum on one thread left the other core idle (GPT-2's bias gradients).
pub(crate) fn column_sums(block: &[f32], inner: usize, dst: &mut [f32]) {
    let threads = crate::gemm::threads().max(1);
    if threads == 1 || block.len() < crate::fused::PARALLEL_MIN_ELEMENTS || inner < 2 * W {
        return column_range(block, inner, 0, dst);
    }
    use rayon::prelude::*;
    let cols = inner.div_ceil(threads).next_multiple_of(W);
    dst.par_chunks_mut(cols).enumerate().for_each(|(i, part)| column_range(block, inner, i * cols, part));
}

/// Columns `first..first + dst.len()` of `column_sums`, in the best build.
fn column_range(block: &[f32], inner: usize, first: usize, dst: &mut [f32]) {
    crate::fused::in_best_build(
        #[inline(always)]
        |_| column_sums_body(block, inner, first, dst),
    )
}

/// `column_range`'s loops, inlined into each build.
#[inline(always)]
fn column_sums_body(block: &[f32], inner: usize, first: usize, dst: &mut [f32]) {
    let rows = block.len() / inner;
    let end = first + dst.len();
    let mut j0 = first;
    while j0 + W <= end {
        let mut acc: [f32; W] = block[j0..j0 + W].try_into().expect("W floats");
        for r in 1..rows {
            let row: &[f32; W] = block[r * inner + j0..][..W].try_into().expect("W floats");
            for (a, &x) in acc.iter_mut().zip(row) {
                *a += x;
            }
        }
        dst[j0 - first..j0 - first + W].copy_from_slice(&acc);
        j0 += W;
    }
    if j0 < end {
        let dst = &mut dst[j0 - first..];
        dst.copy_from_slice(&block[j0..end]);
        for row in block[inner..].chunks_exact(inner) {
            dst.iter_mut().zip(&row[j0..end]).for_each(|(d, &x)| *d += x);
        }
    }
}

pub fn max(a: &Real, axis: usize) -> Result<Real> {
    need_axis("max", a.ndim(), axis)?;
    Ok(a.fold_axis(Axis(axis), f32::NEG_INFINITY, |m, &v| m.max(v)))
}

/// 1 at the first maximum of each lane along `axis`, else 0.
pub fn argmax_mask(a: &Real, axis: usize) -> Result<Real> {
    need_axis("argmax_mask", a.ndim(), axis)?;
    let mut out = ArrayD::zeros(a.raw_dim());
    for (lane, mut out_lane) in a.lanes(Axis(axis)).into_iter().zip(out.lanes_mut(Axis(axis))) {
        let mut best = 0;
        for (i, v) in lane.iter().enumerate() {
            if *v > lane[best] {
                best = i;
            }
        }
        if !lane.is_empty() {
            out_lane[best] = 1.0;
        }
    }
    Ok(out)
}

fn rows_of(op: &str, idx: &Index, bound: usize) -> Result<Vec<usize>> {
    idx.iter()
        .map(|&i| {
            if i < 0 || i as usize >= bound {
                bail!("{op}: index {i} is out of range 0..{bound}");
            }
            Ok(i as usize)
        })
        .collect()
}

/// `table[idx]`: rows of `table` picked by each index.
pub fn gather(table: &Real, idx: &Index) -> Result<Real> {
    if table.ndim() == 0 {
        bail!("gather: the table must have rows");
    }
    let rows = rows_of("gather", idx, table.shape()[0])?;
    let mut shape = idx.shape().to_vec();
    shape.extend_from_slice(&table.shape()[1..]);
    let row_len: usize = table.shape()[1..].iter().product();
    let mut flat = crate::pool::take(shape.iter().product());
    match table.as_slice() {
        Some(t) => {
            for (k, r) in rows.into_iter().enumerate() {
                flat[k * row_len..(k + 1) * row_len].copy_from_slice(&t[r * row_len..(r + 1) * row_len]);
            }
        }
        None => {
            for (k, r) in rows.into_iter().enumerate() {
                for (o, v) in
                    flat[k * row_len..(k + 1) * row_len].iter_mut().zip(table.index_axis(Axis(0), r))
                {
                    *o = *v;
                }
            }
        }
    }
    ArrayD::from_shape_vec(shape, flat).map_err(shape_err("gather"))
}

/// The adjoint of gather: `out[idx[k]] += vals[k]`, `rows` rows.
pub fn scatter_add(vals: &Real, idx: &Index, rows: usize) -> Result<Real> {
    let row = vals.shape().get(idx.ndim()..).unwrap_or(&[]);
    let mut shape = vec![rows];
    shape.extend_from_slice(row);
    // A pooled buffer, which `scatter_store` zeroes.
    let len = rows * row.iter().product::<usize>();
    let mut out = ArrayD::from_shape_vec(shape, crate::pool::take(len)).map_err(shape_err("scatter_add"))?;
    scatter_store(&mut out, vals, idx)?;
    Ok(out)
}

/// `dst = scatter_add(vals, idx, rows)` written into `dst`'s own buffer: a parameter's
/// first gradient contribution from a gather (an embedding), with no `[rows, …]`
/// temporary.
pub fn scatter_store(dst: &mut Real, vals: &Real, idx: &Index) -> Result<()> {
    let scatter = Scatter::new("scatter_store", dst, vals, idx)?;
    scatter.dst.fill(0.0);
    scatter.add_rows();
    Ok(())
}

/// `dst += scatter_add(vals, idx, rows)` where `dst` lies: a later gradient contribution
/// from a gather only touches the rows the indices name. For GPT-2's tied embedding
/// this replaces zeroing a 38M-element temporary and adding all of it to the gradient.
pub fn scatter_accumulate(dst: &mut Real, vals: &Real, idx: &Index) -> Result<()> {
    Scatter::new("scatter_accumulate", dst, vals, idx)?.add_rows();
    Ok(())
}

/// A checked scatter: `dst`'s elements, the row of `dst` each index names, and `vals`
/// in row-major order (`vals` is `idx`'s shape followed by a row of `dst`).
struct Scatter<'a> {
    dst: &'a mut [f32],
    targets: Vec<usize>,
    vals: std::borrow::Cow<'a, [f32]>,
}

impl<'a> Scatter<'a> {
    fn new(op: &str, dst: &'a mut Real, vals: &'a Real, idx: &Index) -> Result<Scatter<'a>> {
        let (d, k) = (dst.ndim(), idx.ndim());
        if d == 0
            || vals.ndim() != k + d - 1
            || vals.shape()[..k] != *idx.shape()
            || vals.shape()[k..] != dst.shape()[1..]
        {
            bail!(
                "{op}: values {:?} do not match indices {:?} and rows of {:?}",
                vals.shape(),
                idx.shape(),
                dst.shape()
            );
        }
        let targets = rows_of(op, idx, dst.shape()[0])?;
        let vals = match vals.as_slice() {
            Some(v) => std::borrow::Cow::Borrowed(v),
            None => std::borrow::Cow::Owned(vals.iter().copied().collect()),
        };
        let Some(dst) = dst.as_slice_mut() else { bail!("{op}: the destination is not contiguous") };
        Ok(Scatter { dst, targets, vals })
    }

    /// Adds row `k` of `vals` into row `targets[k]` of `dst`, in index order.
    fn add_rows(self) {
        let row_len = self.vals.len() / self.targets.len().max(1);
        for (&r, row) in self.targets.iter().zip(self.vals.chunks_exact(row_len.max(1))) {
            for (d, &v) in self.dst[r * row_len..(r + 1) * row_len].iter_mut().zip(row) {
                *d += v;
            }
        }
    }
}

pub fn one_hot(idx: &Index, depth: usize) -> Result<Real> {
    let hot = rows_of("one_hot", idx, depth)?;
    let mut shape = idx.shape().to_vec();
    shape.push(depth);
    let mut out = vec![0.0f32; hot.len() * depth];
    for (k, &h) in hot.iter().enumerate() {
        out[k * depth + h] = 1.0;
    }
    ArrayD::from_shape_vec(shape, out).map_err(shape_err("one_hot"))
}

/// Entries above the diagonal of each `[.., T, T]` matrix set to `fill`.
pub fn causal(a: &Real, fill: f32) -> Result<Real> {
    let n = a.ndim();
    if n < 2 {
        bail!("causal_mask: needs a matrix, got {:?}", a.shape());
    }
    let mut out = a.as_standard_layout().into_owned();
    let t = out.shape()[n - 2].max(1);
    for (k, mut lane) in out.lanes_mut(Axis(n - 1)).into_iter().enumerate() {
        for (j, v) in lane.iter_mut().enumerate() {
            if j > k % t {
                *v = fill;
            }
        }
    }
    Ok(out)
}

/// `mask ≠ 0 ? a : b`, elementwise.
pub fn select(mask: &Real, a: &Real, b: &Real) -> Result<Real> {
    same_shape("select", mask, a)?;
    same_shape("select", a, b)?;
    Ok(Zip::from(mask).and(a).and(b).map_collect(|&m, &x, &y| if m != 0.0 { x } else { y }))
}

pub fn fill(value: f32, shape: &[usize]) -> Real {
    ArrayD::from_elem(IxDyn(shape), value)
}

/// `dst = src`, by moving `src`'s buffer in (the old one goes back to the pool): a
/// parameter's first gradient contribution costs no copy.
pub fn store(dst: &mut Real, src: Real) -> Result<()> {
    same_shape("store", dst, &src)?;
    crate::pool::recycle(std::mem::replace(dst, src));
    Ok(())
}

/// `dst += src`, for gradients a parameter receives from several places.
pub fn accumulate(dst: &mut Real, src: &Real) -> Result<()> {
    same_shape("accumulate", dst, src)?;
    Zip::from(dst).and(src).for_each(|d, &s| *d += s);
    Ok(())
}

/// Reads a scalar (the loss).
pub fn scalar(a: &Real) -> Result<f32> {
    match a.iter().next() {
        Some(&v) if a.len() == 1 => Ok(v),
        _ => bail!("expected a scalar, got shape {:?}", a.shape()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scatters_store_and_add_rows_where_the_gradient_lies() {
        // Rows of a [2, 3, 4] tensor of values into a [5, 4] table, index 1 three times.
        let vals =
            ArrayD::from_shape_fn(IxDyn(&[2, 3, 4]), |ix| (ix[0] * 12 + ix[1] * 4 + ix[2]) as f32 - 7.5);
        let idx = Index::from_shape_vec(IxDyn(&[2, 3]), vec![1, 4, 1, 0, 1, 4]).unwrap();
        let mut want = ArrayD::<f32>::zeros(IxDyn(&[5, 4]));
        for (k, &r) in idx.iter().enumerate() {
            for j in 0..4 {
                want[[r as usize, j]] += vals[[k / 3, k % 3, j]];
            }
        }
        assert_eq!(scatter_add(&vals, &idx, 5).unwrap(), want);
        let mut stored = ArrayD::from_elem(IxDyn(&[5, 4]), f32::NAN);
        scatter_store(&mut stored, &vals, &idx).unwrap();
        assert_eq!(stored, want, "every row written, the untouched ones zero");
        let before = ArrayD::from_shape_fn(IxDyn(&[5, 4]), |ix| (ix[0] * 4 + ix[1]) as f32 * 0.25);
        let mut added = before.clone();
        scatter_accumulate(&mut added, &vals, &idx).unwrap();
        assert_eq!(added, &before + &want);
        // Values read through a transposed view: the same rows.
        let t = vals.clone().reversed_axes();
        let t = t.as_standard_layout().into_owned().reversed_axes();
        let mut again = before.clone();
        scatter_accumulate(&mut again, &t, &idx).unwrap();
        assert_eq!(again, added);
        // Bad input: an error, and the gradient is left as it was.
        let far = Index::from_shape_vec(IxDyn(&[2, 3]), vec![1, 5, 1, 0, 1, 4]).unwrap();
        let e = scatter_accumulate(&mut added, &vals, &far).unwrap_err();
        assert!(e.message.contains("out of range 0..5"), "{e}");
        let e = scatter_store(&mut added, &vals, &Index::zeros(IxDyn(&[3, 2]))).unwrap_err();
        assert!(e.message.contains("do not match"), "{e}");
        let e = scatter_accumulate(&mut ArrayD::zeros(IxDyn(&[5, 3])), &vals, &idx).unwrap_err();
        assert!(e.message.contains("do not match"), "{e}");
        assert_eq!(added, &before + &want);
    }

    #[test]
    fn large_column_sums_split_between_threads_give_the_serial_bits() {
        // Above the size at which the columns are split over the pool, with a remainder
        // past the last whole 64-column block.
        let (rows, cols) = (300, 1000);
        let a =
            Real::from_shape_fn(IxDyn(&[rows, cols]), |i| ((i[0] * 7919 + i[1] * 31) % 1009) as f32 / 97.0);
        let serial = crate::parallel::serial(|| sum(&a, 0).unwrap());
        let want = a.sum_axis(Axis(0));
        assert!(serial.iter().zip(&want).all(|(x, y)| (x - y).abs() <= 1e-3 * y.abs()));
        for threads in [2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let split = pool.install(|| sum(&a, 0).unwrap());
            assert!(split.iter().zip(&serial).all(|(x, y)| x.to_bits() == y.to_bits()), "{threads} threads");
        }
    }

    #[test]
    fn sums_along_every_axis_match_ndarray() {
        let shapes = [
            vec![7usize],
            vec![1, 5],
            vec![33, 1],
            vec![4, 0, 3],
            vec![3, 17, 9],
            vec![2, 3, 4, 5],
            // Whole 64-column blocks, with and without a remainder.
            vec![5, 128],
            vec![3, 7, 150],
        ];
        for shape in shapes {
            let n: usize = shape.iter().product();
            let a =
                Real::from_shape_vec(IxDyn(&shape), (0..n).map(|i| (i % 13) as f32 - 6.0).collect()).unwrap();
            for axis in 0..shape.len() {
                let want = a.sum_axis(Axis(axis));
                let got = sum(&a, axis).unwrap();
                assert_eq!(got.shape(), want.shape(), "{shape:?} axis {axis}");
                assert!(got.iter().zip(&want).all(|(x, y)| (x - y).abs() < 1e-4), "{shape:?} axis {axis}");
            }
            // The best build's column sums equal the baseline build's, bit for bit (the
            // same sums in the same order).
            if let [.., rows, inner] = shape[..] {
                let data = a.as_slice().unwrap();
                let (mut best, mut baseline) = (vec![0f32; inner], vec![0f32; inner]);
                if rows > 0 {
                    column_sums(&data[..rows * inner], inner, &mut best);
                    column_sums_body(&data[..rows * inner], inner, 0, &mut baseline);
                    assert_eq!(best, baseline, "{shape:?}");
                }
            }
            // A transposed view takes the general path.
            if shape.len() >= 2 {
                let t = a.t().to_owned();
                let strided = t.t();
                let got = sum(&strided.to_owned(), 0).unwrap();
                assert!(got.iter().zip(&a.sum_axis(Axis(0))).all(|(x, y)| (x - y).abs() < 1e-4));
            }
        }
        assert!(sum(&Real::zeros(IxDyn(&[2, 3])), 2).is_err());
    }
}
