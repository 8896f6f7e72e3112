//! The e-graph finds the textbook backward forms: each identity of issue 4 as a model
//! in, its simplified formula out (insta snapshot), plus an assertion on the form and a
//! numerical check that the simplified graph computes the same values.

use std::collections::BTreeMap;

use adjoint_compiler::autodiff;
use adjoint_compiler::dim::{Dim, DimEnv};
use adjoint_compiler::egraph::{self, Options};
use adjoint_compiler::interp::evaluate;
use adjoint_compiler::ir::{Graph, Shape, ValueId};
use adjoint_compiler::library;
use adjoint_compiler::pretty::{self, Style};

mod common;

fn shape(names: &[&str]) -> Shape {
    Shape::new(names.iter().map(|n| Dim::sym(n)))
}

/// Simplifies `outputs` of `g`; returns the formulas before and after, and checks the
/// two graphs agree on random inputs at `sizes`.
fn simplify(
    g: &Graph,
    outputs: &[(&str, ValueId)],
    sizes: &[(&str, i64)],
    positive: &[&str],
    index_bound: &[(&str, usize)],
    cost_sizes: &[(&str, i64)],
) -> (String, String, egraph::Simplified) {
    let ids: Vec<ValueId> = outputs.iter().map(|o| o.1).collect();
    let mut options = Options::default();
    options.sizes.sizes = cost_sizes.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let s = egraph::simplify(g, &ids, &options).unwrap();
    let named = |ids: &[ValueId]| -> Vec<(String, ValueId)> {
        outputs.iter().zip(ids).map(|(o, &id)| (o.0.to_string(), id)).collect()
    };
    let before = pretty::formulas(g, &named(&ids), Style::Unicode);
    let after = pretty::formulas(&s.graph, &named(&s.outputs), Style::Unicode);
    let env: DimEnv = sizes.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let mut rng = common::Rng::new(7);
    let feeds = common::random_feeds(g, &env, &mut rng, positive, &index_bound.iter().copied().collect());
    let used = |graph: &Graph| -> BTreeMap<_, _> {
        feeds
            .iter()
            .filter(|(k, _)| graph.find_input(k).is_some())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let want = evaluate(g, &env, &used(g), &ids).unwrap();
    let got = evaluate(&s.graph, &env, &used(&s.graph), &s.outputs).unwrap();
    for (i, (&a, &b)) in ids.iter().zip(&s.outputs).enumerate() {
        let (x, y) = (want.get(a).unwrap().real("want").unwrap(), got.get(b).unwrap().real("got").unwrap());
        let err = common::rel_err(y, x, 1e-9);
        assert!(err < 1e-9, "output {}: relative error {err:e}", outputs[i].0);
    }
    assert!(s.report.cost_after <= s.report.cost_before, "{}", s.report);
    (before, after, s)
}

/// Whether some node of `g` applies `op` (by mnemonic) to a value of exactly `shape`.
fn has_op_on(g: &Graph, op: &str, shape: &Shape) -> bool {
    g.ids().any(|id| {
        g.node(id).op.mnemonic().starts_with(op) && g.node(id).inputs.iter().any(|&i| g.shape(i) == shape)
    })
}

#[test]
fn b_softmax_backward_from_primitives() {
    let mut g = Graph::new();
    let s = g.data("S", shape(&["N", "M"])).unwrap();
    let p = library::softmax(&mut g, s).unwrap();
    g.name(p, "P");
    let upstream = g.data("G", shape(&["N", "M"])).unwrap();
    let ds = autodiff::backward(&mut g, &[(p, upstream)], &[s]).unwrap()[0];
    let (_, after, _) = simplify(&g, &[("P", p), ("∂L/∂S", ds)], &[("N", 3), ("M", 5)], &[], &[], &[]);
    assert!(after.contains("∂L/∂S = P ⊙ (dP − rowsum(dP ⊙ P))"), "{after}");
    insta::assert_snapshot!(after);
}

#[test]
fn a_softmax_cross_entropy() {
    let mut g = Graph::new();
    let z = g.data("Z", shape(&["N", "V"])).unwrap();
    let y = g.index_input("y", shape(&["N"])).unwrap();
    let loss = library::cross_entropy(&mut g, z, y).unwrap();
    let dz = autodiff::grad(&mut g, loss, &[z]).unwrap()[0];
    let (_, after, _) =
        simplify(&g, &[("L", loss), ("∂L/∂Z", dz)], &[("N", 4), ("V", 6)], &[], &[("y", 6)], &[]);
    // P = e ⊘ s, the softmax the loss never materialised forward.
    assert!(after.contains("∂L/∂Z = (e ⊘ s − Y) / N"), "{after}");
    insta::assert_snapshot!(after);
}

#[test]
fn d_h_causal_attention_scale_and_row_statistic() {
    let mut g = Graph::new();
    let q = g.data("Q", shape(&["T", "K"])).unwrap();
    let k = g.data("K_", shape(&["T", "K"])).unwrap();
    let v = g.data("V", shape(&["T", "K"])).unwrap();
    let o = library::attention_head(&mut g, q, k, v, true).unwrap();
    g.name(o, "O");
    let upstream = g.data("dO", shape(&["T", "K"])).unwrap();
    let grads = autodiff::backward(&mut g, &[(o, upstream)], &[q, k, v]).unwrap();
    let (_, after, s) = simplify(
        &g,
        &[("O", o), ("∂L/∂Q", grads[0]), ("∂L/∂K", grads[1]), ("∂L/∂V", grads[2])],
        &[("T", 5), ("K", 3)],
        &[],
        &[],
        &[("T", 256), ("K", 64)],
    );
    // h: the row statistic from the T×d output, not the T×T probabilities.
    assert!(after.contains("rowsum(dO ⊙ O)") && !after.contains("rowsum(dA ⊙ A)"), "{after}");
    // d: 1/√d_k lands on a T×d operand, forward and backward: no scaling pass over T×T.
    assert!(!has_op_on(&s.graph, "scale", &shape(&["T", "T"])), "{after}");
    assert!(has_op_on(&g, "scale", &shape(&["T", "T"])), "the derivation scales the scores");
    insta::assert_snapshot!(after);
}

#[test]
fn c_layernorm_backward() {
    let mut g = Graph::new();
    let x = g.data("x", shape(&["N", "D"])).unwrap();
    let gamma = g.param("γ", shape(&["D"])).unwrap();
    let beta = g.param("β", shape(&["D"])).unwrap();
    let y = library::layernorm(&mut g, x, gamma, beta, 1e-5).unwrap();
    let upstream = g.data("G", shape(&["N", "D"])).unwrap();
    let grads = autodiff::backward(&mut g, &[(y, upstream)], &[x, gamma, beta]).unwrap();
    let (_, after, _) = simplify(
        &g,
        &[("y", y), ("∂L/∂x", grads[0]), ("∂L/∂γ", grads[1]), ("∂L/∂β", grads[2])],
        &[("N", 3), ("D", 5)],
        &[],
        &[],
        &[("N", 512), ("D", 256)],
    );
    // MATH.md §2: x̄ = (ĝ − mean(ĝ) − x̂ ⊙ mean(ĝ ⊙ x̂)) / σ with ĝ = G ⊙ γ, in one
    // expression: no dσ, dvar, dμ passes (mean(ĝ ⊙ x̂) appears as rowsum(ĝ ⊙ x_c)/D ⊘ σ,
    // the division done at row size).
    let dx = after.lines().find(|l| l.starts_with("∂L/∂x = ")).unwrap();
    assert_eq!(dx, "∂L/∂x = (dx̂ − x̂ ⊙ ((rowsum(dx̂ ⊙ x_c) / D) ⊘ σ) − rowsum(dx̂) / D) ⊘ σ", "{after}");
    assert!(!after.contains("dvar") && !after.contains("dμ"), "{after}");
    insta::assert_snapshot!(after);
}
