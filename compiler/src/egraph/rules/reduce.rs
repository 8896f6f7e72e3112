//! Reductions and broadcasts: sums moved through negation, scaling and division by a
//! broadcast row factor, a broadcast's sum turned into a scaling, and broadcasts moved
//! outside elementwise ops (so a row statistic is computed once, at row size).

use egg::rewrite;

use super::{Fill, Rule, axis_is_rank};

pub fn rules() -> Vec<Rule> {
    vec![
        // Σₐ(−x) = −Σₐx
        rewrite!("sum-neg"; "(sum ?a (neg ?x))" => "(neg (sum ?a ?x))"),
        // Σₐ(x − y) = Σₐx − Σₐy
        rewrite!("sum-sub"; "(sum ?a (sub ?x ?y))" => "(sub (sum ?a ?x) (sum ?a ?y))"),
        // Σₐ(x + y) = Σₐx + Σₐy
        rewrite!("sum-add"; "(sum ?a (add ?x ?y))" => "(add (sum ?a ?x) (sum ?a ?y))"),
        // c·bcast(x) = bcast(c·x): the reverse of bcast-scale, so a factor applies at row size
        rewrite!("scale-bcast"; "(scale ?c (bcast ?a ?n ?x))" => "(bcast ?a ?n (scale ?c ?x))"),
        // Σₐ(c·x) = c·Σₐx
        rewrite!("sum-scale"; "(sum ?a (scale ?c ?x))" => "(scale ?c (sum ?a ?x))"),
        // Σₐ(x ⊘ bcastₐ(s)) = (Σₐx) ⊘ s
        rewrite!("sum-div-bcast"; "(sum ?a (div ?x (bcast ?a ?n ?s)))" => "(div (sum ?a ?x) ?s)"),
        // Σₐ(x ⊙ bcastₐ(s)) = (Σₐx) ⊙ s
        rewrite!("sum-mul-bcast"; "(sum ?a (mul ?x (bcast ?a ?n ?s)))" => "(mul (sum ?a ?x) ?s)"),
        // Σₐ(bcastₐ(s) ⊙ x) = s ⊙ Σₐx
        rewrite!("sum-bcast-mul"; "(sum ?a (mul (bcast ?a ?n ?s) ?x))" => "(mul ?s (sum ?a ?x))"),
        // Σₐ bcastₐ(n, x) = n·x
        rewrite!("sum-bcast"; "(sum ?a (bcast ?a ?n ?x))" => "(scale (dimscalar ?n) ?x)"),
        // Σ over the one-hot axis of onehot(y) = 1
        rewrite!("sum-onehot"; "(sum ?a (onehot ?d ?y))" => { Fill::like("?y", 1.0) } if axis_is_rank("?a", "?y")),
        // bcast(−x) = −bcast(x)
        rewrite!("bcast-neg"; "(bcast ?a ?n (neg ?x))" => "(neg (bcast ?a ?n ?x))"),
        // bcast(c·x) = c·bcast(x)
        rewrite!("bcast-scale"; "(bcast ?a ?n (scale ?c ?x))" => "(scale ?c (bcast ?a ?n ?x))"),
        // bcast(x ⊘ y) = bcast(x) ⊘ bcast(y)
        rewrite!("bcast-div"; "(bcast ?a ?n (div ?x ?y))" => "(div (bcast ?a ?n ?x) (bcast ?a ?n ?y))"),
        // bcast(x ⊙ y) = bcast(x) ⊙ bcast(y)
        rewrite!("bcast-mul"; "(bcast ?a ?n (mul ?x ?y))" => "(mul (bcast ?a ?n ?x) (bcast ?a ?n ?y))"),
        // bcast(x) ⊘ bcast(y) = bcast(x ⊘ y): the reverse of the two above, so the quotient is computed at row size
        rewrite!("div-bcasts"; "(div (bcast ?a ?n ?x) (bcast ?a ?n ?y))" => "(bcast ?a ?n (div ?x ?y))"),
        // bcast(x) ⊙ bcast(y) = bcast(x ⊙ y)
        rewrite!("mul-bcasts"; "(mul (bcast ?a ?n ?x) (bcast ?a ?n ?y))" => "(bcast ?a ?n (mul ?x ?y))"),
    ]
}

pub const EXAMPLES: &[(&str, &[(&str, &str)])] = &[
    ("sum-neg", &[("?a", "1"), ("?x", "M,N")]),
    ("sum-sub", &[("?a", "1"), ("?x", "M,N"), ("?y", "M,N")]),
    ("sum-add", &[("?a", "0"), ("?x", "M,N"), ("?y", "M,N")]),
    ("scale-bcast", &[("?a", "1"), ("?n", "d:N"), ("?c", "s:3"), ("?x", "M")]),
    ("sum-scale", &[("?a", "0"), ("?c", "s:0.5"), ("?x", "M,N")]),
    ("sum-div-bcast", &[("?a", "1"), ("?n", "d:N"), ("?x", "M,N"), ("?s", "positive:M")]),
    ("sum-mul-bcast", &[("?a", "1"), ("?n", "d:N"), ("?x", "M,N"), ("?s", "M")]),
    ("sum-bcast-mul", &[("?a", "2"), ("?n", "d:N"), ("?x", "B,M,N"), ("?s", "B,M")]),
    ("sum-bcast", &[("?a", "0"), ("?n", "d:N"), ("?x", "M")]),
    ("sum-onehot", &[("?a", "2"), ("?d", "d:V"), ("?y", "index:B,M")]),
    ("bcast-neg", &[("?a", "1"), ("?n", "d:N"), ("?x", "M")]),
    ("bcast-scale", &[("?a", "1"), ("?n", "d:N"), ("?c", "s:3"), ("?x", "M")]),
    ("bcast-div", &[("?a", "1"), ("?n", "d:N"), ("?x", "M"), ("?y", "positive:M")]),
    ("bcast-mul", &[("?a", "0"), ("?n", "d:N"), ("?x", "M"), ("?y", "M")]),
    ("div-bcasts", &[("?a", "1"), ("?n", "d:N"), ("?x", "M"), ("?y", "positive:M")]),
    ("mul-bcasts", &[("?a", "1"), ("?n", "d:N"), ("?x", "M"), ("?y", "M")]),
];
