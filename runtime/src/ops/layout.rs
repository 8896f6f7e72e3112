//! The layout kernels: permute, reshape, slice, pad, concat and broadcast, for real
//! and index tensors alike, copying contiguous blocks into pooled buffers (`Element`).

use ndarray::{ArrayD, Axis, IxDyn, Slice};

use super::{need_axis, shape_err};
use crate::error::{Result, bail};

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
/// Output axis `i` is input axis `perm[i]`.
pub fn permute<T: Element>(a: &ArrayD<T>, perm: &[usize]) -> Result<ArrayD<T>> {
    if !super::is_permutation(perm, a.ndim()) {
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
#[cfg(test)]
mod tests {
    use super::*;

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
