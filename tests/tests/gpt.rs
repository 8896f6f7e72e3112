//! The DSL GPT's generated code (f32) against PyTorch float64 and against the
//! compiler's interpreter (f64, the model unrolled into one graph).

use std::collections::BTreeMap;

use adjoint::ndarray::ArrayD;
use adjoint_compiler::frontend::{Mode, lower_model};
use adjoint_compiler::interp::{Tensor, evaluate};
use adjoint_tests::gpt;

fn read(path: &str) -> BTreeMap<String, ArrayD<f64>> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, v)| {
            let d = v.data();
            let vals: Vec<f64> = match v.dtype() {
                safetensors::Dtype::F32 => {
                    d.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect()
                }
                safetensors::Dtype::F64 => {
                    d.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
                }
                safetensors::Dtype::I32 => {
                    d.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64).collect()
                }
                other => panic!("{other:?}"),
            };
            (name, ArrayD::from_shape_vec(v.shape().to_vec(), vals).unwrap())
        })
        .collect()
}

/// `max|a − b| / max(max|b|, floor)`, as `check_grads.py` measures.
fn rel_err(a: &ArrayD<f64>, b: &ArrayD<f64>, floor: f64) -> f64 {
    assert_eq!(a.shape(), b.shape());
    // NaN if any difference is: `f64::max` drops NaNs, so a NaN gradient would pass.
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f64, |m, d| if m.is_nan() || d.is_nan() { f64::NAN } else { m.max(d) });
    diff / b.iter().map(|y| y.abs()).fold(0.0, f64::max).max(floor)
}

fn to_f64(a: &ArrayD<f32>) -> ArrayD<f64> {
    a.mapv(|v| v as f64)
}

fn run(params: &gpt::Params, tokens: &ArrayD<i32>, targets: &ArrayD<i32>) -> (f32, gpt::Grads) {
    let inputs = gpt::Inputs { tokens: tokens.view(), targets: targets.view() };
    let mut grads = gpt::Params::zeros(&params.sizes).unwrap();
    let loss = gpt::grads(params, &inputs, &mut grads).unwrap();
    assert_eq!(gpt::loss(params, &inputs).unwrap(), loss);
    (loss, grads)
}

#[test]
fn generated_gpt_matches_pytorch_float64() {
    for (case, heads) in [("h3", 3), ("h5", 5)] {
        let dir = format!("{}/../compiler/tests/data/peers/{case}", env!("CARGO_MANIFEST_DIR"));
        let p = read(&format!("{dir}/params.safetensors"));
        let batch = read(&format!("{dir}/batch.safetensors"));
        let reference = read(&format!("{dir}/grads.safetensors"));
        let tensors: BTreeMap<String, ArrayD<f32>> =
            p.iter().map(|(k, v)| (k.clone(), v.mapv(|x| x as f32))).collect();
        let shapes = tensors.iter().map(|(k, v)| (k.clone(), v.shape().to_vec())).collect();
        let sizes = gpt::Sizes::infer(&shapes, &[("H", heads)]).unwrap();
        let params = gpt::Params::from_named(tensors, &sizes).unwrap();
        let idx = |k: &str| batch[k].mapv(|v| v as i32);
        let (loss, grads) = run(&params, &idx("tokens"), &idx("targets"));
        let ref_loss = reference["loss"].iter().next().copied().unwrap();
        assert!(
            ((loss as f64) - ref_loss).abs() / ref_loss.abs() < 1e-5,
            "{case}: loss {loss} vs {ref_loss}"
        );
        let named = grads.named();
        assert_eq!(named.len() + 1, reference.len(), "{case}: tensor count");
        for (name, g) in named {
            let err = rel_err(&to_f64(g), &reference[&name], 1e-5);
            assert!(err <= 1e-4, "{case}: {name} relative error {err:.2e}");
        }
    }
}

#[test]
fn generated_gpt_matches_the_interpreter_on_odd_sizes() {
    let sizes = gpt::Sizes { D: 12, H: 3, F: 10, V: 13, T: 5, L: 2 };
    let params = gpt::Params::init(&sizes, 11).unwrap();
    let (b, t) = (3, 5);
    let tokens = ArrayD::from_shape_fn(vec![b, t], |ix| ((ix[0] * 7 + ix[1] * 5) % 13) as i32);
    let targets = ArrayD::from_shape_fn(vec![b, t], |ix| ((ix[0] * 3 + ix[1] * 11 + 1) % 13) as i32);
    let (loss, grads) = run(&params, &tokens, &targets);

    let text = std::fs::read_to_string(format!("{}/models/gpt.adj", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let env: BTreeMap<String, i64> =
        [("B", 3), ("T", 5), ("D", 12), ("H", 3), ("F", 10), ("V", 13), ("L", 2)]
            .map(|(k, v)| (k.to_string(), v))
            .into();
    let program = lower_model(text.parse().unwrap(), &Mode::Unrolled(env.clone())).unwrap();
    assert_eq!(program.stages.len(), 1, "unrolled: one stage");
    let stage = &program.stages[0];
    let mut feeds: BTreeMap<String, Tensor> =
        params.named().into_iter().map(|(n, t)| (n, Tensor::Real(to_f64(t)))).collect();
    feeds.insert("tokens".into(), Tensor::Index(tokens.mapv(|v| v as i64)));
    feeds.insert("targets".into(), Tensor::Index(targets.mapv(|v| v as i64)));
    let back = stage.backward.as_ref().unwrap();
    let mut outputs = vec![stage.output];
    outputs.extend(back.param_grads.iter().map(|g| g.1));
    assert_eq!(program.outputs.len(), 1, "`output logits;`");
    let logits_id = program.outputs[0].1;
    outputs.push(logits_id);
    let values = evaluate(&stage.graph, &env, &feeds, &outputs).unwrap();
    // `outputs()`, the forward pass alone, gives the interpreter's logits.
    let inputs = gpt::Inputs { tokens: tokens.view(), targets: targets.view() };
    let logits = gpt::outputs(&params, &inputs).unwrap().logits;
    assert_eq!(logits.shape(), &[b * t, 13]);
    let err = rel_err(&to_f64(&logits), values.get(logits_id).unwrap().real("logits").unwrap(), 1e-6);
    assert!(err <= 1e-5, "logits: relative error {err:.2e}");
    // `Params::shapes` lists what `named` holds, without allocating.
    let listed: Vec<(String, Vec<usize>)> =
        params.named().into_iter().map(|(n, t)| (n, t.shape().to_vec())).collect();
    assert_eq!(gpt::Params::shapes(&sizes).unwrap(), listed);
    let want_loss = values.get(stage.output).unwrap().scalar().unwrap();
    assert!(((loss as f64) - want_loss).abs() < 1e-5 * want_loss.abs(), "loss {loss} vs {want_loss}");
    let by_name: BTreeMap<String, ArrayD<f32>> =
        grads.named().into_iter().map(|(n, t)| (n, t.clone())).collect();
    assert_eq!(by_name.len(), back.param_grads.len());
    for &(i, id) in &back.param_grads {
        let name = &program.params[i].name;
        let want = values.get(id).unwrap().real("grad").unwrap();
        let err = rel_err(&to_f64(&by_name[name]), want, 1e-6);
        assert!(err <= 1e-4, "{name}: relative error {err:.2e}");
    }
}

#[test]
fn wrong_input_shapes_are_errors_naming_the_dimension() {
    let sizes = gpt::Sizes { D: 12, H: 3, F: 10, V: 13, T: 5, L: 1 };
    let params = gpt::Params::init(&sizes, 1).unwrap();
    let tokens = ArrayD::<i32>::zeros(vec![2, 4]);
    let targets = ArrayD::<i32>::zeros(vec![2, 5]);
    let inputs = gpt::Inputs { tokens: tokens.view(), targets: targets.view() };
    let err = gpt::loss(&params, &inputs).unwrap_err().message;
    assert_eq!(err, "input `tokens`: dimension T is 4 here but 5 in the sizes");
    let bad = ArrayD::<i32>::from_elem(vec![2, 5], 13);
    let inputs = gpt::Inputs { tokens: bad.view(), targets: targets.view() };
    let err = gpt::loss(&params, &inputs).unwrap_err().message;
    assert!(err.contains("index 13 is out of range 0..13"), "{err}");
    let mut missing: BTreeMap<String, ArrayD<f32>> =
        params.named().into_iter().map(|(n, t)| (n, t.clone())).collect();
    missing.remove("wte");
    missing.insert("extra".into(), ArrayD::zeros(vec![1]));
    missing.insert("wpe".into(), ArrayD::zeros(vec![4, 12]));
    let err = gpt::Params::from_named(missing, &sizes).unwrap_err().message;
    assert!(err.starts_with("3 problem(s)") && err.contains("`wte`") && err.contains("`extra`"), "{err}");
    // A parameter with an axis too many is an error naming it, in a layer too, though
    // its other axes have the right sizes.
    let mut extra_axis = params.clone();
    extra_axis.h[0].attn_wq = ArrayD::zeros(vec![12, 12, 1]);
    let inputs = gpt::Inputs { tokens: targets.view(), targets: targets.view() };
    let err = gpt::loss(&extra_axis, &inputs).unwrap_err().message;
    assert_eq!(err, "h0.attn.wq: expected 2 axes [D, D], got shape [12, 12, 1]");
    let mut missing_axis = params.clone();
    missing_axis.lnf_g = ArrayD::zeros(vec![]);
    let err = gpt::loss(&missing_axis, &inputs).unwrap_err().message;
    assert_eq!(err, "lnf.g: expected 1 axes [D], got shape []");
}

#[test]
fn gpt_formulas_snapshot() {
    let text: String = gpt::formulas::ALL.iter().map(|(n, u, _)| format!("## {n}\n{u}\n")).collect();
    insta::assert_snapshot!("gpt_formulas_unicode", text);
    let latex: String = gpt::formulas::ALL.iter().map(|(n, _, l)| format!("## {n}\n{l}\n")).collect();
    insta::assert_snapshot!("gpt_formulas_latex", latex);
}

#[test]
fn the_macro_example_and_the_model_file_are_the_same_model() {
    let root = env!("CARGO_MANIFEST_DIR");
    let file = std::fs::read_to_string(format!("{root}/models/gpt.adj")).unwrap();
    let example = std::fs::read_to_string(format!("{root}/../examples/model.rs")).unwrap();
    let start = example.find("adjoint::model! {").unwrap() + "adjoint::model! {".len();
    let end = example.find("\n}\n").unwrap();
    let tokens = |s: &str| s.parse::<proc_macro2::TokenStream>().unwrap().to_string();
    assert_eq!(tokens(&example[start..end]), tokens(&file));
    assert_eq!(gpt::SOURCE, file);
}
