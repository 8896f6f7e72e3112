//! Causal structure: which values are zero on one side of the diagonal of their last
//! two axes, and which are read only on or below it, so that the products of causal
//! attention skip the masked half in both passes (`::adjoint::gemm::Structure`).
//!
//! Facts, proved per node in id order from the ops alone:
//! - `mask₀(x)` is zero above the diagonal, `mask₋∞(x)` is −∞ there;
//! - −∞ above stays −∞ through `x − r` and `x + r` with `r` a row value broadcast along
//!   the row (finite: a softmax's row maximum), through scaling by a positive constant
//!   and stop-gradient; `exp` turns it into zero (the probabilities of masked scores);
//! - zero above stays zero through `x ⊙ y` (either factor), `x ⊘ y`, `−x`, `c·x`;
//! - swapping the last two axes swaps above and below.
//!
//! Demand, per node in reverse id order: a value is *read only on or below the
//! diagonal* when it is not a root and each of its readers is a causal mask, or
//! `x ⊙ y` with the other factor zero above, or an elementwise op that keeps finite
//! values finite (`+ − ⊙ −x c·x x+c`) and is itself read only on or below. A product
//! whose result is read so computes only the tiles that touch the lower triangle and
//! leaves the rest zero; the garbage above the diagonal then stays finite on its way to
//! a mask (which replaces it) or a zero factor (which cancels it), so what is read is
//! exactly the full computation's.
//!
//! The same facts let a fused loop over a square space (softmax of masked scores, the
//! masked gradient) compute only each row's columns on or below the diagonal
//! (`lower_loop`).
//!
//! The interpreter knows nothing of this: the generated code is tested against it.

use std::collections::BTreeSet;

use super::schedule::{Level, Schedule};
use crate::ir::{Graph, ValueId};
use crate::ops::{Layout, Op, Pointwise, Reduce, SelectOp, swaps_last_two};

/// Where a value is known to be zero (or −∞) relative to the diagonal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Facts {
    zero_above: bool,
    zero_below: bool,
    neg_inf_above: bool,
}

/// The causal structure of one function's graph.
pub struct Causal {
    facts: Vec<Facts>,
    lower_only: Vec<bool>,
}

/// The runtime's names for a square operand's zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tri {
    Full,
    ZeroAbove,
    ZeroBelow,
}

/// What a product may skip: the zeros of each operand, and whether only the lower
/// triangle of its result is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProductSkip {
    pub a: Tri,
    pub b: Tri,
    pub lower_only: bool,
}

impl ProductSkip {
    pub fn is_none(&self) -> bool {
        self.a == Tri::Full && self.b == Tri::Full && !self.lower_only
    }

    /// What is skipped, for the plan (`None` when nothing is).
    pub fn describe(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.lower_only {
            parts.push("only the lower triangle is read: tiles above the diagonal skipped");
        }
        match self.a {
            Tri::ZeroAbove => parts.push("left operand zero above the diagonal: row i sums k ≤ i"),
            Tri::ZeroBelow => parts.push("left operand zero below the diagonal: row i sums k ≥ i"),
            Tri::Full => {}
        }
        match self.b {
            Tri::ZeroAbove => parts.push("right operand zero above the diagonal: column j sums k ≥ j"),
            Tri::ZeroBelow => parts.push("right operand zero below the diagonal: column j sums k ≤ j"),
            Tri::Full => {}
        }
        (!parts.is_empty()).then(|| format!("causal: {}", parts.join("; ")))
    }
}

impl Causal {
    /// The structure of `g`, where `roots` are read by the caller (so are read whole).
    pub fn of(g: &Graph, roots: &BTreeSet<ValueId>) -> Causal {
        let mut facts = vec![Facts::default(); g.len()];
        for id in g.ids() {
            facts[id.index()] = forward_facts(g, id, &facts);
        }
        let users = g.users();
        let mut lower_only = vec![false; g.len()];
        for id in g.ids().rev() {
            let readers = &users[id.index()];
            lower_only[id.index()] = !roots.contains(&id)
                && !readers.is_empty()
                && readers.iter().all(|&r| reads_only_lower(g, id, r, &facts, &lower_only));
        }
        Causal { facts, lower_only }
    }

    /// What the product `id` may skip.
    pub fn product(&self, g: &Graph, id: ValueId) -> ProductSkip {
        let tri = |x: ValueId| {
            let f = self.facts[x.index()];
            if f.zero_above {
                Tri::ZeroAbove
            } else if f.zero_below {
                Tri::ZeroBelow
            } else {
                Tri::Full
            }
        };
        let inputs = &g.node(id).inputs;
        ProductSkip { a: tri(inputs[0]), b: tri(inputs[1]), lower_only: self.lower_only[id.index()] }
    }
}

impl Causal {
    /// Whether fused loop `gi` may compute only the columns on or below the diagonal of
    /// its square space, writing zeros above: every element value it hands out is zero
    /// above the diagonal or read only on or below it, and above the diagonal every row
    /// reduction's operand holds the reduction's identity (0 for a sum, −∞ for a max),
    /// so the row values come out the same. Softmax over masked scores and the masked
    /// gradient of attention qualify: half the row, half the work.
    pub fn lower_loop(&self, g: &Graph, s: &Schedule, gi: usize) -> bool {
        let group = &s.groups[gi];
        let dims = &g.shape(group.space).0;
        let r = dims.len();
        if r < 2 || dims[r - 1] != dims[r - 2] {
            return false;
        }
        group.members.iter().all(|&m| {
            let out_ok = !s.is_needed(m)
                || matches!(s.member(m).map(|x| x.1), Some(Level::Row | Level::Col))
                || self.facts[m.index()].zero_above
                || self.lower_only[m.index()];
            let operand = || self.facts[g.node(m).inputs[0].index()];
            let reduce_ok = match &g.node(m).op {
                Op::Reduce(Reduce::Sum { .. }) => operand().zero_above,
                Op::Reduce(Reduce::Max { .. }) => operand().neg_inf_above,
                _ => true,
            };
            out_ok && reduce_ok
        })
    }
}

fn forward_facts(g: &Graph, id: ValueId, facts: &[Facts]) -> Facts {
    let node = g.node(id);
    let of = |i: usize| facts[node.inputs[i].index()];
    let none = Facts::default();
    match &node.op {
        Op::Select(SelectOp::Causal { fill }) => Facts {
            zero_above: fill.is_zero(),
            zero_below: false,
            neg_inf_above: fill.factors.is_empty() && fill.coef == f64::NEG_INFINITY,
        },
        Op::Layout(Layout::Permute(p)) if swaps_last_two(p) => {
            let x = of(0);
            Facts { zero_above: x.zero_below, zero_below: x.zero_above, neg_inf_above: false }
        }
        Op::Pointwise(pw) => match pw {
            Pointwise::Exp => Facts { zero_above: of(0).neg_inf_above, ..none },
            Pointwise::Mul => {
                let (x, y) = (of(0), of(1));
                Facts {
                    zero_above: x.zero_above || y.zero_above,
                    zero_below: x.zero_below || y.zero_below,
                    neg_inf_above: false,
                }
            }
            Pointwise::Div => Facts { neg_inf_above: false, ..of(0) },
            Pointwise::Neg => Facts { neg_inf_above: false, ..of(0) },
            Pointwise::Scale(c) => {
                let positive = c.coef > 0.0 && c.coef.is_finite();
                Facts { neg_inf_above: of(0).neg_inf_above && positive, ..of(0) }
            }
            Pointwise::StopGrad => of(0),
            Pointwise::Sub | Pointwise::Add => {
                // −∞ minus (or plus) a finite row value is −∞.
                let row_value = |i: usize| is_row_broadcast(g, node.inputs[i]);
                let first = of(0).neg_inf_above && row_value(1);
                let second = matches!(pw, Pointwise::Add) && of(1).neg_inf_above && row_value(0);
                Facts { neg_inf_above: first || second, ..none }
            }
            _ => none,
        },
        _ => none,
    }
}

/// Whether `id` is a value broadcast along the last axis (one value per row).
fn is_row_broadcast(g: &Graph, id: ValueId) -> bool {
    match &g.node(id).op {
        Op::Layout(Layout::Broadcast { axis, .. }) => *axis + 1 == g.shape(id).rank(),
        _ => false,
    }
}

/// Whether reader `r` of `v` reads `v` only on or below the diagonal.
fn reads_only_lower(g: &Graph, v: ValueId, r: ValueId, facts: &[Facts], lower_only: &[bool]) -> bool {
    let node = g.node(r);
    match &node.op {
        Op::Select(SelectOp::Causal { .. }) => true,
        Op::Pointwise(pw) if g.shape(r) == g.shape(v) => {
            let other_zero_above = node.inputs.iter().any(|&i| i != v && facts[i.index()].zero_above);
            let keeps_finite = matches!(
                pw,
                Pointwise::Add
                    | Pointwise::Sub
                    | Pointwise::Mul
                    | Pointwise::Neg
                    | Pointwise::Scale(_)
                    | Pointwise::Shift(_)
                    | Pointwise::StopGrad
            );
            (matches!(pw, Pointwise::Mul) && other_zero_above) || (keeps_finite && lower_only[r.index()])
        }
        _ => false,
    }
}
