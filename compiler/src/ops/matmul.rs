//! The matrix product, and the one rule every matmul is differentiated by.
//!
//! For `Z = X·Y` with upstream gradient `G` (MATH.md §1): `∂L/∂X = G·Yᵀ`, `∂L/∂Y = Xᵀ·G`.
//! Batched over equal leading axes, the rule holds per batch entry.

use ndarray::{Array3, ArrayD};

use crate::error::{Result, bail};
use crate::interp::Tensor;
use crate::ir::{Graph, Shape, ValueId, ValueType};
use crate::ops::{AdjointArgs, need_f32};

pub fn infer(ins: &[&ValueType]) -> Result<ValueType> {
    let (x, y) = (&ins[0].shape, &ins[1].shape);
    need_f32("matmul", "the left operand", ins[0])?;
    need_f32("matmul", "the right operand", ins[1])?;
    if x.rank() < 2 || y.rank() < 2 {
        bail!("matmul: operands must have at least 2 axes, got {x} · {y}");
    }
    if x.rank() != y.rank() || x.0[..x.rank() - 2] != y.0[..y.rank() - 2] {
        bail!("matmul: batch axes differ: {x} · {y} (leading axes must be equal)");
    }
    let (k1, k2) = (&x.0[x.rank() - 1], &y.0[y.rank() - 2]);
    if k1 != k2 {
        bail!("matmul: inner dimensions differ: {x} · {y} ({k1} ≠ {k2})");
    }
    let mut out = x.0[..x.rank() - 1].to_vec();
    out.push(y.0[y.rank() - 1].clone());
    Ok(ValueType::f32(Shape(out)))
}

pub fn adjoint(g: &mut Graph, a: &AdjointArgs) -> Result<Vec<Option<ValueId>>> {
    let (x, y, grad) = (a.inputs[0], a.inputs[1], a.grad);
    let mut out = vec![None, None];
    if a.needs[0] {
        // ∂L/∂X = G·Yᵀ
        let yt = g.transpose(y)?;
        out[0] = Some(g.matmul(grad, yt)?);
    }
    if a.needs[1] {
        // ∂L/∂Y = Xᵀ·G
        let xt = g.transpose(x)?;
        out[1] = Some(g.matmul(xt, grad)?);
    }
    Ok(out)
}

/// Views an array of rank ≥ 2 as `[batch, rows, cols]`.
fn as_batches(a: &ArrayD<f64>) -> Result<Array3<f64>> {
    let s = a.shape();
    let (r, c) = (s[s.len() - 2], s[s.len() - 1]);
    let batch: usize = s[..s.len() - 2].iter().product();
    let flat = a.as_standard_layout().into_owned();
    flat.into_shape_with_order((batch, r, c)).map_err(|e| crate::error::Error::new(format!("matmul: {e}")))
}

pub fn eval(ins: &[&Tensor]) -> Result<Tensor> {
    let (x, y) = (ins[0].real("matmul")?, ins[1].real("matmul")?);
    let (xb, yb) = (as_batches(x)?, as_batches(y)?);
    let (batch, m, n) = (xb.shape()[0], xb.shape()[1], yb.shape()[2]);
    let mut out = Array3::<f64>::zeros((batch, m, n));
    for b in 0..batch {
        let prod = xb.index_axis(ndarray::Axis(0), b).dot(&yb.index_axis(ndarray::Axis(0), b));
        out.index_axis_mut(ndarray::Axis(0), b).assign(&prod);
    }
    let mut shape = x.shape()[..x.ndim() - 1].to_vec();
    shape.push(n);
    out.into_shape_with_order(shape)
        .map(Tensor::Real)
        .map_err(|e| crate::error::Error::new(format!("matmul: {e}")))
}
