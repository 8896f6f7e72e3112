//! Every composite (softmax, log-softmax, layernorm, cross-entropy, one causal
//! attention head, multi-head attention) and a 2-layer tied-embedding GPT, against
//! central finite differences in f64.

mod common;

use std::collections::BTreeMap;

use adjoint_compiler::dim::{Dim, DimEnv};
use adjoint_compiler::ir::{Graph, Shape, ValueId};
use adjoint_compiler::library::{self, MhaWeights, gpt};
use common::{Rng, check_gradients, random_feeds};

const TOL: f64 = 1e-6;

fn env(pairs: &[(&str, i64)]) -> DimEnv {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn shape(names: &[&str]) -> Shape {
    Shape::new(names.iter().map(|n| Dim::sym(n)))
}

/// Checks `Σ f(inputs) ⊙ R` for a random `R` on every size set.
fn check(
    build: impl Fn(&mut Graph) -> (ValueId, Vec<ValueId>),
    envs: &[DimEnv],
    index_bounds: &[(&str, &str)],
) {
    for (k, env) in envs.iter().enumerate() {
        let mut g = Graph::new();
        let (out, wrt) = build(&mut g);
        let loss = if g.shape(out).rank() == 0 {
            out
        } else {
            let r = g.data("R", g.shape(out).clone()).unwrap();
            let w = g.mul(out, r).unwrap();
            g.sum_all(w).unwrap()
        };
        let bounds: BTreeMap<&str, usize> =
            index_bounds.iter().map(|(n, d)| (*n, env[*d] as usize)).collect();
        let mut rng = Rng::new(100 + k as u64);
        let feeds = random_feeds(&g, env, &mut rng, &[], &bounds);
        check_gradients(&mut g, env, &feeds, loss, &wrt, None, TOL);
    }
}

fn row_envs() -> Vec<DimEnv> {
    vec![env(&[("N", 1), ("D", 5)]), env(&[("N", 4), ("D", 9)]), env(&[("N", 3), ("D", 17)])]
}

#[test]
fn softmax() {
    check(
        |g| {
            let s = g.param("S", shape(&["N", "D"])).unwrap();
            (library::softmax(g, s).unwrap(), vec![s])
        },
        &row_envs(),
        &[],
    );
}

#[test]
fn log_softmax() {
    check(
        |g| {
            let s = g.param("S", shape(&["N", "D"])).unwrap();
            (library::log_softmax(g, s).unwrap(), vec![s])
        },
        &row_envs(),
        &[],
    );
}

#[test]
fn layernorm() {
    check(
        |g| {
            let x = g.param("X", shape(&["N", "D"])).unwrap();
            let gamma = g.param("γ", shape(&["D"])).unwrap();
            let beta = g.param("β", shape(&["D"])).unwrap();
            (library::layernorm(g, x, gamma, beta, 1e-5).unwrap(), vec![x, gamma, beta])
        },
        &row_envs(),
        &[],
    );
}

#[test]
fn cross_entropy() {
    check(
        |g| {
            let z = g.param("Z", shape(&["N", "D"])).unwrap();
            let y = g.index_input("y", shape(&["N"])).unwrap();
            (library::cross_entropy(g, z, y).unwrap(), vec![z])
        },
        &row_envs(),
        &[("y", "D")],
    );
}

#[test]
fn causal_attention_head() {
    let envs = vec![env(&[("T", 1), ("K", 3)]), env(&[("T", 5), ("K", 4)]), env(&[("T", 9), ("K", 7)])];
    check(
        |g| {
            let q = g.param("Q", shape(&["T", "K"])).unwrap();
            let k = g.param("K", shape(&["T", "K"])).unwrap();
            let v = g.param("V", shape(&["T", "K"])).unwrap();
            (library::attention_head(g, q, k, v, true).unwrap(), vec![q, k, v])
        },
        &envs,
        &[],
    );
}

#[test]
fn multi_head_attention() {
    let envs =
        vec![env(&[("B", 1), ("T", 3), ("D", 6), ("H", 3)]), env(&[("B", 2), ("T", 5), ("D", 8), ("H", 2)])];
    check(
        |g| {
            let (b, t, h) = (Dim::sym("B"), Dim::sym("T"), Dim::sym("H"));
            let x = g.param("X", Shape::new([b.mul(&t), Dim::sym("D")])).unwrap();
            let mut p = |n: &str, s: &[&str]| g.param(n, shape(s)).unwrap();
            let w = MhaWeights {
                wq: p("W_q", &["D", "D"]),
                bq: p("b_q", &["D"]),
                wk: p("W_k", &["D", "D"]),
                bk: p("b_k", &["D"]),
                wv: p("W_v", &["D", "D"]),
                bv: p("b_v", &["D"]),
                wo: p("W_o", &["D", "D"]),
                bo: p("b_o", &["D"]),
            };
            let wrt = vec![x, w.wq, w.bq, w.wk, w.bk, w.wv, w.bv, w.wo, w.bo];
            (library::multi_head_attention(g, x, &w, (&b, &t), &h).unwrap(), wrt)
        },
        &envs,
        &[],
    );
}

/// The whole 2-layer GPT with tied embeddings: every parameter, at sampled coordinates
/// (plus each tensor's largest-gradient entry), on two size sets.
#[test]
fn two_layer_gpt() {
    let envs = [
        env(&[("B", 2), ("T", 5), ("D", 12), ("H", 3), ("F", 20), ("V", 11)]),
        env(&[("B", 1), ("T", 4), ("D", 8), ("H", 2), ("F", 13), ("V", 7)]),
    ];
    for (k, env) in envs.iter().enumerate() {
        let mut model = gpt::build(2).unwrap();
        let v = env["V"] as usize;
        let bounds = BTreeMap::from([("tokens", v), ("targets", v)]);
        let mut rng = Rng::new(42 + k as u64);
        let mut feeds = random_feeds(&model.graph, env, &mut rng, &[], &bounds);
        // Workload-like scales: small weights, LayerNorm gains near 1.
        for (name, _) in &model.params {
            if let Some(adjoint_compiler::interp::Tensor::Real(a)) = feeds.get_mut(name) {
                let gain = name.ends_with(".g");
                a.mapv_inplace(|x| if gain { 1.0 + 0.1 * x } else { 0.3 * x });
            }
        }
        let wrt: Vec<ValueId> = model.params.iter().map(|p| p.1).collect();
        check_gradients(&mut model.graph, env, &feeds, model.loss, &wrt, Some(4), TOL);
    }
}
