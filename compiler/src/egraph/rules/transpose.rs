//! Permutations: double transposes removed, transposes moved through products and
//! scalings. A transpose of the last two axes costs nothing where a GEMM reads it
//! (`cost.rs`), so these rules mostly let others match.

use egg::rewrite;

use super::{Rule, is_identity, is_transpose, perm};

pub fn rules() -> Vec<Rule> {
    vec![
        // permute(p, permute(q, x)) = permute(p∘q, x)
        rewrite!("permute-permute"; "(permute ?p (permute ?q ?x))" => "(permute (pcompose ?p ?q) ?x)"),
        // permute(identity, x) = x
        rewrite!("permute-identity"; "(permute ?p ?x)" => "?x" if perm("?p", is_identity)),
        // (A·B)ᵀ = Bᵀ·Aᵀ
        rewrite!("transpose-matmul"; "(permute ?p (matmul ?a ?b))" => "(matmul (permute ?p ?b) (permute ?p ?a))" if perm("?p", is_transpose)),
        // Bᵀ·Aᵀ = (A·B)ᵀ; both directions, so a product of transposes and its transpose share a class whichever the derivation built
        rewrite!("matmul-transposes"; "(matmul (permute ?p ?b) (permute ?p ?a))" => "(permute ?p (matmul ?a ?b))" if perm("?p", is_transpose)),
        // permute(p, c·x) = c·permute(p, x)
        rewrite!("permute-scale"; "(permute ?p (scale ?c ?x))" => "(scale ?c (permute ?p ?x))"),
        // permute(p, −x) = −permute(p, x)
        rewrite!("permute-neg"; "(permute ?p (neg ?x))" => "(neg (permute ?p ?x))"),
    ]
}

pub const EXAMPLES: &[(&str, &[(&str, &str)])] = &[
    ("permute-permute", &[("?p", "p:1,2,0"), ("?q", "p:2,0,1"), ("?x", "B,M,N")]),
    ("permute-identity", &[("?p", "p:0,1"), ("?x", "M,N")]),
    ("transpose-matmul", &[("?p", "p:0,2,1"), ("?a", "B,M,K"), ("?b", "B,K,N")]),
    ("matmul-transposes", &[("?p", "p:1,0"), ("?a", "M,K"), ("?b", "K,N")]),
    ("permute-scale", &[("?p", "p:1,0"), ("?c", "s:-0.5"), ("?x", "M,N")]),
    ("permute-neg", &[("?p", "p:1,0"), ("?x", "M,N")]),
];
