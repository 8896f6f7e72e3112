//! Matrix products: re-association, and moving a row reduction through a product.

use egg::rewrite;

use super::{Rule, is_transpose, last_axis, perm};

pub fn rules() -> Vec<Rule> {
    vec![
        // (A·B)·C = A·(B·C); both directions: a chain's FLOP-optimal order is found by the cost, and an n-chain's e-graph stays O(n³) classes
        rewrite!("matmul-assoc-right"; "(matmul (matmul ?a ?b) ?c)" => "(matmul ?a (matmul ?b ?c))"),
        // A·(B·C) = (A·B)·C
        rewrite!("matmul-assoc-left"; "(matmul ?a (matmul ?b ?c))" => "(matmul (matmul ?a ?b) ?c)"),
        // rowsum((G·Vᵀ) ⊙ A) = rowsum(G ⊙ (A·V)): Σⱼ(Σₖ GᵢₖVⱼₖ)Aᵢⱼ = Σₖ Gᵢₖ(AV)ᵢₖ; in attention backward, a T×d pass instead of T×T
        rewrite!("rowsum-matmul-transpose"; "(sum ?x (mul (matmul ?g (permute ?p ?v)) ?a))" => "(sum ?x (mul ?g (matmul ?a ?v)))" if perm("?p", is_transpose) if last_axis("?x", "?a")),
    ]
}

pub const EXAMPLES: &[(&str, &[(&str, &str)])] = &[
    ("matmul-assoc-right", &[("?a", "M,K"), ("?b", "K,L"), ("?c", "L,N")]),
    ("matmul-assoc-left", &[("?a", "B,M,K"), ("?b", "B,K,L"), ("?c", "B,L,N")]),
    (
        "rowsum-matmul-transpose",
        &[("?x", "2"), ("?p", "p:0,2,1"), ("?g", "B,T,K"), ("?v", "B,S,K"), ("?a", "B,T,S")],
    ),
];
