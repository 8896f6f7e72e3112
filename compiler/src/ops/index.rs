//! Index ops: embedding gather, its adjoint scatter-add, and one-hot.
//!
//! Index values (token ids, targets) never get a gradient: their adjoint slot is `None`.
//! An index out of range is an error at evaluation, never a panic.

use proc_macro2::TokenStream;
use quote::quote;

use crate::backend::emit::Emit;
use ndarray::{ArrayD, Axis};

use crate::dim::{Dim, DimEnv};
use crate::error::{Result, bail};
use crate::interp::Tensor;
use crate::ir::{DType, Graph, Shape, ValueId, ValueType};
use crate::ops::{AdjointArgs, need_f32};
use crate::pretty::Form;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IndexOp {
    /// `table[idx]`: `[V, ..r] , [..i] → [..i, ..r]`.
    Gather,
    /// The adjoint of gather: `[..i, ..r], [..i] → [rows, ..r]`, rows summed by index.
    ScatterAdd { rows: Dim },
    /// `[..i] → [..i, depth]`.
    OneHot { depth: Dim },
}

fn need_index(op: &str, ty: &ValueType) -> Result<()> {
    if ty.dtype != DType::Index {
        bail!("{op}: indices must be index values, got f32 {}", ty.shape);
    }
    Ok(())
}

/// Checks every index against `bound` and converts it to `usize`.
fn checked(op: &str, idx: &ArrayD<i64>, bound: usize) -> Result<Vec<usize>> {
    idx.iter()
        .map(|&i| {
            if i < 0 || i as usize >= bound {
                bail!("{op}: index {i} is out of range 0..{bound}");
            }
            Ok(i as usize)
        })
        .collect()
}

impl IndexOp {
    pub fn arity(&self) -> usize {
        match self {
            IndexOp::OneHot { .. } => 1,
            _ => 2,
        }
    }

    pub fn infer(&self, ins: &[&ValueType]) -> Result<ValueType> {
        let op = self.mnemonic();
        match self {
            IndexOp::Gather => {
                need_f32(op, "the table", ins[0])?;
                need_index(op, ins[1])?;
                let (table, idx) = (&ins[0].shape, &ins[1].shape);
                if table.rank() < 1 {
                    bail!("gather: the table must have at least one axis, got {table}");
                }
                let mut s = idx.0.clone();
                s.extend(table.0[1..].iter().cloned());
                Ok(ValueType::f32(Shape(s)))
            }
            IndexOp::ScatterAdd { rows } => {
                need_f32(op, "the values", ins[0])?;
                need_index(op, ins[1])?;
                let (vals, idx) = (&ins[0].shape, &ins[1].shape);
                if vals.rank() < idx.rank() || vals.0[..idx.rank()] != idx.0[..] {
                    bail!("scatter_add: values {vals} must start with the index shape {idx}");
                }
                let mut s = vec![rows.clone()];
                s.extend(vals.0[idx.rank()..].iter().cloned());
                Ok(ValueType::f32(Shape(s)))
            }
            IndexOp::OneHot { depth } => {
                need_index(op, ins[0])?;
                let mut s = ins[0].shape.0.clone();
                s.push(depth.clone());
                Ok(ValueType::f32(Shape(s)))
            }
        }
    }

    pub fn adjoint(&self, g: &mut Graph, a: &AdjointArgs) -> Result<Vec<Option<ValueId>>> {
        Ok(match self {
            // Each gathered row came from one table row: the gradients go back there.
            IndexOp::Gather => {
                let (table, idx) = (a.inputs[0], a.inputs[1]);
                let rows = g.shape(table).0[0].clone();
                vec![Some(g.scatter_add(a.grad, idx, rows)?), None]
            }
            IndexOp::ScatterAdd { .. } => vec![Some(g.gather(a.grad, a.inputs[1])?), None],
            IndexOp::OneHot { .. } => vec![None],
        })
    }

    pub fn eval(&self, env: &DimEnv, ins: &[&Tensor]) -> Result<Tensor> {
        let op = self.mnemonic();
        match self {
            IndexOp::Gather => {
                let (table, idx) = (ins[0].real(op)?, ins[1].index(op)?);
                let rows = checked(op, idx, table.shape()[0])?;
                let picked: Vec<_> = rows.iter().map(|&r| table.index_axis(Axis(0), r)).collect();
                let mut shape = idx.shape().to_vec();
                shape.extend_from_slice(&table.shape()[1..]);
                let flat: Vec<f64> = picked.iter().flat_map(|row| row.iter().copied()).collect();
                Ok(Tensor::Real(
                    ArrayD::from_shape_vec(shape, flat)
                        .map_err(|e| crate::error::Error::new(format!("gather: {e}")))?,
                ))
            }
            IndexOp::ScatterAdd { rows } => {
                let (vals, idx) = (ins[0].real(op)?, ins[1].index(op)?);
                let n_rows = rows.eval(env)? as usize;
                let targets = checked(op, idx, n_rows)?;
                let row_len: usize = vals.shape()[idx.ndim()..].iter().product();
                let mut shape = vec![n_rows];
                shape.extend_from_slice(&vals.shape()[idx.ndim()..]);
                let mut out = vec![0.0; n_rows * row_len];
                let flat: Vec<f64> = vals.iter().copied().collect();
                for (k, &r) in targets.iter().enumerate() {
                    for j in 0..row_len {
                        out[r * row_len + j] += flat[k * row_len + j];
                    }
                }
                Ok(Tensor::Real(
                    ArrayD::from_shape_vec(shape, out)
                        .map_err(|e| crate::error::Error::new(format!("scatter_add: {e}")))?,
                ))
            }
            IndexOp::OneHot { depth } => {
                let idx = ins[0].index(op)?;
                let depth = depth.eval(env)? as usize;
                let hot = checked(op, idx, depth)?;
                let mut shape = idx.shape().to_vec();
                shape.push(depth);
                let mut out = vec![0.0; hot.len() * depth];
                for (k, &h) in hot.iter().enumerate() {
                    out[k * depth + h] = 1.0;
                }
                Ok(Tensor::Real(
                    ArrayD::from_shape_vec(shape, out)
                        .map_err(|e| crate::error::Error::new(format!("one_hot: {e}")))?,
                ))
            }
        }
    }

    pub fn emit(&self, x: &[TokenStream], cx: &Emit) -> TokenStream {
        match self {
            IndexOp::Gather => {
                let (t, i) = (&x[0], &x[1]);
                quote!(::adjoint::ops::gather(#t, #i)?)
            }
            IndexOp::ScatterAdd { rows } => {
                let (g, i, n) = (&x[0], &x[1], cx.dim(rows));
                quote!(::adjoint::ops::scatter_add(#g, #i, #n)?)
            }
            IndexOp::OneHot { depth } => {
                let (i, n) = (&x[0], cx.dim(depth));
                quote!(::adjoint::ops::one_hot(#i, #n)?)
            }
        }
    }

    pub fn form(&self) -> Form {
        match self {
            IndexOp::Gather => Form::Gather,
            IndexOp::ScatterAdd { .. } => Form::ScatterAdd,
            IndexOp::OneHot { .. } => Form::OneHot,
        }
    }

    pub fn mnemonic(&self) -> &'static str {
        match self {
            IndexOp::Gather => "gather",
            IndexOp::ScatterAdd { .. } => "scatter_add",
            IndexOp::OneHot { .. } => "one_hot",
        }
    }
}
