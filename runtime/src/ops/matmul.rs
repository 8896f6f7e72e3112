//! The batched products: `matmul` and its variants reading either operand through a
//! transpose or permutation (no copy), skipping what a causal structure rules out, over
//! `gemm`.

use ndarray::{ArrayD, IxDyn};

use super::{Real, shape_err};
use crate::error::{Result, bail};

/// Batched products with at least this many multiply-adds in all run their batches in
/// parallel (each product alone is usually too small to split).
const BATCH_PARALLEL_MIN_WORK: usize = 1 << 20;

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
fn swap(t: &Real, tr: bool) -> Axes {
    let n = t.ndim();
    let mut perm = Axes::default();
    if tr && (2..=MAX_RANK).contains(&n) {
        (0..n - 2).chain([n - 1, n - 2]).for_each(|axis| perm.push(axis));
    }
    perm
}

/// The most axes a product's operand may have.
const MAX_RANK: usize = 8;

/// Up to `MAX_RANK` extents, strides or axis numbers, kept inline: a product's
/// bookkeeping allocated a handful of `Vec`s and `ndarray` views per call, which on the
/// tiny config's products (a few hundred ns of GEMM each) cost as much as the GEMM.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct Axes {
    len: usize,
    v: [usize; MAX_RANK],
}

impl Axes {
    fn push(&mut self, x: usize) {
        self.v[self.len] = x;
        self.len += 1;
    }
}

impl std::ops::Deref for Axes {
    type Target = [usize];
    fn deref(&self) -> &[usize] {
        &self.v[..self.len]
    }
}

/// An operand as the GEMM reads it: its elements, and the extent and stride (into
/// `data`) of each axis of the permuted operand.
pub(crate) struct Operand<'a> {
    pub(crate) data: std::borrow::Cow<'a, [f32]>,
    pub(crate) shape: Axes,
    pub(crate) strides: Axes,
}

impl<'a> Operand<'a> {
    /// `t` read through the permutation `perm` (an empty one is the identity), without
    /// a copy when its elements form one block with non-negative strides (any axis
    /// order, as every tensor the generated code makes does), else copied row-major.
    pub(crate) fn new(t: &'a Real, perm: &[usize]) -> Result<Operand<'a>> {
        let rank = t.ndim();
        if rank > MAX_RANK {
            bail!("matmul: a {:?} operand has more than {MAX_RANK} axes", t.shape());
        }
        if !perm.is_empty() && !super::is_permutation(perm, rank) {
            bail!("matmul: {perm:?} is not a permutation of the axes of a {:?} operand", t.shape());
        }
        let (data, strides) = match t.as_slice_memory_order() {
            Some(data) if t.strides().iter().all(|&s| s >= 0) => {
                (std::borrow::Cow::Borrowed(data), t.strides().iter().map(|&s| s as usize).collect::<Axes>())
            }
            _ => {
                let mut strides = [1usize; MAX_RANK];
                for axis in (0..rank.saturating_sub(1)).rev() {
                    strides[axis] = strides[axis + 1] * t.shape()[axis + 1];
                }
                (
                    std::borrow::Cow::Owned(t.iter().copied().collect()),
                    strides[..rank].iter().copied().collect(),
                )
            }
        };
        let (mut shape_p, mut strides_p) = (Axes::default(), Axes::default());
        for axis in 0..rank {
            let from = if perm.is_empty() { axis } else { perm[axis] };
            shape_p.push(t.shape()[from]);
            strides_p.push(strides[from]);
        }
        Ok(Operand { data, shape: shape_p, strides: strides_p })
    }

    /// Matrix `i` of the batch (of a 2-D operand: `0`, the operand itself).
    pub(crate) fn matrix(&self, i: usize) -> crate::gemm::MatRef<'_> {
        view(&self.data, &self.strides, &self.shape, i)
    }
}

impl FromIterator<usize> for Axes {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Axes {
        let mut axes = Axes::default();
        iter.into_iter().for_each(|x| axes.push(x));
        axes
    }
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
    matmul_views(Operand::new(a, pa)?, Operand::new(b, pb)?, structure)
}

/// `(m, n, batch)` of the batched product of two operands, or why they do not multiply.
fn batch_shape(a: &Operand, b: &Operand) -> Result<(usize, usize, usize)> {
    let (a_shape, b_shape) = (&a.shape[..], &b.shape[..]);
    let (ra, rb) = (a_shape.len(), b_shape.len());
    if ra < 2 || ra != rb || a_shape[..ra - 2] != b_shape[..rb - 2] || a_shape[ra - 1] != b_shape[rb - 2] {
        bail!("matmul: shapes {a_shape:?} and {b_shape:?} do not multiply");
    }
    Ok((a_shape[ra - 2], b_shape[rb - 1], a_shape[..ra - 2].iter().product()))
}

/// Whether a batch of `batch` products of `m × k × n` runs one product per task over
/// the pool (many small products: attention heads).
fn parallel_batch(batch: usize, m: usize, n: usize, k: usize) -> bool {
    batch > 1 && m * n > 0 && batch * m * n * k >= BATCH_PARALLEL_MIN_WORK && crate::gemm::threads() > 1
}

/// Matrix `i` of a batch, read through the operand's own strides (row-major,
/// column-major, permuted, or a slice's).
fn view<'d>(data: &'d [f32], strides: &[usize], shape: &[usize], i: usize) -> crate::gemm::MatRef<'d> {
    let r = shape.len();
    crate::gemm::MatRef {
        data: data.get(batch_offset(shape, strides, i)..).unwrap_or(&[]),
        rows: shape[r - 2],
        cols: shape[r - 1],
        row_stride: strides[r - 2],
        col_stride: strides[r - 1],
    }
}

/// Where matrix `i` of a batch of `shape` (row-major over the leading axes) starts, for
/// a tensor with these `strides`.
fn batch_offset(shape: &[usize], strides: &[usize], i: usize) -> usize {
    let (mut offset, mut rest) = (0, i);
    for axis in (0..shape.len() - 2).rev() {
        offset += (rest % shape[axis].max(1)) * strides[axis];
        rest /= shape[axis].max(1);
    }
    offset
}

/// The batched product of two operands in any layout.
fn matmul_views(a: Operand, b: Operand, structure: crate::gemm::Structure) -> Result<Real> {
    let (m, n, batch) = batch_shape(&a, &b)?;
    let r = a.shape.len();
    let mut out_shape = a.shape;
    (out_shape.v[r - 2], out_shape.v[r - 1]) = (m, n);
    // Written in place by the GEMM (which only writes its output) into a pooled buffer.
    let mut out = crate::pool::take(batch * m * n);
    let product =
        |i: usize, c: &mut [f32]| crate::gemm::sgemm_structured(a.matrix(i), b.matrix(i), c, structure);
    if parallel_batch(batch, m, n, a.shape[r - 1]) {
        use rayon::prelude::*;
        out.par_chunks_mut(m * n).enumerate().try_for_each(|(i, c)| product(i, c))?;
    } else {
        for i in 0..batch {
            product(i, &mut out[i * m * n..(i + 1) * m * n])?;
        }
    }
    ArrayD::from_shape_vec(IxDyn(&out_shape), out).map_err(shape_err("matmul"))
}

/// `permute(matmul_perm(a, pa, b, pb, structure), out)` without the copy: each matrix of
/// the batch is written straight to its place in the permuted layout (the merged heads
/// of attention's gradients, `[B, H, T, dk] → [B, T, H, dk]`). `out` must keep the last
/// axis last, so each row of a product stays one contiguous run. A batch large enough to
/// run in parallel is multiplied first and permuted after.
pub fn matmul_perm_out(
    a: &Real,
    pa: &[usize],
    b: &Real,
    pb: &[usize],
    structure: crate::gemm::Structure,
    out: &[usize],
) -> Result<Real> {
    let (av, bv) = (Operand::new(a, pa)?, Operand::new(b, pb)?);
    let (m, n, batch) = batch_shape(&av, &bv)?;
    let r = av.shape.len();
    if !super::is_permutation(out, r) {
        bail!("matmul: {out:?} is not a permutation of the axes of a rank-{r} product");
    }
    if out[r - 1] != r - 1 {
        bail!("matmul: the output permutation {out:?} moves the last axis");
    }
    if parallel_batch(batch, m, n, av.shape[r - 1]) {
        return super::permute(&matmul_views(av, bv, structure)?, out);
    }
    // The product's shape, and the stride each of its axes has in the permuted output.
    let mut shape = av.shape;
    (shape.v[r - 2], shape.v[r - 1]) = (m, n);
    let out_shape: Axes = out.iter().map(|&p| shape[p]).collect();
    let mut strides = Axes { len: r, ..Axes::default() };
    let mut step = 1;
    for j in (0..r).rev() {
        strides.v[out[j]] = step;
        step *= out_shape[j];
    }
    // Every element is written below (each matrix of the batch fills its own rows).
    let mut buf = crate::pool::take(shape.iter().product());
    for i in 0..batch {
        let at = batch_offset(&shape, &strides, i);
        crate::gemm::sgemm_rows_apart(av.matrix(i), bv.matrix(i), &mut buf[at..], strides[r - 2], structure)?;
    }
    ArrayD::from_shape_vec(IxDyn(&out_shape), buf).map_err(shape_err("matmul"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{concat, permute};
    use ndarray::{Axis, Slice};

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
        // Negative strides (rows read backwards) are copied row-major first.
        let mut a_rev = a.clone();
        a_rev.invert_axis(Axis(1));
        assert!(a_rev.strides()[1] < 0);
        let want_rev = matmul(&a_rev.as_standard_layout().into_owned(), &b).unwrap();
        assert_eq!(matmul(&a_rev, &b).unwrap(), want_rev);
        assert_eq!(want_rev.slice_axis(Axis(1), Slice::from(..).step_by(-1)), want);
        assert!(matmul_t(&a, true, &b, false).is_err());
        // Operands of more axes than the bookkeeping holds are an error, not a panic.
        let deep = ArrayD::<f32>::zeros(IxDyn(&[1; MAX_RANK + 1]));
        let e = matmul(&deep, &deep).unwrap_err();
        assert!(e.message.contains("more than"), "{e}");
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
    fn products_into_a_permuted_layout_equal_the_permuted_products() {
        use crate::gemm::{Structure, Tri};
        // The gradients of attention's heads: `[B, H, T, T]·[B, H, T, dk]` merged into
        // `[B, T, H, dk]`, with and without the causal structure; a serial batch (written
        // in place) and one big enough for the pool (multiplied, then permuted).
        let causal = Structure { a: Tri::ZeroAbove, b: Tri::Full, lower_only: false };
        for (b, h, t, dk) in [(2, 3, 5, 4), (1, 1, 1, 1), (3, 4, 17, 8), (4, 8, 64, 64)] {
            let scores = Real::from_shape_fn(IxDyn(&[b, h, t, t]), |ix| {
                if ix[3] > ix[2] {
                    0.0
                } else {
                    ((ix[0] * 7 + ix[1] * 5 + ix[2] * 3 + ix[3]) % 11) as f32 - 5.0
                }
            });
            let values = Real::from_shape_fn(IxDyn(&[b, t, h, dk]), |ix| {
                ((ix[0] + ix[1] * 3 + ix[2] * 5 + ix[3] * 7) % 13) as f32 * 0.25 - 1.5
            });
            for structure in [Structure::default(), causal] {
                let product = matmul_perm(&scores, &[], &values, &[0, 2, 1, 3], structure).unwrap();
                let want = permute(&product, &[0, 2, 1, 3]).unwrap();
                let got =
                    matmul_perm_out(&scores, &[], &values, &[0, 2, 1, 3], structure, &[0, 2, 1, 3]).unwrap();
                assert_eq!(got.shape(), &[b, t, h, dk]);
                assert_eq!(got, want, "{b}×{h}×{t}×{dk} {structure:?}");
            }
        }
        let x = Real::zeros(IxDyn(&[2, 3, 4]));
        let default = Structure::default();
        let e = matmul_perm_out(&x, &[], &x, &[0, 2, 1], default, &[0, 2, 1]).unwrap_err();
        assert!(e.message.contains("moves the last axis"), "{e}");
        let e = matmul_perm_out(&x, &[], &x, &[0, 2, 1], default, &[0, 1]).unwrap_err();
        assert!(e.message.contains("not a permutation"), "{e}");
        assert!(matmul_perm_out(&x, &[], &x, &[], default, &[0, 1, 2]).is_err());
    }
}
