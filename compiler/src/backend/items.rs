//! The generated module's data types: `Sizes`, `Params` and its layer structs,
//! `Inputs`, and the checks that bind sizes from the tensors a call is given.
//!
//! `Sizes` holds every dimension the parameters need: those their shapes show (`D`,
//! `V`), the loop counts (`L`), and those no shape shows (`H`, the head count). Data
//! dimensions (`B`) are read from the inputs on every call.

use std::collections::BTreeSet;

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use super::emit::{Emit, f32_lit, field};
use crate::ir::DType;
use crate::program::{Program, Scope};

pub fn layer_type(p: &Program, l: usize) -> Ident {
    let var = &p.loops[l].var;
    let mut cap = var.chars();
    let head: String = cap.next().map(|c| c.to_uppercase().collect()).unwrap_or_default();
    format_ident!("{}{}Layer", head, cap.as_str())
}

/// The dimensions `Sizes` holds, in declaration order.
pub fn size_fields(p: &Program) -> Vec<String> {
    let bare = |shapes: &mut dyn Iterator<Item = &crate::ir::Shape>| -> BTreeSet<String> {
        shapes.flat_map(|s| s.0.iter().filter_map(|d| d.as_sym().map(str::to_string))).collect()
    };
    let in_params = bare(&mut p.params.iter().map(|q| &q.shape));
    let in_inputs = bare(&mut p.inputs.iter().map(|q| &q.shape));
    let counts: BTreeSet<String> =
        p.loops.iter().filter_map(|l| l.count.as_sym().map(str::to_string)).collect();
    p.dims
        .iter()
        .filter(|d| in_params.contains(*d) || counts.contains(*d) || !in_inputs.contains(*d))
        .cloned()
        .collect()
}

fn shape_consts(cx: &Emit, shape: &crate::ir::Shape) -> TokenStream {
    let consts = shape.0.iter().map(|d| cx.size_const(d));
    quote!(&[#(#consts),*])
}

pub fn emit(p: &Program, cx: &Emit) -> TokenStream {
    let size_names: Vec<String> = size_fields(p);
    let sizes: Vec<Ident> = size_names.iter().map(|s| field(s)).collect();

    // Params and layer structs.
    let model_params = p.members(Scope::Model);
    let pfields: Vec<Ident> = model_params.iter().map(|&i| field(&p.params[i].name)).collect();
    let pdocs: Vec<String> = model_params.iter().map(|&i| doc_of(p, i)).collect();
    let mut layer_structs = Vec::new();
    let mut loop_fields = Vec::new();
    let mut loop_types = Vec::new();
    for l in 0..p.loops.len() {
        let ty = layer_type(p, l);
        let members = p.members(Scope::Loop(l));
        let f: Vec<Ident> = members.iter().map(|&i| field(&p.params[i].name)).collect();
        let d: Vec<String> = members.iter().map(|&i| doc_of(p, i)).collect();
        let doc = format!(" One layer's parameters of the loop over `{}`.", p.loops[l].var);
        layer_structs.push(quote! {
            #[doc = #doc]
            #[derive(Clone, Debug, PartialEq)]
            pub struct #ty { #(#[doc = #d] pub #f: Real,)* }
        });
        loop_fields.push(field(&p.loops[l].var));
        loop_types.push(ty);
    }

    // Per-parameter code in file order: (name expression, access path).
    let mut done = vec![false; p.loops.len()];
    let mut named = Vec::new();
    let mut infer = Vec::new();
    let mut named_mut = Vec::new();
    let mut tensors = Vec::new();
    let mut tensors_mut = Vec::new();
    let mut build = Vec::new();
    let mut shape_list = Vec::new();
    let mut checks = Vec::new();
    for q in &p.params {
        let shape = shape_consts(cx, &q.shape);
        let f = field(&q.name);
        match q.scope {
            Scope::Model => {
                let name = &q.name;
                named.push(quote!(__out.push((::std::string::String::from(#name), &self.#f));));
                named_mut.push(quote!(__out.push((::std::string::String::from(#name), &mut self.#f));));
                tensors.push(quote!(__out.push(&self.#f);));
                tensors_mut.push(quote!(__out.push(&mut self.#f);));
                build.push(quote!(let #f = __make(::std::string::String::from(#name), #shape)?;));
                shape_list.push(quote!(__out.push((::std::string::String::from(#name), __dims(#shape)?));));
                checks.push(quote!(__env.check_shape(#name, #shape, params.#f.shape())?;));
                infer.push(quote!(if let Some(s) = shapes.get(#name) { let _ = __env.bind_shape(#name, #shape, s); }));
            }
            Scope::Loop(l) if !done[l] => {
                done[l] = true;
                let var = &p.loops[l].var;
                let vf = field(var);
                let ty = layer_type(p, l);
                let members = p.members(Scope::Loop(l));
                let mf: Vec<Ident> = members.iter().map(|&j| field(&p.params[j].name)).collect();
                let fmt: Vec<String> =
                    members.iter().map(|&j| format!("{var}{{}}.{}", p.params[j].name)).collect();
                let shapes: Vec<TokenStream> =
                    members.iter().map(|&j| shape_consts(cx, &p.params[j].shape)).collect();
                let count = cx.size_const(&p.loops[l].count);
                named.push(quote! {
                    for (__i, __l) in self.#vf.iter().enumerate() {
                        #(__out.push((::std::format!(#fmt, __i), &__l.#mf));)*
                    }
                });
                named_mut.push(quote! {
                    for (__i, __l) in self.#vf.iter_mut().enumerate() {
                        #(__out.push((::std::format!(#fmt, __i), &mut __l.#mf));)*
                    }
                });
                tensors.push(quote! {
                    for __l in &self.#vf {
                        #(__out.push(&__l.#mf);)*
                    }
                });
                tensors_mut.push(quote! {
                    for __l in &mut self.#vf {
                        #(__out.push(&mut __l.#mf);)*
                    }
                });
                build.push(quote! {
                    let mut #vf = ::std::vec::Vec::new();
                    for __i in 0..__env.eval(#count)? {
                        #vf.push(#ty { #(#mf: __make(::std::format!(#fmt, __i), #shapes)?,)* });
                    }
                });
                shape_list.push(quote! {
                    for __i in 0..__env.eval(#count)? {
                        #(__out.push((::std::format!(#fmt, __i), __dims(#shapes)?));)*
                    }
                });
                let count_sym = p.loops[l].count.as_sym().map(str::to_string);
                let set_count = count_sym.map(|c| {
                    quote! {
                        let _ = __env.set(#c, __layers, "the layer names");
                    }
                });
                infer.push(quote! {
                    let __layers = shapes.keys().filter_map(|n| n.strip_prefix(#var)?.split_once('.')?.0.parse::<usize>().ok()).map(|i| i + 1).max().unwrap_or(0);
                    #set_count
                    #(if let Some(s) = shapes.get(&::std::format!(#fmt, 0)) { let _ = __env.bind_shape(#fmt, #shapes, s); })*
                });
                let layers_msg = format!("params.{var} has {{}} layers but {} = {{}}", p.loops[l].count);
                checks.push(quote! {
                    if params.#vf.len() != __env.eval(#count)? {
                        return Err(::adjoint::Error::new(::std::format!(#layers_msg, params.#vf.len(), __env.eval(#count)?)));
                    }
                    for (__i, __l) in params.#vf.iter().enumerate() {
                        #(__env.check_shape(::std::format_args!(#fmt, __i), #shapes, __l.#mf.shape())?;)*
                    }
                });
            }
            Scope::Loop(_) => {}
        }
    }
    let all_fields: Vec<&Ident> = pfields.iter().chain(loop_fields.iter()).collect();
    let init_rule = init_rule(p);

    // Inputs.
    let ifields: Vec<Ident> = p.inputs.iter().map(|x| field(&x.name)).collect();
    // Element type of the view, and of the owned array the kernels take.
    let (itypes, itypes_owned): (Vec<TokenStream>, Vec<TokenStream>) = p
        .inputs
        .iter()
        .map(|x| match x.dtype {
            DType::F32 => (quote!(f32), quote!(Real)),
            DType::Index => (quote!(i32), quote!(Index)),
        })
        .unzip();
    let inames: Vec<String> = p.inputs.iter().map(|x| format!("input `{}`", x.name)).collect();
    let ishapes: Vec<TokenStream> = p.inputs.iter().map(|x| shape_consts(cx, &x.shape)).collect();

    quote! {
        /// The sizes that fix every parameter's shape.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct Sizes { #(pub #sizes: usize,)* }

        impl Sizes {
            fn env(&self) -> Result<::adjoint::dims::Env> {
                let mut __env = ::adjoint::dims::Env::new();
                #(__env.set(#size_names, self.#sizes, "the sizes")?;)*
                Ok(__env)
            }

            /// The sizes that named tensor shapes show (`wte` → `V`, `D`; the layer count
            /// from the names), plus `given` ones no shape shows (`[("H", 4)]`). Shapes
            /// that disagree are left for `Params::from_named` to list.
            pub fn infer(shapes: &::std::collections::BTreeMap<::std::string::String, ::std::vec::Vec<usize>>, given: &[(&str, usize)]) -> Result<Sizes> {
                let mut __env = ::adjoint::dims::Env::new();
                for (name, value) in given {
                    match [#(#size_names),*].iter().find(|s| **s == *name) {
                        Some(s) => __env.set(*s, *value, "the given sizes")?,
                        None => return Err(::adjoint::Error::new(::std::format!("`{name}` is not a size of this model"))),
                    }
                }
                #(#infer)*
                Ok(Sizes { #(#sizes: __env.get(#size_names).ok_or_else(|| ::adjoint::Error::new(
                    ::std::format!("size {} is not shown by any tensor; give it", #size_names)))?,)* })
            }
        }

        /// The trained tensors, named as in the model text.
        #[derive(Clone, Debug, PartialEq)]
        pub struct Params {
            pub sizes: Sizes,
            #(#[doc = #pdocs] pub #pfields: Real,)*
            #(pub #loop_fields: ::std::vec::Vec<#loop_types>,)*
        }
        #(#layer_structs)*

        /// Gradients: one tensor per parameter, same names and shapes.
        pub type Grads = Params;

        /// The data of one call, as views.
        pub struct Inputs<'a> { #(pub #ifields: ::adjoint::ndarray::ArrayViewD<'a, #itypes>,)* }

        struct Data { #(#ifields: #itypes_owned,)* }

        impl Params {
            fn build(sizes: &Sizes, mut __make: impl FnMut(::std::string::String, &[usize]) -> Result<Real>) -> Result<Params> {
                let __env = sizes.env()?;
                let mut __make = |name: ::std::string::String, shape: &[::adjoint::dims::Size]| -> Result<Real> {
                    let dims = shape.iter().map(|s| __env.eval(s)).collect::<Result<::std::vec::Vec<usize>>>()?;
                    let t = __make(name.clone(), &dims)?;
                    if t.shape() == dims.as_slice() { Ok(t) } else {
                        Err(::adjoint::Error::new(::std::format!("`{name}` has shape {:?}, expected {:?}", t.shape(), dims)))
                    }
                };
                #(#build)*
                Ok(Params { sizes: *sizes, #(#all_fields,)* })
            }

            /// Every tensor's file name and shape for these sizes, in `named` order,
            /// without allocating any: what to check a file against before loading it.
            pub fn shapes(sizes: &Sizes) -> Result<::std::vec::Vec<(::std::string::String, ::std::vec::Vec<usize>)>> {
                let __env = sizes.env()?;
                let __dims = |shape: &[::adjoint::dims::Size]| shape.iter().map(|s| __env.eval(s)).collect::<Result<::std::vec::Vec<usize>>>();
                let mut __out = ::std::vec::Vec::new();
                #(#shape_list)*
                Ok(__out)
            }

            /// Fresh parameters: each `offset + std·N(0,1)` as its declaration says, from `seed`.
            pub fn init(sizes: &Sizes, seed: u64) -> Result<Params> {
                let mut rng = ::adjoint::init::Rng::new(seed);
                Params::build(sizes, |name, dims| {
                    let (offset, std) = init_of(&name);
                    Ok(::adjoint::init::normal(&mut rng, dims, offset, std))
                })
            }

            /// All zeros.
            pub fn zeros(sizes: &Sizes) -> Result<Params> {
                Params::build(sizes, |_, dims| Ok(::adjoint::ops::fill(0.0, dims)))
            }

            /// Zeros shaped like `other`, reusing this value's buffers where they fit.
            pub fn zero_like(&mut self, other: &Params) {
                self.shape_like(other);
                for t in self.tensors_mut() {
                    t.fill(0.0);
                }
            }

            /// Shaped like `other`, keeping this value's buffers (and contents) where the
            /// shapes already match: for gradients that are about to be overwritten.
            pub fn shape_like(&mut self, other: &Params) {
                let theirs = other.tensors();
                if self.sizes != other.sizes || self.tensors().len() != theirs.len() {
                    *self = other.clone();
                    return;
                }
                for (t, o) in self.tensors_mut().into_iter().zip(theirs) {
                    if t.shape() != o.shape() {
                        *t = ::adjoint::ops::fill(0.0, o.shape());
                    }
                }
            }

            /// Every tensor under its file name (`wte`, `h0.attn.wq`, ...), in declaration order.
            pub fn named(&self) -> ::std::vec::Vec<(::std::string::String, &Real)> {
                let mut __out = ::std::vec::Vec::new();
                #(#named)*
                __out
            }

            pub fn named_mut(&mut self) -> ::std::vec::Vec<(::std::string::String, &mut Real)> {
                let mut __out = ::std::vec::Vec::new();
                #(#named_mut)*
                __out
            }

            /// Every tensor in `named` order, without its name: for the passes of each
            /// step, which match tensors by position (formatting the names cost 1–2% of
            /// the tiny config's step).
            pub fn tensors(&self) -> ::std::vec::Vec<&Real> {
                let mut __out = ::std::vec::Vec::new();
                #(#tensors)*
                __out
            }

            pub fn tensors_mut(&mut self) -> ::std::vec::Vec<&mut Real> {
                let mut __out = ::std::vec::Vec::new();
                #(#tensors_mut)*
                __out
            }

            /// Parameters from named tensors; every missing, unexpected or wrong-shaped
            /// tensor is listed in one error.
            pub fn from_named(mut tensors: ::std::collections::BTreeMap<::std::string::String, Real>, sizes: &Sizes) -> Result<Params> {
                let expected = Params::zeros(sizes)?;
                let want: ::std::vec::Vec<(::std::string::String, ::std::vec::Vec<usize>)> =
                    expected.named().iter().map(|(n, t)| (n.clone(), t.shape().to_vec())).collect();
                let got = tensors.iter().map(|(n, t)| (n.clone(), t.shape().to_vec())).collect();
                ::adjoint::dims::check_names(&want, &got)?;
                Params::build(sizes, |name, _| tensors.remove(&name).ok_or_else(|| ::adjoint::Error::new(::std::format!("missing `{name}`"))))
            }
        }

        /// `(offset, std)` of a parameter's initialisation, by file name.
        fn init_of(name: &str) -> (f32, f32) {
            #init_rule
        }

        /// Binds every size from the parameters and the inputs, checking each shape.
        fn bind(params: &Params, inputs: &Inputs) -> Result<(::adjoint::dims::Env, Data)> {
            let mut __env = params.sizes.env()?;
            #(#checks)*
            #(__env.bind_shape(#inames, #ishapes, inputs.#ifields.shape())?;)*
            #(__env.check_shape(#inames, #ishapes, inputs.#ifields.shape())?;)*
            Ok((__env, Data { #(#ifields: inputs.#ifields.to_owned(),)* }))
        }
    }
}

fn doc_of(p: &Program, i: usize) -> String {
    let q = &p.params[i];
    format!(" `{}`: {} ({}).", q.name, q.shape, q.display)
}

/// A `match` from file name to initialisation: loop parameters match on the part after
/// their layer prefix.
fn init_rule(p: &Program) -> TokenStream {
    let arms = p.params.iter().map(|q| {
        let crate::frontend::ast::Init::Normal { offset, std } = q.init;
        let (off, sd) = (f32_lit(offset), f32_lit(std));
        match q.scope {
            Scope::Model => {
                let n = &q.name;
                quote!(if name == #n { return (#off, #sd); })
            }
            Scope::Loop(l) => {
                let var = &p.loops[l].var;
                let suffix = format!(".{}", q.name);
                quote! {
                    if let Some(rest) = name.strip_prefix(#var) && rest.ends_with(#suffix)
                        && rest[..rest.len() - #suffix.len()].bytes().all(|b| b.is_ascii_digit()) {
                        return (#off, #sd);
                    }
                }
            }
        }
    });
    quote!(#(#arms)* (0.0, 0.0))
}
