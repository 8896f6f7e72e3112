//! Snapshots of derived gradient formulas: a model in, its formulas (Unicode and
//! LaTeX) out. Each snapshot was read by a person who knows the math.

use adjoint_compiler::autodiff;
use adjoint_compiler::dim::Dim;
use adjoint_compiler::ir::{Graph, Shape, ValueId};
use adjoint_compiler::library::{self, gpt};
use adjoint_compiler::pretty::{self, Style};

fn shape(names: &[&str]) -> Shape {
    Shape::new(names.iter().map(|n| Dim::sym(n)))
}

/// Formulas of the gradients of `⟨G, out⟩` (or of a scalar loss) for `wrt`, both styles.
fn derive(g: &mut Graph, out: ValueId, wrt: &[ValueId]) -> String {
    let grads = if g.shape(out).rank() == 0 {
        autodiff::grad(g, out, wrt).unwrap()
    } else {
        let upstream = g.data("G", g.shape(out).clone()).unwrap();
        autodiff::backward(g, &[(out, upstream)], wrt).unwrap()
    };
    let outputs: Vec<(String, ValueId)> =
        wrt.iter().zip(grads).map(|(&w, gw)| (format!("∂L/∂{}", g.display_name(w).unwrap()), gw)).collect();
    let uni = pretty::formulas(g, &outputs, Style::Unicode);
    let tex = pretty::formulas(g, &outputs, Style::Latex);
    format!("{uni}\n--- LaTeX ---\n{tex}")
}

/// `Y = X·W + b`: the graph and `(Y, W, b, X)`.
fn linear_graph() -> (Graph, [ValueId; 4]) {
    let mut g = Graph::new();
    let x = g.data("X", shape(&["N", "D"])).unwrap();
    let w = g.param("W", shape(&["D", "F"])).unwrap();
    let b = g.param("b", shape(&["F"])).unwrap();
    let y = library::linear(&mut g, x, w, b).unwrap();
    (g, [y, w, b, x])
}

#[test]
fn linear_layer() {
    let (mut g, [y, w, b, x]) = linear_graph();
    insta::assert_snapshot!(derive(&mut g, y, &[w, b, x]));
}

/// Seed 002's LM head: logits z = h·W + b, loss = cross-entropy against the next token.
#[test]
fn lm_head_seed_002() {
    let mut g = Graph::new();
    let h = g.data("h", shape(&["N", "D"])).unwrap();
    let w = g.param("W", shape(&["D", "V"])).unwrap();
    let b = g.param("b", shape(&["V"])).unwrap();
    let y = g.index_input("y", shape(&["N"])).unwrap();
    let z = library::linear(&mut g, h, w, b).unwrap();
    g.name(z, "Z");
    let loss = library::cross_entropy(&mut g, z, y).unwrap();
    insta::assert_snapshot!(derive(&mut g, loss, &[w, b, h]));
}

/// Seed 004: Z = Q·Kᵀ gives ∂L/∂Q = G·K and ∂L/∂K = Gᵀ·Q.
#[test]
fn query_key_product_seed_004() {
    let mut g = Graph::new();
    let q = g.param("Q", shape(&["T", "K"])).unwrap();
    let k = g.param("K", shape(&["T", "K"])).unwrap();
    let kt = g.transpose(k).unwrap();
    let z = g.matmul(q, kt).unwrap();
    insta::assert_snapshot!(derive(&mut g, z, &[q, k]));
}

#[test]
fn causal_attention_head() {
    let mut g = Graph::new();
    let (t, d, dk) = (Dim::sym("T"), Dim::sym("D"), Dim::sym("K"));
    g.alias_dim(dk.clone(), "d_k");
    let x = g.data("X", Shape::new([t.clone(), d.clone()])).unwrap();
    let wq = g.param("W_q", Shape::new([d.clone(), dk.clone()])).unwrap();
    let wk = g.param("W_k", Shape::new([d.clone(), dk.clone()])).unwrap();
    let wv = g.param("W_v", Shape::new([d.clone(), dk.clone()])).unwrap();
    let q = g.matmul(x, wq).unwrap();
    g.name(q, "Q");
    let k = g.matmul(x, wk).unwrap();
    g.name(k, "K");
    let v = g.matmul(x, wv).unwrap();
    g.name(v, "V");
    let o = library::attention_head(&mut g, q, k, v, true).unwrap();
    insta::assert_snapshot!(derive(&mut g, o, &[wq, wk, wv, x]));
}

#[test]
fn layernorm() {
    let mut g = Graph::new();
    let x = g.data("x", shape(&["N", "D"])).unwrap();
    let gamma = g.param("γ", shape(&["D"])).unwrap();
    let beta = g.param("β", shape(&["D"])).unwrap();
    let y = library::layernorm(&mut g, x, gamma, beta, 1e-5).unwrap();
    insta::assert_snapshot!(derive(&mut g, y, &[gamma, beta, x]));
}

/// One pre-LN block with the tied LM head and mean cross-entropy: the whole of MATH.md §3
/// with one layer.
#[test]
fn pre_ln_block_with_tied_head() {
    let mut model = gpt::build(1).unwrap();
    let wrt: Vec<ValueId> = model.params.iter().map(|p| p.1).collect();
    insta::assert_snapshot!(derive(&mut model.graph, model.loss, &wrt));
}

/// The same model text gives the same formulas, byte for byte.
#[test]
fn formulas_are_deterministic() {
    let text = || {
        let mut model = gpt::build(2).unwrap();
        let wrt: Vec<ValueId> = model.params.iter().map(|p| p.1).collect();
        derive(&mut model.graph, model.loss, &wrt)
    };
    assert_eq!(text(), text());
}

/// The graph picture of the linear layer's joint graph.
#[test]
fn linear_layer_dot() {
    let (mut g, [y, w, b, _]) = linear_graph();
    let upstream = g.data("G", g.shape(y).clone()).unwrap();
    let grads = autodiff::backward(&mut g, &[(y, upstream)], &[w, b]).unwrap();
    let outputs = vec![("∂L/∂W".to_string(), grads[0]), ("∂L/∂b".to_string(), grads[1])];
    insta::assert_snapshot!(pretty::dot(&g, &outputs));
}
