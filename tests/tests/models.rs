//! Every model under `models/`, generated code (f32, fused loops) against the
//! compiler's interpreter (f64, one node at a time, the model unrolled): the loss and
//! every parameter gradient to 1e-4 relative, at odd sizes (no size a multiple of the
//! SIMD width), at single-row batches, and on every build of the fused loops this CPU
//! can run (portable, AVX2+FMA, AVX-512), each forced in turn.

use std::collections::BTreeMap;

use adjoint::ndarray::{ArrayD, IxDyn};
use adjoint_compiler::frontend::{Mode, lower_model};
use adjoint_compiler::interp::{Tensor, evaluate};
use adjoint_tests::{attn, embed, gpt, mlp};

/// The largest of `xs`, NaN if any is (`f64::max` drops NaNs, so a NaN gradient
/// would pass a tolerance).
fn max_nan(xs: impl IntoIterator<Item = f64>) -> f64 {
    xs.into_iter().fold(0.0, |m, x| if m.is_nan() || x.is_nan() { f64::NAN } else { m.max(x) })
}

/// `max|a − b| / max(max|b|, floor)`; NaN if any difference is.
fn rel_err(a: &ArrayD<f64>, b: &ArrayD<f64>, floor: f64) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let diff = max_nan(a.iter().zip(b).map(|(x, y)| (x - y).abs()));
    diff / b.iter().map(|y| y.abs()).fold(0.0, f64::max).max(floor)
}

/// Deterministic values in [−1, 1) from a seed and a position.
fn noise(shape: &[usize], seed: usize) -> ArrayD<f32> {
    let mut state = (seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    ArrayD::from_shape_simple_fn(IxDyn(shape), || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 20_000) as f32 / 10_000.0 - 1.0
    })
}

fn indices(shape: &[usize], bound: usize, seed: usize) -> ArrayD<i32> {
    let mut k = seed;
    ArrayD::from_shape_simple_fn(IxDyn(shape), || {
        k = (k * 7 + 3) % 1_000_003;
        (k % bound) as i32
    })
}

/// The interpreter's loss and parameter gradients for `model` at `sizes`.
fn interpret(
    model: &str,
    sizes: &[(&str, i64)],
    params: BTreeMap<String, ArrayD<f32>>,
    data: BTreeMap<String, Tensor>,
) -> (f64, BTreeMap<String, ArrayD<f64>>) {
    let path = format!("{}/models/{model}.adj", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap();
    let env: BTreeMap<String, i64> = sizes.iter().map(|&(k, v)| (k.to_string(), v)).collect();
    let program = lower_model(text.parse().unwrap(), &Mode::Unrolled(env.clone())).unwrap();
    let stage = &program.stages[0];
    let mut feeds: BTreeMap<String, Tensor> =
        params.into_iter().map(|(n, t)| (n, Tensor::Real(t.mapv(f64::from)))).collect();
    feeds.extend(data);
    let back = stage.backward.as_ref().unwrap();
    let mut wanted = vec![stage.output];
    wanted.extend(back.param_grads.iter().map(|g| g.1));
    let values = evaluate(&stage.graph, &env, &feeds, &wanted).unwrap();
    let loss = values.get(stage.output).unwrap().scalar().unwrap();
    let grads = back
        .param_grads
        .iter()
        .map(|&(i, id)| {
            (program.params[i].name.clone(), values.get(id).unwrap().real("grad").unwrap().clone())
        })
        .collect();
    (loss, grads)
}

/// Compares generated and interpreted results, on both builds of the fused loops.
fn compare(
    what: &str,
    run: &dyn Fn() -> (f32, BTreeMap<String, ArrayD<f32>>),
    want: &(f64, BTreeMap<String, ArrayD<f64>>),
) {
    // The build cap is process-wide: one comparison at a time.
    static CAP_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = CAP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for cap in adjoint::fused::paths() {
        adjoint::fused::force_path(Some(cap));
        assert_eq!(adjoint::fused::path(), cap);
        let (loss, grads) = run();
        adjoint::fused::force_path(None);
        let path = format!("{cap:?}");
        assert!(loss.is_finite(), "{what} ({path}): loss {loss}");
        assert!(
            (f64::from(loss) - want.0).abs() <= 1e-4 * want.0.abs().max(1e-3),
            "{what} ({path}): loss {loss} vs {}",
            want.0
        );
        assert_eq!(grads.len(), want.1.len(), "{what}: gradient count");
        for (name, g) in &grads {
            let (got, reference) = (g.mapv(f64::from), &want.1[name]);
            let scale = reference.iter().fold(0f64, |m, v| m.max(v.abs()));
            if scale < 1e-12 {
                // Zero in exact arithmetic (attention over one key has a constant
                // softmax): f32 must stay at rounding level.
                let worst = max_nan(got.iter().map(|v| v.abs()));
                assert!(worst <= 1e-6, "{what} ({path}): {name} should be 0, max |g| = {worst:.2e}");
                continue;
            }
            let err = rel_err(&got, reference, 1e-6);
            assert!(err <= 1e-4, "{what} ({path}): {name} relative error {err:.2e}");
        }
    }
}

/// The interpreter's feeds for a model whose inputs are `tokens` and `targets`.
fn token_feeds(tokens: &ArrayD<i32>, targets: &ArrayD<i32>) -> BTreeMap<String, Tensor> {
    BTreeMap::from([
        ("tokens".to_string(), Tensor::Index(tokens.mapv(i64::from))),
        ("targets".to_string(), Tensor::Index(targets.mapv(i64::from))),
    ])
}

fn named(list: Vec<(String, &ArrayD<f32>)>) -> BTreeMap<String, ArrayD<f32>> {
    list.into_iter().map(|(n, t)| (n, t.clone())).collect()
}

#[test]
fn gpt_matches_the_interpreter_at_odd_sizes_and_single_rows() {
    // d = 48, H = 3 (d_k = 16), T = 17, V = 97; then a one-sequence batch, and T = 1;
    // then T = 71, longer than two of the GEMM's 32-column tiles, so causal attention
    // skips whole tiles above the diagonal (not only parts of the diagonal ones).
    for (b, t, d, h, f, v, l) in [
        (2, 17, 48, 3, 40, 97, 2),
        (1, 17, 48, 3, 40, 97, 1),
        (3, 1, 12, 3, 20, 11, 1),
        (2, 71, 24, 2, 28, 53, 1),
    ] {
        let sizes = gpt::Sizes { D: d, H: h, F: f, V: v, T: t, L: l };
        let params = gpt::Params::init(&sizes, 5).unwrap();
        let tokens = indices(&[b, t], v, 1);
        let targets = indices(&[b, t], v, 2);
        let run = || {
            let inputs = gpt::Inputs { tokens: tokens.view(), targets: targets.view() };
            let mut grads = gpt::Params::zeros(&sizes).unwrap();
            let loss = gpt::grads(&params, &inputs, &mut grads).unwrap();
            (loss, named(grads.named()))
        };
        let dims = [("B", b), ("T", t), ("D", d), ("H", h), ("F", f), ("V", v), ("L", l)]
            .map(|(k, x)| (k, x as i64));
        let data = token_feeds(&tokens, &targets);
        let want = interpret("gpt", &dims, named(params.named()), data);
        compare(&format!("gpt B={b} T={t} D={d}"), &run, &want);
    }
}

#[test]
fn embedding_matches_the_interpreter_at_odd_sizes_and_single_rows() {
    // Repeated tokens (V < B·T) add several rows into one row of the gradient; a
    // single token leaves every other row zero.
    for (b, t, d, v) in [(3, 7, 13, 5), (2, 9, 21, 37), (1, 1, 3, 2)] {
        let sizes = embed::Sizes { T: t, D: d, V: v };
        let params = embed::Params::init(&sizes, 3).unwrap();
        let tokens = indices(&[b, t], v, 4);
        let targets = indices(&[b, t], v, 5);
        let run = || {
            let inputs = embed::Inputs { tokens: tokens.view(), targets: targets.view() };
            let mut grads = embed::Params::zeros(&sizes).unwrap();
            grads.wte.fill(f32::NAN); // every element is written, untouched rows as zeros
            let loss = embed::grads(&params, &inputs, &mut grads).unwrap();
            (loss, named(grads.named()))
        };
        let dims = [("B", b), ("T", t), ("D", d), ("V", v)].map(|(k, x)| (k, x as i64));
        let data = token_feeds(&tokens, &targets);
        let want = interpret("embedding", &dims, named(params.named()), data);
        compare(&format!("embedding B={b} T={t} D={d} V={v}"), &run, &want);
    }
}

#[test]
fn mlp_matches_the_interpreter_at_odd_sizes_and_single_rows() {
    for (n, d, f, l) in [(37, 19, 45, 2), (1, 19, 45, 2), (5, 3, 7, 1)] {
        let sizes = mlp::Sizes { D: d, F: f, L: l };
        let params = mlp::Params::init(&sizes, 3).unwrap();
        let x = noise(&[n, d], 4);
        let t = indices(&[n], d, 5);
        let run = || {
            let inputs = mlp::Inputs { x: x.view(), t: t.view() };
            let mut grads = mlp::Params::zeros(&sizes).unwrap();
            let loss = mlp::grads(&params, &inputs, &mut grads).unwrap();
            (loss, named(grads.named()))
        };
        let dims = [("N", n), ("D", d), ("F", f), ("L", l)].map(|(k, v)| (k, v as i64));
        let data = BTreeMap::from([
            ("x".to_string(), Tensor::Real(x.mapv(f64::from))),
            ("t".to_string(), Tensor::Index(t.mapv(i64::from))),
        ]);
        let want = interpret("mlp", &dims, named(params.named()), data);
        compare(&format!("mlp N={n} D={d}"), &run, &want);
    }
}

#[test]
fn attention_matches_the_interpreter_at_odd_sizes_and_single_rows() {
    for (b, t, d, h) in [(3, 17, 48, 3), (1, 13, 15, 5), (2, 1, 6, 2)] {
        let sizes = attn::Sizes { B: b, T: t, D: d, H: h };
        let params = attn::Params::init(&sizes, 7).unwrap();
        let x = noise(&[b * t, d], 8);
        let y = noise(&[b * t, d], 9);
        let run = || {
            let inputs = attn::Inputs { x: x.view(), y: y.view() };
            let mut grads = attn::Params::zeros(&sizes).unwrap();
            let loss = attn::grads(&params, &inputs, &mut grads).unwrap();
            (loss, named(grads.named()))
        };
        let dims = [("B", b), ("T", t), ("D", d), ("H", h)].map(|(k, v)| (k, v as i64));
        let data = BTreeMap::from([
            ("x".to_string(), Tensor::Real(x.mapv(f64::from))),
            ("y".to_string(), Tensor::Real(y.mapv(f64::from))),
        ]);
        let want = interpret("attention", &dims, named(params.named()), data);
        compare(&format!("attention B={b} T={t} D={d}"), &run, &want);
    }
}

/// `grads` on a batch split in two (the default for the GPT and the MLP, whose losses
/// are means over examples) equals `grads` on the whole batch, to f32 rounding: the
/// parts' weights are right for an odd split (1 + 2 sequences, 18 + 19 rows).
#[test]
fn split_batches_match_whole_batches() {
    let check = |what: &str, run: &dyn Fn() -> (f32, BTreeMap<String, ArrayD<f32>>)| {
        let before = adjoint::parallel::split_steps();
        let (loss, grads) = run();
        assert_eq!(adjoint::parallel::split_steps(), before + 1, "{what}: the step did not split");
        let (whole_loss, whole) = adjoint::parallel::whole_batch(run);
        assert_eq!(adjoint::parallel::split_steps(), before + 1, "{what}: the whole batch split");
        assert!((loss - whole_loss).abs() <= 1e-6 * whole_loss.abs(), "{what}: loss {loss} vs {whole_loss}");
        // Errors relative to each gradient's scale, floored at a thousandth of the largest
        // one: the key bias's gradient is zero in exact arithmetic (a softmax ignores a
        // shift shared by every key), so it is rounding noise in both paths.
        let largest = whole.values().flat_map(|g| g.iter()).fold(0f32, |m, v| m.max(v.abs()));
        for (name, g) in &grads {
            let floor = 1e-3 * f64::from(largest);
            let err = rel_err(&g.mapv(f64::from), &whole[name].mapv(f64::from), floor);
            assert!(err <= 1e-5, "{what}: {name} relative error {err:.2e}");
        }
    };
    let sizes = gpt::Sizes { D: 48, H: 3, F: 40, V: 97, T: 17, L: 2 };
    let params = gpt::Params::init(&sizes, 5).unwrap();
    let (tokens, targets) = (indices(&[3, 17], 97, 1), indices(&[3, 17], 97, 2));
    check("gpt B=3", &|| {
        let inputs = gpt::Inputs { tokens: tokens.view(), targets: targets.view() };
        let mut grads = gpt::Params::zeros(&sizes).unwrap();
        (gpt::grads(&params, &inputs, &mut grads).unwrap(), named(grads.named()))
    });
    let sizes = mlp::Sizes { D: 19, F: 45, L: 2 };
    let params = mlp::Params::init(&sizes, 3).unwrap();
    let (x, t) = (noise(&[37, 19], 4), indices(&[37], 19, 5));
    check("mlp N=37", &|| {
        let inputs = mlp::Inputs { x: x.view(), t: t.view() };
        let mut grads = mlp::Params::zeros(&sizes).unwrap();
        (mlp::grads(&params, &inputs, &mut grads).unwrap(), named(grads.named()))
    });
}

/// Inputs whose batch sizes disagree are not split: the whole-batch path reports them.
#[test]
fn mismatched_batches_are_an_error_not_a_split() {
    let sizes = gpt::Sizes { D: 12, H: 3, F: 20, V: 11, T: 5, L: 1 };
    let params = gpt::Params::init(&sizes, 5).unwrap();
    let (tokens, targets) = (indices(&[4, 5], 11, 1), indices(&[3, 5], 11, 2));
    let inputs = gpt::Inputs { tokens: tokens.view(), targets: targets.view() };
    let mut grads = gpt::Params::zeros(&sizes).unwrap();
    let before = adjoint::parallel::split_steps();
    assert!(gpt::grads(&params, &inputs, &mut grads).is_err());
    assert_eq!(adjoint::parallel::split_steps(), before);
}

/// Each model's execution plan (fused loops, kernels, saved bytes) is a snapshot: a
/// change in what is fused, saved or recomputed shows up in review.
#[test]
fn plans_snapshot() {
    for model in ["gpt", "mlp", "attention", "embedding"] {
        let path = format!("{}/models/{model}.adj", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let compiled = adjoint_compiler::build::compile_text(&text, &path).unwrap();
        let plan = adjoint_compiler::backend::plan::describe(&compiled.program);
        assert_eq!(plan, adjoint_compiler::backend::plan::describe(&compiled.program));
        insta::assert_snapshot!(format!("plan_{model}"), plan);
    }
}

/// `train_step` is `grads` followed by the optimizer's update (on a split batch it adds
/// the parts' gradients inside the update's pass; on a whole one it does not), for SGD
/// and AdamW, and lowers the loss.
#[test]
fn train_step_is_grads_then_update() {
    use adjoint::optim::{Method, Optimizer};
    let sizes = mlp::Sizes { D: 19, F: 45, L: 2 };
    let x = noise(&[37, 19], 4);
    let t = indices(&[37], 19, 5);
    let inputs = mlp::Inputs { x: x.view(), t: t.view() };
    let adamw = Method::AdamW { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
    for whole in [false, true] {
        for method in [Method::Sgd, adamw] {
            let run = || {
                let mut params = mlp::Params::init(&sizes, 3).unwrap();
                let mut by_hand = params.clone();
                let mut grads = mlp::Params::zeros(&sizes).unwrap();
                let (mut opt, mut opt_by_hand) = (Optimizer::new(method), Optimizer::new(method));
                let splits = adjoint::parallel::split_steps();
                for step in 0..2 {
                    let loss = mlp::grads(&by_hand, &inputs, &mut grads).unwrap();
                    opt_by_hand.update(0.05, by_hand.named_mut(), &grads.named()).unwrap();
                    let stepped = mlp::train_step(&mut params, &inputs, &mut grads, &mut opt, 0.05).unwrap();
                    assert_eq!(stepped, loss, "{method:?} step {step}");
                    for ((name, a), (_, b)) in params.named().into_iter().zip(by_hand.named()) {
                        assert_eq!(a, b, "{method:?} step {step}: {name}");
                    }
                }
                // Two steps each way: four `grads` calls, all split or none.
                assert_eq!(adjoint::parallel::split_steps() - splits, if whole { 0 } else { 4 });
                let (before, after) = (
                    mlp::loss(&mlp::Params::init(&sizes, 3).unwrap(), &inputs).unwrap(),
                    mlp::loss(&params, &inputs).unwrap(),
                );
                assert!(after < before, "{method:?}: two steps should lower the loss: {before} → {after}");
            };
            if whole { adjoint::parallel::whole_batch(run) } else { run() }
        }
    }
}
