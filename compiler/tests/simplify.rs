//! The e-graph finds the textbook backward forms: each identity of issue 4 as a model
//! in, its simplified formula out (insta snapshot), plus an assertion on the form and a
//! numerical check that the simplified graph computes the same values.

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
    let used = |graph: &Graph| common::feeds_of(graph, &feeds);
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
    // d: 1/√d_k rides in the T×T loops that mask the scores and their gradient, where a
    // multiply is free; on a T×d operand (smaller, but a view of the heads' layout) it
    // would be a copying pass of its own, forward and backward.
    assert!(!has_op_on(&s.graph, "scale", &shape(&["T", "K"])), "{after}");
    assert!(after.contains("S' = mask₋∞(S) / √K") && after.contains("dS = mask₀(dS') / √K"), "{after}");
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

#[test]
fn e_double_transposes_removed_and_absorbed_into_products() {
    use adjoint_compiler::ops::{Layout, Op};
    let mut g = Graph::new();
    let x = g.data("X", shape(&["N", "D"])).unwrap();
    let w = g.param("W", shape(&["D", "F"])).unwrap();
    // Built raw: the graph builder would already fold these.
    let t = |g: &mut Graph, v| g.apply(Op::Layout(Layout::Permute(vec![1, 0])), &[v]).unwrap();
    let xtt = {
        let xt = t(&mut g, x);
        t(&mut g, xt)
    };
    let y = g.apply(Op::Matmul, &[xtt, w]).unwrap();
    let yt = t(&mut g, y);
    g.name(yt, "Yᵀ");
    let (before, after, s) = simplify(&g, &[("Yᵀ", yt)], &[("N", 3), ("D", 4), ("F", 5)], &[], &[], &[]);
    assert!(before.contains("(Xᵀᵀ·W)ᵀ"), "{before}");
    assert_eq!(after.trim(), "Yᵀ = Wᵀ·Xᵀ");
    // Every transpose left is an operand of a product (a GEMM reads it in place).
    let users = s.graph.users();
    for id in s.graph.ids() {
        if matches!(s.graph.node(id).op, Op::Layout(Layout::Permute(_))) {
            assert!(users[id.index()].iter().all(|&u| matches!(s.graph.node(u).op, Op::Matmul)));
        }
    }
    insta::assert_snapshot!(after);
}

#[test]
fn i_zeros_and_identities_removed_and_dead_values_pruned() {
    use adjoint_compiler::ops::{Op, Pointwise};
    use adjoint_compiler::scalar::Scalar;
    let mut g = Graph::new();
    let x = g.data("x", shape(&["N", "D"])).unwrap();
    let w = g.param("W", shape(&["D", "D"])).unwrap();
    let ones = g.fill(Scalar::num(1.0), shape(&["N", "D"])).unwrap();
    let zeros = g.fill(Scalar::num(0.0), shape(&["N", "D"])).unwrap();
    let expensive = {
        let e = g.exp(x).unwrap();
        g.matmul(e, w).unwrap()
    };
    let killed = g.apply(Op::Pointwise(Pointwise::Mul), &[zeros, expensive]).unwrap();
    let kept = g.apply(Op::Pointwise(Pointwise::Mul), &[x, ones]).unwrap();
    let sum = g.apply(Op::Pointwise(Pointwise::Add), &[kept, killed]).unwrap();
    let scaled = g.apply(Op::Pointwise(Pointwise::Scale(Scalar::num(1.0))), &[sum]).unwrap();
    let y = g.matmul(scaled, w).unwrap();
    g.name(y, "y");
    let (before, after, s) = simplify(&g, &[("y", y)], &[("N", 3), ("D", 4)], &[], &[], &[]);
    assert!(before.contains("exp(x)"), "{before}");
    assert_eq!(after.trim(), "y = x·W");
    assert_eq!(s.graph.len(), 3, "x, W and the product: nothing else survives");
    insta::assert_snapshot!(after);
}

/// The cheapest order of `A₁·…·Aₙ` (`dims[i] × dims[i+1]` each) under the cost model:
/// matrix-chain dynamic programming.
fn chain_optimum(dims: &[i64]) -> f64 {
    let n = dims.len() - 1;
    let cost = |m: i64, k: i64, p: i64| (2 * m * k * p) as f64 + 4.0 * (m * k + k * p + m * p) as f64;
    let mut best = vec![vec![0.0f64; n]; n];
    for len in 2..=n {
        for i in 0..=n - len {
            let j = i + len - 1;
            best[i][j] = (i..j)
                .map(|s| best[i][s] + best[s + 1][j] + cost(dims[i], dims[s + 1], dims[j + 1]))
                .fold(f64::INFINITY, f64::min);
        }
    }
    best[0][n - 1]
}

#[test]
fn g_matmul_chains_take_the_dynamic_programming_order() {
    let mut rng = common::Rng::new(2024);
    for trial in 0..40 {
        let n = 2 + rng.below(7); // 2..=8 matrices
        let dims: Vec<i64> = (0..=n).map(|_| [1, 3, 8, 16, 64, 200, 512][rng.below(7)]).collect();
        let names: Vec<String> = (0..=n).map(|i| format!("d{i}")).collect();
        let mut g = Graph::new();
        let mats: Vec<ValueId> =
            (0..n).map(|i| g.data(&format!("A{i}"), shape(&[&names[i], &names[i + 1]])).unwrap()).collect();
        let mut prod = mats[0];
        for &m in &mats[1..] {
            prod = g.matmul(prod, m).unwrap();
        }
        let mut options = Options::default();
        options.sizes.sizes = names.iter().cloned().zip(dims.iter().copied()).collect();
        let s = egraph::simplify(&g, &[prod], &options).unwrap();
        let want = chain_optimum(&dims);
        assert!(
            (s.report.cost_after - want).abs() <= 1e-9 * want,
            "trial {trial}: dims {dims:?}: extracted {} but the optimum is {want} ({})",
            s.report.cost_after,
            s.report
        );
    }
    // One chain shown: (A₀·A₁)·A₂ with a thin middle is re-associated.
    let mut g = Graph::new();
    let a0 = g.data("A", shape(&["M", "K"])).unwrap();
    let a1 = g.data("B", shape(&["K", "M"])).unwrap();
    let a2 = g.data("C", shape(&["M", "K"])).unwrap();
    let ab = g.matmul(a0, a1).unwrap();
    let abc = g.matmul(ab, a2).unwrap();
    let (before, after, _) =
        simplify(&g, &[("Y", abc)], &[("M", 4), ("K", 2)], &[], &[], &[("M", 512), ("K", 8)]);
    assert_eq!(before.trim(), "Y = A·B·C");
    assert_eq!(after.trim(), "Y = A·(B·C)");
    insta::assert_snapshot!(after);
}

#[test]
fn f_qkv_products_share_one_matmul() {
    let mut g = Graph::new();
    let x = g.data("X", shape(&["N", "D"])).unwrap();
    let w: Vec<ValueId> =
        ["W_q", "W_k", "W_v"].iter().map(|n| g.param(n, shape(&["D", "D"])).unwrap()).collect();
    let outs: Vec<ValueId> = w.iter().map(|&w| g.matmul(x, w).unwrap()).collect();
    let seeds: Vec<(ValueId, ValueId)> = ["dQ", "dK", "dV"]
        .iter()
        .zip(&outs)
        .map(|(n, &o)| (o, g.data(n, shape(&["N", "D"])).unwrap()))
        .collect();
    let grads = autodiff::backward(&mut g, &seeds, &[x, w[0], w[1], w[2]]).unwrap();
    let (before, after, s) = simplify(
        &g,
        &[("∂L/∂X", grads[0]), ("∂L/∂W_q", grads[1]), ("∂L/∂W_k", grads[2]), ("∂L/∂W_v", grads[3])],
        &[("N", 4), ("D", 3)],
        &[],
        &[],
        &[("N", 512), ("D", 256)],
    );
    assert_eq!(before.matches('·').count(), 6, "{before}");
    // One product for dX over concatenated operands, one for the three weight gradients.
    assert_eq!(
        s.graph.ids().filter(|&id| matches!(s.graph.node(id).op, adjoint_compiler::ops::Op::Matmul)).count(),
        2
    );
    // The weights concatenated as they are stored and read transposed by the product
    // (a concatenation of three transposes would copy each).
    assert!(after.contains("∂L/∂X = [dV | dK | dQ]·[W_v | W_k | W_q]ᵀ"), "{after}");
    assert!(after.contains("= Xᵀ·[dQ | dK | dV]") && after.contains("∂L/∂W_k = M[1: D..2*D]"), "{after}");
    insta::assert_snapshot!(after);
}

#[test]
fn the_same_model_text_gives_the_same_formulas_and_code() {
    let text = include_str!("../../tests/models/gpt.adj");
    let once = |_| {
        let c = adjoint_compiler::build::compile_text(text, "gpt.adj").unwrap();
        (
            adjoint_compiler::build::rust_source(&c).unwrap(),
            c.reports.iter().map(|r| r.cost_after).sum::<f64>(),
        )
    };
    let (a, b) = (once(0), once(1));
    assert!(a.0 == b.0, "generated code differs between two compilations");
    assert_eq!(a.1, b.1);
}
