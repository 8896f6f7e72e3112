//! One stage as two Rust functions: the forward pass, returning the stage's output and
//! what its backward pass reads, and the backward pass, returning the gradients.
//!
//! Each graph node becomes one `let` calling its op's runtime kernel (`Op::emit`), in
//! id order, so the code reads like the graph. The split: forward computes every
//! ancestor of the output; backward computes the rest of what the gradients need; the
//! forward values the backward pass reads (and only those) are saved in a struct.

use std::collections::BTreeSet;

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use super::causal::{Causal, Tri};
use super::emit::{Emit, field};
use super::loops;
use super::schedule::{self, Item, Schedule};
use crate::ir::{DType, Graph, ValueId};
use crate::ops::{IndexOp, Layout, Op, Pointwise, Source};
use crate::program::{Program, Scope, Stage};

/// How generated code refers to a stage's names.
pub struct Names {
    pub index: usize,
    pub forward: Ident,
    pub backward: Ident,
    pub saved: Ident,
    pub grads: Ident,
    /// The layer struct of a loop stage.
    pub layer: Option<Ident>,
}

pub fn names(k: usize, layer: Option<Ident>) -> Names {
    Names {
        index: k,
        forward: format_ident!("stage{}_forward", k),
        backward: format_ident!("stage{}_backward", k),
        saved: format_ident!("Stage{}Saved", k),
        grads: format_ident!("Stage{}Grads", k),
        layer,
    }
}

/// A local's name: `v{id}`, with the value's display name when it has one.
fn local(g: &Graph, id: ValueId) -> Ident {
    let ascii: String =
        g.display_name(id).unwrap_or("").chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    if ascii.is_empty() { format_ident!("v{}", id.0) } else { format_ident!("v{}_{}", id.0, ascii) }
}

/// The field of a stage's gradient struct for parameter `i`.
pub fn grad_field(p: &Program, i: usize) -> Ident {
    let prefix = if p.params[i].scope == Scope::Model { "p" } else { "l" };
    field(&format!("{prefix}_{}", p.params[i].name))
}

fn elem_type(g: &Graph, id: ValueId) -> TokenStream {
    match g.ty(id).dtype {
        DType::F32 => quote!(Real),
        DType::Index => quote!(Index),
    }
}

/// How a stage input is read: a parameter from `__p`/`__l`, data from `__data`.
fn bind_input(p: &Program, stage: &Stage, id: ValueId) -> Option<TokenStream> {
    if let Some(&(i, _)) = stage.params.iter().find(|x| x.1 == id) {
        let f = field(&p.params[i].name);
        return Some(match p.params[i].scope {
            Scope::Model => quote!(&__p.#f),
            Scope::Loop(_) => quote!(&__l.#f),
        });
    }
    if let Some(&(i, _)) = stage.inputs.iter().find(|x| x.1 == id) {
        let f = field(&p.inputs[i].name);
        return Some(quote!(&__data.#f));
    }
    None
}

/// What a stage's two passes compute and hand over: the backward schedule, the forward
/// values it reads (saved), the forward values it recomputes instead, and the backward
/// values the forward pass computes for it.
pub struct StagePlan {
    pub forward_set: Vec<bool>,
    pub forward_roots: Vec<ValueId>,
    pub grad_roots: Vec<ValueId>,
    pub backward: Schedule,
    /// Everything the backward pass reads and does not compute (saved values, inputs).
    pub read_back: BTreeSet<ValueId>,
    pub saved: BTreeSet<ValueId>,
    pub recompute: BTreeSet<ValueId>,
    /// Backward values computed in the forward pass instead (`hoisted`).
    pub hoisted: Vec<Hoist>,
}

/// A backward value the forward pass computes and saves in place of what it reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hoist {
    /// The value saved for the backward pass.
    pub value: ValueId,
    /// Every node moved to the forward pass: `value` and what it alone reads.
    pub nodes: Vec<ValueId>,
    /// The saved values it replaces (the backward pass no longer reads them).
    pub instead_of: Vec<ValueId>,
    pub why: HoistWhy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoistWhy {
    /// `GELU′(h)` beside `GELU(h)`: the two share their tanh.
    SharesGeluTanh,
    /// No gradient in it, and only products read it: in the backward pass it would be
    /// a loop of its own over saved values.
    NoGradient,
}

/// The forward/backward split of a stage with a backward pass.
pub fn plan(stage: &Stage) -> Option<StagePlan> {
    let g = &stage.graph;
    let back = stage.backward.as_ref()?;
    let mut grad_roots: Vec<ValueId> = back.param_grads.iter().map(|x| returned(stage, x.1)).collect();
    grad_roots.extend(back.carry_grad);
    let all = g.ancestors(&grad_roots);
    let mut forward_set = g.ancestors(&[stage.output]);
    let hoisted = hoisted(g, &forward_set, &all);
    for id in hoisted.iter().flat_map(|h| &h.nodes) {
        forward_set[id.index()] = true;
    }
    let carry = stage.carry_in.as_ref().map(|c| c.1);
    let is_input = |id: ValueId| matches!(g.node(id).op, Op::Source(Source::Input { .. }));
    // The backward pass recomputes one-hots from their indices rather than saving a
    // `[N, V]` tensor of zeros and ones.
    let read_backward = |id: ValueId| {
        g.ids().any(|r| all[r.index()] && !forward_set[r.index()] && g.node(r).inputs.contains(&id))
    };
    let recompute: BTreeSet<ValueId> = g
        .ids()
        .filter(|id| all[id.index()] && forward_set[id.index()])
        .filter(|&id| matches!(g.node(id).op, Op::Index(IndexOp::OneHot { .. })) && read_backward(id))
        .collect();
    let backward_wanted: Vec<bool> =
        g.ids().map(|id| all[id.index()] && (!forward_set[id.index()] || recompute.contains(&id))).collect();
    let backward_leaf = |id: ValueId| (forward_set[id.index()] && !recompute.contains(&id)) || is_input(id);
    let backward = schedule::schedule(g, &backward_wanted, &backward_leaf, &grad_roots);
    // Forward values the backward pass reads (and only those) are saved; parameters and
    // data are re-read, not saved.
    let computed: Vec<bool> = g.ids().map(|id| backward_wanted[id.index()] && !backward_leaf(id)).collect();
    let read_back = backward.leaves_read(&computed);
    let saved: BTreeSet<ValueId> = read_back
        .iter()
        .copied()
        .filter(|&id| forward_set[id.index()] && (!is_input(id) || Some(id) == carry))
        .collect();
    let mut forward_roots = vec![stage.output];
    forward_roots.extend(saved.iter().copied());
    Some(StagePlan { forward_set, forward_roots, grad_roots, backward, read_back, saved, recompute, hoisted })
}

/// A parameter's gradient that is a `scatter_add` of rows by a data input (an
/// embedding's, through its gather): `(the rows, the index's place in the program's
/// inputs)`. The stage returns the rows, and `grads` adds them where the gradient lies
/// (`ops::scatter_store`, `ops::scatter_accumulate`) instead of building a `[rows, …]`
/// tensor of mostly zeros and adding all of it: for GPT-2's tied embedding that was
/// 38M elements zeroed, then read and added, every step.
pub fn scattered(stage: &Stage, grad: ValueId) -> Option<(ValueId, usize)> {
    let node = stage.graph.node(grad);
    let Op::Index(IndexOp::ScatterAdd { .. }) = node.op else { return None };
    let index = node.inputs[1];
    stage.inputs.iter().find(|x| x.1 == index).map(|&(i, _)| (node.inputs[0], i))
}

/// What a stage returns for a parameter's gradient: the gradient, or the rows it
/// scatters (`scattered`).
fn returned(stage: &Stage, grad: ValueId) -> ValueId {
    scattered(stage, grad).map_or(grad, |(rows, _)| rows)
}

/// Backward values computed in the forward pass instead, each saved in place of a
/// saved value of the same size that the backward pass then no longer reads:
///
/// - `GELU′(h)` where the forward pass computes `GELU(h)` and the backward pass reads
///   `h`, a computed value (parameters and data are re-read, not saved), only through
///   `GELU′`. In the forward loop the two share their tanh, the costly part of each
///   (`math::Arith`): the backward's GELU′ epilogue becomes an elementwise product of
///   two reads.
/// - A value with no gradient in it (`no_gradient`), read only by products: the
///   softmax cross-entropy's `onehot − softmax`. In the backward pass it was a loop of
///   its own, reading the saved softmax numerators and writing itself (a product takes
///   no prologue); in the forward pass it joins the loop that makes its inputs, which
///   then need not be written at all.
fn hoisted(g: &Graph, forward_set: &[bool], all: &[bool]) -> Vec<Hoist> {
    let backward = |id: ValueId| all[id.index()] && !forward_set[id.index()];
    let mut backward_readers: std::collections::BTreeMap<ValueId, Vec<ValueId>> = Default::default();
    for id in g.ids().filter(|&id| backward(id)) {
        for &x in &g.node(id).inputs {
            backward_readers.entry(x).or_default().push(id);
        }
    }
    let readers = |x: ValueId| backward_readers.get(&x).map_or(&[][..], Vec::as_slice);
    let gelu_of = |x: ValueId| {
        g.ids().any(|id| {
            forward_set[id.index()]
                && matches!(g.node(id).op, Op::Pointwise(Pointwise::Gelu))
                && g.node(id).inputs[..] == [x]
        })
    };
    // Values the backward pass would read from what the forward pass saved (one-hots
    // are recomputed from their indices, never saved: `plan`).
    let saved_computed = |x: ValueId| {
        forward_set[x.index()] && !matches!(g.node(x).op, Op::Source(_) | Op::Index(IndexOp::OneHot { .. }))
    };
    let mut out: Vec<Hoist> = g
        .ids()
        .filter(|&id| backward(id) && matches!(g.node(id).op, Op::Pointwise(Pointwise::GeluGrad)))
        .filter_map(|id| {
            let [h] = g.node(id).inputs[..] else { return None };
            (saved_computed(h) && readers(h).len() == 1 && gelu_of(h)).then(|| Hoist {
                value: id,
                nodes: vec![id],
                instead_of: vec![h],
                why: HoistWhy::SharesGeluTanh,
            })
        })
        .collect();
    let free = no_gradient(g, forward_set, &backward);
    let is_product_read = |r: ValueId| match &g.node(r).op {
        Op::Matmul => true,
        // A broadcast of a free value is free itself; other layouts are read through.
        Op::Layout(l) => !matches!(l, Layout::Broadcast { .. }),
        _ => false,
    };
    for value in g.ids().filter(|&id| free[id.index()]) {
        if readers(value).is_empty() || !readers(value).iter().all(|&r| is_product_read(r)) {
            continue;
        }
        // What it alone reads: free nodes under it none of whose readers lie outside.
        let under = g.ancestors(&[value]);
        let nodes: Vec<ValueId> = g.ids().filter(|&id| under[id.index()] && free[id.index()]).collect();
        let inside = |r: &ValueId| nodes.contains(r);
        if nodes.iter().any(|&n| n != value && !readers(n).iter().all(inside)) {
            continue;
        }
        let mut leaves: Vec<ValueId> = nodes
            .iter()
            .flat_map(|&n| g.node(n).inputs.iter().copied())
            .filter(|&x| saved_computed(x))
            .collect();
        leaves.sort();
        leaves.dedup();
        let instead_of: Vec<ValueId> =
            leaves.into_iter().filter(|&x| readers(x).iter().all(inside)).collect();
        if instead_of.iter().any(|&x| g.shape(x) == g.shape(value)) {
            out.push(Hoist { value, nodes, instead_of, why: HoistWhy::NoGradient });
        }
    }
    out
}

/// Backward values with no gradient in them: elementwise arithmetic, broadcasts and
/// constants over forward values, so the forward pass could compute them. (Products
/// and reductions are left where they are: moving them would move the backward pass.)
fn no_gradient(g: &Graph, forward_set: &[bool], backward: &impl Fn(ValueId) -> bool) -> Vec<bool> {
    let mut free = vec![false; forward_set.len()];
    // Node ids are in topological order: inputs come first.
    for id in g.ids().filter(|&id| backward(id)) {
        let movable = matches!(
            &g.node(id).op,
            Op::Pointwise(_) | Op::Layout(Layout::Broadcast { .. }) | Op::Source(Source::Fill { .. })
        );
        free[id.index()] = movable
            && g.node(id).inputs.iter().all(|&x| {
                debug_assert!(x.index() < id.index(), "inputs before their readers");
                forward_set[x.index()] || free[x.index()]
            });
    }
    free
}

/// The forward pass's schedule.
pub fn forward_schedule(stage: &Stage, wanted: &[bool], roots: &[ValueId]) -> Schedule {
    let g = &stage.graph;
    let is_input = |id: ValueId| matches!(g.node(id).op, Op::Source(Source::Input { .. }));
    schedule::schedule(g, wanted, &is_input, roots)
}

pub fn emit(p: &Program, stage: &Stage, n: &Names, cx: &Emit) -> TokenStream {
    let g = &stage.graph;
    let (Some(back), Some(plan)) = (&stage.backward, plan(stage)) else { return quote!() };
    let StagePlan {
        forward_set, forward_roots, grad_roots, backward: backward_plan, read_back, saved, ..
    } = plan;
    let seed = back.seed;
    let carry = stage.carry_in.as_ref().map(|c| c.1);

    // ---- forward ----
    let (fwd, is_ref) = forward_lines(p, stage, &forward_set, &forward_roots, cx);
    let out = local(g, stage.output);
    let out_expr = if is_ref.contains(&stage.output) {
        quote!(::core::clone::Clone::clone(#out))
    } else if saved.contains(&stage.output) {
        quote!(::core::clone::Clone::clone(&#out))
    } else {
        quote!(#out)
    };
    let saved_fields: Vec<Ident> = saved.iter().map(|&id| local(g, id)).collect();
    let saved_types: Vec<TokenStream> = saved.iter().map(|&id| elem_type(g, id)).collect();
    let saved_values: Vec<TokenStream> = saved
        .iter()
        .map(|&id| {
            let v = local(g, id);
            if is_ref.contains(&id) { quote!(::core::clone::Clone::clone(#v)) } else { quote!(#v) }
        })
        .collect();
    let out_ty = elem_type(g, stage.output);
    let recycle_fields: Vec<TokenStream> = saved
        .iter()
        .filter(|&&id| g.ty(id).dtype == DType::F32)
        .map(|&id| {
            let v = local(g, id);
            quote!(::adjoint::pool::recycle(self.#v);)
        })
        .collect();

    // ---- backward ----
    let mut bwd = Vec::new();
    let mut bref: BTreeSet<ValueId> = BTreeSet::new();
    for &id in &saved {
        let v = local(g, id);
        bwd.push(quote!(let #v = &__saved.#v;));
        bref.insert(id);
    }
    let unsaved = read_back.iter().copied().filter(|id| !saved.contains(id));
    bind_leaves(p, stage, unsaved, seed.map(|s| (s, quote!(__seed))), &mut bwd, &mut bref);
    let keep: BTreeSet<ValueId> = grad_roots.iter().copied().collect();
    bwd.extend(items(g, &backward_plan, &bref, &keep, cx));
    // A gradient is moved out once; borrowed or repeated ones are cloned.
    let mut outs: Vec<(Ident, ValueId)> =
        back.param_grads.iter().map(|&(i, id)| (grad_field(p, i), returned(stage, id))).collect();
    outs.extend(back.carry_grad.map(|c| (format_ident!("carry"), c)));
    let mut uses = std::collections::BTreeMap::new();
    for (_, id) in &outs {
        *uses.entry(*id).or_insert(0usize) += 1;
    }
    let (gfields, gvalues): (Vec<Ident>, Vec<TokenStream>) = outs
        .into_iter()
        .map(|(f, id)| {
            let v = local(g, id);
            let value = if bref.contains(&id) {
                quote!(::core::clone::Clone::clone(#v))
            } else if uses[&id] > 1 {
                quote!(::core::clone::Clone::clone(&#v))
            } else {
                quote!(#v)
            };
            (f, value)
        })
        .unzip();

    let Names { index, forward, backward, saved: saved_ty, grads, layer } = n;
    let layer_arg = layer.as_ref().map(|l| quote!(__l: &#l,));
    let carry_arg = carry.map(|_| quote!(__carry: &Real,));
    let seed_arg = seed.map(|_| quote!(__seed: &Real,));
    let fdoc = format!(" Stage {}'s forward pass: its output and the values its backward pass reads.", index);
    let bdoc = format!(" Stage {}'s backward pass: the gradients of its parameters and of its input.", index);
    quote! {
        struct #saved_ty { #(#saved_fields: #saved_types,)* }
        impl #saved_ty {
            /// Hands the saved tensors' buffers back to the pool once the backward pass
            /// has read them.
            fn recycle(self) { #(#recycle_fields)* }
        }
        struct #grads { #(#gfields: Real,)* }
        #[doc = #fdoc]
        fn #forward(__env: &::adjoint::dims::Env, __p: &Params, #layer_arg __data: &Data, #carry_arg)
            -> Result<(#out_ty, #saved_ty)> {
            #(#fwd)*
            Ok((#out_expr, #saved_ty { #(#saved_fields: #saved_values,)* }))
        }
        #[doc = #bdoc]
        fn #backward(__env: &::adjoint::dims::Env, __p: &Params, #layer_arg __data: &Data,
            __saved: &#saved_ty, #seed_arg) -> Result<#grads> {
            #(#bwd)*
            Ok(#grads { #(#gfields: #gvalues,)* })
        }
    }
}

/// The forward pass computing `roots` from the nodes in `wanted`; the set holds the
/// locals that are references (inputs) rather than owned values.
fn forward_lines(
    p: &Program,
    stage: &Stage,
    wanted: &[bool],
    roots: &[ValueId],
    cx: &Emit,
) -> (Vec<TokenStream>, BTreeSet<ValueId>) {
    let g = &stage.graph;
    let carry = stage.carry_in.as_ref().map(|c| c.1);
    let is_input = |id: ValueId| matches!(g.node(id).op, Op::Source(Source::Input { .. }));
    let plan = forward_schedule(stage, wanted, roots);
    let computed: Vec<bool> = g.ids().map(|id| wanted[id.index()] && !is_input(id)).collect();
    let mut lines = Vec::new();
    let mut is_ref = BTreeSet::new();
    let carried = carry.map(|c| (c, quote!(__carry)));
    bind_leaves(p, stage, plan.leaves_read(&computed), carried, &mut lines, &mut is_ref);
    let keep: BTreeSet<ValueId> = roots.iter().copied().collect();
    lines.extend(items(g, &plan, &is_ref, &keep, cx));
    (lines, is_ref)
}

/// `let` bindings (references) for the leaves a pass reads: parameters and data from
/// the caller's structs, and `special`, the pass's own argument (the carried input or
/// the gradient seed). Values that are none of these (saved ones) are left to the caller.
fn bind_leaves(
    p: &Program,
    stage: &Stage,
    ids: impl IntoIterator<Item = ValueId>,
    special: Option<(ValueId, TokenStream)>,
    lines: &mut Vec<TokenStream>,
    refs: &mut BTreeSet<ValueId>,
) {
    for id in ids {
        let v = local(&stage.graph, id);
        match &special {
            Some((s, arg)) if *s == id => lines.push(quote!(let #v = #arg;)),
            _ => match bind_input(p, stage, id) {
                Some(read) => lines.push(quote!(let #v = #read;)),
                None => continue,
            },
        }
        refs.insert(id);
    }
}

/// The schedule's items as statements: one `let` per kernel, one block per fused loop;
/// each temporary's buffer goes back to the pool right after its last reader (`keep`
/// are the values that outlive the function).
fn items(
    g: &Graph,
    plan: &Schedule,
    is_ref: &BTreeSet<ValueId>,
    keep: &BTreeSet<ValueId>,
    cx: &Emit,
) -> Vec<TokenStream> {
    let local_of = |id: ValueId| local(g, id);
    let ref_of = |id: ValueId| is_ref.contains(&id);
    let causal = Causal::of(g, keep);
    let names = loops::Names { local: &local_of, is_ref: &ref_of };
    // Products whose loop runs as their epilogue, emitted at the loop's place.
    let epilogues = fused_epilogues(g, plan, keep, &causal);
    let fused_product = |id: ValueId| epilogues.values().any(|&p| p == id);
    // Products written into their permute's layout, emitted at the product's place.
    let merged = merged_permutes(g, plan, keep, &epilogues);
    let permute_of: std::collections::BTreeMap<ValueId, ValueId> =
        merged.iter().map(|(&q, &p)| (p, q)).collect();
    let position = |gi: usize| plan.items.iter().position(|&it| it == Item::Group(gi));
    let mut last_read: std::collections::BTreeMap<ValueId, usize> = std::collections::BTreeMap::new();
    for (i, item) in plan.items.iter().enumerate() {
        // A fused product reads its operands where its loop runs.
        let at = match *item {
            Item::Kernel(id) if fused_product(id) => {
                epilogues.iter().find(|e| *e.1 == id).and_then(|(&gi, _)| position(gi)).unwrap_or(i)
            }
            _ => i,
        };
        for v in plan.reads_of(g, *item) {
            let e = last_read.entry(v).or_insert(at);
            *e = (*e).max(at);
        }
    }
    let mut lines = Vec::new();
    let mut consumed = BTreeSet::new();
    for (i, item) in plan.items.iter().enumerate() {
        lines.push(match *item {
            // Emitted with its loop.
            Item::Kernel(id) if fused_product(id) => quote!(),
            // Emitted with its product, which is never materialised.
            Item::Kernel(id) if merged.contains_key(&id) => quote!(),
            Item::Kernel(id) if permute_of.contains_key(&id) => {
                let permute = permute_of[&id];
                let Op::Layout(Layout::Permute(perm)) = &g.node(permute).op else {
                    unreachable!("a permute")
                };
                let perm = perm.iter().map(|&p| proc_macro2::Literal::usize_unsuffixed(p));
                let (v, args) = (local(g, permute), product_args(g, id, is_ref, &causal));
                quote!(let #v = ::adjoint::ops::matmul_perm_out(#args, &[#(#perm),*])?;)
            }
            Item::Kernel(id) => {
                // A reshape that is its operand's last reader takes the buffer over.
                let input = g.node(id).inputs.first().copied();
                match (&g.node(id).op, input) {
                    (Op::Layout(Layout::Reshape(shape)), Some(x))
                        if !is_ref.contains(&x) && !keep.contains(&x) && last_read.get(&x) == Some(&i) =>
                    {
                        consumed.insert(x);
                        let (v, xl, shape) = (local(g, id), local(g, x), cx.shape(&shape.0));
                        quote!(let #v = ::adjoint::ops::reshape_owned(#xl, #shape)?;)
                    }
                    _ => node(g, id, &local(g, id), is_ref, &causal, cx),
                }
            }
            Item::Group(gi) => {
                let epilogue = epilogues.get(&gi).map(|&p| {
                    let [(a, pa, _), (b, pb, _)] = product_operands(g, p, is_ref);
                    loops::Epilogue { product: p, call: quote!(#a, #pa, #b, #pb) }
                });
                loops::emit_group(g, plan, gi, &names, epilogue.as_ref(), causal.lower_loop(g, plan, gi), cx)
            }
        });
        for (&v, _) in last_read.iter().filter(|&(_, &at)| at == i) {
            let owned_real = !is_ref.contains(&v)
                && g.ty(v).dtype == DType::F32
                && plan.produced(v)
                && !fused_product(v)
                && !permute_of.contains_key(&v);
            if owned_real && !keep.contains(&v) && !consumed.contains(&v) {
                let l = local(g, v);
                lines.push(quote!(::adjoint::pool::recycle(#l);));
            }
        }
    }
    lines
}

/// The last stage's `output` values, computing only what they need:
/// `fn stage{k}_outputs(..) -> Result<Outputs>`.
pub fn emit_outputs(p: &Program, stage: &Stage, n: &Names, cx: &Emit) -> TokenStream {
    let g = &stage.graph;
    let ids: Vec<ValueId> = p.outputs.iter().map(|o| o.1).collect();
    let (lines, is_ref) = forward_lines(p, stage, &g.ancestors(&ids), &ids, cx);
    let fields: Vec<Ident> = p.outputs.iter().map(|o| field(&o.0)).collect();
    let mut moved = BTreeSet::new();
    let values: Vec<TokenStream> = ids
        .iter()
        .map(|&id| {
            let v = local(g, id);
            if is_ref.contains(&id) {
                quote!(::core::clone::Clone::clone(#v))
            } else if !moved.insert(id) {
                quote!(::core::clone::Clone::clone(&#v))
            } else {
                quote!(#v)
            }
        })
        .collect();
    let name = format_ident!("stage{}_outputs", n.index);
    let carry_arg = stage.carry_in.as_ref().map(|_| quote!(__carry: &Real,));
    let doc = format!(" Stage {}'s `output` values, computing only what they need.", n.index);
    // Clones come first so a value moved into one field can still be cloned for another.
    let order: Vec<usize> = (0..ids.len()).rev().collect();
    let (ofields, ovalues): (Vec<&Ident>, Vec<&TokenStream>) =
        order.iter().map(|&i| (&fields[i], &values[i])).unzip();
    quote! {
        #[doc = #doc]
        fn #name(__env: &::adjoint::dims::Env, __p: &Params, __data: &Data, #carry_arg) -> Result<Outputs> {
            #(#lines)*
            Ok(Outputs { #(#ofields: #ovalues,)* })
        }
    }
}

/// The products of a pass that run with a fused loop as their epilogue, by group
/// (`schedule::epilogues`), except causal ones, which skip work the epilogue's
/// row-by-row GEMM does not.
pub fn fused_epilogues(
    g: &Graph,
    plan: &Schedule,
    roots: &BTreeSet<ValueId>,
    causal: &Causal,
) -> std::collections::BTreeMap<usize, ValueId> {
    schedule::epilogues(g, plan, roots).into_iter().filter(|&(_, p)| causal.product(g, p).is_none()).collect()
}

/// Products written straight into the layout of the permute right after them
/// (`::adjoint::ops::matmul_perm_out`), keyed by that permute: the permute is the
/// product's only reader, keeps the last axis last, and the product is neither kept nor
/// fused with a loop. The heads' gradients `dV_h`, `dK_h`, `dQ_h` merge this way instead
/// of being copied into `[B, T, H, dk]` (1.4% of a tiny half-step, per-statement harness).
pub fn merged_permutes(
    g: &Graph,
    plan: &Schedule,
    keep: &BTreeSet<ValueId>,
    epilogues: &std::collections::BTreeMap<usize, ValueId>,
) -> std::collections::BTreeMap<ValueId, ValueId> {
    let mut readers: std::collections::BTreeMap<ValueId, usize> = std::collections::BTreeMap::new();
    for &item in &plan.items {
        for v in plan.reads_of(g, item) {
            *readers.entry(v).or_default() += 1;
        }
    }
    let mut merged = std::collections::BTreeMap::new();
    for pair in plan.items.windows(2) {
        let [Item::Kernel(product), Item::Kernel(permute)] = *pair else { continue };
        let Op::Layout(Layout::Permute(perm)) = &g.node(permute).op else { continue };
        let keeps_last = perm.len() >= 2 && perm[perm.len() - 1] == perm.len() - 1;
        if matches!(g.node(product).op, Op::Matmul)
            && g.node(permute).inputs[..] == [product]
            && keeps_last
            && readers.get(&product) == Some(&1)
            && !keep.contains(&product)
            && !epilogues.values().any(|&p| p == product)
        {
            merged.insert(permute, product);
        }
    }
    merged
}

/// A product's two operands as generated code reads them: the tensor (under any
/// permutes), the permutation to read it through (empty: as it is), and whether there is
/// one.
fn product_operands(
    g: &Graph,
    id: ValueId,
    is_ref: &BTreeSet<ValueId>,
) -> [(TokenStream, TokenStream, bool); 2] {
    let arg = |i: ValueId| {
        let l = local(g, i);
        if is_ref.contains(&i) { quote!(#l) } else { quote!(&#l) }
    };
    let inputs = &g.node(id).inputs;
    std::array::from_fn(|k| match schedule::permute_source(g, inputs[k]) {
        Some((src, perm)) => {
            let perm = perm.iter().map(|&p| proc_macro2::Literal::usize_unsuffixed(p));
            (arg(src), quote!(&[#(#perm),*]), true)
        }
        None => (arg(inputs[k]), quote!(&[]), false),
    })
}

/// `a, pa, b, pb, structure`: a product's arguments to `ops::matmul_perm` (and
/// `matmul_perm_out`).
fn product_args(g: &Graph, id: ValueId, is_ref: &BTreeSet<ValueId>, causal: &Causal) -> TokenStream {
    let [(a, pa, _), (b, pb, _)] = product_operands(g, id, is_ref);
    let skip = causal.product(g, id);
    let tri = |t: Tri| match t {
        Tri::Full => quote!(::adjoint::gemm::Tri::Full),
        Tri::ZeroAbove => quote!(::adjoint::gemm::Tri::ZeroAbove),
        Tri::ZeroBelow => quote!(::adjoint::gemm::Tri::ZeroBelow),
    };
    let structure = if skip.is_none() {
        quote!(::adjoint::gemm::Structure::default())
    } else {
        let (sa, sb, lower_only) = (tri(skip.a), tri(skip.b), skip.lower_only);
        quote!(::adjoint::gemm::Structure { a: #sa, b: #sb, lower_only: #lower_only })
    };
    quote!(#a, #pa, #b, #pb, #structure)
}

/// `let v = kernel(inputs);` for one node.
fn node(
    g: &Graph,
    id: ValueId,
    v: &Ident,
    is_ref: &BTreeSet<ValueId>,
    causal: &Causal,
    cx: &Emit,
) -> TokenStream {
    let arg = |i: ValueId| {
        let l = local(g, i);
        if is_ref.contains(&i) { quote!(#l) } else { quote!(&#l) }
    };
    if let Op::Matmul = g.node(id).op {
        // Permuted operands (transposes, attention heads) are read through strides
        // (`schedule::kernel_operands`); causal products skip the masked half
        // (`causal.rs`).
        let permuted = product_operands(g, id, is_ref).iter().any(|o| o.2);
        if !causal.product(g, id).is_none() || permuted {
            let args = product_args(g, id, is_ref, causal);
            return quote!(let #v = ::adjoint::ops::matmul_perm(#args)?;);
        }
    }
    let args: Vec<TokenStream> = g.node(id).inputs.iter().map(|&i| arg(i)).collect();
    let call = g.node(id).op.emit(&args, cx);
    quote!(let #v = #call;)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-stage model of `x`, `t` and `w` whose body is `body`.
    fn compiled(body: &str) -> crate::driver::Compiled {
        let text = format!(
            "model M {{\n dims N = 8, D = 4;\n input x: [N, D];\n input t: index[N];\n param w: [D, D];\n {body}\n}}"
        );
        crate::build::compile_text(&text, "m.adj").unwrap()
    }

    /// The values of kind `why` each stage's forward pass computes for its backward pass.
    fn hoisted_of(body: &str, why: HoistWhy) -> Vec<usize> {
        let compiled = compiled(body);
        let stages = compiled.program.stages.iter().filter_map(plan);
        stages.map(|p| p.hoisted.iter().filter(|h| h.why == why).count()).collect()
    }

    fn hoisted_in(body: &str) -> Vec<usize> {
        hoisted_of(body, HoistWhy::SharesGeluTanh)
    }

    #[test]
    fn gelu_grad_moves_to_the_forward_pass_only_where_it_replaces_its_input() {
        // `h` is read by the backward pass only through GELU′(h): computed forward.
        assert_eq!(hoisted_in("let h = x @ w;\n loss cross_entropy(gelu(h), t);"), [1]);
        // `h` is also read directly (the product rule of gelu(h) ⊙ h): saving GELU′(h)
        // would add to what is saved, so the backward pass computes it.
        assert_eq!(hoisted_in("let h = x @ w;\n loss cross_entropy(gelu(h) * h, t);"), [0]);
        // No GELU: nothing moves.
        assert_eq!(hoisted_in("let h = x @ w;\n loss cross_entropy(relu(h), t);"), [0]);
        // GELU of a parameter: the parameter is re-read, not saved, so nothing would
        // be saved in GELU′'s place.
        assert_eq!(hoisted_in("loss cross_entropy(x @ gelu(w), t);"), [0]);
    }

    #[test]
    fn the_loss_gradient_with_no_gradient_in_it_moves_to_the_forward_pass() {
        // cross_entropy's `onehot − softmax` is read by the products `dx = (…)·w` and
        // `dw = xᵀ·(…)` only, and replaces the saved softmax numerators: computed forward.
        let body = "loss cross_entropy(x @ w, t);";
        assert_eq!(hoisted_of(body, HoistWhy::NoGradient), [1]);
        let compiled = compiled(body);
        let p = compiled.program.stages.iter().find_map(plan).unwrap();
        let g = &compiled.program.stages.last().unwrap().graph;
        let [h] = &p.hoisted[..] else { panic!("one value moved: {:?}", p.hoisted) };
        assert!(p.saved.contains(&h.value) && h.instead_of.iter().all(|x| !p.saved.contains(x)));
        assert!(h.instead_of.iter().any(|&x| g.shape(x) == g.shape(h.value)), "no more bytes saved");
        // Read by a pointwise product with the upstream gradient (the softmax's own
        // backward inside a model): it would join that loop, so it stays.
        assert_eq!(hoisted_of("loss cross_entropy(softmax(x @ w) * 2.0, t);", HoistWhy::NoGradient), [0]);
    }
}
