//! Bad graphs and bad feeds are errors that say what is wrong, never panics.

use std::collections::BTreeMap;

use adjoint_compiler::autodiff;
use adjoint_compiler::dim::{Dim, DimEnv};
use adjoint_compiler::interp::{Tensor, evaluate};
use adjoint_compiler::ir::{Graph, Shape};
use adjoint_compiler::library::{self, gpt};
use ndarray::{ArrayD, IxDyn};

fn shape(names: &[&str]) -> Shape {
    Shape::new(names.iter().map(|n| Dim::sym(n)))
}

fn err_of<T: std::fmt::Debug>(r: Result<T, adjoint_compiler::error::Error>) -> String {
    r.expect_err("expected an error").message
}

#[test]
fn matmul_mismatch_names_op_shapes_and_dims() {
    let mut g = Graph::new();
    let x = g.data("X", shape(&["N", "D"])).unwrap();
    let w = g.param("W", shape(&["F", "D"])).unwrap();
    let msg = err_of(g.matmul(x, w));
    assert_eq!(msg, "matmul: inner dimensions differ: [N, D] · [F, D] (D ≠ F)");
}

#[test]
fn elementwise_mismatch_names_both_shapes() {
    let mut g = Graph::new();
    let x = g.data("X", Shape::new([Dim::sym("B").mul(&Dim::sym("T")), Dim::sym("D")])).unwrap();
    let y = g.data("Y", shape(&["T", "D"])).unwrap();
    let msg = err_of(g.add(x, y));
    assert!(msg.starts_with("add: shapes differ: [B*T, D] + [T, D]"), "{msg}");
}

#[test]
fn shape_rules_reject_invalid_graphs() {
    let mut g = Graph::new();
    let x = g.data("X", shape(&["N", "D"])).unwrap();
    let idx = g.index_input("i", shape(&["N"])).unwrap();
    assert!(
        err_of(g.reshape(x, shape(&["N", "F"])))
            .contains("reshape: [N, D] has D*N elements but [N, F] has F*N elements")
    );
    assert!(err_of(g.gather(x, x)).contains("gather: indices must be index values"));
    assert!(err_of(g.exp(idx)).contains("exp: the left operand must be f32"));
    assert!(err_of(g.sum(x, 2)).contains("axis 2 is out of range for shape [N, D]"));
    assert!(err_of(g.permute(x, &[0, 0])).contains("not a permutation"));
    assert!(err_of(g.causal_mask(x, adjoint_compiler::scalar::Scalar::num(0.0))).contains("last two axes"));
    assert!(err_of(g.data("X", shape(&["N"]))).contains("declared twice"));
    let gamma = g.param("γ", shape(&["F"])).unwrap();
    assert!(err_of(library::layernorm(&mut g, x, gamma, gamma, 1e-5)).contains("layernorm: γ [F] and β [F]"));
}

#[test]
fn autodiff_rejects_index_gradients_and_non_scalar_losses() {
    let mut g = Graph::new();
    let x = g.param("X", shape(&["N", "D"])).unwrap();
    let idx = g.index_input("tokens", shape(&["N"])).unwrap();
    let s = g.sum_all(x).unwrap();
    assert!(err_of(autodiff::grad(&mut g, s, &[idx])).contains("`tokens`, which holds indices"));
    assert!(err_of(autodiff::grad(&mut g, x, &[x])).contains("the loss must be a scalar, got shape [N, D]"));
}

#[test]
fn values_the_loss_does_not_reach_get_zero_and_no_adjoint() {
    let mut g = Graph::new();
    let x = g.param("X", shape(&["N"])).unwrap();
    let unused = g.param("U", shape(&["N"])).unwrap();
    let loss = g.sum_all(x).unwrap();
    let before = g.len();
    let grads = autodiff::grad(&mut g, loss, &[unused]).unwrap();
    // Only the seed and the zero for `U` are added: nothing for `X`, which was not asked.
    assert!(g.len() - before <= 2, "{} nodes added", g.len() - before);
    let feeds = BTreeMap::from([
        ("X".to_string(), Tensor::Real(ArrayD::zeros(IxDyn(&[3])))),
        ("U".to_string(), Tensor::Real(ArrayD::zeros(IxDyn(&[3])))),
    ]);
    let v = evaluate(&g, &DimEnv::new(), &feeds, &grads).unwrap();
    assert_eq!(v.get(grads[0]).unwrap(), &Tensor::Real(ArrayD::zeros(IxDyn(&[3]))));
}

#[test]
fn bad_feeds_are_errors_naming_the_input_and_dimension() {
    let model = gpt::build(1).unwrap();
    let g = &model.graph;
    let real = |s: &[usize]| Tensor::Real(ArrayD::zeros(IxDyn(s)));
    let index = |s: &[usize], v: i64| Tensor::Index(ArrayD::from_elem(IxDyn(s), v));
    let mut feeds = BTreeMap::new();
    let (v, d, t, f) = (7, 6, 4, 5);
    for (name, id) in &model.params {
        let dims: Vec<usize> = g
            .shape(*id)
            .0
            .iter()
            .map(|x| match x.as_sym() {
                Some("V") => v,
                Some("D") => d,
                Some("T") => t,
                _ => f,
            })
            .collect();
        feeds.insert(name.clone(), real(&dims));
    }
    feeds.insert("tokens".into(), index(&[2, t], 0));
    feeds.insert("targets".into(), index(&[2, t], 0));
    let env = DimEnv::from([("H".to_string(), 2)]);
    assert!(evaluate(g, &env, &feeds, &[model.loss]).is_ok());

    let mut wrong = feeds.clone();
    wrong.insert("targets".into(), index(&[2, t + 1], 0));
    let msg = err_of(evaluate(g, &env, &wrong, &[model.loss]).map(|_| ()));
    assert!(msg.contains("input `targets`: axis 1 is dimension T = 4, got 5"), "{msg}");

    let mut out_of_range = feeds.clone();
    out_of_range.insert("tokens".into(), index(&[2, t], v as i64));
    let msg = err_of(evaluate(g, &env, &out_of_range, &[model.loss]).map(|_| ()));
    assert!(msg.contains("index 7 is out of range 0..7"), "{msg}");

    let mut unknown = feeds.clone();
    unknown.insert("wtee".into(), real(&[1]));
    assert!(err_of(evaluate(g, &env, &unknown, &[model.loss]).map(|_| ())).contains("`wtee` is fed"));

    let mut missing = feeds.clone();
    missing.remove("wpe");
    assert!(err_of(evaluate(g, &env, &missing, &[model.loss]).map(|_| ())).contains("`wpe` was not fed"));

    // 6 columns do not split into 4 heads.
    let four = DimEnv::from([("H".to_string(), 4)]);
    let msg = err_of(evaluate(g, &four, &feeds, &[model.loss]).map(|_| ()));
    assert!(msg.contains("D/H") && msg.contains("not a whole number"), "{msg}");
}

#[test]
fn split_gives_equal_slices_that_concat_back() {
    let mut g = Graph::new();
    let x = g.data("X", Shape::new([Dim::sym("N"), Dim::sym("D").mul(&Dim::lit(3))])).unwrap();
    let parts = g.split(x, 1, 3).unwrap();
    assert_eq!(g.shape(parts[2]).to_string(), "[N, D]");
    let back = g.concat(&parts, 1).unwrap();
    let vals: Vec<f64> = (0..12).map(f64::from).collect();
    let feeds = BTreeMap::from([(
        "X".to_string(),
        Tensor::Real(ArrayD::from_shape_vec(IxDyn(&[2, 6]), vals).unwrap()),
    )]);
    let env = DimEnv::from([("D".to_string(), 2)]);
    let v = evaluate(&g, &env, &feeds, &[back]).unwrap();
    assert_eq!(v.get(back).unwrap(), &feeds["X"]);
}
