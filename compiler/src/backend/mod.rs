//! Code generation: a [`Program`] as one Rust module of plain code calling the runtime
//! (`::adjoint::...` paths only, so embedding it needs nothing but `adjoint`).
//!
//! The module's public API (what `model!` promises, stable across code generators):
//! `Sizes`, `Params` (+ one struct per loop's layer), `Grads`, `Inputs`, `loss`,
//! `grads`, `train_step`, `formulas`, `SOURCE`, and with `output` statements `Outputs` and `outputs`. Inside, each stage is a forward and a backward
//! function (`stage`); `loss` and `grads` run the stages, the loops over layers.

mod causal;
pub mod emit;
pub use formulas::param_formulas;
pub mod formulas;
mod items;
mod loops;
pub mod lower;
pub mod plan;
pub mod schedule;
pub mod split;
mod stage;

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use crate::program::Program;
use emit::Emit;

/// The generated module for `program`; `source` is the model text, `docs` its `///`.
pub fn generate(program: &Program, source: &str, docs: &[syn::Attribute]) -> TokenStream {
    let cx = Emit::default();
    let module = emit::field(&snake(&program.name));
    let items = items::emit(program, &cx);
    let formulas = formulas::emit(program);
    // The formulas show the simplified graph; the code runs it lowered (`lower.rs`).
    let lowered = lower::lower(program);
    let mut stages = Vec::new();
    let mut names = Vec::new();
    for (k, s) in lowered.stages.iter().enumerate() {
        let layer = s.repeat.map(|l| items::layer_type(&lowered, l));
        let n = stage::names(k, layer);
        stages.push(stage::emit(&lowered, s, &n, &cx));
        names.push(n);
    }
    let run = run(program, &names);
    let outputs = outputs(&lowered, &names, &cx);
    let sizes = cx.size_items();
    quote! {
        #(#docs)*
        #[allow(non_snake_case, non_camel_case_types, unused_variables, unused_mut, dead_code, clippy::all)]
        pub mod #module {
            type Real = ::adjoint::ops::Real;
            type Index = ::adjoint::ops::Index;
            type Result<T> = ::core::result::Result<T, ::adjoint::Error>;

            /// The model text this module was compiled from.
            pub const SOURCE: &str = #source;

            #sizes
            #items
            #formulas
            #run
            #outputs
            #(#stages)*
        }
    }
}

/// `loss` and `grads`: the stages in order, and back.
fn run(p: &Program, names: &[stage::Names]) -> TokenStream {
    let mut fwd = Vec::new();
    let mut bwd = Vec::new();
    let last = p.stages.len() - 1;
    // Backward runs the stages last to first: a parameter's first contribution in that
    // order moves its buffer into `grads`, later ones add to it.
    let mut first_in_backward = vec![None; p.params.len()];
    for (k, s) in p.stages.iter().enumerate().rev() {
        for &(i, _) in &s.params {
            first_in_backward[i].get_or_insert(k);
        }
    }
    for (k, (s, n)) in p.stages.iter().zip(names).enumerate() {
        let (f, b) = (&n.forward, &n.backward);
        let saved = format_ident!("saved{}", k);
        let carry = s.carry_in.as_ref().map(|_| quote!(&__x,));
        let seed = (k != last).then(|| quote!(&__dx,));
        let accumulate = |layer: TokenStream| {
            let lines = s.params.iter().map(|&(i, _)| {
                let gf = stage::grad_field(p, i);
                let pf = emit::field(&p.params[i].name);
                let dst = match p.params[i].scope {
                    crate::program::Scope::Model => quote!(__grads.#pf),
                    crate::program::Scope::Loop(_) => quote!(#layer.#pf),
                };
                let first = first_in_backward[i] == Some(k);
                let grad = s.backward.as_ref().and_then(|b| b.param_grads.iter().find(|x| x.0 == i));
                if let Some((_, input)) = grad.and_then(|&(_, id)| stage::scattered(s, id)) {
                    // The stage returned the rows of a scatter: added where the gradient lies.
                    let index = emit::field(&p.inputs[input].name);
                    let op = if first { quote!(scatter_store) } else { quote!(scatter_accumulate) };
                    quote!(::adjoint::ops::#op(&mut #dst, &__g.#gf, &__data.#index)?; ::adjoint::pool::recycle(__g.#gf);)
                } else if first {
                    quote!(::adjoint::ops::store(&mut #dst, __g.#gf)?;)
                } else {
                    quote!(::adjoint::ops::accumulate(&mut #dst, &__g.#gf)?; ::adjoint::pool::recycle(__g.#gf);)
                }
            });
            let carry = s.carry_in.as_ref().map(|_| quote!(__dx = __g.carry;));
            quote!(#(#lines)* #carry)
        };
        match s.repeat {
            None => {
                fwd.push(quote!(let (__out, #saved) = #f(&__env, __p, &__data, #carry)?;));
                fwd.push(if k == last { quote!(let __loss = __out;) } else { quote!(let __x = __out;) });
                let acc = accumulate(quote!(__grads));
                bwd.push(quote! {
                    let __g = #b(&__env, __p, &__data, &#saved, #seed)?;
                    #saved.recycle();
                    #acc
                });
            }
            Some(l) => {
                let var = emit::field(&p.loops[l].var);
                fwd.push(quote! {
                    let mut #saved = ::std::vec::Vec::with_capacity(__p.#var.len());
                    let mut __x = __x;
                    for __l in &__p.#var {
                        let (__out, __s) = #f(&__env, __p, __l, &__data, &__x)?;
                        #saved.push(__s);
                        __x = __out;
                    }
                });
                let acc = accumulate(quote!(__grads.#var[__i]));
                bwd.push(quote! {
                    for __i in (0..__p.#var.len()).rev() {
                        let Some(__s) = #saved.pop() else { unreachable!("one saved set per layer") };
                        let __g = #b(&__env, __p, &__p.#var[__i], &__data, &__s, &__dx)?;
                        __s.recycle();
                        #acc
                    }
                });
            }
        }
    }
    // Parameters no stage differentiates (unused by the loss) get zeros.
    let unused: Vec<TokenStream> = p
        .params
        .iter()
        .enumerate()
        .filter(|&(i, _)| first_in_backward[i].is_none())
        .map(|(_, info)| {
            let pf = emit::field(&info.name);
            match info.scope {
                crate::program::Scope::Model => quote!(__grads.#pf.fill(0.0);),
                crate::program::Scope::Loop(l) => {
                    let var = emit::field(&p.loops[l].var);
                    quote!(for __layer in __grads.#var.iter_mut() { __layer.#pf.fill(0.0); })
                }
            }
        })
        .collect();
    bwd.reverse();
    let split = split_grads(p);
    quote! {
        /// The loss for these parameters and inputs.
        pub fn loss(params: &Params, inputs: &Inputs) -> Result<f32> {
            let (__env, __data) = bind(params, inputs)?;
            let __p = params;
            #(#fwd)*
            ::adjoint::ops::scalar(&__loss)
        }

        #split

        /// `grads` on the whole batch at once.
        fn grads_whole(params: &Params, inputs: &Inputs, grads: &mut Grads) -> Result<f32> {
            let (__env, __data) = bind(params, inputs)?;
            let __p = params;
            #(#fwd)*
            grads.shape_like(params);
            let __grads = grads;
            #(#unused)*
            // The gradient flowing back into each stage; the loss stage sets it first.
            let mut __dx: Real;
            #(#bwd)*
            ::adjoint::ops::scalar(&__loss)
        }

    }
}

/// The public `grads` and `train_step`, on a pool thread (`parallel::on_pool`), over
/// `grads_parts`: the batch split in two parts run side by side when the loss is a sum
/// over examples (`split`), else the whole batch at once. `grads` adds a split batch's
/// two gradient sets (`combine`); `train_step` hands them to the optimizer, which adds
/// them inside its own pass (`Optimizer::update_sum`).
fn split_grads(p: &Program) -> TokenStream {
    let (why, parts_doc, parts_body, spare) = match split::analyse(p) {
        Ok(split) => {
            let (body, spare) = split_parts(p, split.exponent);
            (
                format!(
                    " The loss is a sum over the examples along `{}` (axis 0 of every input), so \
                     a batch runs as two halves side by side (`adjoint::parallel`), their \
                     gradients weighted and added.",
                    split.dim
                ),
                quote! {
                    /// The loss and the gradients, whole (`None`) or as two parts: the first part's
                    /// in `grads`, the second's returned with the two parts' weights.
                },
                body,
                spare,
            )
        }
        Err(why) => (
            format!(" Runs the whole batch at once: it cannot be split ({why})."),
            quote! {
                /// The loss and the gradients of the whole batch: it is never split.
            },
            quote!(Ok((grads_whole(params, inputs, grads)?, None))),
            quote! {
                /// Nothing to keep: the batch is never split.
                fn keep_spare(_: Grads) {}
            },
        ),
    };
    let parts = quote! {
        #parts_doc
        fn grads_parts(
            params: &Params,
            inputs: &Inputs,
            grads: &mut Grads,
        ) -> Result<(f32, ::core::option::Option<(Grads, f32, f32)>)> {
            #parts_body
        }

        #spare
    };
    quote! {
        /// The loss, and every parameter's gradient written into `grads` (resized to
        /// the parameters' shapes if needed).
        #[doc = ""]
        #[doc = #why]
        pub fn grads(params: &Params, inputs: &Inputs, grads: &mut Grads) -> Result<f32> {
            // On a pool thread: the kernels' (or the parts') hand-offs then start from a
            // worker, not from a caller that sleeps until each is done.
            ::adjoint::parallel::on_pool(|| {
                let (__loss, __parts) = grads_parts(params, inputs, grads)?;
                if let Some((__spare, __wa, __wb)) = __parts {
                    let __done = ::adjoint::parallel::combine(grads.tensors_mut(), __wa, &__spare.tensors(), __wb);
                    keep_spare(__spare);
                    __done?;
                }
                Ok(__loss)
            })
        }

        /// One training step: the loss and every gradient (into `grads`, as `grads`
        /// does), then `optimizer`'s update of every parameter at learning rate `lr`.
        pub fn train_step(
            params: &mut Params,
            inputs: &Inputs,
            grads: &mut Grads,
            optimizer: &mut ::adjoint::optim::Optimizer,
            lr: f32,
        ) -> Result<f32> {
            ::adjoint::parallel::on_pool(|| {
                let (__loss, __parts) = grads_parts(params, inputs, grads)?;
                match __parts {
                    None => optimizer.update(lr, params.named_mut(), &grads.named())?,
                    Some((__spare, __wa, __wb)) => {
                        // The parts' gradients are added as the update reads them.
                        let __done = optimizer.update_sum(
                            lr,
                            params.named_mut(),
                            grads.tensors_mut(),
                            __wa,
                            &__spare.tensors(),
                            __wb,
                        );
                        keep_spare(__spare);
                        __done?;
                    }
                }
                Ok(__loss)
            })
        }

        #parts
    }
}

/// The body of `grads_parts` for a batch that splits (two halves side by side), and
/// `keep_spare` with the second half's gradient buffers kept from step to step.
fn split_parts(p: &Program, exponent: i32) -> (TokenStream, TokenStream) {
    let fields: Vec<_> = p.inputs.iter().map(|i| emit::field(&i.name)).collect();
    let body = quote! {
            let __sizes = [#(inputs.#fields.shape().first().copied().unwrap_or(0)),*];
            let __param_elems = || params.tensors().iter().map(|t| t.len()).sum();
            let Some(__first) = ::adjoint::parallel::split_point(&__sizes, __param_elems) else {
                return Ok((grads_whole(params, inputs, grads)?, None));
            };
            let __part = |__r: ::std::ops::Range<usize>| Inputs {
                #(#fields: inputs.#fields.clone().slice_axis_move(
                    ::adjoint::ndarray::Axis(0),
                    ::adjoint::ndarray::Slice::from(__r.clone()),
                ),)*
            };
            let (__a, __b) = (__part(0..__first), __part(__first..__sizes[0]));
            // The second part's gradients, kept from step to step.
            let mut __spare = SPARE_GRADS.lock().ok().and_then(|mut s| s.take()).unwrap_or_else(|| params.clone());
            let (__la, __lb) = ::adjoint::parallel::join_parts(
                || grads_whole(params, &__a, grads),
                || grads_whole(params, &__b, &mut __spare),
            );
            let (__la, __lb) = (__la?, __lb?);
            let (__wa, __wb) = ::adjoint::parallel::part_weights(__sizes[0], __first, #exponent);
            Ok((__wa * __la + __wb * __lb, Some((__spare, __wa, __wb))))
    };
    let spare = quote! {
        /// Keeps the second part's gradient buffers for the next step.
        fn keep_spare(spare: Grads) {
            if let Ok(mut s) = SPARE_GRADS.lock() {
                *s = Some(spare);
            }
        }

        /// `grads`' buffers for the second half of a batch.
        static SPARE_GRADS: ::std::sync::Mutex<::core::option::Option<Grads>> = ::std::sync::Mutex::new(None);
    };
    (body, spare)
}

/// `Outputs` and `outputs`: the model's `output` values, without the backward pass.
fn outputs(p: &Program, names: &[stage::Names], cx: &Emit) -> TokenStream {
    if p.outputs.is_empty() {
        return quote!();
    }
    let last = p.stages.len() - 1;
    let graph = &p.stages[last].graph;
    let fields = p.outputs.iter().map(|o| emit::field(&o.0));
    let types = p.outputs.iter().map(|o| match graph.ty(o.1).dtype {
        crate::ir::DType::F32 => quote!(Real),
        crate::ir::DType::Index => quote!(Index),
    });
    let docs = p.outputs.iter().map(|o| format!(" `{}`, shape {}.", o.0, graph.ty(o.1).shape));
    let mut lines = Vec::new();
    for (s, n) in p.stages.iter().zip(names).take(last) {
        let f = &n.forward;
        let carry = s.carry_in.as_ref().map(|_| quote!(&__x,));
        lines.push(match s.repeat {
            None => quote!(let (__x, _) = #f(&__env, __p, &__data, #carry)?;),
            Some(l) => {
                let var = emit::field(&p.loops[l].var);
                quote! {
                    let mut __x = __x;
                    for __l in &__p.#var {
                        __x = #f(&__env, __p, __l, &__data, &__x)?.0;
                    }
                }
            }
        });
    }
    let run_last = format_ident!("stage{}_outputs", last);
    let carry = p.stages[last].carry_in.as_ref().map(|_| quote!(&__x,));
    let stage_fn = stage::emit_outputs(p, &p.stages[last], &names[last], cx);
    quote! {
        /// The model's `output` values.
        pub struct Outputs { #(#[doc = #docs] pub #fields: #types,)* }

        /// The `output` values for these parameters and inputs (the forward pass only).
        pub fn outputs(params: &Params, inputs: &Inputs) -> Result<Outputs> {
            let (__env, __data) = bind(params, inputs)?;
            let __p = params;
            #(#lines)*
            #run_last(&__env, __p, &__data, #carry)
        }

        #stage_fn
    }
}

fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.extend(c.to_lowercase());
    }
    out
}
