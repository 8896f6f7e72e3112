//! Scalings: merged, dropped when 1, and moved through products (and, in `masks.rs`, masks) so a
//! constant factor lands on the smallest operand (`1/√d_k` on Q rather than on the
//! T×T scores).

use egg::rewrite;

use super::{Fill, Rule, negative, not_constant, scalar_is};

pub fn rules() -> Vec<Rule> {
    vec![
        // c·(d·x) = (cd)·x, for x not a constant (0 = d·0 would make c, c², c³, … without end)
        rewrite!("scale-scale"; "(scale ?c (scale ?d ?x))" => "(scale (smul ?c ?d) ?x)" if not_constant("?x")),
        // 1·x = x
        rewrite!("scale-one"; "(scale ?c ?x)" => "?x" if scalar_is("?c", 1.0)),
        // (−1)·x = −x
        rewrite!("scale-minus-one"; "(scale ?c ?x)" => "(neg ?x)" if scalar_is("?c", -1.0)),
        // −(c·x) = (−c)·x
        rewrite!("neg-scale"; "(neg (scale ?c ?x))" => "(scale (smul s:-1 ?c) ?x)"),
        // c·x = −((−c)·x) for c < 0: signs gathered into negations, which other rules cancel or turn into subtractions
        rewrite!("scale-negative"; "(scale ?c ?x)" => "(neg (scale (smul s:-1 ?c) ?x))" if negative("?c")),
        // −(c·(x − y)) = c·(y − x)
        rewrite!("neg-scale-sub"; "(neg (scale ?c (sub ?x ?y)))" => "(scale ?c (sub ?y ?x))"),
        // c·(x ⊘ y) = (c·x) ⊘ y
        rewrite!("scale-div"; "(scale ?c (div ?x ?y))" => "(div (scale ?c ?x) ?y)"),
        // c·(−x) = −(c·x)
        rewrite!("scale-neg"; "(scale ?c (neg ?x))" => "(neg (scale ?c ?x))"),
        // c·fill(d) = fill(cd)
        rewrite!("scale-fill"; "(scale ?c (fill ?d ?s))" => "(fill (smul ?c ?d) ?s)"),
        // −fill(c) = fill(−c)
        rewrite!("neg-fill"; "(neg (fill ?c ?s))" => "(fill (smul s:-1 ?c) ?s)"),
        // bcast(fill(c)) = fill(c), at the broadcast shape
        rewrite!("bcast-fill"; "(bcast ?a ?n (fill ?c ?s))" => { Fill::of("?c") }),
        // fill(c) ⊙ x = c·x, for x not a constant (constants fold by the rules above; 0 ⊙ x by mul-zero)
        rewrite!("fill-mul"; "(mul (fill ?c ?s) ?x)" => "(scale ?c ?x)" if not_constant("?x")),
        // x ⊙ fill(c) = c·x, likewise
        rewrite!("mul-fill"; "(mul ?x (fill ?c ?s))" => "(scale ?c ?x)" if not_constant("?x")),
        // c·x − c·y = c·(x − y)
        rewrite!("factor-scale-sub"; "(sub (scale ?c ?x) (scale ?c ?y))" => "(scale ?c (sub ?x ?y))"),
        // c·x + c·y = c·(x + y)
        rewrite!("factor-scale-add"; "(add (scale ?c ?x) (scale ?c ?y))" => "(scale ?c (add ?x ?y))"),
        // (c·A)·B = c·(A·B)
        rewrite!("matmul-scale-left"; "(matmul (scale ?c ?a) ?b)" => "(scale ?c (matmul ?a ?b))"),
        // A·(c·B) = c·(A·B)
        rewrite!("matmul-scale-right"; "(matmul ?a (scale ?c ?b))" => "(scale ?c (matmul ?a ?b))"),
        // c·(A·B) = (c·A)·B; with the two above, every placement of c is in one class and the cost picks the smallest operand
        rewrite!("scale-into-left"; "(scale ?c (matmul ?a ?b))" => "(matmul (scale ?c ?a) ?b)"),
        // c·(A·B) = A·(c·B)
        rewrite!("scale-into-right"; "(scale ?c (matmul ?a ?b))" => "(matmul ?a (scale ?c ?b))"),
        // c·(x ⊙ y) = (c·x) ⊙ y
        rewrite!("scale-mul"; "(scale ?c (mul ?x ?y))" => "(mul (scale ?c ?x) ?y)"),
        // c·(x ⊙ y) = x ⊙ (c·y)
        rewrite!("scale-mul-right"; "(scale ?c (mul ?x ?y))" => "(mul ?x (scale ?c ?y))"),
        // (c·x) ⊙ y = c·(x ⊙ y)
        rewrite!("mul-scale"; "(mul (scale ?c ?x) ?y)" => "(scale ?c (mul ?x ?y))"),
        // x ⊙ (c·y) = c·(x ⊙ y)
        rewrite!("mul-scale-right"; "(mul ?x (scale ?c ?y))" => "(scale ?c (mul ?x ?y))"),
    ]
}

pub const EXAMPLES: &[(&str, &[(&str, &str)])] = &[
    ("scale-scale", &[("?c", "s:0.5"), ("?d", "s:-3"), ("?x", "M,N")]),
    ("scale-one", &[("?c", "s:1"), ("?x", "M,N")]),
    ("scale-minus-one", &[("?c", "s:-1"), ("?x", "M,N")]),
    ("neg-scale", &[("?c", "s:0.25"), ("?x", "M,N")]),
    ("scale-negative", &[("?c", "s:-0.5"), ("?x", "M,N")]),
    ("neg-scale-sub", &[("?c", "s:0.5"), ("?x", "M,N"), ("?y", "M,N")]),
    ("scale-div", &[("?c", "s:0.5"), ("?x", "M,N"), ("?y", "positive:M,N")]),
    ("scale-neg", &[("?c", "s:0.5"), ("?x", "M,N")]),
    ("scale-fill", &[("?c", "s:-0.5"), ("?d", "s:3"), ("?s", "shape:M,N")]),
    ("neg-fill", &[("?c", "s:2"), ("?s", "shape:M,N")]),
    ("bcast-fill", &[("?a", "1"), ("?n", "d:N"), ("?c", "s:2"), ("?s", "shape:M")]),
    ("fill-mul", &[("?c", "s:2"), ("?s", "shape:M,N"), ("?x", "M,N")]),
    ("mul-fill", &[("?c", "s:2"), ("?s", "shape:M,N"), ("?x", "M,N")]),
    ("factor-scale-sub", &[("?c", "s:2"), ("?x", "M,N"), ("?y", "M,N")]),
    ("factor-scale-add", &[("?c", "s:2"), ("?x", "M,N"), ("?y", "M,N")]),
    ("matmul-scale-left", &[("?c", "s:0.5"), ("?a", "M,K"), ("?b", "K,N")]),
    ("matmul-scale-right", &[("?c", "s:0.5"), ("?a", "B,M,K"), ("?b", "B,K,N")]),
    ("scale-into-left", &[("?c", "s:0.5"), ("?a", "M,K"), ("?b", "K,N")]),
    ("scale-into-right", &[("?c", "s:0.5"), ("?a", "M,K"), ("?b", "K,N")]),
    ("scale-mul", &[("?c", "s:0.5"), ("?x", "M,N"), ("?y", "M,N")]),
    ("scale-mul-right", &[("?c", "s:0.5"), ("?x", "M,N"), ("?y", "M,N")]),
    ("mul-scale", &[("?c", "s:0.5"), ("?x", "M,N"), ("?y", "M,N")]),
    ("mul-scale-right", &[("?c", "s:0.5"), ("?x", "M,N"), ("?y", "M,N")]),
];
