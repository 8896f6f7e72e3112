//! Every primitive's adjoint against central finite differences, in f64, on several
//! size sets (one row, non-square, sizes that are not multiples of 8).
//!
//! Each case builds `out = op(inputs)`; the checked loss is `Σ out ⊙ R` for a random
//! `R`, so every entry of the adjoint is exercised with a different weight.

mod common;

use std::collections::BTreeMap;

use adjoint_compiler::dim::{Dim, DimEnv};
use adjoint_compiler::ir::{Graph, Shape, ValueId};
use adjoint_compiler::scalar::Scalar;
use common::{Rng, check_gradients, random_feeds};

const TOL: f64 = 1e-6;

/// `(N, M, K, V)` size sets.
const SIZES: [[i64; 4]; 3] = [[1, 3, 5, 4], [4, 7, 9, 6], [3, 8, 13, 11]];

struct Case {
    out: ValueId,
    wrt: Vec<ValueId>,
    positive: Vec<&'static str>,
    index_bound: Vec<(&'static str, char)>,
}

fn dims() -> (Dim, Dim, Dim, Dim) {
    (Dim::sym("N"), Dim::sym("M"), Dim::sym("K"), Dim::sym("V"))
}

fn s(d: &[&Dim]) -> Shape {
    Shape::new(d.iter().map(|x| (*x).clone()))
}

type Build = fn(&mut Graph) -> Case;

fn plain(out: ValueId, wrt: Vec<ValueId>) -> Case {
    Case { out, wrt, positive: vec![], index_bound: vec![] }
}

fn unary(g: &mut Graph, f: impl Fn(&mut Graph, ValueId) -> ValueId, positive: bool) -> Case {
    let (n, _, k, _) = dims();
    let x = g.param("X", s(&[&n, &k])).unwrap();
    let out = f(g, x);
    Case { out, wrt: vec![x], positive: if positive { vec!["X"] } else { vec![] }, index_bound: vec![] }
}

fn binary(g: &mut Graph, f: impl Fn(&mut Graph, ValueId, ValueId) -> ValueId, positive_y: bool) -> Case {
    let (n, _, k, _) = dims();
    let x = g.param("X", s(&[&n, &k])).unwrap();
    let y = g.param("Y", s(&[&n, &k])).unwrap();
    let out = f(g, x, y);
    Case { out, wrt: vec![x, y], positive: if positive_y { vec!["Y"] } else { vec![] }, index_bound: vec![] }
}

fn cases() -> Vec<(&'static str, Build)> {
    vec![
        ("matmul", |g| {
            let (n, m, k, _) = dims();
            let x = g.param("X", s(&[&n, &k])).unwrap();
            let y = g.param("Y", s(&[&k, &m])).unwrap();
            plain(g.matmul(x, y).unwrap(), vec![x, y])
        }),
        ("batched_matmul", |g| {
            let (n, m, k, _) = dims();
            let x = g.param("X", s(&[&m, &n, &k])).unwrap();
            let y = g.param("Y", s(&[&m, &k, &n])).unwrap();
            plain(g.matmul(x, y).unwrap(), vec![x, y])
        }),
        ("transpose", |g| unary(g, |g, x| g.transpose(x).unwrap(), false)),
        ("permute", |g| {
            let (n, m, k, _) = dims();
            let x = g.param("X", s(&[&n, &m, &k])).unwrap();
            plain(g.permute(x, &[2, 0, 1]).unwrap(), vec![x])
        }),
        ("reshape", |g| {
            let (n, m, k, _) = dims();
            let x = g.param("X", s(&[&n, &m, &k])).unwrap();
            plain(g.reshape(x, Shape::new([n.mul(&m), k])).unwrap(), vec![x])
        }),
        ("slice", |g| {
            let (_, _, k, _) = dims();
            let one = Dim::lit(1);
            unary(g, move |g, x| g.slice(x, 1, one.clone(), k.sub(&one)).unwrap(), false)
        }),
        ("pad", |g| unary(g, |g, x| g.pad(x, 0, Dim::lit(1), Dim::lit(2)).unwrap(), false)),
        ("concat", |g| {
            let (n, m, k, _) = dims();
            let x = g.param("X", s(&[&n, &k])).unwrap();
            let y = g.param("Y", s(&[&n, &m])).unwrap();
            let z = g.param("Z", s(&[&n, &k])).unwrap();
            plain(g.concat(&[x, y, z], 1).unwrap(), vec![x, y, z])
        }),
        ("broadcast", |g| {
            let (n, _, k, _) = dims();
            let b = g.param("b", s(&[&k])).unwrap();
            plain(g.broadcast(b, 0, n).unwrap(), vec![b])
        }),
        ("broadcast_inner", |g| {
            let (n, m, k, _) = dims();
            let b = g.param("b", s(&[&n, &k])).unwrap();
            plain(g.broadcast(b, 1, m).unwrap(), vec![b])
        }),
        ("add", |g| binary(g, |g, x, y| g.add(x, y).unwrap(), false)),
        ("sub", |g| binary(g, |g, x, y| g.sub(x, y).unwrap(), false)),
        ("mul", |g| binary(g, |g, x, y| g.mul(x, y).unwrap(), false)),
        ("div", |g| binary(g, |g, x, y| g.div(x, y).unwrap(), true)),
        ("mul_self", |g| unary(g, |g, x| g.mul(x, x).unwrap(), false)),
        ("neg", |g| unary(g, |g, x| g.neg(x).unwrap(), false)),
        ("scale", |g| unary(g, |g, x| g.scale(x, Scalar::inv_sqrt(&Dim::sym("K"))).unwrap(), false)),
        ("shift", |g| unary(g, |g, x| g.shift(x, Scalar::named("ε", 1e-5)).unwrap(), false)),
        ("exp", |g| unary(g, |g, x| g.exp(x).unwrap(), false)),
        ("log", |g| unary(g, |g, x| g.log(x).unwrap(), true)),
        ("tanh", |g| unary(g, |g, x| g.tanh(x).unwrap(), false)),
        ("sqrt", |g| unary(g, |g, x| g.sqrt(x).unwrap(), true)),
        ("relu", |g| unary(g, |g, x| g.relu(x).unwrap(), false)),
        ("gelu", |g| unary(g, |g, x| g.gelu(x).unwrap(), false)),
        ("step_times", |g| {
            binary(
                g,
                |g, x, y| {
                    let st = g.step(x).unwrap();
                    g.mul(st, y).unwrap()
                },
                false,
            )
        }),
        ("sum_rows", |g| unary(g, |g, x| g.sum(x, 0).unwrap(), false)),
        ("sum_cols", |g| unary(g, |g, x| g.sum(x, 1).unwrap(), false)),
        ("sum_all", |g| unary(g, |g, x| g.sum_all(x).unwrap(), false)),
        ("max", |g| unary(g, |g, x| g.max(x, 1).unwrap(), false)),
        ("max_axis0", |g| unary(g, |g, x| g.max(x, 0).unwrap(), false)),
        ("argmax_mask_times", |g| {
            binary(
                g,
                |g, x, y| {
                    let m = g.argmax_mask(x, 1).unwrap();
                    g.mul(m, y).unwrap()
                },
                false,
            )
        }),
        ("gather", |g| {
            let (n, m, k, v) = dims();
            let table = g.param("E", s(&[&v, &k])).unwrap();
            let idx = g.index_input("idx", s(&[&n, &m])).unwrap();
            let out = g.gather(table, idx).unwrap();
            Case { out, wrt: vec![table], positive: vec![], index_bound: vec![("idx", 'V')] }
        }),
        ("scatter_add", |g| {
            let (n, _, k, v) = dims();
            let vals = g.param("G", s(&[&n, &k])).unwrap();
            let idx = g.index_input("idx", s(&[&n])).unwrap();
            let out = g.scatter_add(vals, idx, v).unwrap();
            Case { out, wrt: vec![vals], positive: vec![], index_bound: vec![("idx", 'V')] }
        }),
        ("one_hot_times", |g| {
            let (n, _, _, v) = dims();
            let x = g.param("X", s(&[&n, &v])).unwrap();
            let idx = g.index_input("y", s(&[&n])).unwrap();
            let hot = g.one_hot(idx, v).unwrap();
            let out = g.mul(hot, x).unwrap();
            Case { out, wrt: vec![x], positive: vec![], index_bound: vec![("y", 'V')] }
        }),
        ("causal_mask", |g| {
            let (n, m, _, _) = dims();
            let x = g.param("S", s(&[&n, &m, &m])).unwrap();
            plain(g.causal_mask(x, Scalar::num(-7.5)).unwrap(), vec![x])
        }),
        ("select", |g| {
            let (n, _, k, _) = dims();
            let m = g.data("m", s(&[&n, &k])).unwrap();
            let mask = g.step(m).unwrap();
            let x = g.param("X", s(&[&n, &k])).unwrap();
            let y = g.param("Y", s(&[&n, &k])).unwrap();
            plain(g.select(mask, x, y).unwrap(), vec![x, y])
        }),
    ]
}

fn env(sizes: [i64; 4]) -> DimEnv {
    ["N", "M", "K", "V"].iter().zip(sizes).map(|(k, v)| (k.to_string(), v)).collect()
}

#[test]
fn every_primitive_adjoint_matches_finite_differences() {
    let mut report = Vec::new();
    for (name, build) in cases() {
        for sizes in SIZES {
            let env = env(sizes);
            let mut g = Graph::new();
            let case = build(&mut g);
            let r = g.data("R", g.shape(case.out).clone()).unwrap();
            let weighted = g.mul(case.out, r).unwrap();
            let loss = g.sum_all(weighted).unwrap();
            let bounds: BTreeMap<&str, usize> =
                case.index_bound.iter().map(|(n, d)| (*n, env[&d.to_string()] as usize)).collect();
            let mut rng = Rng::new(sizes.iter().sum::<i64>() as u64);
            let feeds = random_feeds(&g, &env, &mut rng, &case.positive, &bounds);
            let err = check_gradients(&mut g, &env, &feeds, loss, &case.wrt, None, TOL);
            report.push(format!("{name} {sizes:?}: {err:.1e}"));
        }
    }
    assert_eq!(report.len(), cases().len() * SIZES.len());
}

#[test]
fn stop_grad_blocks_the_gradient() {
    let (n, _, k, _) = dims();
    let mut g = Graph::new();
    let x = g.param("X", s(&[&n, &k])).unwrap();
    let held = g.stop_grad(x).unwrap();
    let prod = g.mul(held, x).unwrap();
    let loss = g.sum_all(prod).unwrap();
    let grads = adjoint_compiler::autodiff::grad(&mut g, loss, &[x]).unwrap();
    let env = env(SIZES[1]);
    let mut rng = Rng::new(3);
    let feeds = random_feeds(&g, &env, &mut rng, &[], &BTreeMap::new());
    let values = adjoint_compiler::interp::evaluate(&g, &env, &feeds, &grads).unwrap();
    // d/dx Σ sg(x) ⊙ x = sg(x) = x: only the unblocked factor contributes.
    assert_eq!(values.get(grads[0]).unwrap(), &feeds["X"]);
}

#[test]
fn gelu_grad_has_no_adjoint_and_says_so() {
    let (n, _, k, _) = dims();
    let mut g = Graph::new();
    let x = g.param("X", s(&[&n, &k])).unwrap();
    let d = g.gelu_grad(x).unwrap();
    let loss = g.sum_all(d).unwrap();
    let err = adjoint_compiler::autodiff::grad(&mut g, loss, &[x]).unwrap_err();
    assert!(err.message.contains("second derivatives"), "{err}");
}
