//! Causal masks: a scaling moves through a mask whose fill it leaves unchanged, so the
//! attention scale can reach the product under the mask.

use egg::rewrite;

use super::{Rule, mask_commutes};

pub fn rules() -> Vec<Rule> {
    vec![
        // mask(c·x) = c·mask(x) when the fill is 0, or ±∞ and c > 0
        rewrite!("causal-scale"; "(causal ?f (scale ?c ?x))" => "(scale ?c (causal ?f ?x))" if mask_commutes("?f", "?c")),
        // c·mask(x) = mask(c·x), same condition: both directions, so the scale can fold into the product under the mask
        rewrite!("scale-causal"; "(scale ?c (causal ?f ?x))" => "(causal ?f (scale ?c ?x))" if mask_commutes("?f", "?c")),
    ]
}

pub const EXAMPLES: &[(&str, &[(&str, &str)])] = &[
    ("causal-scale", &[("?f", "s:0"), ("?c", "s:-2"), ("?x", "B,T,T")]),
    ("scale-causal", &[("?f", "s:-inf"), ("?c", "s:0.5"), ("?x", "T,T")]),
];
