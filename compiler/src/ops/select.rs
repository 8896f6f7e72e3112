//! Masking: the causal mask and select-by-mask.
//!
//! Both pass the gradient through where the forward value came from the input and
//! stop it where a constant was put in instead, so the causal mask's adjoint is the
//! same mask with fill 0 (`mask₀`), and select's routes `G` to the chosen branch.

use proc_macro2::TokenStream;
use quote::quote;

use crate::backend::emit::Emit;
use ndarray::{Axis, Zip};

use crate::dim::DimEnv;
use crate::error::{Result, bail};
use crate::interp::Tensor;
use crate::ir::{Graph, ValueId, ValueType};
use crate::ops::{AdjointArgs, need_f32};
use crate::pretty::Form;
use crate::scalar::Scalar;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SelectOp {
    /// Entries `[.., i, j]` with `j > i` become `fill` (−∞ before a softmax).
    Causal { fill: Scalar },
    /// `select(mask, a, b)`: `a` where `mask ≠ 0`, else `b`.
    Select,
}

impl SelectOp {
    pub fn arity(&self) -> usize {
        match self {
            SelectOp::Causal { .. } => 1,
            SelectOp::Select => 3,
        }
    }

    pub fn infer(&self, ins: &[&ValueType]) -> Result<ValueType> {
        let op = self.mnemonic();
        for ty in ins {
            need_f32(&op, "every operand", ty)?;
        }
        match self {
            SelectOp::Causal { .. } => {
                let s = &ins[0].shape;
                let n = s.rank();
                if n < 2 || s.0[n - 1] != s.0[n - 2] {
                    bail!("causal_mask: the last two axes must be equal (query × key), got {s}");
                }
            }
            SelectOp::Select => {
                let (m, a, b) = (&ins[0].shape, &ins[1].shape, &ins[2].shape);
                if m != a || a != b {
                    bail!("select: mask {m}, and branches {a} and {b} must have one shape");
                }
            }
        }
        Ok(ins[ins.len() - 1].clone())
    }

    pub fn adjoint(&self, g: &mut Graph, a: &AdjointArgs) -> Result<Vec<Option<ValueId>>> {
        Ok(match self {
            // Masked entries are constants: no gradient flows to them.
            SelectOp::Causal { .. } => vec![Some(g.causal_mask(a.grad, Scalar::num(0.0))?)],
            SelectOp::Select => {
                let mask = a.inputs[0];
                let zero = g.zeros_like(a.grad)?;
                let to_a = g.select(mask, a.grad, zero)?;
                let to_b = g.select(mask, zero, a.grad)?;
                vec![None, Some(to_a), Some(to_b)]
            }
        })
    }

    pub fn eval(&self, env: &DimEnv, ins: &[&Tensor]) -> Result<Tensor> {
        let op = self.mnemonic();
        match self {
            SelectOp::Causal { fill } => {
                let fill = fill.eval(env)?;
                let mut out = ins[0].real(&op)?.clone();
                let n = out.ndim();
                // Lanes along the last axis come in logical row-major order: lane k is
                // query row k mod T of its matrix.
                let t = out.shape()[n - 2];
                for (k, mut lane) in out.lanes_mut(Axis(n - 1)).into_iter().enumerate() {
                    for (j, v) in lane.iter_mut().enumerate() {
                        if j > k % t {
                            *v = fill;
                        }
                    }
                }
                Ok(Tensor::Real(out))
            }
            SelectOp::Select => {
                let (m, a, b) = (ins[0].real(&op)?, ins[1].real(&op)?, ins[2].real(&op)?);
                Ok(Tensor::Real(
                    Zip::from(m).and(a).and(b).map_collect(|&m, &a, &b| if m != 0.0 { a } else { b }),
                ))
            }
        }
    }

    pub fn emit(&self, x: &[TokenStream], cx: &Emit) -> TokenStream {
        match self {
            SelectOp::Causal { fill } => {
                let (a, f) = (&x[0], cx.scalar(fill));
                quote!(::adjoint::ops::causal(#a, #f)?)
            }
            SelectOp::Select => {
                let (m, a, b) = (&x[0], &x[1], &x[2]);
                quote!(::adjoint::ops::select(#m, #a, #b)?)
            }
        }
    }

    /// One element inside a fused loop; `col` and `query` are the element's column and
    /// its row's index within its `T × T` matrix.
    pub fn emit_scalar(
        &self,
        x: &[TokenStream],
        konst: &dyn Fn(&Scalar) -> TokenStream,
        col: &TokenStream,
        query: &TokenStream,
    ) -> TokenStream {
        match self {
            SelectOp::Causal { fill } => {
                let (a, f) = (&x[0], konst(fill));
                quote!(if #col > #query { #f } else { #a })
            }
            SelectOp::Select => {
                let (m, a, b) = (&x[0], &x[1], &x[2]);
                quote!(if #m != 0.0 { #a } else { #b })
            }
        }
    }

    pub fn form(&self) -> Form {
        match self {
            SelectOp::Causal { fill } => Form::Causal(fill.clone()),
            SelectOp::Select => Form::Select,
        }
    }

    pub fn mnemonic(&self) -> String {
        match self {
            SelectOp::Causal { fill } => format!("causal_mask[{fill}]"),
            SelectOp::Select => "select".into(),
        }
    }
}
