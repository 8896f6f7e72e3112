//! Elementwise algebra: zeros and ones removed, negations gathered, and the few
//! distributive and quotient identities that turn derived backward passes into their
//! textbook forms (softmax: `P ⊙ (G − rowsum(G ⊙ P))`). No blanket commutativity:
//! each rule names the operand order it handles.

use egg::rewrite;

use super::{Fill, Rule, constant_is};

pub fn rules() -> Vec<Rule> {
    vec![
        // x + 0 = x
        rewrite!("add-zero"; "(add ?x ?z)" => "?x" if constant_is("?z", 0.0)),
        // 0 + x = x
        rewrite!("zero-add"; "(add ?z ?x)" => "?x" if constant_is("?z", 0.0)),
        // x − x = 0
        rewrite!("sub-self"; "(sub ?x ?x)" => { Fill::like("?x", 0.0) }),
        // 0 ⊘ y = 0
        rewrite!("zero-div"; "(div ?z ?y)" => "?z" if constant_is("?z", 0.0)),
        // x ⊙ (y ⊘ z) = (x ⊙ y) ⊘ z
        rewrite!("mul-div"; "(mul ?x (div ?y ?z))" => "(div (mul ?x ?y) ?z)"),
        // x − 0 = x
        rewrite!("sub-zero"; "(sub ?x ?z)" => "?x" if constant_is("?z", 0.0)),
        // 0 − x = −x
        rewrite!("zero-sub"; "(sub ?z ?x)" => "(neg ?x)" if constant_is("?z", 0.0)),
        // x ⊙ 0 = 0
        rewrite!("mul-zero"; "(mul ?x ?z)" => { Fill::like("?x", 0.0) } if constant_is("?z", 0.0)),
        // 0 ⊙ x = 0
        rewrite!("zero-mul"; "(mul ?z ?x)" => { Fill::like("?x", 0.0) } if constant_is("?z", 0.0)),
        // x ⊙ 1 = x
        rewrite!("mul-one"; "(mul ?x ?o)" => "?x" if constant_is("?o", 1.0)),
        // 1 ⊙ x = x
        rewrite!("one-mul"; "(mul ?o ?x)" => "?x" if constant_is("?o", 1.0)),
        // x ⊘ 1 = x
        rewrite!("div-one"; "(div ?x ?o)" => "?x" if constant_is("?o", 1.0)),
        // −0 = 0
        rewrite!("neg-zero"; "(neg ?z)" => "?z" if constant_is("?z", 0.0)),
        // −(−x) = x
        rewrite!("neg-neg"; "(neg (neg ?x))" => "?x"),
        // −(x − y) = y − x
        rewrite!("neg-sub"; "(neg (sub ?x ?y))" => "(sub ?y ?x)"),
        // (−x) + y = y − x
        rewrite!("neg-add"; "(add (neg ?x) ?y)" => "(sub ?y ?x)"),
        // x + (−y) = x − y
        rewrite!("add-neg"; "(add ?x (neg ?y))" => "(sub ?x ?y)"),
        // (−x) ⊙ y = −(x ⊙ y)
        rewrite!("neg-mul"; "(mul (neg ?x) ?y)" => "(neg (mul ?x ?y))"),
        // x ⊙ (−y) = −(x ⊙ y)
        rewrite!("mul-neg"; "(mul ?x (neg ?y))" => "(neg (mul ?x ?y))"),
        // (−x) ⊘ y = −(x ⊘ y)
        rewrite!("neg-div"; "(div (neg ?x) ?y)" => "(neg (div ?x ?y))"),
        // (x ⊘ y) ⊙ z = (z ⊘ y) ⊙ x: a quotient's denominator moves to the other factor (softmax: ((G − r) ⊘ s) ⊙ e = P ⊙ (G − r))
        rewrite!("div-mul"; "(mul (div ?x ?y) ?z)" => "(mul (div ?z ?y) ?x)"),
        // x ⊘ y + z ⊘ y = (x + z) ⊘ y
        rewrite!("factor-div-add"; "(add (div ?x ?y) (div ?z ?y))" => "(div (add ?x ?z) ?y)"),
        // x ⊘ y − z ⊘ y = (x − z) ⊘ y
        rewrite!("factor-div-sub"; "(sub (div ?x ?y) (div ?z ?y))" => "(div (sub ?x ?z) ?y)"),
        // x ⊙ z − y ⊙ z = z ⊙ (x − y)
        rewrite!("factor-sub"; "(sub (mul ?x ?z) (mul ?y ?z))" => "(mul ?z (sub ?x ?y))"),
        // x ⊙ z + y ⊙ z = z ⊙ (x + y)
        rewrite!("factor-add"; "(add (mul ?x ?z) (mul ?y ?z))" => "(mul ?z (add ?x ?y))"),
    ]
}

pub const EXAMPLES: &[(&str, &[(&str, &str)])] = &[
    ("add-zero", &[("?x", "M,N"), ("?z", "zeros:M,N")]),
    ("zero-add", &[("?x", "M,N"), ("?z", "zeros:M,N")]),
    ("sub-self", &[("?x", "M,N")]),
    ("zero-div", &[("?z", "zeros:M,N"), ("?y", "positive:M,N")]),
    ("mul-div", &[("?x", "M,N"), ("?y", "M,N"), ("?z", "positive:M,N")]),
    ("sub-zero", &[("?x", "M,N"), ("?z", "zeros:M,N")]),
    ("zero-sub", &[("?x", "M,N"), ("?z", "zeros:M,N")]),
    ("mul-zero", &[("?x", "M,N"), ("?z", "zeros:M,N")]),
    ("zero-mul", &[("?x", "M,N"), ("?z", "zeros:M,N")]),
    ("mul-one", &[("?x", "M,N"), ("?o", "ones:M,N")]),
    ("one-mul", &[("?x", "M,N"), ("?o", "ones:M,N")]),
    ("div-one", &[("?x", "M,N"), ("?o", "ones:M,N")]),
    ("neg-zero", &[("?z", "zeros:M,N")]),
    ("neg-neg", &[("?x", "M,N")]),
    ("neg-sub", &[("?x", "M,N"), ("?y", "M,N")]),
    ("neg-add", &[("?x", "M,N"), ("?y", "M,N")]),
    ("add-neg", &[("?x", "M,N"), ("?y", "M,N")]),
    ("neg-mul", &[("?x", "M,N"), ("?y", "M,N")]),
    ("mul-neg", &[("?x", "M,N"), ("?y", "M,N")]),
    ("neg-div", &[("?x", "M,N"), ("?y", "positive:M,N")]),
    ("factor-div-add", &[("?x", "M,N"), ("?y", "positive:M,N"), ("?z", "M,N")]),
    ("factor-div-sub", &[("?x", "M,N"), ("?y", "positive:M,N"), ("?z", "M,N")]),
    ("div-mul", &[("?x", "M,N"), ("?y", "positive:M,N"), ("?z", "M,N")]),
    ("factor-sub", &[("?x", "M,N"), ("?y", "M,N"), ("?z", "M,N")]),
    ("factor-add", &[("?x", "M,N"), ("?y", "M,N"), ("?z", "M,N")]),
];
