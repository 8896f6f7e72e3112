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
    // Every field is read before any is required, so all problems are reported.
    let mut r = Reader { meta: &file.metadata, problems };
    const WHOLE: &str = "a whole number";
    const REAL: &str = "a number";
    let (d_model, heads, d_ff, layers) =
        (r.get("d_model", WHOLE), r.get("heads", WHOLE), r.get("d_ff", WHOLE), r.get("layers", WHOLE));
    let (context, batch, steps, seed) =
        (r.get("context", WHOLE), r.get("batch", WHOLE), r.get("steps", WHOLE), r.get("seed", WHOLE));
    let optimizer = match r.get::<String>("optimizer", "text").as_deref() {
        Some("sgd") => Some(OptimizerKind::Sgd),
        Some("adamw") => Some(OptimizerKind::AdamW),
        Some(other) => {
            r.problems.push(format!("metadata `optimizer` = `{other}` is not `sgd` or `adamw`"));
            None
        }
        None => None,
    };
    let (lr, min_lr_ratio, warmup) = (r.get("lr", REAL), r.get("min_lr_ratio", REAL), r.get("warmup", WHOLE));
    let (weight_decay, beta1, beta2) =
        (r.get("weight_decay", REAL), r.get("beta1", REAL), r.get("beta2", REAL));
    let (clip, eval_batches) = (r.get("clip", REAL), r.get("eval_batches", WHOLE));
    let config = Config {
        d_model: d_model?,
        heads: heads?,
        d_ff: d_ff?,
        layers: layers?,
        context: context?,
        batch: batch?,
        steps: steps?,
        seed: seed?,
        optimizer: optimizer?,
        lr: lr?,
        min_lr_ratio: min_lr_ratio?,
        warmup: warmup?,
        weight_decay: weight_decay?,
        beta1: beta1?,
        beta2: beta2?,
        clip: clip?,
        eval_batches: eval_batches?,
    };
    match config.check() {
        Ok(()) => Some(config),
        Err(e) => {
            problems.push(format!("the stored configuration is invalid: {e}"));
            None
        }
    }
}

/// Reads metadata entries, noting each missing or malformed one.
struct Reader<'a> {
    meta: &'a BTreeMap<String, String>,
    problems: &'a mut Vec<String>,
}

impl Reader<'_> {
    fn get<T: std::str::FromStr>(&mut self, key: &str, what: &str) -> Option<T> {
        let Some(text) = self.meta.get(key) else {
            self.problems.push(format!("metadata `{key}` is missing"));
            return None;
        };
        let value = text.parse().ok();
        if value.is_none() {
            self.problems.push(format!("metadata `{key}` = `{text}` is not {what}"));
        }
        value
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
