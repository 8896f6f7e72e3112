//! A training run as one safetensors file: the parameters under the names of
//! `shared/peers/workload.py` (`wte`, `h0.attn.wq`, …), AdamW's moments as
//! `adamw.m.NAME` / `adamw.v.NAME`, and in the metadata the configuration (dims,
//! optimizer, schedule), the step, the data stream's random state and the corpus
//! fingerprint.
//!
//! Saving is atomic (`adjoint::tensorfile`). Loading checks everything before
//! using anything and reports every problem at once: unreadable bytes, missing or
//! malformed metadata, and each missing, unexpected or wrong-shaped tensor.

use std::collections::BTreeMap;
use std::path::Path;

use adjoint::init::Rng;
use adjoint::optim::Optimizer;
use adjoint::tensorfile::TensorFile;

use super::corpus::Corpus;
use super::{Config, OptimizerKind, Res, Trainer};
use crate::model::gpt;

/// The metadata `format` of files this module writes.
pub const FORMAT: &str = "adjoint-gpt-checkpoint/1";

pub fn save(trainer: &Trainer, path: impl AsRef<Path>) -> Res<()> {
    let c = &trainer.config;
    let optimizer = match c.optimizer {
        OptimizerKind::Sgd => "sgd",
        OptimizerKind::AdamW => "adamw",
    };
    let s = c.sizes();
    let meta: BTreeMap<String, String> = [
        ("format", FORMAT.to_string()),
        ("dims", format!("T={} D={} H={} F={} V={} L={}", s.T, s.D, s.H, s.F, s.V, s.L)),
        ("d_model", c.d_model.to_string()),
        ("heads", c.heads.to_string()),
        ("d_ff", c.d_ff.to_string()),
        ("layers", c.layers.to_string()),
        ("context", c.context.to_string()),
        ("batch", c.batch.to_string()),
        ("steps", c.steps.to_string()),
        ("seed", c.seed.to_string()),
        ("optimizer", optimizer.to_string()),
        ("lr", c.lr.to_string()),
        ("min_lr_ratio", c.min_lr_ratio.to_string()),
        ("warmup", c.warmup.to_string()),
        ("weight_decay", c.weight_decay.to_string()),
        ("beta1", c.beta1.to_string()),
        ("beta2", c.beta2.to_string()),
        ("clip", c.clip.to_string()),
        ("eval_batches", c.eval_batches.to_string()),
        ("step", trainer.step.to_string()),
        ("optimizer_steps", trainer.optimizer.steps.to_string()),
        ("data_rng", trainer.data_rng.state().to_string()),
        ("corpus_fingerprint", trainer.corpus_fingerprint.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut tensors = trainer.params.named();
    tensors.extend(trainer.optimizer.state());
    TensorFile::write_atomic(path, &tensors, &meta).map_err(|e| e.to_string())
}

/// Resumes a run from `path` on `corpus` (which must be the one it was trained on).
pub fn resume(path: impl AsRef<Path>, corpus: &Corpus) -> Res<Trainer> {
    let path = path.as_ref();
    let (mut file, config, mut problems) = open(path)?;
    let numbers = (|| -> adjoint::Result<(u64, u64, u64, u64)> {
        Ok((
            file.meta("step")?,
            file.meta("optimizer_steps")?,
            file.meta("data_rng")?,
            file.meta("corpus_fingerprint")?,
        ))
    })();
    let numbers = numbers.map_err(|e| problems.push(e.to_string())).ok();
    let Some(config) = config else { return Err(listed(path, problems)) };
    let sizes = config.sizes();
    let want = expected_params(&sizes)?;
    let optimizer = Optimizer::new(config.method());
    let with_state = numbers.is_some_and(|n| n.1 > 0);
    let state_want = if with_state { optimizer.state_shapes(&want) } else { Vec::new() };
    let all: Vec<(String, Vec<usize>)> = want.iter().chain(&state_want).cloned().collect();
    let tensors = file.take(&all, true).map_err(|e| problems.push(e.message)).ok();
    if let Some((.., fingerprint)) = numbers
        && fingerprint != corpus.fingerprint
    {
        problems.push("the checkpoint was trained on a different corpus; pass the same --corpus".into());
    }
    let (Some((step, optimizer_steps, rng, fingerprint)), Some(mut tensors), true) =
        (numbers, tensors, problems.is_empty())
    else {
        return Err(listed(path, problems));
    };
    let state = state_want.iter().filter_map(|(n, _)| tensors.remove_entry(n)).collect();
    let params = gpt::Params::from_named(tensors, &sizes).map_err(|e| listed(path, vec![e.message]))?;
    let mut trainer = Trainer::new(config, corpus)?;
    trainer.optimizer.restore(optimizer_steps, state).map_err(|e| listed(path, vec![e.message]))?;
    trainer.params = params;
    trainer.step = step;
    trainer.data_rng = Rng::from_state(rng);
    trainer.corpus_fingerprint = fingerprint;
    Ok(trainer)
}

/// The configuration and parameters of a checkpoint (any optimizer state is ignored):
/// what sampling needs.
pub fn load_model(path: impl AsRef<Path>) -> Res<(Config, gpt::Params)> {
    let path = path.as_ref();
    let (mut file, config, mut problems) = open(path)?;
    let Some(config) = config else { return Err(listed(path, problems)) };
    let sizes = config.sizes();
    file.reals.retain(|name, _| !name.starts_with("adamw."));
    let tensors = file.take(&expected_params(&sizes)?, true).map_err(|e| problems.push(e.message)).ok();
    match tensors {
        Some(t) if problems.is_empty() => {
            let params = gpt::Params::from_named(t, &sizes).map_err(|e| listed(path, vec![e.message]))?;
            Ok((config, params))
        }
        _ => Err(listed(path, problems)),
    }
}

/// Reads the file and its configuration; metadata problems are collected, not fatal.
fn open(path: &Path) -> Res<(TensorFile, Option<Config>, Vec<String>)> {
    let file = TensorFile::read(path).map_err(|e| e.to_string())?;
    let mut problems = Vec::new();
    match file.metadata.get("format") {
        Some(f) if f == FORMAT => {}
        Some(f) => problems.push(format!("format `{f}` is not `{FORMAT}`")),
        None => {
            problems.push(format!("no `format` metadata: not a checkpoint written by train_gpt ({FORMAT})"))
        }
    }
    let config = config_of(&file, &mut problems);
    Ok((file, config, problems))
}

fn config_of(file: &TensorFile, problems: &mut Vec<String>) -> Option<Config> {
    let mut get = |key: &str| -> Option<String> {
        match file.metadata.get(key) {
            Some(v) => Some(v.clone()),
            None => {
                problems.push(format!("metadata `{key}` is missing"));
                None
            }
        }
    };
    let raw: Vec<Option<String>> = [
        "d_model",
        "heads",
        "d_ff",
        "layers",
        "context",
        "batch",
        "steps",
        "seed",
        "optimizer",
        "lr",
        "min_lr_ratio",
        "warmup",
        "weight_decay",
        "beta1",
        "beta2",
        "clip",
        "eval_batches",
    ]
    .iter()
    .map(|k| get(k))
    .collect();
    let mut bad = Vec::new();
    let mut num = |i: usize, key: &str| -> u64 {
        let v = raw[i].as_deref().and_then(|s| s.parse().ok());
        if raw[i].is_some() && v.is_none() {
            bad.push(format!(
                "metadata `{key}` = `{}` is not a whole number",
                raw[i].as_deref().unwrap_or("")
            ));
        }
        v.unwrap_or(0)
    };
    let (d_model, heads, d_ff, layers, context, batch) = (
        num(0, "d_model") as usize,
        num(1, "heads") as usize,
        num(2, "d_ff") as usize,
        num(3, "layers") as usize,
        num(4, "context") as usize,
        num(5, "batch") as usize,
    );
    let (steps, seed, warmup, eval_batches) =
        (num(6, "steps"), num(7, "seed"), num(11, "warmup"), num(16, "eval_batches") as usize);
    let mut real = |i: usize, key: &str| -> f32 {
        let v = raw[i].as_deref().and_then(|s| s.parse().ok());
        if raw[i].is_some() && v.is_none() {
            bad.push(format!("metadata `{key}` = `{}` is not a number", raw[i].as_deref().unwrap_or("")));
        }
        v.unwrap_or(0.0)
    };
    let (lr, min_lr_ratio, weight_decay, beta1, beta2, clip) = (
        real(9, "lr"),
        real(10, "min_lr_ratio"),
        real(12, "weight_decay"),
        real(13, "beta1"),
        real(14, "beta2"),
        real(15, "clip"),
    );
    let optimizer = match raw[8].as_deref() {
        Some("sgd") => OptimizerKind::Sgd,
        Some("adamw") => OptimizerKind::AdamW,
        Some(other) => {
            bad.push(format!("metadata `optimizer` = `{other}` is not `sgd` or `adamw`"));
            OptimizerKind::Sgd
        }
        None => OptimizerKind::Sgd,
    };
    let complete = raw.iter().all(Option::is_some) && bad.is_empty();
    problems.extend(bad);
    let config = Config {
        d_model,
        heads,
        d_ff,
        layers,
        context,
        batch,
        steps,
        seed,
        optimizer,
        lr,
        min_lr_ratio,
        warmup,
        weight_decay,
        beta1,
        beta2,
        clip,
        eval_batches,
    };
    if !complete {
        return None;
    }
    match config.check() {
        Ok(()) => Some(config),
        Err(e) => {
            problems.push(format!("the stored configuration is invalid: {e}"));
            None
        }
    }
}

fn expected_params(sizes: &gpt::Sizes) -> Res<Vec<(String, Vec<usize>)>> {
    gpt::Params::shapes(sizes).map_err(|e| e.to_string())
}

fn listed(path: &Path, problems: Vec<String>) -> String {
    format!(
        "{}: cannot load this checkpoint:\n  {}",
        path.display(),
        problems.join("\n  ").replace('\n', "\n  ")
    )
}
