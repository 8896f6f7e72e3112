//! Products that share an operand become one product over concatenated operands
//! (Q/K/V): `dQ·W_qᵀ + dK·W_kᵀ + dV·W_vᵀ = [dQ dK dV]·[W_q W_k W_v]ᵀ`, and
//! `Xᵀ·dQ, Xᵀ·dK, Xᵀ·dV` = the column blocks of `Xᵀ·[dQ dK dV]`.
//!
//! A concatenation of like permutes is the permute of a concatenation, which a product
//! then reads through strides.
//!
//! These rules can grow an e-graph without end (a concatenation is itself an operand
//! that shares with others), so they run in a phase of their own for a single
//! iteration, never take a concatenation as an operand, and require distinct operands.
//! Concatenation and slicing cost nothing in the cost model: producers write into, and
//! consumers read from, blocks of one buffer.

use egg::{Applier, Id, PatternAst, Subst, Symbol, multi_rewrite, rewrite};

use super::super::analysis::{Graph, Typing};
use super::super::lang::{Kind, Leaf, Tensor};
use super::{Rule, var};
use crate::dim::Dim;

pub fn rules() -> Vec<Rule> {
    vec![
        // A·X + B·Y = [A B]·[X; Y]
        rewrite!("sum-of-products"; "(add (matmul ?a ?x) (matmul ?b ?y))" => { SumOfProducts(&[("?a", "?x"), ("?b", "?y")]) }),
        // A·X + B·Y + C·Z = [A B C]·[X; Y; Z]
        rewrite!("sum-of-products-3"; "(add (add (matmul ?a ?x) (matmul ?b ?y)) (matmul ?c ?z))" => { SumOfProducts(&[("?a", "?x"), ("?b", "?y"), ("?c", "?z")]) }),
        // concat(concat(a, b), c) = concat(a, b, c)
        rewrite!("concat-flatten"; "(concat ?k (concat ?k ?a ?b) ?c)" => "(concat ?k ?a ?b ?c)"),
        // concatₖ(permute(p, x), permute(p, y)) = permute(p, concat_{p[k]}(x, y))
        rewrite!("concat-permute-2"; "(concat ?k (permute ?p ?x) (permute ?p ?y))" => { ConcatPermute(&["?x", "?y"]) }),
        // concatₖ(permute(p, x), permute(p, y), permute(p, z)) = permute(p, concat_{p[k]}(x, y, z))
        rewrite!("concat-permute-3"; "(concat ?k (permute ?p ?x) (permute ?p ?y) (permute ?p ?z))" => { ConcatPermute(&["?x", "?y", "?z"]) }),
        // U·A, U·B, U·C = the column blocks of U·[A B C]
        multi_rewrite!("shared-left-3"; { multipattern(MULTI[0].1) } => { SharedLeft(&["?x", "?y", "?z"], &["?a", "?b", "?c"]) }),
        // U·A, U·B = the column blocks of U·[A B]
        multi_rewrite!("shared-left-2"; { multipattern(MULTI[1].1) } => { SharedLeft(&["?x", "?y"], &["?a", "?b"]) }),
    ]
}

/// The multi-pattern rules' patterns, bound to `?x`, `?y`, `?z` in order (the tests
/// build their left sides from these).
pub const MULTI: &[(&str, &[&str])] = &[
    ("shared-left-3", &["(matmul ?u ?a)", "(matmul ?u ?b)", "(matmul ?u ?c)"]),
    ("shared-left-2", &["(matmul ?u ?a)", "(matmul ?u ?b)"]),
];

fn multipattern(patterns: &[&str]) -> egg::MultiPattern<Tensor> {
    let text: Vec<String> =
        patterns.iter().zip(["?x", "?y", "?z"]).map(|(p, v)| format!("{v} = {p}")).collect();
    text.join(", ").parse().expect("the multi-patterns above parse")
}

pub const EXAMPLES: &[(&str, &[(&str, &str)])] = &[
    ("sum-of-products", &[("?a", "N,K"), ("?x", "K,M"), ("?b", "N,J"), ("?y", "J,M")]),
    (
        "sum-of-products-3",
        &[("?a", "N,K"), ("?x", "K,M"), ("?b", "N,J"), ("?y", "J,M"), ("?c", "N,K"), ("?z", "K,M")],
    ),
    ("concat-flatten", &[("?k", "1"), ("?a", "N,K"), ("?b", "N,J"), ("?c", "N,M")]),
    ("concat-permute-2", &[("?k", "0"), ("?p", "p:1,0"), ("?x", "M,K"), ("?y", "M,J")]),
    (
        "concat-permute-3",
        &[("?k", "2"), ("?p", "p:0,2,1"), ("?x", "B,K,M"), ("?y", "B,J,M"), ("?z", "B,N,M")],
    ),
    ("shared-left-3", &[("?u", "K,N"), ("?a", "N,A"), ("?b", "N,B"), ("?c", "N,C")]),
    ("shared-left-2", &[("?u", "B,K,N"), ("?a", "B,N,A"), ("?b", "B,N,C")]),
];

fn ty(g: &Graph, id: Id) -> Option<crate::ir::ValueType> {
    g[id].data.ty.clone()
}

fn is_concat(g: &Graph, id: Id) -> bool {
    g[id].nodes.iter().any(|n| matches!(n, Tensor::Op(Kind::Concat, _)))
}

fn axis(g: &mut Graph, a: usize) -> Id {
    g.add(Tensor::Leaf(Leaf::Axis(a)))
}

/// `A·X + B·Y (+ C·Z) → [A B C]·[X; Y; Z]`, when the left factors have the same rows
/// and the right ones the same columns, and no operand is a concatenation already.
struct SumOfProducts(&'static [(&'static str, &'static str)]);

impl Applier<Tensor, Typing> for SumOfProducts {
    fn apply_one(
        &self,
        g: &mut Graph,
        eclass: Id,
        s: &Subst,
        _: Option<&PatternAst<Tensor>>,
        rule: Symbol,
    ) -> Vec<Id> {
        let lefts: Vec<Id> = self.0.iter().map(|p| s[var(p.0)]).collect();
        let rights: Vec<Id> = self.0.iter().map(|p| s[var(p.1)]).collect();
        let distinct = (0..lefts.len())
            .all(|i| (i + 1..lefts.len()).all(|j| (lefts[i], rights[i]) != (lefts[j], rights[j])));
        if !distinct || lefts.iter().chain(&rights).any(|&i| is_concat(g, i)) {
            return vec![];
        }
        let lt: Option<Vec<_>> = lefts.iter().map(|&i| ty(g, i)).collect();
        let rt: Option<Vec<_>> = rights.iter().map(|&i| ty(g, i)).collect();
        let (Some(lt), Some(rt)) = (lt, rt) else { return vec![] };
        let r = lt[0].shape.rank();
        let same_rows =
            lt.iter().all(|t| t.shape.rank() == r && t.shape.0[..r - 1] == lt[0].shape.0[..r - 1]);
        let same_cols = rt.iter().all(|t| t.shape.rank() == r && t.shape.0[r - 1] == rt[0].shape.0[r - 1]);
        if r < 2 || !same_rows || !same_cols {
            return vec![];
        }
        let (k_axis, r_axis) = (axis(g, r - 1), axis(g, r - 2));
        let left = g.add(Tensor::Op(Kind::Concat, [vec![k_axis], lefts].concat()));
        let right = g.add(Tensor::Op(Kind::Concat, [vec![r_axis], rights].concat()));
        let product = g.add(Tensor::Op(Kind::Matmul, vec![left, right]));
        if g[product].data.ty.is_none() {
            return vec![];
        }
        if g.union_trusted(eclass, product, rule) { vec![eclass] } else { vec![] }
    }
}

/// `U·A₁, …, U·Aₙ → blocks of U·[A₁ … Aₙ]`, for distinct operands that are not
/// concatenations, with equal leading shapes.
struct SharedLeft(&'static [&'static str], &'static [&'static str]);

impl Applier<Tensor, Typing> for SharedLeft {
    fn apply_one(
        &self,
        g: &mut Graph,
        _eclass: Id,
        s: &Subst,
        _: Option<&PatternAst<Tensor>>,
        rule: Symbol,
    ) -> Vec<Id> {
        let outs: Vec<Id> = self.0.iter().map(|v| s[var(v)]).collect();
        let ops: Vec<Id> = self.1.iter().map(|v| s[var(v)]).collect();
        let u = s[var("?u")];
        let distinct = |ids: &[Id]| (0..ids.len()).all(|i| (i + 1..ids.len()).all(|j| ids[i] != ids[j]));
        if !distinct(&ops) || !distinct(&outs) || is_concat(g, u) || ops.iter().any(|&o| is_concat(g, o)) {
            return vec![];
        }
        // Deterministic order, one application per set: operands in id order only.
        if ops.windows(2).any(|w| w[0] > w[1]) {
            return vec![];
        }
        let types: Option<Vec<_>> = ops.iter().map(|&o| ty(g, o)).collect();
        let Some(types) = types else { return vec![] };
        let r = types[0].shape.rank();
        if r < 2
            || types.iter().any(|t| t.shape.rank() != r || t.shape.0[..r - 1] != types[0].shape.0[..r - 1])
        {
            return vec![];
        }
        let last = axis(g, r - 1);
        let mut children = vec![last];
        children.extend(&ops);
        let cat = g.add(Tensor::Op(Kind::Concat, children));
        let product = g.add(Tensor::Op(Kind::Matmul, vec![u, cat]));
        if g[product].data.ty.is_none() {
            return vec![];
        }
        let mut start = Dim::lit(0);
        let mut changed = vec![];
        for (&out, t) in outs.iter().zip(&types) {
            let len = t.shape.0[r - 1].clone();
            let start_id = g.add(Tensor::Leaf(Leaf::Dim(start.clone())));
            let len_id = g.add(Tensor::Leaf(Leaf::Dim(len.clone())));
            let block = g.add(Tensor::Op(Kind::Slice, vec![last, start_id, len_id, product]));
            if g.union_trusted(out, block, rule) {
                changed.push(out);
            }
            start = start.add(&len);
        }
        changed
    }
}

/// `concatₖ(permute(p, x), …) → permute(p, concat_{p[k]}(x, …))`: one permute of a
/// concatenation instead of a concatenation of permutes. A product reads the permute
/// through strides, where the concatenation of transposes was a strided copy of each
/// (the backward pass's `[W_vᵀ; W_kᵀ; W_qᵀ]`).
struct ConcatPermute(&'static [&'static str]);

impl Applier<Tensor, Typing> for ConcatPermute {
    fn apply_one(
        &self,
        g: &mut Graph,
        eclass: Id,
        s: &Subst,
        _: Option<&PatternAst<Tensor>>,
        rule: Symbol,
    ) -> Vec<Id> {
        let (p, k) = (s[var("?p")], s[var("?k")]);
        let (Some(Leaf::Perm(perm)), Some(Leaf::Axis(k))) = (g[p].data.leaf.clone(), g[k].data.leaf.clone())
        else {
            return vec![];
        };
        let Some(&inner) = perm.get(k) else { return vec![] };
        let inner_axis = axis(g, inner);
        let mut children = vec![inner_axis];
        children.extend(self.0.iter().map(|v| s[var(v)]));
        let cat = g.add(Tensor::Op(Kind::Concat, children));
        let permuted = g.add(Tensor::Op(Kind::Permute, vec![p, cat]));
        if g[permuted].data.ty.is_none() {
            return vec![];
        }
        if g.union_trusted(eclass, permuted, rule) { vec![eclass] } else { vec![] }
    }
}
