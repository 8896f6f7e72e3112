//! The op table: every primitive op, with its shape rule, adjoint, reference kernel and
//! printed form in one place.
//!
//! Ops are grouped by family, one file each; a family's file holds a `match` per concern
//! (`infer`, `adjoint`, `eval`, `form`), so adding an op means touching one file. This
//! module only dispatches. Composite ops (softmax, layernorm, attention, ...) are not
//! here: they are library functions built from these primitives (`crate::library`).
//!
//! Adjoint contract: given the node `out = op(inputs)` and the upstream gradient `grad`
//! of `out` (same type), `adjoint` adds to the graph and returns, per input, the
//! contribution to that input's gradient, or `None` where there is none (index inputs,
//! zero derivatives). Contributions from several users are summed by `autodiff`.

mod index;
mod layout;
mod matmul;
mod pointwise;
mod reduce;
mod select;
mod source;

pub use index::IndexOp;
pub use layout::{Layout, swaps_last_two};
pub use pointwise::Pointwise;
pub use reduce::Reduce;
pub use select::SelectOp;
pub use source::Source;

use proc_macro2::TokenStream;
use quote::quote;

use crate::backend::emit::Emit;
use crate::dim::DimEnv;
use crate::error::{Result, bail};
use crate::interp::Tensor;
use crate::ir::{DType, Graph, Shape, ValueId, ValueType};
use crate::pretty::Form;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// Inputs and constants.
    Source(Source),
    /// `[.., m, k] · [.., k, n] → [.., m, n]`, batched over equal leading axes.
    Matmul,
    /// Permute, reshape, slice, pad, concat, broadcast.
    Layout(Layout),
    /// Elementwise arithmetic and functions.
    Pointwise(Pointwise),
    /// Sum and max along an axis.
    Reduce(Reduce),
    /// Embedding gather, its adjoint scatter-add, one-hot.
    Index(IndexOp),
    /// Causal mask and select-by-mask.
    Select(SelectOp),
}

/// What an adjoint rule is given: the node, its inputs and its upstream gradient.
pub struct AdjointArgs<'a> {
    pub out: ValueId,
    pub inputs: &'a [ValueId],
    pub grad: ValueId,
    /// Which inputs need a gradient; a rule may skip building the others.
    pub needs: &'a [bool],
}

impl Op {
    /// The shape rule: the output type for these input types, or an error naming the op
    /// and the offending shapes.
    pub fn infer(&self, ins: &[&ValueType]) -> Result<ValueType> {
        let want = self.arity();
        if let Some(n) = want
            && ins.len() != n
        {
            bail!("{}: expects {n} inputs, got {}", self.mnemonic(), ins.len());
        }
        match self {
            Op::Source(s) => s.infer(ins),
            Op::Matmul => matmul::infer(ins),
            Op::Layout(l) => l.infer(ins),
            Op::Pointwise(p) => p.infer(ins),
            Op::Reduce(r) => r.infer(ins),
            Op::Index(i) => i.infer(ins),
            Op::Select(m) => m.infer(ins),
        }
    }

    /// Number of inputs, or `None` for variadic ops (concat).
    pub fn arity(&self) -> Option<usize> {
        match self {
            Op::Source(_) => Some(0),
            Op::Matmul => Some(2),
            Op::Layout(l) => l.arity(),
            Op::Pointwise(p) => Some(p.arity()),
            Op::Reduce(_) => Some(1),
            Op::Index(i) => Some(i.arity()),
            Op::Select(m) => Some(m.arity()),
        }
    }

    pub fn adjoint(&self, g: &mut Graph, a: &AdjointArgs) -> Result<Vec<Option<ValueId>>> {
        match self {
            Op::Source(_) => Ok(Vec::new()),
            Op::Matmul => matmul::adjoint(g, a),
            Op::Layout(l) => l.adjoint(g, a),
            Op::Pointwise(p) => p.adjoint(g, a),
            Op::Reduce(r) => r.adjoint(g, a),
            Op::Index(i) => i.adjoint(g, a),
            Op::Select(m) => m.adjoint(g, a),
        }
    }

    /// The reference kernel, in f64; `out` is the node's type (for constants' shapes).
    pub fn eval(&self, env: &DimEnv, ins: &[&Tensor], out: &ValueType) -> Result<Tensor> {
        match self {
            Op::Source(s) => s.eval(env, out),
            Op::Matmul => matmul::eval(ins),
            Op::Layout(l) => l.eval(env, ins),
            Op::Pointwise(p) => p.eval(env, ins),
            Op::Reduce(r) => r.eval(ins),
            Op::Index(i) => i.eval(env, ins),
            Op::Select(m) => m.eval(env, ins),
        }
    }

    /// The runtime call computing this op, a Rust expression over the inputs `x`
    /// (each a `&ArrayD` expression); see `backend`.
    pub fn emit(&self, x: &[TokenStream], cx: &Emit) -> TokenStream {
        match self {
            Op::Source(s) => s.emit(cx),
            Op::Matmul => quote!(::adjoint::ops::matmul(#(#x),*)?),
            Op::Layout(l) => l.emit(x, cx),
            Op::Pointwise(p) => p.emit(x, cx),
            Op::Reduce(r) => r.emit(x),
            Op::Index(i) => i.emit(x, cx),
            Op::Select(m) => m.emit(x, cx),
        }
    }

    /// How the formulas print this op.
    pub fn form(&self) -> Form {
        match self {
            Op::Source(s) => s.form(),
            Op::Matmul => Form::MATMUL,
            Op::Layout(l) => l.form(),
            Op::Pointwise(p) => p.form(),
            Op::Reduce(r) => r.form(),
            Op::Index(i) => i.form(),
            Op::Select(m) => m.form(),
        }
    }

    /// A short lowercase name, for errors and the graph picture.
    pub fn mnemonic(&self) -> String {
        match self {
            Op::Source(s) => s.mnemonic(),
            Op::Matmul => "matmul".into(),
            Op::Layout(l) => l.mnemonic(),
            Op::Pointwise(p) => p.mnemonic().into(),
            Op::Reduce(r) => r.mnemonic(),
            Op::Index(i) => i.mnemonic().into(),
            Op::Select(m) => m.mnemonic(),
        }
    }
}

/// Checks that `ty` is real-valued, for ops that compute with their input.
pub(crate) fn need_f32(op: &str, what: &str, ty: &ValueType) -> Result<()> {
    if ty.dtype != DType::F32 {
        bail!("{op}: {what} must be f32, got index values {}", ty.shape);
    }
    Ok(())
}

/// Checks an axis against a rank.
pub(crate) fn need_axis(op: &str, axis: usize, shape: &Shape) -> Result<()> {
    if axis >= shape.rank() {
        bail!("{op}: axis {axis} is out of range for shape {shape}");
    }
    Ok(())
}
