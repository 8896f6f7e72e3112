//! Numerical edge cases through the generated (fused) GPT: logits and attention scores
//! of order ±1e4, and layernorm over constant rows. The loss and every gradient must be
//! finite, and the loss must still be the exact cross-entropy where it can be known.

use adjoint::ndarray::ArrayD;
use adjoint_tests::gpt;

fn sizes() -> gpt::Sizes {
    gpt::Sizes { D: 24, H: 3, F: 20, V: 31, T: 9, L: 2 }
}

fn batch(v: usize) -> (ArrayD<i32>, ArrayD<i32>) {
    let tokens = ArrayD::from_shape_fn(vec![2, 9], |ix| ((ix[0] * 5 + ix[1] * 3) % v) as i32);
    let targets = ArrayD::from_shape_fn(vec![2, 9], |ix| ((ix[0] + ix[1] * 7 + 2) % v) as i32);
    (tokens, targets)
}

/// Loss, logits and gradients, asserting every value is finite.
fn run_finite(params: &gpt::Params, what: &str) -> (f32, ArrayD<f32>) {
    let (tokens, targets) = batch(params.sizes.V);
    let inputs = gpt::Inputs { tokens: tokens.view(), targets: targets.view() };
    let mut grads = gpt::Params::zeros(&params.sizes).unwrap();
    let loss = gpt::grads(params, &inputs, &mut grads).unwrap();
    assert!(loss.is_finite(), "{what}: loss {loss}");
    for (name, g) in grads.named() {
        assert!(g.iter().all(|v| v.is_finite()), "{what}: gradient of {name} is not finite");
    }
    let logits = gpt::outputs(params, &inputs).unwrap().logits;
    assert!(logits.iter().all(|v| v.is_finite()), "{what}: logits not finite");
    (loss, logits)
}

#[test]
fn logits_of_order_1e4_give_finite_loss_and_gradients() {
    let mut params = gpt::Params::init(&sizes(), 3).unwrap();
    params.wte.mapv_inplace(|v| v * 200.0);
    params.lnf_g.mapv_inplace(|v| v * 50.0);
    let (loss, logits) = run_finite(&params, "large logits");
    let biggest = logits.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(biggest > 2e3, "the case must reach large logits, got {biggest}");
    // With logits this far apart the softmax is one-hot: the loss is the gap between
    // the largest logit and the target's, averaged, which is large but finite.
    assert!(loss > 10.0, "loss {loss}");
}

#[test]
fn attention_scores_of_order_1e4_give_finite_gradients() {
    let mut params = gpt::Params::init(&sizes(), 4).unwrap();
    for layer in &mut params.h {
        layer.attn_wq.mapv_inplace(|v| v * 300.0);
        layer.attn_wk.mapv_inplace(|v| v * 300.0);
    }
    run_finite(&params, "large attention scores");
}

#[test]
fn layernorm_over_constant_rows_is_finite() {
    let mut params = gpt::Params::init(&sizes(), 5).unwrap();
    // Every token embeds to the same constant row and positions add nothing: the first
    // layernorm sees rows with zero variance.
    params.wte.fill(0.25);
    params.wpe.fill(0.0);
    for layer in &mut params.h {
        for w in [&mut layer.attn_wo, &mut layer.mlp_w2] {
            w.fill(0.0);
        }
        layer.attn_bo.fill(0.0);
        layer.mlp_b2.fill(0.0);
    }
    let (loss, _) = run_finite(&params, "constant rows");
    // Constant rows normalise to zero, so every logit is β_f·e_v, the same constant for
    // every class: the loss is exactly ln V.
    let want = (params.sizes.V as f32).ln();
    assert!((loss - want).abs() < 1e-4, "loss {loss}, want ln V = {want}");
}
