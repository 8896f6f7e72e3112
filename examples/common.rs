//! The computations behind the examples, as functions, so tests can assert what the
//! examples print.

pub mod model;

/// `println!` that ignores a closed stdout (`train_gpt | head`): the run goes on and
/// saves its checkpoints instead of panicking on a broken pipe.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stdout().lock(), $($arg)*);
    }};
}

pub mod train;

/// The benchmark's configurations, `workload.py`'s CONFIGS: (name, [B, T, d, H, F, L, V]).
pub const GPT_CONFIGS: &[(&str, [usize; 7])] = &[
    ("tiny", [4, 32, 64, 2, 256, 2, 256]),
    ("small", [8, 128, 256, 4, 1024, 4, 2048]),
    ("gpt2", [4, 64, 768, 12, 3072, 12, 50257]),
];

use std::collections::BTreeMap;

use adjoint_compiler::autodiff;
use adjoint_compiler::dim::{Dim, DimEnv};
use adjoint_compiler::error::Result;
use adjoint_compiler::interp::{Tensor, evaluate};
use adjoint_compiler::ir::{Graph, Shape, ValueId};
use adjoint_compiler::library::{self, gpt};
use adjoint_compiler::pretty::{self, Style};
use ndarray::{ArrayD, IxDyn};

fn real(shape: &[usize], values: &[f64]) -> Tensor {
    Tensor::Real(ArrayD::from_shape_vec(IxDyn(shape), values.to_vec()).expect("shape matches values"))
}

fn values_of(t: &Tensor) -> Vec<f64> {
    t.real("example").map(|a| a.iter().copied().collect()).unwrap_or_default()
}

/// Seed 003: one linear unit `y = w₁x₁ + w₂x₂ + b` with squared loss, and one SGD step.
#[derive(Debug)]
pub struct Seed003 {
    pub y: f64,
    pub loss: f64,
    /// ∂L/∂w₁, ∂L/∂w₂, ∂L/∂b.
    pub grads: [f64; 3],
    /// w₁, w₂, b after one step with η = 0.01.
    pub updated: [f64; 3],
    pub y_after: f64,
}

pub fn seed_003() -> Result<Seed003> {
    let one = Dim::lit(1);
    let mut g = Graph::new();
    let x = g.data("x", Shape::new([one.clone(), Dim::lit(2)]))?;
    let w = g.param("w", Shape::new([Dim::lit(2), one.clone()]))?;
    let b = g.param("b", Shape::new([one.clone()]))?;
    let target = g.data("y_true", Shape::new([one.clone(), one.clone()]))?;
    let y = library::linear(&mut g, x, w, b)?;
    let err = g.sub(y, target)?;
    let sq = g.mul(err, err)?;
    let loss = g.sum_all(sq)?;
    let grads = autodiff::grad(&mut g, loss, &[w, b])?;

    let eval = |w_: [f64; 2], b_: f64| -> Result<(f64, f64, Vec<f64>, Vec<f64>)> {
        let feeds = BTreeMap::from([
            ("x".to_string(), real(&[1, 2], &[4.0, -3.0])),
            ("w".to_string(), real(&[2, 1], &w_)),
            ("b".to_string(), real(&[1], &[b_])),
            ("y_true".to_string(), real(&[1, 1], &[10.0])),
        ]);
        let v = evaluate(&g, &DimEnv::new(), &feeds, &[y, loss, grads[0], grads[1]])?;
        Ok((
            v.get(y)?.scalar()?,
            v.get(loss)?.scalar()?,
            values_of(v.get(grads[0])?),
            values_of(v.get(grads[1])?),
        ))
    };
    let (w0, b0, lr) = ([2.0, -1.0], 1.0, 0.01);
    let (y0, l0, gw, gb) = eval(w0, b0)?;
    let updated = [w0[0] - lr * gw[0], w0[1] - lr * gw[1], b0 - lr * gb[0]];
    let (y1, ..) = eval([updated[0], updated[1]], updated[2])?;
    Ok(Seed003 { y: y0, loss: l0, grads: [gw[0], gw[1], gb[0]], updated, y_after: y1 })
}

/// Seed 001: the LM head for one token, `logits = z·W_vocabᵀ`, cross-entropy on token 1.
#[derive(Debug)]
pub struct Seed001 {
    pub logits: Vec<f64>,
    pub probs: Vec<f64>,
    pub loss: f64,
    /// g = ∂L/∂logits = p − y.
    pub g: Vec<f64>,
    /// ∂L/∂W_vocab = gᵀ·z, 3×2 (row-major).
    pub grad_w_vocab: Vec<f64>,
    /// ∂L/∂z = g·W_vocab.
    pub grad_z: Vec<f64>,
}

pub fn seed_001() -> Result<Seed001> {
    let mut g = Graph::new();
    let (one, d, v) = (Dim::lit(1), Dim::lit(2), Dim::lit(3));
    let z = g.data("z", Shape::new([one.clone(), d.clone()]))?;
    let w_vocab = g.param("W_vocab", Shape::new([v, d]))?;
    let target = g.index_input("y", Shape::new([one]))?;
    let wt = g.transpose(w_vocab)?;
    let logits = g.matmul(z, wt)?;
    let probs = library::softmax(&mut g, logits)?;
    let loss = library::cross_entropy(&mut g, logits, target)?;
    let grads = autodiff::grad(&mut g, loss, &[logits, w_vocab, z])?;
    let feeds = BTreeMap::from([
        ("z".to_string(), real(&[1, 2], &[1.07006, 0.95765])),
        ("W_vocab".to_string(), real(&[3, 2], &[0.8, 0.2, 0.1, 0.5, -0.2, 0.4])),
        ("y".to_string(), Tensor::Index(ArrayD::from_shape_vec(IxDyn(&[1]), vec![1]).expect("one index"))),
    ]);
    let mut outputs = vec![logits, probs, loss];
    outputs.extend(&grads);
    let val = evaluate(&g, &DimEnv::new(), &feeds, &outputs)?;
    Ok(Seed001 {
        logits: values_of(val.get(logits)?),
        probs: values_of(val.get(probs)?),
        loss: val.get(loss)?.scalar()?,
        g: values_of(val.get(grads[0])?),
        grad_w_vocab: values_of(val.get(grads[1])?),
        grad_z: values_of(val.get(grads[2])?),
    })
}

/// One pre-LN block with the tied LM head (MATH.md §3), differentiated with respect to
/// every parameter: the graph and `(∂L/∂name, gradient)` outputs.
pub fn block_gradients() -> Result<(Graph, Vec<(String, ValueId)>)> {
    let mut model = gpt::build(1)?;
    let wrt: Vec<ValueId> = model.params.iter().map(|p| p.1).collect();
    let grads = autodiff::grad(&mut model.graph, model.loss, &wrt)?;
    let outputs = wrt
        .iter()
        .zip(grads)
        .map(|(&w, gw)| (format!("∂L/∂{}", model.graph.display_name(w).unwrap_or("?")), gw))
        .collect();
    Ok((model.graph, outputs))
}

/// The block's gradient formulas in `style`.
pub fn block_formulas(style: Style) -> Result<String> {
    let (g, outputs) = block_gradients()?;
    Ok(pretty::formulas(&g, &outputs, style))
}

adjoint::model! {
    /// Seed 003 in the DSL: one linear unit and a squared error (MATH.md §4).
    model LinearUnit {
        dims N;
        input x: [N, 2];
        input y_true: [N, 1];
        param w: [2, 1];
        param b: [1];
        let y = x @ w + b;
        loss sum((y - y_true) * (y - y_true));
    }
}

adjoint::model! {
    /// Seed 001 in the DSL: the tied LM head, logits = z·W_vocabᵀ, and cross-entropy.
    /// `z` is declared a parameter so that its gradient is derived too.
    model LmHead {
        dims N, D, V;
        input y: index[N];
        param z: [N, D];
        param W_vocab: [V, D];
        loss cross_entropy(z @ W_vocab.T, y);
    }
}

/// Seed 003 through the macro's generated code: `(loss, [∂w, ∂b])`.
pub fn seed_003_dsl() -> adjoint::Result<(f32, Vec<f32>)> {
    use adjoint::ndarray::{ArrayD, IxDyn};
    let mut params = linear_unit::Params::zeros(&linear_unit::Sizes {})?;
    params.w = ArrayD::from_shape_vec(IxDyn(&[2, 1]), vec![2.0, -1.0])
        .map_err(|e| adjoint::Error::new(e.to_string()))?;
    params.b = ArrayD::from_elem(IxDyn(&[1]), 1.0);
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![4.0f32, -3.0])
        .map_err(|e| adjoint::Error::new(e.to_string()))?;
    let y_true = ArrayD::from_elem(IxDyn(&[1, 1]), 10.0f32);
    let inputs = linear_unit::Inputs { x: x.view(), y_true: y_true.view() };
    let mut grads = linear_unit::Params::zeros(&params.sizes)?;
    let loss = linear_unit::grads(&params, &inputs, &mut grads)?;
    Ok((loss, grads.w.iter().chain(grads.b.iter()).copied().collect()))
}

/// Seed 001 through the macro's generated code: `(loss, ∂z, ∂W_vocab)`.
pub fn seed_001_dsl() -> adjoint::Result<(f32, Vec<f32>, Vec<f32>)> {
    use adjoint::ndarray::{ArrayD, IxDyn};
    let shape_err = |e: adjoint::ndarray::ShapeError| adjoint::Error::new(e.to_string());
    let mut params = lm_head::Params::zeros(&lm_head::Sizes { N: 1, D: 2, V: 3 })?;
    params.z = ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![1.07006, 0.95765]).map_err(shape_err)?;
    params.W_vocab =
        ArrayD::from_shape_vec(IxDyn(&[3, 2]), vec![0.8, 0.2, 0.1, 0.5, -0.2, 0.4]).map_err(shape_err)?;
    let y = ArrayD::from_elem(IxDyn(&[1]), 1i32);
    let mut grads = lm_head::Params::zeros(&params.sizes)?;
    let loss = lm_head::grads(&params, &lm_head::Inputs { y: y.view() }, &mut grads)?;
    Ok((loss, grads.z.iter().copied().collect(), grads.W_vocab.iter().copied().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// MATH.md §4, seed 003.
    #[test]
    fn seed_003_numbers() {
        let s = seed_003().unwrap();
        assert!(close(s.y, 12.0, 1e-12) && close(s.loss, 4.0, 1e-12), "{s:?}");
        for (got, want) in s.grads.iter().zip([16.0, -12.0, 4.0]) {
            assert!(close(*got, want, 1e-12), "{s:?}");
        }
        for (got, want) in s.updated.iter().zip([1.84, -0.88, 0.96]) {
            assert!(close(*got, want, 1e-12), "{s:?}");
        }
        assert!(close(s.y_after, 10.96, 1e-12), "{s:?}");
    }

    /// Seed 003 written in the DSL gives the same numbers, in f32.
    #[test]
    fn seed_003_in_the_dsl() {
        let (loss, grads) = seed_003_dsl().unwrap();
        assert!(close(loss as f64, 4.0, 1e-5), "{loss}");
        for (got, want) in grads.iter().zip([16.0, -12.0, 4.0]) {
            assert!(close(*got as f64, want, 1e-5), "{grads:?}");
        }
        assert!(linear_unit::formulas::W.contains("∂L/∂w"), "{}", linear_unit::formulas::W);
    }

    /// Seed 001 written in the DSL: the same loss, ∂z = g·W_vocab and ∂W_vocab = gᵀz.
    #[test]
    fn seed_001_in_the_dsl() {
        let (loss, grad_z, grad_w) = seed_001_dsl().unwrap();
        let s = seed_001().unwrap();
        assert!(close(loss as f64, s.loss, 1e-5), "{loss} vs {}", s.loss);
        for (got, want) in grad_z.iter().zip(&s.grad_z) {
            assert!(close(*got as f64, *want, 1e-5), "{grad_z:?} vs {:?}", s.grad_z);
        }
        for (got, want) in grad_w.iter().zip(&s.grad_w_vocab) {
            assert!(close(*got as f64, *want, 1e-5), "{grad_w:?} vs {:?}", s.grad_w_vocab);
        }
        assert!(close(s.grad_z[0], 0.281, 1e-3) && close(s.grad_z[1], -0.167, 1e-3));
    }

    /// MATH.md §4, seed 001 (the probabilities, not the logits the seed repeats; g·W_vocab,
    /// not logits·W_vocabᵀ).
    #[test]
    fn seed_001_numbers() {
        let s = seed_001().unwrap();
        for (got, want) in s.logits.iter().zip([1.0476, 0.5858, 0.1690]) {
            assert!(close(*got, want, 1e-4), "{s:?}");
        }
        for (got, want) in s.probs.iter().zip([0.489, 0.308, 0.203]) {
            assert!(close(*got, want, 1e-3), "{s:?}");
        }
        assert!(close(s.loss, 1.177, 1e-3), "{s:?}");
        for (got, want) in s.g.iter().zip([0.489, -0.692, 0.203]) {
            assert!(close(*got, want, 1e-3), "{s:?}");
        }
        // ∂L/∂W_vocab = gᵀ·z (3×2): row i is g_i·z.
        let z = [1.07006, 0.95765];
        for (i, row) in s.grad_w_vocab.chunks(2).enumerate() {
            for (got, zj) in row.iter().zip(z) {
                assert!(close(*got, s.g[i] * zj, 1e-12), "{s:?}");
            }
        }
        for (got, want) in s.grad_z.iter().zip([0.281, -0.167]) {
            assert!(close(*got, want, 1e-3), "{s:?}");
        }
    }
}
