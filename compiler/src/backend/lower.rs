//! Lowering before scheduling: a product over concatenated operands runs as one product
//! per part, so the concatenations are never built.
//!
//! The simplifier writes Q/K/V as one product (`x·[W_q | W_k | W_v]`, `[dv | dk | dq]·
//! [W_v | W_k | W_q]ᵀ`, `xᵀ·[dq | dk | dv]`), and that is what the formulas show. The
//! cost model counts a concatenation as free, but built it is a copy of every part (of
//! the weights twice a layer and step, of `[dv | dk | dq]` once), and each slice of the
//! fused product's result another copy. Per part the products are as fast (one
//! `512×256×768` product runs at the rate of three `512×256×256` ones, `gemm_bench`),
//! so the backend runs them apart:
//! - `x · concat₁(w₁, …)` is `concat₁(x·w₁, …)` (column blocks);
//! - `concat₁(a₁, …) · concat₀(b₁, …)` with parts of matching widths is `Σ aᵢ·bᵢ`;
//! - a transposed concatenation is the concatenation of the transposed parts, along the
//!   other axis (`[W_v | W_k | W_q]ᵀ` is `[W_vᵀ; W_kᵀ; W_qᵀ]`), read through strides;
//! - a slice that is exactly one part of a concatenation is that part (the weight
//!   gradients `dW_q`, the blocks `q`, `k`, `v` of the fused product).
//!
//! The concatenations are left with no readers, so nothing computes them.
//!
//! *Invariant:* every rewrite is an identity, applied to 2-D values only; the lowered
//! stage has the interface of the stage it came from (the same inputs, output and
//! gradients, remapped). If anything fails to build, the stage is used as it was.

use crate::dim::Dim;
use crate::ir::{Graph, ValueId};
use crate::ops::{Layout, Op, Pointwise};
use crate::program::{Backward, Program, Stage};

/// `p` with every stage lowered (the last stage's `output` values remapped too).
pub fn lower(p: &Program) -> Program {
    let mut out = p.clone();
    let last = out.stages.len().saturating_sub(1);
    for (k, stage) in out.stages.iter_mut().enumerate() {
        let Some((lowered, map)) = lower_stage(stage) else { continue };
        if k == last {
            for o in &mut out.outputs {
                o.1 = map[o.1.index()];
            }
        }
        *stage = lowered;
    }
    out
}

/// The stage rebuilt node by node with the rewrites above, and where each old value went.
fn lower_stage(stage: &Stage) -> Option<(Stage, Vec<ValueId>)> {
    let g = &stage.graph;
    let mut h = Graph::new();
    for (dim, alias) in g.dim_aliases() {
        h.alias_dim(dim.clone(), alias);
    }
    let mut map = Vec::with_capacity(g.len());
    for id in g.ids() {
        let node = g.node(id);
        let ins: Vec<ValueId> = node.inputs.iter().map(|i| map[i.index()]).collect();
        let rewritten = match &node.op {
            Op::Matmul if node.ty.shape.rank() == 2 => product(&mut h, ins[0], ins[1]),
            Op::Layout(Layout::Slice { axis, start, len }) => part_of(&h, ins[0], *axis, start, len),
            _ => None,
        };
        let new = match rewritten {
            Some(v) => v,
            None => h.apply(node.op.clone(), &ins).ok()?,
        };
        if let Some(name) = &node.name {
            h.name(new, name);
        }
        map.push(new);
    }
    let at = |id: ValueId| map[id.index()];
    let lowered = Stage {
        graph: h,
        repeat: stage.repeat,
        carry_in: stage.carry_in.as_ref().map(|(n, id)| (n.clone(), at(*id))),
        output: at(stage.output),
        params: stage.params.iter().map(|&(i, id)| (i, at(id))).collect(),
        inputs: stage.inputs.iter().map(|&(i, id)| (i, at(id))).collect(),
        backward: stage.backward.as_ref().map(|b| Backward {
            seed: b.seed.map(at),
            carry_grad: b.carry_grad.map(at),
            param_grads: b.param_grads.iter().map(|&(i, id)| (i, at(id))).collect(),
        }),
    };
    Some((lowered, map))
}

/// `a · b` over concatenated operands as products of the parts, if either rewrite
/// applies.
fn product(h: &mut Graph, a: ValueId, b: ValueId) -> Option<ValueId> {
    // Column blocks: `a · [b₁ | b₂ | …] = [a·b₁ | a·b₂ | …]`.
    if let Some(parts) = parts(h, b, 1) {
        let products: Option<Vec<ValueId>> =
            parts.iter().map(|&bi| h.apply(Op::Matmul, &[a, bi]).ok()).collect();
        return h.apply(Op::Layout(Layout::Concat { axis: 1 }), &products?).ok();
    }
    // Blocks of `k`: `[a₁ | a₂ | …] · [b₁; b₂; …] = Σ aᵢ·bᵢ`, parts of matching widths.
    let (left, right) = (parts(h, a, 1)?, parts(h, b, 0)?);
    let matching = left.len() == right.len()
        && left.iter().zip(&right).all(|(&ai, &bi)| h.shape(ai).0[1] == h.shape(bi).0[0]);
    if !matching {
        return None;
    }
    let mut sum = h.apply(Op::Matmul, &[left[0], right[0]]).ok()?;
    for (&ai, &bi) in left.iter().zip(&right).skip(1) {
        let term = h.apply(Op::Matmul, &[ai, bi]).ok()?;
        sum = h.apply(Op::Pointwise(Pointwise::Add), &[sum, term]).ok()?;
    }
    Some(sum)
}

/// The parts of a 2-D value that is a concatenation along `axis`: a concatenation, or
/// the transpose of one along the other axis (whose parts are then read transposed).
fn parts(h: &mut Graph, id: ValueId, axis: usize) -> Option<Vec<ValueId>> {
    if h.shape(id).rank() != 2 {
        return None;
    }
    match &h.node(id).op {
        Op::Layout(Layout::Concat { axis: a }) if *a == axis => Some(h.node(id).inputs.clone()),
        Op::Layout(Layout::Permute(p)) if p[..] == [1, 0] => {
            let inner = h.node(id).inputs[0];
            match &h.node(inner).op {
                Op::Layout(Layout::Concat { axis: a }) if *a == 1 - axis => {
                    let inner_parts = h.node(inner).inputs.clone();
                    inner_parts
                        .iter()
                        .map(|&x| h.apply(Op::Layout(Layout::Permute(vec![1, 0])), &[x]).ok())
                        .collect()
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The part of the concatenation `x` that the slice `axis: start + len` is exactly.
fn part_of(h: &Graph, x: ValueId, axis: usize, start: &Dim, len: &Dim) -> Option<ValueId> {
    let Op::Layout(Layout::Concat { axis: a }) = &h.node(x).op else { return None };
    if *a != axis {
        return None;
    }
    let mut at = Dim::lit(0);
    for &part in &h.node(x).inputs {
        let width = h.shape(part).0[axis].clone();
        if &at == start && &width == len {
            return Some(part);
        }
        at = at.add(&width);
    }
    None
}
