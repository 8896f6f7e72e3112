//! Reductions along one axis: sum and max (and max's selector, the argmax mask).
//!
//! A reduction removes its axis; the adjoint broadcasts the gradient back over it.
//! Sum's adjoint is that broadcast; max's routes it to the (first) maximal entry.

use ndarray::{ArrayD, Axis};
use proc_macro2::TokenStream;
use quote::quote;

use crate::error::Result;
use crate::interp::Tensor;
use crate::ir::{Graph, ValueId, ValueType};
use crate::ops::{AdjointArgs, need_axis, need_f32};
use crate::pretty::Form;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reduce {
    Sum {
        axis: usize,
    },
    Max {
        axis: usize,
    },
    /// 1 at the first maximal entry along `axis`, 0 elsewhere; shape kept.
    ArgmaxMask {
        axis: usize,
    },
}

impl Reduce {
    fn axis(&self) -> usize {
        match self {
            Reduce::Sum { axis } | Reduce::Max { axis } | Reduce::ArgmaxMask { axis } => *axis,
        }
    }

    pub fn infer(&self, ins: &[&ValueType]) -> Result<ValueType> {
        let op = self.mnemonic();
        need_f32(&op, "the operand", ins[0])?;
        need_axis(&op, self.axis(), &ins[0].shape)?;
        let mut ty = ins[0].clone();
        if !matches!(self, Reduce::ArgmaxMask { .. }) {
            ty.shape.0.remove(self.axis());
        }
        Ok(ty)
    }

    pub fn adjoint(&self, g: &mut Graph, a: &AdjointArgs) -> Result<Vec<Option<ValueId>>> {
        let (x, grad, axis) = (a.inputs[0], a.grad, self.axis());
        Ok(match self {
            // d Σₐ x = Σₐ dx: every entry gets the gradient of its row's sum.
            Reduce::Sum { .. } => vec![Some(g.expand_as(grad, axis, x)?)],
            // d maxₐ x = dx at the maximal entry.
            Reduce::Max { .. } => {
                let spread = g.expand_as(grad, axis, x)?;
                let at_max = g.argmax_mask(x, axis)?;
                vec![Some(g.mul(spread, at_max)?)]
            }
            Reduce::ArgmaxMask { .. } => vec![None],
        })
    }

    pub fn eval(&self, ins: &[&Tensor]) -> Result<Tensor> {
        let op = self.mnemonic();
        let x = ins[0].real(&op)?;
        let ax = Axis(self.axis());
        Ok(Tensor::Real(match self {
            Reduce::Sum { .. } => x.sum_axis(ax),
            Reduce::Max { .. } => x.fold_axis(ax, f64::NEG_INFINITY, |m, &v| m.max(v)),
            Reduce::ArgmaxMask { .. } => {
                let mut out = ArrayD::zeros(x.raw_dim());
                for (lane, mut out_lane) in x.lanes(ax).into_iter().zip(out.lanes_mut(ax)) {
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
                out
            }
        }))
    }

    pub fn emit(&self, x: &[TokenStream]) -> TokenStream {
        let (a, axis) = (&x[0], self.axis());
        match self {
            Reduce::Sum { .. } => quote!(::adjoint::ops::sum(#a, #axis)?),
            Reduce::Max { .. } => quote!(::adjoint::ops::max(#a, #axis)?),
            Reduce::ArgmaxMask { .. } => quote!(::adjoint::ops::argmax_mask(#a, #axis)?),
        }
    }

    pub fn form(&self) -> Form {
        match self {
            Reduce::Sum { axis } => Form::Sum(*axis),
            Reduce::Max { axis } => Form::Max(*axis),
            Reduce::ArgmaxMask { axis } => Form::Argmax(*axis),
        }
    }

    pub fn mnemonic(&self) -> String {
        match self {
            Reduce::Sum { axis } => format!("sum[{axis}]"),
            Reduce::Max { axis } => format!("max[{axis}]"),
            Reduce::ArgmaxMask { axis } => format!("argmax_mask[{axis}]"),
        }
    }
}
