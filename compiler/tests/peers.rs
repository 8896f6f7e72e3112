//! The interpreter's GPT loss and gradients against PyTorch float64, on the committed
//! cases `make_case.py` wrote (see `data/peers/README.md`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use adjoint_compiler::autodiff;
use adjoint_compiler::dim::DimEnv;
use adjoint_compiler::interp::{Tensor, evaluate};
use adjoint_compiler::library::gpt;
use ndarray::ArrayD;
use safetensors::{Dtype, SafeTensors};

fn load(path: &Path) -> BTreeMap<String, Tensor> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let data = view.data();
        let t = match view.dtype() {
            Dtype::F32 => Tensor::Real(
                ArrayD::from_shape_vec(
                    shape,
                    data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
                )
                .unwrap(),
            ),
            Dtype::F64 => Tensor::Real(
                ArrayD::from_shape_vec(
                    shape,
                    data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
                )
                .unwrap(),
            ),
            Dtype::I32 => Tensor::Index(
                ArrayD::from_shape_vec(
                    shape,
                    data.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64).collect(),
                )
                .unwrap(),
            ),
            other => panic!("{name}: unexpected dtype {other:?}"),
        };
        out.insert(name, t);
    }
    out
}

fn check_case(dir: &str, heads: i64) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/peers").join(dir);
    let params = load(&root.join("params.safetensors"));
    let batch = load(&root.join("batch.safetensors"));
    let reference = load(&root.join("grads.safetensors"));
    let layers = params.keys().filter(|k| k.ends_with(".ln1.g")).count();

    let mut model = gpt::build(layers).unwrap();
    let wrt: Vec<_> = model.params.iter().map(|p| p.1).collect();
    let grads = autodiff::grad(&mut model.graph, model.loss, &wrt).unwrap();
    let mut feeds = params.clone();
    feeds.extend(batch);
    let env = DimEnv::from([("H".to_string(), heads)]);
    let mut outputs = grads.clone();
    outputs.push(model.loss);
    let values = evaluate(&model.graph, &env, &feeds, &outputs).unwrap();

    let loss = values.get(model.loss).unwrap().scalar().unwrap();
    let ref_loss = reference["loss"].scalar().unwrap();
    assert!((loss - ref_loss).abs() <= 1e-9 * ref_loss.abs(), "{dir}: loss {loss} vs PyTorch {ref_loss}");
    assert_eq!(model.params.len() + 1, reference.len(), "{dir}: tensor sets differ");
    for ((name, _), g) in model.params.iter().zip(&grads) {
        let ours = values.get(*g).unwrap().real(name).unwrap();
        let theirs = reference[name].real(name).unwrap();
        // check_grads.py's measure with its default floor; both sides are float64 here,
        // so the tolerance is far tighter than the peers' 1e-4.
        let err = common::rel_err(ours, theirs, 1e-5);
        assert!(err <= 1e-9, "{dir}: {name} relative error {err:e}");
    }
}

#[test]
fn gpt_matches_pytorch_float64_h3() {
    check_case("h3", 3);
}

#[test]
fn gpt_matches_pytorch_float64_h5() {
    check_case("h5", 5);
}
