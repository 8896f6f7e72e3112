//! Elementwise ops: arithmetic on equal shapes, constant scale and shift, and the
//! scalar functions a transformer uses.
//!
//! Binary ops need equal shapes: broadcasting is an explicit `Broadcast` node, so every
//! adjoint here is shape-preserving and the sum over broadcast axes is broadcast's own
//! adjoint. Where a derivative is cheapest in terms of the output (`exp`, `tanh`,
//! `sqrt`, `÷`), the rule reads the output, which the forward pass already has.

use proc_macro2::TokenStream;
use quote::quote;

use crate::backend::emit::Emit;
use ndarray::{ArrayD, Zip};

use crate::dim::DimEnv;
use crate::error::{Result, bail};
use crate::interp::Tensor;
use crate::ir::{Graph, Shape, ValueId, ValueType};
use crate::ops::{AdjointArgs, need_f32};
use crate::pretty::{Form, Func, Infix};
use crate::scalar::Scalar;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pointwise {
    Add,
    Sub,
    /// Elementwise (Hadamard) product `⊙`.
    Mul,
    /// Elementwise quotient `⊘`.
    Div,
    Neg,
    /// `c · x`.
    Scale(Scalar),
    /// `x + c`.
    Shift(Scalar),
    Exp,
    Log,
    Tanh,
    Sqrt,
    Relu,
    /// `[x > 0]`, the derivative of relu; its own derivative is zero almost everywhere.
    Step,
    /// GELU, tanh approximation: `½x(1 + tanh(√(2/π)(x + 0.044715x³)))`.
    Gelu,
    /// The derivative of `Gelu`.
    GeluGrad,
    /// The identity, with no gradient flowing back.
    StopGrad,
}

const GELU_C: f64 = 0.044715;

fn gelu(x: f64) -> f64 {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (k * (x + GELU_C * x * x * x)).tanh())
}

fn gelu_grad(x: f64) -> f64 {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    let t = (k * (x + GELU_C * x * x * x)).tanh();
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * GELU_C * x * x)
}

impl Pointwise {
    pub fn arity(&self) -> usize {
        match self {
            Pointwise::Add | Pointwise::Sub | Pointwise::Mul | Pointwise::Div => 2,
            _ => 1,
        }
    }

    pub fn infer(&self, ins: &[&ValueType]) -> Result<ValueType> {
        let op = self.mnemonic();
        for (i, ty) in ins.iter().enumerate() {
            need_f32(op, if i == 0 { "the left operand" } else { "the right operand" }, ty)?;
        }
        if let [x, y] = ins
            && x.shape != y.shape
        {
            bail!(
                "{op}: shapes differ: {} {} {} (elementwise ops need equal shapes; broadcast explicitly)",
                x.shape,
                self.form_symbol(),
                y.shape
            );
        }
        Ok(ins[0].clone())
    }

    fn form_symbol(&self) -> &'static str {
        match self {
            Pointwise::Add => "+",
            Pointwise::Sub => "−",
            Pointwise::Mul => "⊙",
            _ => "⊘",
        }
    }

    pub fn adjoint(&self, g: &mut Graph, a: &AdjointArgs) -> Result<Vec<Option<ValueId>>> {
        let (x, z, grad) = (a.inputs[0], a.out, a.grad);
        let y = a.inputs.get(1).copied();
        let one = |g: &mut Graph, like: ValueId| {
            let s: Shape = g.shape(like).clone();
            g.fill(Scalar::num(1.0), s)
        };
        Ok(match self {
            // d(x + y) = dx + dy
            Pointwise::Add => vec![Some(grad), Some(grad)],
            // d(x − y) = dx − dy
            Pointwise::Sub => vec![Some(grad), Some(g.neg(grad)?)],
            // d(x ⊙ y) = dx ⊙ y + x ⊙ dy
            Pointwise::Mul => {
                let y = y.unwrap_or(x);
                vec![Some(g.mul(grad, y)?), Some(g.mul(grad, x)?)]
            }
            // d(x ⊘ y) = dx ⊘ y − (x ⊘ y) ⊙ dy ⊘ y
            Pointwise::Div => {
                let y = y.unwrap_or(x);
                let gx = g.div(grad, y)?;
                let gz = g.mul(grad, z)?;
                let gz_y = g.div(gz, y)?;
                vec![Some(gx), Some(g.neg(gz_y)?)]
            }
            Pointwise::Neg => vec![Some(g.neg(grad)?)],
            // d(c x) = c dx
            Pointwise::Scale(c) => vec![Some(g.scale(grad, c.clone())?)],
            Pointwise::Shift(_) => vec![Some(grad)],
            // d exp(x) = exp(x) ⊙ dx
            Pointwise::Exp => vec![Some(g.mul(grad, z)?)],
            // d log(x) = dx ⊘ x
            Pointwise::Log => vec![Some(g.div(grad, x)?)],
            // d tanh(x) = (1 − tanh²x) ⊙ dx
            Pointwise::Tanh => {
                let ones = one(g, z)?;
                let z2 = g.mul(z, z)?;
                let d = g.sub(ones, z2)?;
                vec![Some(g.mul(grad, d)?)]
            }
            // d √x = dx ⊘ (2√x)
            Pointwise::Sqrt => {
                let q = g.div(grad, z)?;
                vec![Some(g.scale(q, Scalar::num(0.5))?)]
            }
            // d relu(x) = [x > 0] ⊙ dx
            Pointwise::Relu => {
                let s = g.step(x)?;
                vec![Some(g.mul(grad, s)?)]
            }
            Pointwise::Gelu => {
                let d = g.gelu_grad(x)?;
                vec![Some(g.mul(grad, d)?)]
            }
            Pointwise::Step | Pointwise::StopGrad => vec![None],
            Pointwise::GeluGrad => {
                bail!("gelu′ has no adjoint: second derivatives of gelu are not supported")
            }
        })
    }

    pub fn eval(&self, env: &DimEnv, ins: &[&Tensor]) -> Result<Tensor> {
        let op = self.mnemonic();
        let x = ins[0].real(op)?;
        let unary = |f: &dyn Fn(f64) -> f64| -> ArrayD<f64> { x.mapv(f) };
        let out = match self {
            Pointwise::Add | Pointwise::Sub | Pointwise::Mul | Pointwise::Div => {
                let y = ins[1].real(op)?;
                if x.shape() != y.shape() {
                    bail!("{op}: shapes differ at run time: {:?} vs {:?}", x.shape(), y.shape());
                }
                let f: fn(f64, f64) -> f64 = match self {
                    Pointwise::Add => |a, b| a + b,
                    Pointwise::Sub => |a, b| a - b,
                    Pointwise::Mul => |a, b| a * b,
                    _ => |a, b| a / b,
                };
                Zip::from(x).and(y).map_collect(|&a, &b| f(a, b))
            }
            Pointwise::Neg => unary(&|v| -v),
            Pointwise::Scale(c) => {
                let c = c.eval(env)?;
                unary(&|v| c * v)
            }
            Pointwise::Shift(c) => {
                let c = c.eval(env)?;
                unary(&|v| v + c)
            }
            Pointwise::Exp => unary(&f64::exp),
            Pointwise::Log => unary(&f64::ln),
            Pointwise::Tanh => unary(&f64::tanh),
            Pointwise::Sqrt => unary(&f64::sqrt),
            Pointwise::Relu => unary(&|v| v.max(0.0)),
            Pointwise::Step => unary(&|v| if v > 0.0 { 1.0 } else { 0.0 }),
            Pointwise::Gelu => unary(&gelu),
            Pointwise::GeluGrad => unary(&gelu_grad),
            Pointwise::StopGrad => x.clone(),
        };
        Ok(Tensor::Real(out))
    }

    pub fn emit(&self, x: &[TokenStream], cx: &Emit) -> TokenStream {
        let a = &x[0];
        let unary = |f: &str| {
            let f = quote::format_ident!("{}", f);
            quote!(::adjoint::ops::#f(#a))
        };
        match self {
            Pointwise::Add | Pointwise::Sub | Pointwise::Mul | Pointwise::Div => {
                let f = quote::format_ident!("{}", self.mnemonic());
                let b = &x[1];
                quote!(::adjoint::ops::#f(#a, #b)?)
            }
            Pointwise::Scale(c) => {
                let c = cx.scalar(c);
                quote!(::adjoint::ops::scale(#a, #c))
            }
            Pointwise::Shift(c) => {
                let c = cx.scalar(c);
                quote!(::adjoint::ops::shift(#a, #c))
            }
            Pointwise::StopGrad => quote!(::core::clone::Clone::clone(#a)),
            Pointwise::Neg => unary("neg"),
            Pointwise::Exp => unary("exp"),
            Pointwise::Log => unary("log"),
            Pointwise::Tanh => unary("tanh"),
            Pointwise::Sqrt => unary("sqrt"),
            Pointwise::Relu => unary("relu"),
            Pointwise::Step => unary("step"),
            Pointwise::Gelu => unary("gelu"),
            Pointwise::GeluGrad => unary("gelu_grad"),
        }
    }

    /// One element of this op inside a fused loop, from its operands' values (`f32`
    /// expressions); `konst` hoists a constant out of the loop. Transcendental ops call
    /// `::adjoint::math` through the loop body's `__arith` (fused multiply-adds where
    /// the build running the body has them).
    pub fn emit_scalar(&self, x: &[TokenStream], konst: &dyn Fn(&Scalar) -> TokenStream) -> TokenStream {
        let a = &x[0];
        match self {
            Pointwise::Add => {
                let b = &x[1];
                quote!(#a + #b)
            }
            Pointwise::Sub => {
                let b = &x[1];
                quote!(#a - #b)
            }
            Pointwise::Mul => {
                let b = &x[1];
                quote!(#a * #b)
            }
            Pointwise::Div => {
                let b = &x[1];
                quote!(#a / #b)
            }
            Pointwise::Neg => quote!(-#a),
            Pointwise::Scale(c) => {
                let c = konst(c);
                quote!(#a * #c)
            }
            Pointwise::Shift(c) => {
                let c = konst(c);
                quote!(#a + #c)
            }
            Pointwise::Exp => quote!(__arith.exp(#a)),
            Pointwise::Log => quote!(f32::ln(#a)),
            Pointwise::Tanh => quote!(__arith.tanh(#a)),
            Pointwise::Sqrt => quote!(f32::sqrt(#a)),
            Pointwise::Relu => quote!(f32::max(#a, 0.0)),
            Pointwise::Step => quote!(if #a > 0.0 { 1.0f32 } else { 0.0f32 }),
            Pointwise::Gelu => quote!(__arith.gelu(#a)),
            Pointwise::GeluGrad => quote!(__arith.gelu_grad(#a)),
            Pointwise::StopGrad => quote!(#a),
        }
    }

    pub fn form(&self) -> Form {
        match self {
            Pointwise::Add => Form::Infix(Infix::Add),
            Pointwise::Sub => Form::Infix(Infix::Sub),
            Pointwise::Mul => Form::Infix(Infix::Hadamard),
            Pointwise::Div => Form::Infix(Infix::Divide),
            Pointwise::Neg => Form::Neg,
            Pointwise::Scale(c) => Form::Scale(c.clone()),
            Pointwise::Shift(c) => Form::Shift(c.clone()),
            Pointwise::Exp => Form::Call(Func::Exp),
            Pointwise::Log => Form::Call(Func::Log),
            Pointwise::Tanh => Form::Call(Func::Tanh),
            Pointwise::Sqrt => Form::Sqrt,
            Pointwise::Relu => Form::Call(Func::Relu),
            Pointwise::Step => Form::Positive,
            Pointwise::Gelu => Form::Call(Func::Gelu),
            Pointwise::GeluGrad => Form::Call(Func::GeluGrad),
            Pointwise::StopGrad => Form::Transparent,
        }
    }

    pub fn mnemonic(&self) -> &'static str {
        match self {
            Pointwise::Add => "add",
            Pointwise::Sub => "sub",
            Pointwise::Mul => "mul",
            Pointwise::Div => "div",
            Pointwise::Neg => "neg",
            Pointwise::Scale(_) => "scale",
            Pointwise::Shift(_) => "shift",
            Pointwise::Exp => "exp",
            Pointwise::Log => "log",
            Pointwise::Tanh => "tanh",
            Pointwise::Sqrt => "sqrt",
            Pointwise::Relu => "relu",
            Pointwise::Step => "step",
            Pointwise::Gelu => "gelu",
            Pointwise::GeluGrad => "gelu_grad",
            Pointwise::StopGrad => "stop_grad",
        }
    }
}
