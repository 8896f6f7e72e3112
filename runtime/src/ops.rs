//! Reference kernels: one function per IR op, in f32 on `ndarray`, called one per graph
//! node by the generated code.
//!
//! These are straightforward on purpose: they define what the generated code computes,
//! and the fused kernels of the code generator are checked against them. Every shape
//! or index problem is an `Err`, never a panic: the generated code checks its inputs'
//! shapes up front, so these errors only fire on a bug or on bad index data (a token id
//! outside the vocabulary).

use ndarray::{ArrayD, Axis, IxDyn, Slice, Zip};

use crate::error::{Error, Result, bail};

/// Real tensors.
pub type Real = ArrayD<f32>;
/// Index tensors (token ids, targets).
pub type Index = ArrayD<i32>;

/// An element type of the layout kernels: `f32` tensors take their output buffers from
/// the pool (a fresh multi-MiB buffer is page-faulted and zeroed by the kernel on every
/// call), index tensors allocate.
pub trait Element: Copy + Default + 'static {
    /// A buffer of `len` elements whose contents the caller overwrites entirely.
    fn buffer(len: usize) -> Vec<Self>;
}

impl Element for f32 {
    fn buffer(len: usize) -> Vec<f32> {
        crate::pool::take(len)
    }
}

impl Element for i32 {
    fn buffer(len: usize) -> Vec<i32> {
        vec![0; len]
    }
}

const GELU_C: f32 = 0.044715;

/// Batched products with at least this many multiply-adds in all run their batches in
/// parallel (each product alone is usually too small to split).
const BATCH_PARALLEL_MIN_WORK: usize = 1 << 20;

fn same_shape(op: &str, a: &Real, b: &Real) -> Result<()> {
    if a.shape() != b.shape() {
        bail!("{op}: shapes {:?} and {:?} differ", a.shape(), b.shape());
    }
    Ok(())
}

/// `[.., m, k] · [.., k, n]`, batched over equal leading axes.
pub fn matmul(a: &Real, b: &Real) -> Result<Real> {
    matmul_t(a, false, b, false)
}

/// `op(a) · op(b)`, batched over equal leading axes, where `op` swaps the last two axes
/// when its flag is set: the GEMM reads a transposed operand through its strides, so
/// `xᵀ·y` costs no copy of `x`.
pub fn matmul_t(a: &Real, ta: bool, b: &Real, tb: bool) -> Result<Real> {
    matmul_perm(a, &swap(a, ta), b, &swap(b, tb), crate::gemm::Structure::default())
}

/// `matmul_t` where each matrix of the batch has the zeros or unread part `structure`
/// names (causal attention, as the compiler proved it): that work is skipped.
pub fn matmul_structured(
    a: &Real,
    ta: bool,
    b: &Real,
    tb: bool,
    structure: crate::gemm::Structure,
) -> Result<Real> {
    matmul_perm(a, &swap(a, ta), b, &swap(b, tb), structure)
}

/// The permutation swapping the last two axes when `tr` (else none).
fn swap(t: &Real, tr: bool) -> Vec<usize> {
    let n = t.ndim();
    if tr && n >= 2 { (0..n - 2).chain([n - 1, n - 2]).collect() } else { Vec::new() }
}

/// `permute(a, pa) · permute(b, pb)` (an empty permutation leaves its operand as it is),
/// batched over equal leading axes, skipping what `structure` rules out. The operands
/// are read through the permuted strides: the heads of attention, split or merged by a
/// permute, and transposed weights cost no copy.
pub fn matmul_perm(
    a: &Real,
    pa: &[usize],
    b: &Real,
    pb: &[usize],
    structure: crate::gemm::Structure,
) -> Result<Real> {
    matmul_views(permuted(a, pa)?, permuted(b, pb)?, structure)
}

/// `t` read through the permutation `perm` (no copy); an empty one is the identity.
pub(crate) fn permuted<'a>(t: &'a Real, perm: &[usize]) -> Result<ndarray::ArrayViewD<'a, f32>> {
    if perm.is_empty() {
        return Ok(t.view());
    }
    let mut seen = vec![false; t.ndim()];
    if perm.len() != t.ndim()
        || !perm.iter().all(|&p| p < seen.len() && !std::mem::replace(&mut seen[p], true))
    {
        bail!("matmul: {perm:?} is not a permutation of the axes of a {:?} operand", t.shape());
    }
    Ok(t.view().permuted_axes(IxDyn(perm)))
}

/// The batched product of two views in any layout.
fn matmul_views(
    a: ndarray::ArrayViewD<f32>,
    b: ndarray::ArrayViewD<f32>,
    structure: crate::gemm::Structure,
) -> Result<Real> {
    let (ra, rb) = (a.ndim(), b.ndim());
    if ra < 2
        || ra != rb
        || a.shape()[..ra - 2] != b.shape()[..rb - 2]
        || a.shape()[ra - 1] != b.shape()[rb - 2]
    {
        bail!("matmul: shapes {:?} and {:?} do not multiply", a.shape(), b.shape());
    }
    let (m, k, n) = (a.shape()[ra - 2], a.shape()[ra - 1], b.shape()[rb - 1]);
    let mut out_shape = a.shape()[..ra - 2].to_vec();
    out_shape.extend([m, n]);
    let lead = &a.shape()[..ra - 2];
    let batch = lead.iter().product::<usize>();
    let (a_data, a_strides) = strided(&a);
    let (b_data, b_strides) = strided(&b);
    // Matrix `i` of the batch, read through the operand's own strides (row-major,
    // column-major, permuted, or a slice's).
    fn view<'d>(data: &'d [f32], strides: &[usize], shape: &[usize], i: usize) -> crate::gemm::MatRef<'d> {
        let r = shape.len();
        let mut offset = 0;
        let mut rest = i;
        for axis in (0..r - 2).rev() {
            offset += (rest % shape[axis].max(1)) * strides[axis];
            rest /= shape[axis].max(1);
        }
        crate::gemm::MatRef {
            data: data.get(offset..).unwrap_or(&[]),
            rows: shape[r - 2],
            cols: shape[r - 1],
            row_stride: strides[r - 2],
            col_stride: strides[r - 1],
        }
    }
    // Written in place by the GEMM (which only writes its output) into a pooled buffer.
    let mut out = crate::pool::take(batch * m * n);
    let product = |i: usize, c: &mut [f32]| {
        let left = view(&a_data, &a_strides, a.shape(), i);
        let right = view(&b_data, &b_strides, b.shape(), i);
        crate::gemm::sgemm_structured(left, right, c, structure)
    };
    if batch > 1 && m * n > 0 && batch * m * n * k >= BATCH_PARALLEL_MIN_WORK && crate::gemm::threads() > 1 {
        // Many small products (attention heads): one per task, over the pool.
        use rayon::prelude::*;
        out.par_chunks_mut(m * n).enumerate().try_for_each(|(i, c)| product(i, c))?;
    } else {
        for i in 0..batch {
            product(i, &mut out[i * m * n..(i + 1) * m * n])?;
        }
    }
    ArrayD::from_shape_vec(IxDyn(&out_shape), out).map_err(shape_err("matmul"))
}

/// A tensor's elements and per-axis strides, borrowed when they form one block with
/// non-negative strides (any axis order), else copied to row-major.
pub(crate) fn strided<'a>(t: &'a ndarray::ArrayViewD<'_, f32>) -> (std::borrow::Cow<'a, [f32]>, Vec<usize>) {
    if t.strides().iter().all(|&s| s >= 0)
        && let Some(data) = t.as_slice_memory_order()
    {
        return (std::borrow::Cow::Borrowed(data), t.strides().iter().map(|&s| s as usize).collect());
    }
    let mut strides = vec![1usize; t.ndim()];
    for axis in (0..t.ndim().saturating_sub(1)).rev() {
        strides[axis] = strides[axis + 1] * t.shape()[axis + 1];
    }
    (std::borrow::Cow::Owned(t.iter().copied().collect()), strides)
}

fn shape_err(op: &'static str) -> impl Fn(ndarray::ShapeError) -> Error {
    move |e| Error::new(format!("{op}: {e}"))
}

/// Output axis `i` is input axis `perm[i]`.
pub fn permute<T: Element>(a: &ArrayD<T>, perm: &[usize]) -> Result<ArrayD<T>> {
    let mut seen = vec![false; a.ndim()];
    if perm.len() != a.ndim()
        || !perm.iter().all(|&p| p < seen.len() && !std::mem::replace(&mut seen[p], true))
    {
        bail!("permute: {perm:?} is not a permutation of {} axes", a.ndim());
    }
    let view = a.view().permuted_axes(IxDyn(perm));
    let n = perm.len();
    if n >= 2 && perm[n - 1] == n - 1 && a.shape()[n - 1] > 1 {
        // The last axis stays last (splitting or merging attention heads): copy whole
        // rows, not one strided element at a time.
        let width = a.shape()[n - 1];
        let mut out = T::buffer(a.len());
        if let Some(src) = a.as_slice() {
            // Each output row is a contiguous run of the row-major input, at an offset
            // stepped like an odometer over the leading axes (the input's strides,
            // permuted).
            let (dims, strides) = (view.shape()[..n - 1].to_vec(), view.strides()[..n - 1].to_vec());
            let mut index = vec![0usize; n - 1];
            let mut at = 0isize;
            for dst in out.chunks_exact_mut(width) {
                dst.copy_from_slice(&src[at as usize..][..width]);
                for axis in (0..n - 1).rev() {
                    index[axis] += 1;
                    at += strides[axis];
                    if index[axis] < dims[axis] {
                        break;
                    }
                    at -= strides[axis] * dims[axis] as isize;
                    index[axis] = 0;
                }
            }
        } else {
            for (dst, row) in out.chunks_exact_mut(width).zip(view.rows()) {
                dst.iter_mut().zip(row).for_each(|(d, s)| *d = *s);
            }
        }
        return ArrayD::from_shape_vec(view.raw_dim(), out).map_err(shape_err("permute"));
    }
    if n >= 2
        && perm[..n - 2].iter().enumerate().all(|(i, &p)| i == p)
        && (perm[n - 2], perm[n - 1]) == (n - 1, n - 2)
        && let Some(src) = a.as_slice()
    {
        // A (batched) transpose: in 32 × 32 tiles, so reads and writes both stay in cache.
        const TILE: usize = 32;
        let (rows, cols) = (a.shape()[n - 2], a.shape()[n - 1]);
        let mut out = T::buffer(src.len());
        for (from, to) in
            src.chunks_exact((rows * cols).max(1)).zip(out.chunks_exact_mut((rows * cols).max(1)))
        {
            for r0 in (0..rows).step_by(TILE) {
                for c0 in (0..cols).step_by(TILE) {
                    for r in r0..(r0 + TILE).min(rows) {
                        for c in c0..(c0 + TILE).min(cols) {
                            to[c * rows + r] = from[r * cols + c];
                        }
                    }
                }
            }
        }
        return ArrayD::from_shape_vec(view.raw_dim(), out).map_err(shape_err("permute"));
    }
    Ok(view.as_standard_layout().into_owned())
}

/// `reshape`, taking `a`'s buffer over instead of copying it when it is row-major.
pub fn reshape_owned<T: Clone>(a: ArrayD<T>, shape: &[usize]) -> Result<ArrayD<T>> {
    if a.is_standard_layout() && a.len() == shape.iter().product::<usize>() {
        return a.into_shape_with_order(IxDyn(shape)).map_err(shape_err("reshape"));
    }
    reshape(&a, shape)
}

pub fn reshape<T: Clone>(a: &ArrayD<T>, shape: &[usize]) -> Result<ArrayD<T>> {
    if a.len() != shape.iter().product::<usize>() {
        bail!(
            "reshape: {:?} has {} elements, {shape:?} has {}",
            a.shape(),
            a.len(),
            shape.iter().product::<usize>()
        );
    }
    a.as_standard_layout().into_owned().into_shape_with_order(IxDyn(shape)).map_err(shape_err("reshape"))
}

fn need_axis(op: &str, ndim: usize, axis: usize) -> Result<()> {
    if axis >= ndim {
        bail!("{op}: axis {axis} out of range for {ndim} axes");
    }
    Ok(())
}

pub fn slice<T: Element>(a: &ArrayD<T>, axis: usize, start: usize, len: usize) -> Result<ArrayD<T>> {
    need_axis("slice", a.ndim(), axis)?;
    if start + len > a.shape()[axis] {
        bail!("slice: {start}..{} exceeds axis {axis} of size {}", start + len, a.shape()[axis]);
    }
    let mut shape = a.shape().to_vec();
    shape[axis] = len;
    if let Some(src) = a.as_slice() {
        // Row-major: the slice is one contiguous block per index of the axes before it.
        let inner: usize = a.shape()[axis + 1..].iter().product();
        let outer: usize = a.shape()[..axis].iter().product();
        let (stride, block) = (a.shape()[axis] * inner, len * inner);
        let mut out = T::buffer(outer * block);
        for (o, dst) in out.chunks_exact_mut(block.max(1)).enumerate().take(outer) {
            dst.copy_from_slice(&src[o * stride + start * inner..][..block]);
        }
        return ArrayD::from_shape_vec(IxDyn(&shape), out).map_err(shape_err("slice"));
    }
    Ok(a.slice_axis(Axis(axis), Slice::from(start..start + len)).to_owned())
}

pub fn pad<T: Clone + Default>(a: &ArrayD<T>, axis: usize, before: usize, after: usize) -> Result<ArrayD<T>> {
    need_axis("pad", a.ndim(), axis)?;
    let mut dims = a.shape().to_vec();
    let n = dims[axis];
    dims[axis] += before + after;
    let mut out = ArrayD::from_elem(dims, T::default());
    out.slice_axis_mut(Axis(axis), Slice::from(before..before + n)).assign(a);
    Ok(out)
}

/// The parts joined along `axis`, in row-major order (`ndarray::concatenate` may return
/// column-major, which the fused loops' flat views would refuse).
pub fn concat<T: Element>(parts: &[&ArrayD<T>], axis: usize) -> Result<ArrayD<T>> {
    let Some(first) = parts.first() else { bail!("concat: no parts") };
    need_axis("concat", first.ndim(), axis)?;
    let mut shape = first.shape().to_vec();
    shape[axis] = 0;
    for p in parts {
        let mut s = p.shape().to_vec();
        if s.len() != shape.len() {
            bail!("concat: parts {:?} and {:?} differ in rank", first.shape(), p.shape());
        }
        s[axis] = 0;
        if s != shape {
            bail!("concat: parts {:?} and {:?} differ off axis {axis}", first.shape(), p.shape());
        }
    }
    shape[axis] = parts.iter().map(|p| p.shape()[axis]).sum();
    let inner: usize = shape[axis + 1..].iter().product();
    let outer: usize = shape[..axis].iter().product();
    let total = outer * shape[axis] * inner;
    if let Some(sources) = parts.iter().map(|p| p.as_slice()).collect::<Option<Vec<&[T]>>>() {
        // Row-major parts: for each index of the axes before `axis`, one contiguous
        // block of each part, one after the other.
        let mut out = T::buffer(total);
        let mut at = 0;
        for o in 0..outer {
            for (src, p) in sources.iter().zip(parts) {
                let block = p.shape()[axis] * inner;
                out[at..at + block].copy_from_slice(&src[o * block..][..block]);
                at += block;
            }
        }
        return ArrayD::from_shape_vec(IxDyn(&shape), out).map_err(shape_err("concat"));
    }
    let mut out = ArrayD::from_elem(IxDyn(&shape), T::default());
    let mut start = 0;
    for p in parts {
        let len = p.shape()[axis];
        out.slice_axis_mut(Axis(axis), Slice::from(start..start + len)).assign(*p);
        start += len;
    }
    Ok(out)
}

/// A new axis `axis` of `size`, the input repeated along it.
pub fn broadcast<T: Clone>(a: &ArrayD<T>, axis: usize, size: usize) -> Result<ArrayD<T>> {
    if axis > a.ndim() {
        bail!("broadcast: axis {axis} out of range for {} axes", a.ndim());
    }
    let mut dims = a.shape().to_vec();
    dims.insert(axis, size);
    match a.view().insert_axis(Axis(axis)).broadcast(IxDyn(&dims)) {
        Some(b) => Ok(b.to_owned()),
        None => bail!("broadcast: cannot broadcast {:?}", a.shape()),
    }
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
    a.mapv(fast_tanh)
}

/// `tanh` as a rational function of degree 13/6 on [−7.9, 7.9] (the odd-polynomial form
/// Eigen uses), clamped beyond: no branches, so loops over it vectorise, and several
/// times faster than libm's `tanhf`. Error within 5e-7 absolute (a few f32 ulps; tested
/// against f64), and it is exactly odd and saturates at ±1.
#[inline]
pub fn fast_tanh(x: f32) -> f32 {
    const CLAMP: f32 = 7.905_311;
    const A: [f32; 7] = [
        4.893_524_6e-3,
        6.372_619_3e-4,
        1.485_722_4e-5,
        5.122_297e-8,
        -8.604_672e-11,
        2.000_188e-13,
        -2.760_768_5e-16,
    ];
    const B: [f32; 4] = [4.893_525e-3, 2.268_434_6e-3, 1.185_347_1e-4, 1.198_258_4e-6];
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    // Plain multiply-adds: `mul_add` is a libm call on targets built without FMA.
    let p = ((((((A[6] * x2 + A[5]) * x2 + A[4]) * x2 + A[3]) * x2 + A[2]) * x2 + A[1]) * x2) + A[0];
    let q = ((B[3] * x2 + B[2]) * x2 + B[1]) * x2 + B[0];
    x * p / q
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
    a.mapv(gelu_scalar)
}
/// GELU's derivative.
pub fn gelu_grad(a: &Real) -> Real {
    a.mapv(gelu_grad_scalar)
}
/// GELU of one value.
#[inline]
pub fn gelu_scalar(x: f32) -> f32 {
    let k = (2.0 / std::f32::consts::PI).sqrt();
    0.5 * x * (1.0 + fast_tanh(k * (x + GELU_C * x * x * x)))
}
/// GELU's derivative at one value.
#[inline]
pub fn gelu_grad_scalar(x: f32) -> f32 {
    let k = (2.0 / std::f32::consts::PI).sqrt();
    let t = fast_tanh(k * (x + GELU_C * x * x * x));
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * GELU_C * x * x)
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
            dst.copy_from_slice(&block[..inner]);
            for row in block[inner..].chunks_exact(inner) {
                dst.iter_mut().zip(row).for_each(|(d, &x)| *d += x);
            }
        }
    }
    ArrayD::from_shape_vec(IxDyn(&out_shape), out).map_err(shape_err("sum"))
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
    let targets = rows_of("scatter_add", idx, rows)?;
    if vals.ndim() < idx.ndim() || vals.shape()[..idx.ndim()] != *idx.shape() {
        bail!("scatter_add: values {:?} do not match indices {:?}", vals.shape(), idx.shape());
    }
    let row_len: usize = vals.shape()[idx.ndim()..].iter().product();
    let mut shape = vec![rows];
    shape.extend_from_slice(&vals.shape()[idx.ndim()..]);
    // A pooled buffer: for GPT-2 this is the 38M-element embedding gradient, every step.
    let mut out = crate::pool::take(rows * row_len);
    out.fill(0.0);
    let flat = vals.as_standard_layout();
    let flat = flat.as_slice().unwrap_or(&[]);
    for (k, &r) in targets.iter().enumerate() {
        for j in 0..row_len {
            out[r * row_len + j] += flat[k * row_len + j];
        }
    }
    ArrayD::from_shape_vec(shape, out).map_err(shape_err("scatter_add"))
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
    fn fast_tanh_is_accurate_odd_and_saturating() {
        let mut worst = 0f64;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4; // [-20, 20]
            let err = (f64::from(fast_tanh(x)) - f64::from(x).tanh()).abs();
            worst = worst.max(err);
            assert_eq!(fast_tanh(-x), -fast_tanh(x));
        }
        assert!(worst < 5e-7, "worst absolute error {worst:e}");
        for x in [1e-30f32, 1e-8, 1e-4] {
            let rel = (f64::from(fast_tanh(x)) / f64::from(x).tanh() - 1.0).abs();
            assert!(rel < 1e-6, "relative error {rel:e} at {x}");
        }
        assert!(fast_tanh(f32::INFINITY) <= 1.0 && fast_tanh(f32::INFINITY) > 0.999_999);
        assert!(fast_tanh(1e4) <= 1.0 && fast_tanh(-1e4) >= -1.0);
        assert!(fast_tanh(f32::NAN).is_nan());
    }

    #[test]
    fn products_read_any_layout_without_copies_and_agree() {
        let a = ArrayD::from_shape_fn(IxDyn(&[2, 5, 3]), |ix| {
            (ix[0] * 15 + ix[1] * 3 + ix[2]) as f32 * 0.1 - 1.0
        });
        let b = ArrayD::from_shape_fn(IxDyn(&[2, 3, 4]), |ix| {
            (ix[0] * 12 + ix[1] * 4 + ix[2]) as f32 * 0.05 - 0.5
        });
        let want = matmul(&a, &b).unwrap();
        for i in 0..2 {
            for r in 0..5 {
                for c in 0..4 {
                    let dot: f32 = (0..3).map(|k| a[[i, r, k]] * b[[i, k, c]]).sum();
                    assert!((want[[i, r, c]] - dot).abs() < 1e-5);
                }
            }
        }
        // Column-major operands, transposed flags, and both at once.
        let a_f = a.as_standard_layout().reversed_axes().as_standard_layout().into_owned().reversed_axes();
        assert!(!a_f.is_standard_layout() && a_f == a);
        assert_eq!(matmul(&a_f, &b).unwrap(), want);
        let a_t = permute(&a, &[0, 2, 1]).unwrap();
        let b_t = permute(&b, &[0, 2, 1]).unwrap();
        assert_eq!(matmul_t(&a_t, true, &b_t, true).unwrap(), want);
        assert_eq!(matmul_t(&a, false, &b_t, true).unwrap(), want);
        // A column slice: strided rows.
        let wide = concat(&[&b, &b], 2).unwrap();
        assert!(wide.is_standard_layout());
        let part = wide.slice_axis(Axis(2), Slice::from(4..8)).to_owned();
        assert_eq!(matmul(&a, &part).unwrap(), want);
        assert!(matmul_t(&a, true, &b, false).is_err());
    }

    #[test]
    fn products_through_permutes_equal_products_of_the_copies() {
        // Attention's shapes: [B, T, H, dk] read as [B, H, T, dk], times [B, T, H, dk]
        // read as [B, H, dk, T].
        let (b, t, h, dk) = (2, 5, 3, 4);
        let x = Real::from_shape_vec(
            IxDyn(&[b, t, h, dk]),
            (0..b * t * h * dk).map(|i| (i % 7) as f32 - 3.0).collect(),
        )
        .unwrap();
        let y = x.mapv(|v| 0.5 * v + 1.0);
        let (px, py) = ([0, 2, 1, 3], [0, 2, 3, 1]);
        let got = matmul_perm(&x, &px, &y, &py, crate::gemm::Structure::default()).unwrap();
        let want = matmul(&permute(&x, &px).unwrap(), &permute(&y, &py).unwrap()).unwrap();
        assert_eq!(got.shape(), &[b, h, t, t]);
        assert!(got.iter().zip(&want).all(|(p, q)| (p - q).abs() < 1e-4));
        let default = crate::gemm::Structure::default();
        for bad in [&[0, 1, 2][..], &[0, 1, 1, 3], &[0, 1, 2, 4]] {
            let e = matmul_perm(&x, bad, &y, &py, default).unwrap_err();
            assert!(e.message.contains("not a permutation"), "{bad:?}: {e}");
        }
        assert!(matmul_perm(&x, &[], &y, &[], default).is_err(), "[.., h, dk]·[.., h, dk] does not multiply");
    }

    #[test]
    fn sums_along_every_axis_match_ndarray() {
        for shape in [vec![7usize], vec![1, 5], vec![33, 1], vec![4, 0, 3], vec![3, 17, 9], vec![2, 3, 4, 5]]
        {
            let n: usize = shape.iter().product();
            let a =
                Real::from_shape_vec(IxDyn(&shape), (0..n).map(|i| (i % 13) as f32 - 6.0).collect()).unwrap();
            for axis in 0..shape.len() {
                let want = a.sum_axis(Axis(axis));
                let got = sum(&a, axis).unwrap();
                assert_eq!(got.shape(), want.shape(), "{shape:?} axis {axis}");
                assert!(got.iter().zip(&want).all(|(x, y)| (x - y).abs() < 1e-4), "{shape:?} axis {axis}");
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

    #[test]
    fn permute_fast_and_general_paths_agree() {
        let a = ArrayD::from_shape_fn(IxDyn(&[2, 3, 4, 5]), |ix| {
            (ix[0] * 1000 + ix[1] * 100 + ix[2] * 10 + ix[3]) as f32
        });
        for perm in [[0, 2, 1, 3], [2, 1, 0, 3], [0, 1, 3, 2], [3, 2, 1, 0]] {
            let got = permute(&a, &perm).unwrap();
            let want = a.view().permuted_axes(IxDyn(&perm)).as_standard_layout().into_owned();
            assert_eq!(got, want, "{perm:?}");
            assert!(got.is_standard_layout());
        }
        for (shape, perm) in
            [(vec![3, 70, 45], [0, 2, 1]), (vec![1, 1, 1], [0, 2, 1]), (vec![2, 0, 5], [0, 2, 1])]
        {
            let x = ArrayD::from_shape_fn(IxDyn(&shape), |ix| (ix[0] * 10000 + ix[1] * 100 + ix[2]) as f32);
            let want = x.view().permuted_axes(IxDyn(&perm)).as_standard_layout().into_owned();
            assert_eq!(permute(&x, &perm).unwrap(), want, "{shape:?}");
        }
        for axis in 0..4 {
            let n = a.shape()[axis];
            for (start, len) in [(0, n), (1, n - 1), (n / 2, 1), (n, 0)] {
                let want = a.slice_axis(Axis(axis), Slice::from(start..start + len)).to_owned();
                assert_eq!(slice(&a, axis, start, len).unwrap(), want, "axis {axis} {start}+{len}");
            }
        }
        assert!(slice(&a, 3, 4, 2).is_err());
        let empty = ArrayD::<f32>::zeros(IxDyn(&[2, 0, 3]));
        assert_eq!(permute(&empty, &[1, 0, 2]).unwrap().shape(), &[0, 2, 3]);
    }

    #[test]
    fn layout_kernels_overwrite_pooled_buffers_on_every_path() {
        // Pooled buffers of every output length below, full of NaN: an element a kernel
        // failed to write would show.
        let poison = |len: usize| {
            let _ = crate::pool::take(len);
            crate::pool::give(vec![f32::NAN; len]);
        };
        let a = ArrayD::from_shape_fn(IxDyn(&[2, 3, 4]), |ix| (ix[0] * 100 + ix[1] * 10 + ix[2]) as f32);
        let b = ArrayD::from_shape_fn(IxDyn(&[2, 3, 4]), |ix| -((ix[0] * 100 + ix[1] * 10 + ix[2]) as f32));
        // Column-major storage: not a row-major slice, so the general paths run.
        let mut fortran = ArrayD::<f32>::zeros(ndarray::ShapeBuilder::f(IxDyn(&[2, 3, 4])));
        fortran.assign(&a);
        assert!(fortran.as_slice().is_none() && fortran == a);
        for axis in 0..3 {
            let mut shape = a.shape().to_vec();
            shape[axis] *= 2;
            poison(shape.iter().product());
            let want = ndarray::concatenate(Axis(axis), &[a.view(), b.view()]).unwrap();
            assert_eq!(concat(&[&a, &b], axis).unwrap(), want, "axis {axis}");
            assert_eq!(concat(&[&fortran, &b], axis).unwrap(), want, "general path, axis {axis}");
            let (ai, bi) = (a.mapv(|x| x as i32), b.mapv(|x| x as i32));
            assert_eq!(concat(&[&ai, &bi], axis).unwrap(), want.mapv(|x| x as i32), "i32, axis {axis}");
            let n = a.shape()[axis];
            poison(a.len() / n);
            let want = a.slice_axis(Axis(axis), Slice::from(1..2)).to_owned();
            assert_eq!(slice(&a, axis, 1, 1).unwrap(), want);
            assert_eq!(slice(&fortran, axis, 1, 1).unwrap(), want);
            assert_eq!(slice(&ai, axis, 1, 1).unwrap(), want.mapv(|x| x as i32));
        }
        assert!(concat(&[&a, &a.slice_axis(Axis(1), Slice::from(0..1)).to_owned()], 0).is_err());
        for perm in [[1, 0, 2], [0, 2, 1], [2, 1, 0]] {
            poison(a.len());
            let want = a.view().permuted_axes(IxDyn(&perm)).as_standard_layout().into_owned();
            assert_eq!(permute(&a, &perm).unwrap(), want, "{perm:?}");
            assert_eq!(permute(&fortran, &perm).unwrap(), want, "{perm:?}, column-major input");
            assert_eq!(permute(&a.mapv(|x| x as i32), &perm).unwrap(), want.mapv(|x| x as i32));
        }
    }
}
