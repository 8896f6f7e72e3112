//! Layout ops: permute, reshape, slice, pad, concat, broadcast.
//!
//! All are linear and move data without arithmetic, so each adjoint is the layout op
//! that moves the gradient back: permute ↔ inverse permute, reshape ↔ reshape,
//! slice ↔ pad with zeros, concat → slices, broadcast ↔ sum over the new axis.

use proc_macro2::TokenStream;
use quote::quote;

use crate::backend::emit::Emit;
use ndarray::{ArrayD, Axis, Slice};

use crate::dim::{Dim, DimEnv};
use crate::error::{Error, Result, bail};
use crate::interp::{Tensor, concrete_shape};
use crate::ir::{Graph, Shape, ValueId, ValueType};
use crate::ops::{AdjointArgs, need_axis};
use crate::pretty::Form;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layout {
    /// Output axis `i` is input axis `perm[i]`.
    Permute(Vec<usize>),
    /// Same elements in row-major order, new shape.
    Reshape(Shape),
    /// `len` entries from `start` along `axis`.
    Slice { axis: usize, start: Dim, len: Dim },
    /// Zeros added before and after along `axis` (the adjoint of slice).
    Pad { axis: usize, before: Dim, after: Dim },
    /// Inputs joined along `axis`.
    Concat { axis: usize },
    /// A new axis `axis` of `size`, the input repeated along it.
    Broadcast { axis: usize, size: Dim },
}

fn is_perm(perm: &[usize]) -> bool {
    let mut seen = vec![false; perm.len()];
    perm.iter().all(|&p| p < perm.len() && !std::mem::replace(&mut seen[p], true))
}

/// Whether `perm` swaps the last two axes and keeps the rest: a (batched) transpose.
pub fn swaps_last_two(perm: &[usize]) -> bool {
    let n = perm.len();
    n >= 2
        && perm[..n - 2].iter().enumerate().all(|(i, &p)| i == p)
        && (perm[n - 2], perm[n - 1]) == (n - 1, n - 2)
}

impl Layout {
    pub fn arity(&self) -> Option<usize> {
        match self {
            Layout::Concat { .. } => None,
            _ => Some(1),
        }
    }

    pub fn infer(&self, ins: &[&ValueType]) -> Result<ValueType> {
        let Some(first) = ins.first() else {
            bail!("{}: needs at least one input", self.mnemonic());
        };
        let (dtype, x) = (first.dtype, &first.shape);
        let shape = match self {
            Layout::Permute(perm) => {
                if perm.len() != x.rank() || !is_perm(perm) {
                    bail!("permute: {perm:?} is not a permutation of the axes of {x}");
                }
                Shape(perm.iter().map(|&p| x.0[p].clone()).collect())
            }
            Layout::Reshape(to) => {
                if x.numel() != to.numel() {
                    bail!("reshape: {x} has {} elements but {to} has {} elements", x.numel(), to.numel());
                }
                to.clone()
            }
            Layout::Slice { axis, start, len } => {
                need_axis("slice", *axis, x)?;
                let rest = x.0[*axis].sub(start).sub(len);
                if rest.as_lit().is_some_and(|r| r < 0) {
                    bail!("slice: {start}..{start}+{len} exceeds axis {axis} of {x}");
                }
                let mut s = x.clone();
                s.0[*axis] = len.clone();
                s
            }
            Layout::Pad { axis, before, after } => {
                need_axis("pad", *axis, x)?;
                let mut s = x.clone();
                s.0[*axis] = before.add(&x.0[*axis]).add(after);
                s
            }
            Layout::Concat { axis } => {
                need_axis("concat", *axis, x)?;
                let mut s = x.clone();
                for other in &ins[1..] {
                    let o = &other.shape;
                    let same_rest =
                        o.rank() == x.rank() && (0..x.rank()).all(|i| i == *axis || o.0[i] == x.0[i]);
                    if !same_rest || other.dtype != dtype {
                        bail!("concat: {x} and {o} differ outside axis {axis}");
                    }
                    s.0[*axis] = s.0[*axis].add(&o.0[*axis]);
                }
                s
            }
            Layout::Broadcast { axis, size } => {
                if *axis > x.rank() {
                    bail!("broadcast: axis {axis} is out of range for {x}");
                }
                let mut s = x.clone();
                s.0.insert(*axis, size.clone());
                s
            }
        };
        Ok(ValueType { dtype, shape })
    }

    pub fn adjoint(&self, g: &mut Graph, a: &AdjointArgs) -> Result<Vec<Option<ValueId>>> {
        let (x, grad) = (a.inputs[0], a.grad);
        let in_shape = g.shape(x).clone();
        let back = match self {
            Layout::Permute(perm) => {
                let mut inverse = vec![0; perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    inverse[p] = i;
                }
                g.permute(grad, &inverse)?
            }
            Layout::Reshape(_) => g.reshape(grad, in_shape)?,
            Layout::Slice { axis, start, len } => {
                let after = in_shape.0[*axis].sub(start).sub(len);
                g.pad(grad, *axis, start.clone(), after)?
            }
            Layout::Pad { axis, before, .. } => {
                g.slice(grad, *axis, before.clone(), in_shape.0[*axis].clone())?
            }
            Layout::Concat { axis } => {
                let mut start = Dim::lit(0);
                let mut parts = Vec::new();
                for &part in a.inputs {
                    let len = g.shape(part).0[*axis].clone();
                    parts.push(Some(g.slice(grad, *axis, start.clone(), len.clone())?));
                    start = start.add(&len);
                }
                return Ok(parts);
            }
            Layout::Broadcast { axis, .. } => g.sum(grad, *axis)?,
        };
        Ok(vec![Some(back)])
    }

    pub fn eval(&self, env: &DimEnv, ins: &[&Tensor]) -> Result<Tensor> {
        let op = self.mnemonic();
        match ins[0] {
            Tensor::Real(x) => {
                let parts: Vec<&ArrayD<f64>> = ins.iter().map(|t| t.real(&op)).collect::<Result<_>>()?;
                Ok(Tensor::Real(self.eval_array(env, x, &parts, 0.0)?))
            }
            Tensor::Index(x) => {
                let parts: Vec<&ArrayD<i64>> = ins.iter().map(|t| t.index(&op)).collect::<Result<_>>()?;
                Ok(Tensor::Index(self.eval_array(env, x, &parts, 0)?))
            }
        }
    }

    fn eval_array<T: Clone + Default>(
        &self,
        env: &DimEnv,
        x: &ArrayD<T>,
        parts: &[&ArrayD<T>],
        zero: T,
    ) -> Result<ArrayD<T>> {
        let op = self.mnemonic();
        let err = |e: ndarray::ShapeError| Error::new(format!("{op}: {e}"));
        let size = |d: &Dim| d.eval(env).map(|v| v as usize);
        Ok(match self {
            Layout::Permute(perm) => x.clone().permuted_axes(perm.clone()).as_standard_layout().into_owned(),
            Layout::Reshape(to) => {
                let dims = concrete_shape(to, env)?;
                x.as_standard_layout().into_owned().into_shape_with_order(dims).map_err(err)?
            }
            Layout::Slice { axis, start, len } => {
                let (s, l) = (size(start)?, size(len)?);
                if s + l > x.shape()[*axis] {
                    bail!("{op}: {s}..{} exceeds axis {axis} of size {}", s + l, x.shape()[*axis]);
                }
                x.slice_axis(Axis(*axis), Slice::from(s..s + l)).to_owned()
            }
            Layout::Pad { axis, before, after } => {
                let (b, e) = (size(before)?, size(after)?);
                let mut dims = x.shape().to_vec();
                dims[*axis] += b + e;
                let mut out = ArrayD::from_elem(dims, zero);
                let n = x.shape()[*axis];
                out.slice_axis_mut(Axis(*axis), Slice::from(b..b + n)).assign(x);
                out
            }
            Layout::Concat { axis } => {
                let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
                ndarray::concatenate(Axis(*axis), &views).map_err(err)?
            }
            Layout::Broadcast { axis, size: n } => {
                let n = size(n)?;
                let mut dims = x.shape().to_vec();
                dims.insert(*axis, n);
                let inserted = x.view().insert_axis(Axis(*axis));
                match inserted.broadcast(dims) {
                    Some(b) => b.to_owned(),
                    None => bail!("{op}: cannot broadcast shape {:?}", x.shape()),
                }
            }
        })
    }

    pub fn emit(&self, x: &[TokenStream], cx: &Emit) -> TokenStream {
        let a = &x[0];
        match self {
            Layout::Permute(perm) => quote!(::adjoint::ops::permute(#a, &[#(#perm),*])?),
            Layout::Reshape(to) => {
                let s = cx.shape(&to.0);
                quote!(::adjoint::ops::reshape(#a, #s)?)
            }
            Layout::Slice { axis, start, len } => {
                let (s, l) = (cx.dim(start), cx.dim(len));
                quote!(::adjoint::ops::slice(#a, #axis, #s, #l)?)
            }
            Layout::Pad { axis, before, after } => {
                let (b, e) = (cx.dim(before), cx.dim(after));
                quote!(::adjoint::ops::pad(#a, #axis, #b, #e)?)
            }
            Layout::Concat { axis } => quote!(::adjoint::ops::concat(&[#(#x),*], #axis)?),
            Layout::Broadcast { axis, size } => {
                let n = cx.dim(size);
                quote!(::adjoint::ops::broadcast(#a, #axis, #n)?)
            }
        }
    }

    pub fn form(&self) -> Form {
        match self {
            Layout::Permute(perm) if swaps_last_two(perm) => Form::Transpose,
            Layout::Permute(perm) => Form::Permute(perm.clone()),
            // Math treats `[B, T, D]` and `[B*T, D]` as the same matrix of rows.
            Layout::Reshape(_) | Layout::Broadcast { .. } => Form::Transparent,
            Layout::Slice { axis, start, len } => {
                Form::Slice { axis: *axis, start: start.clone(), len: len.clone() }
            }
            Layout::Pad { axis, before, after } => {
                Form::Pad { axis: *axis, before: before.clone(), after: after.clone() }
            }
            Layout::Concat { axis } => Form::Concat(*axis),
        }
    }

    pub fn mnemonic(&self) -> String {
        match self {
            Layout::Permute(p) => format!("permute{p:?}"),
            Layout::Reshape(s) => format!("reshape{s}"),
            Layout::Slice { axis, start, len } => format!("slice[{axis}: {start}+{len}]"),
            Layout::Pad { axis, before, after } => format!("pad[{axis}: {before}, {after}]"),
            Layout::Concat { axis } => format!("concat[{axis}]"),
            Layout::Broadcast { axis, size } => format!("broadcast[{axis}: {size}]"),
        }
    }
}
