//! What op emitters need: sizes and constants as Rust expressions over the run-time
//! dimension environment `__env`.
//!
//! Every distinct size polynomial becomes one `const SIZE_n: Size` in the generated
//! module, numbered in order of first use, so the same model always emits the same
//! code.

use std::cell::RefCell;
use std::collections::BTreeMap;

use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{format_ident, quote};

use crate::dim::Dim;
use crate::scalar::Scalar;

#[derive(Default)]
pub struct Emit {
    sizes: RefCell<BTreeMap<Dim, usize>>,
    order: RefCell<Vec<Dim>>,
}

impl Emit {
    /// The `const` holding `dim`'s polynomial.
    pub fn size_const(&self, dim: &Dim) -> Ident {
        let mut sizes = self.sizes.borrow_mut();
        let next = sizes.len();
        let n = *sizes.entry(dim.clone()).or_insert_with(|| {
            self.order.borrow_mut().push(dim.clone());
            next
        });
        format_ident!("SIZE_{}", n)
    }

    /// `dim`'s value, a `usize` expression.
    pub fn dim(&self, dim: &Dim) -> TokenStream {
        if let Some(n) = dim.as_lit().filter(|&n| n >= 0) {
            let n = Literal::usize_unsuffixed(n as usize);
            return quote!(#n);
        }
        let c = self.size_const(dim);
        quote!(__env.eval(#c)?)
    }

    /// A shape, a `&[usize]` expression.
    pub fn shape(&self, dims: &[Dim]) -> TokenStream {
        let dims = dims.iter().map(|d| self.dim(d));
        quote!(&[#(#dims),*])
    }

    /// A constant, an `f32` expression.
    pub fn scalar(&self, s: &Scalar) -> TokenStream {
        if s.factors.is_empty() {
            return f32_lit(s.coef);
        }
        let coef = f64_lit(s.coef);
        let factors = s.factors.iter().map(|(d, e)| {
            let c = self.size_const(d);
            quote!((#c, #e))
        });
        quote!(__env.scalar(#coef, &[#(#factors),*])?)
    }

    /// The `const SIZE_n` items.
    pub fn size_items(&self) -> TokenStream {
        let order = self.order.borrow();
        let items = order.iter().enumerate().map(|(i, d)| {
            let name = format_ident!("SIZE_{}", i);
            let terms = d.terms().into_iter().map(|(num, den, syms)| {
                let syms = syms.iter().map(|(s, e)| quote!((#s, #e)));
                quote!((#num, #den, &[#(#syms),*]))
            });
            let doc = format!(" `{d}`");
            quote!(#[doc = #doc] const #name: ::adjoint::dims::Size = &[#(#terms),*];)
        });
        quote!(#(#items)*)
    }
}

/// A float literal of type `ty` (`f32` or `f64`); non-finite values as its constants.
fn float_lit(v: f64, ty: &str) -> TokenStream {
    let ty = quote::format_ident!("{}", ty);
    if v.is_nan() {
        quote!(#ty::NAN)
    } else if v == f64::INFINITY {
        quote!(#ty::INFINITY)
    } else if v == f64::NEG_INFINITY {
        quote!(#ty::NEG_INFINITY)
    } else if ty == "f32" {
        let l = Literal::f32_suffixed(v as f32);
        quote!(#l)
    } else {
        let l = Literal::f64_suffixed(v);
        quote!(#l)
    }
}

pub fn f64_lit(v: f64) -> TokenStream {
    float_lit(v, "f64")
}

/// `v` rounded to f32 (a value beyond f32's range becomes an infinity).
pub fn f32_lit(v: f64) -> TokenStream {
    float_lit(v as f32 as f64, "f32")
}

/// A plain identifier from text such as `attn.wq` → `attn_wq`.
pub fn field(name: &str) -> Ident {
    let mut s: String = name.chars().map(|c| if c.is_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    if syn::parse_str::<Ident>(&s).is_err() {
        return Ident::new_raw(&s, Span::call_site());
    }
    Ident::new(&s, Span::call_site())
}
