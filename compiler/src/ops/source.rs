//! Sources: declared inputs (parameters and data) and constant tensors.

use proc_macro2::TokenStream;
use quote::quote;

use crate::backend::emit::Emit;
use crate::dim::DimEnv;
use crate::error::{Result, bail};
use crate::interp::Tensor;
use crate::ir::{DType, Role, Shape, ValueType};
use crate::pretty::Form;
use crate::scalar::Scalar;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// A value fed from outside: a parameter or a data input.
    Input { name: String, role: Role, ty: ValueType },
    /// A tensor with every element `value`.
    Fill { value: Scalar, shape: Shape },
}

impl Source {
    pub fn infer(&self, _ins: &[&ValueType]) -> Result<ValueType> {
        match self {
            Source::Input { ty, .. } => Ok(ty.clone()),
            Source::Fill { shape, .. } => Ok(ValueType::f32(shape.clone())),
        }
    }

    pub fn eval(&self, env: &DimEnv, out: &ValueType) -> Result<Tensor> {
        match self {
            Source::Input { name, .. } => bail!("input `{name}` was not fed"),
            Source::Fill { value, .. } => {
                debug_assert_eq!(out.dtype, DType::F32);
                let dims = crate::interp::concrete_shape(&out.shape, env)?;
                Ok(Tensor::Real(ndarray::ArrayD::from_elem(dims, value.eval(env)?)))
            }
        }
    }

    /// A constant's runtime call (inputs are bound by the generated code, not emitted).
    pub fn emit(&self, cx: &Emit) -> TokenStream {
        match self {
            Source::Input { name, .. } => quote!(compile_error!(#name)),
            Source::Fill { value, shape } => {
                let (v, s) = (cx.scalar(value), cx.shape(&shape.0));
                quote!(::adjoint::ops::fill(#v, #s))
            }
        }
    }

    pub fn form(&self) -> Form {
        match self {
            Source::Input { .. } => Form::Leaf,
            Source::Fill { value, .. } => Form::Const(value.clone()),
        }
    }

    pub fn mnemonic(&self) -> String {
        match self {
            Source::Input { name, .. } => name.clone(),
            Source::Fill { value, .. } => format!("fill {value}"),
        }
    }
}
