//! The rewrite rules, one file per op family (transpose, scalar, masks, elementwise,
//! reduce and broadcast, matmul, concat), each rule under a one-line comment
//! stating its identity. Rules are directional; where both directions of an identity
//! are present, the comment says why. Conditions read the analysis (types, attribute
//! values, constants) through the helpers below; `Fill` builds a constant shaped
//! like a matched value.
//!
//! Every rule has an example binding in its family's `EXAMPLES` table, from which the
//! tests build both sides on random sizes and check them equal with the interpreter.

pub mod concat;
pub mod elementwise;
pub mod masks;
pub mod matmul;
pub mod reduce;
pub mod scalar;
pub mod transpose;

use egg::{Applier, Id, PatternAst, Rewrite, Subst, Symbol, Var};

use super::analysis::{Graph, Typing};
use super::lang::{Kind, Leaf, Tensor};
use crate::ops::swaps_last_two;
use crate::scalar::Scalar;

pub type Rule = Rewrite<Tensor, Typing>;

/// A saturation phase: its rules and its own iteration cap.
pub struct Phase {
    pub name: &'static str,
    pub rules: Vec<Rule>,
    pub iterations: usize,
}

/// Rules that only remove work (a class gains a cheaper or equal member built from
/// what is already there): run to saturation before and after the algebra, so what
/// the capped algebra phase leaves behind (`1·x`, `x − x`) is always cleaned up.
const CLEANUP: &[&str] = &[
    "permute-permute",
    "permute-identity",
    "scale-scale",
    "scale-one",
    "scale-fill",
    "neg-fill",
    "bcast-fill",
    "add-zero",
    "zero-add",
    "sub-zero",
    "zero-sub",
    "mul-zero",
    "zero-mul",
    "mul-one",
    "one-mul",
    "div-one",
    "neg-zero",
    "neg-neg",
    "sub-self",
    "zero-div",
    "sum-bcast",
    "sum-onehot",
    "concat-permute-2",
    "concat-permute-3",
];

/// The phases, in order: cleanup, algebra (capped: its rules can grow the e-graph
/// without end, and 12 iterations reach every identity the tests ask for), cleanup.
pub fn phases() -> Vec<Phase> {
    let cleanup = || Phase {
        name: "cleanup",
        rules: all().into_iter().filter(|r| CLEANUP.contains(&r.name.as_str())).collect(),
        iterations: usize::MAX,
    };
    vec![
        cleanup(),
        Phase { name: "algebra", rules: algebra(), iterations: 12 },
        Phase { name: "concat", rules: concat::rules(), iterations: 1 },
        cleanup(),
    ]
}

/// Every rule.
pub fn all() -> Vec<Rule> {
    let mut r = algebra();
    r.extend(concat::rules());
    r
}

/// Every rule but the concatenation family.
fn algebra() -> Vec<Rule> {
    let mut r = Vec::new();
    r.extend(transpose::rules());
    r.extend(scalar::rules());
    r.extend(masks::rules());
    r.extend(elementwise::rules());
    r.extend(reduce::rules());
    r.extend(matmul::rules());
    r
}

/// Every family's examples: `(rule, [(variable, binding)])`; see `tests/rules.rs`.
pub fn examples() -> Vec<(&'static str, &'static [(&'static str, &'static str)])> {
    let mut e = Vec::new();
    e.extend_from_slice(transpose::EXAMPLES);
    e.extend_from_slice(scalar::EXAMPLES);
    e.extend_from_slice(masks::EXAMPLES);
    e.extend_from_slice(elementwise::EXAMPLES);
    e.extend_from_slice(reduce::EXAMPLES);
    e.extend_from_slice(matmul::EXAMPLES);
    e.extend_from_slice(concat::EXAMPLES);
    e
}

pub(crate) fn var(name: &str) -> Var {
    name.parse().expect("a rule's variable is `?name`")
}

fn leaf(egraph: &Graph, subst: &Subst, v: &str) -> Option<Leaf> {
    egraph[subst[var(v)]].data.leaf.clone()
}

/// `?p` is a permutation satisfying `pred`.
pub fn perm(v: &'static str, pred: fn(&[usize]) -> bool) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    move |g, _, s| matches!(leaf(g, s, v), Some(Leaf::Perm(p)) if pred(&p))
}

pub fn is_transpose(p: &[usize]) -> bool {
    swaps_last_two(p)
}

pub fn is_identity(p: &[usize]) -> bool {
    p.iter().enumerate().all(|(i, &x)| i == x)
}

/// `?c` is the plain number `value`.
pub fn scalar_is(v: &'static str, value: f64) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    move |g, _, s| matches!(leaf(g, s, v), Some(Leaf::Scalar(c)) if c.factors.is_empty() && c.coef == value)
}

/// Every element of `?x` is `value`.
pub fn constant_is(v: &'static str, value: f64) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    move |g, _, s| matches!(&g[s[var(v)]].data.constant, Some(c) if c.factors.is_empty() && c.coef == value)
}

/// `?x` is not a known constant (rules that would spin on `0 = c·0` skip it).
pub fn not_constant(v: &'static str) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    move |g, _, s| g[s[var(v)]].data.constant.is_none()
}

/// `?a` is the last axis of `?x`.
pub fn last_axis(a: &'static str, x: &'static str) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    move |g, _, s| {
        let rank = g[s[var(x)]].data.ty.as_ref().map(|t| t.shape.rank());
        matches!((leaf(g, s, a), rank), (Some(Leaf::Axis(a)), Some(r)) if a + 1 == r)
    }
}

/// `?a` equals the rank of `?y` (the axis a one-hot of `?y` adds).
pub fn axis_is_rank(a: &'static str, y: &'static str) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    move |g, _, s| {
        let rank = g[s[var(y)]].data.ty.as_ref().map(|t| t.shape.rank());
        matches!((leaf(g, s, a), rank), (Some(Leaf::Axis(a)), Some(r)) if a == r)
    }
}

/// A masking with fill `?f` commutes with scaling by `?c`: the fill is 0, or it is
/// infinite and `?c` positive.
pub fn mask_commutes(f: &'static str, c: &'static str) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    move |g, _, s| match (leaf(g, s, f), leaf(g, s, c)) {
        (Some(Leaf::Scalar(fill)), Some(Leaf::Scalar(c))) => {
            fill.factors.is_empty() && (fill.coef == 0.0 || (fill.coef.is_infinite() && c.coef > 0.0))
        }
        _ => false,
    }
}

/// `?c` is a scalar with a negative numeric factor.
pub fn negative(v: &'static str) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    move |g, _, s| matches!(leaf(g, s, v), Some(Leaf::Scalar(c)) if c.coef < 0.0)
}

/// Applies a constant `fill`: its value a number or a matched scalar, its shape that
/// of a matched value or of the matched class itself.
pub struct Fill {
    value: Result<f64, &'static str>,
    like: Option<&'static str>,
}

impl Fill {
    /// `value` everywhere, shaped like `?like` (`x ⊙ 0 → 0`).
    pub fn like(like: &'static str, value: f64) -> Fill {
        Fill { value: Ok(value), like: Some(like) }
    }

    /// The scalar `?value` everywhere, shaped like the matched class
    /// (`bcast(fill(c)) → fill(c)` at the bigger shape).
    pub fn of(value: &'static str) -> Fill {
        Fill { value: Err(value), like: None }
    }
}

impl Applier<Tensor, Typing> for Fill {
    fn apply_one(
        &self,
        egraph: &mut Graph,
        eclass: Id,
        subst: &Subst,
        _ast: Option<&PatternAst<Tensor>>,
        rule: Symbol,
    ) -> Vec<Id> {
        let shaped_like = self.like.map_or(eclass, |v| subst[var(v)]);
        let Some(ty) = egraph[shaped_like].data.ty.clone() else { return vec![] };
        let value = match self.value {
            Ok(v) => egraph.add(Tensor::Leaf(Leaf::Scalar(Scalar::num(v)))),
            Err(v) => subst[var(v)],
        };
        let shape = egraph.add(Tensor::Leaf(Leaf::Shape(ty.shape)));
        let fill = egraph.add(Tensor::Op(Kind::Fill, vec![value, shape]));
        if egraph.union_trusted(eclass, fill, rule) { vec![eclass] } else { vec![] }
    }
}
