//! The `gpt` example's subcommands: `grads` (for an outside gradient checker) and
//! `formulas`.

use std::collections::BTreeMap;

use adjoint::ndarray::ArrayD;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::gpt;

type Res<T> = Result<T, String>;
type Named<T> = BTreeMap<String, ArrayD<T>>;

const USAGE: &str = "usage:
  gpt grads --heads H --params P.safetensors --batch X.safetensors --out G.safetensors
  gpt formulas [--latex]";

pub fn run(args: Vec<String>) -> Res<()> {
    match args.first().map(String::as_str) {
        Some("grads") => grads(&flags(&args[1..], &["--heads", "--params", "--batch", "--out"])?),
        Some("formulas") => {
            let latex = args.iter().any(|a| a == "--latex");
            for (name, uni, tex) in gpt::formulas::ALL {
                println!("## {name}\n{}", if latex { tex } else { uni });
            }
            Ok(())
        }
        _ => Err(USAGE.into()),
    }
}

/// `--key value` pairs; every key in `want` is required and nothing else is allowed.
fn flags(args: &[String], want: &[&str]) -> Res<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut it = args.iter();
    while let Some(k) = it.next() {
        if !want.contains(&k.as_str()) {
            return Err(format!("unknown option `{k}`\n{USAGE}"));
        }
        let v = it.next().ok_or(format!("`{k}` needs a value"))?;
        out.insert(k.clone(), v.clone());
    }
    let missing: Vec<&str> = want.iter().copied().filter(|k| !out.contains_key(*k)).collect();
    if !missing.is_empty() {
        return Err(format!("missing {}\n{USAGE}", missing.join(", ")));
    }
    Ok(out)
}

/// Reads a safetensors file: f32 tensors and i32 tensors, by name.
pub fn read(path: &str) -> Res<(Named<f32>, Named<i32>)> {
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| format!("{path}: not a safetensors file: {e}"))?;
    let (mut reals, mut ints) = (BTreeMap::new(), BTreeMap::new());
    let mut problems = Vec::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let data = view.data();
        match view.dtype() {
            Dtype::F32 => {
                let v: Vec<f32> =
                    data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
                reals.insert(name, ArrayD::from_shape_vec(shape, v).map_err(|e| e.to_string())?);
            }
            Dtype::I32 => {
                let v: Vec<i32> =
                    data.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
                ints.insert(name, ArrayD::from_shape_vec(shape, v).map_err(|e| e.to_string())?);
            }
            other => problems.push(format!("`{name}` is {other:?}; expected F32 or I32")),
        }
    }
    if !problems.is_empty() {
        return Err(format!("{path}:\n  {}", problems.join("\n  ")));
    }
    Ok((reals, ints))
}

/// Writes f32 tensors to a safetensors file.
pub fn write(path: &str, tensors: &[(String, ArrayD<f32>)]) -> Res<()> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.iter().flat_map(|v| v.to_le_bytes()).collect(), t.shape().to_vec()))
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, b, s)| {
            Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b).map_err(|e| e.to_string())?))
        })
        .collect::<Res<_>>()?;
    let out = safetensors::serialize(views, None).map_err(|e| e.to_string())?;
    std::fs::write(path, out).map_err(|e| format!("{path}: {e}"))
}

fn grads(f: &BTreeMap<String, String>) -> Res<()> {
    let heads: usize =
        f["--heads"].parse().map_err(|_| format!("--heads: `{}` is not a number", f["--heads"]))?;
    let (params, stray) = read(&f["--params"])?;
    let (batch_reals, mut batch) = read(&f["--batch"])?;
    let mut problems: Vec<String> =
        stray.keys().map(|k| format!("params: `{k}` is an integer tensor")).collect();
    problems.extend(batch_reals.keys().map(|k| format!("batch: unexpected f32 tensor `{k}`")));
    for k in batch.keys() {
        if k != "tokens" && k != "targets" {
            problems.push(format!("batch: unexpected tensor `{k}`"));
        }
    }
    for k in ["tokens", "targets"] {
        match batch.get(k) {
            None => problems.push(format!("batch: missing `{k}` (int32 [B, T])")),
            Some(t) if t.ndim() != 2 => {
                problems.push(format!("batch: `{k}` has shape {:?}, expected [B, T]", t.shape()))
            }
            Some(_) => {}
        }
    }
    let shapes = params.iter().map(|(k, v)| (k.clone(), v.shape().to_vec())).collect();
    let sizes = gpt::Sizes::infer(&shapes, &[("H", heads)]);
    let params = match sizes {
        Ok(sizes) => gpt::Params::from_named(params, &sizes).map_err(|e| format!("params: {e}")),
        Err(e) => Err(format!("params: {e}")),
    };
    let params = match params {
        Ok(p) if problems.is_empty() => p,
        Ok(_) => return Err(problems.join("\n")),
        Err(e) => {
            problems.push(e);
            return Err(problems.join("\n"));
        }
    };
    let (tokens, targets) =
        (batch.remove("tokens").unwrap_or_default(), batch.remove("targets").unwrap_or_default());
    let inputs = gpt::Inputs { tokens: tokens.view(), targets: targets.view() };
    let mut grads = gpt::Params::zeros(&params.sizes).map_err(|e| e.to_string())?;
    let loss = gpt::grads(&params, &inputs, &mut grads).map_err(|e| e.to_string())?;
    let mut out = vec![("loss".to_string(), ArrayD::from_elem(vec![], loss))];
    out.extend(grads.named().into_iter().map(|(n, t)| (n, t.clone())));
    write(&f["--out"], &out)?;
    println!("loss={loss:.6} tensors={}", out.len());
    Ok(())
}
