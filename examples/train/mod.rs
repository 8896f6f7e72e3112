//! Training the DSL's GPT (`crate::model::gpt`) on a byte-level corpus: the run's
//! configuration, the trainer (parameters, optimizer, data stream), one step,
//! evaluation, checkpoints ([`checkpoint`]) and sampling ([`generate`]).
//!
//! Everything that decides the loss sequence is in the trainer's state and saved with
//! it: the parameters, the optimizer's moments and step count, and the data stream's
//! random state. Evaluation draws its batches from a fixed seed of its own, so it
//! never moves the training stream: a resumed run repeats an uninterrupted one exactly.

pub mod checkpoint;
pub mod corpus;
pub mod generate;

use adjoint::init::Rng;
use adjoint::optim::{self, Method, Optimizer, Schedule};

use crate::model::gpt;
use corpus::Corpus;

pub type Res<T> = Result<T, String>;

/// The optimizer family of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerKind {
    Sgd,
    AdamW,
}

/// What a training run is: model sizes, data, optimizer and schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub d_model: usize,
    pub heads: usize,
    pub d_ff: usize,
    pub layers: usize,
    pub context: usize,
    pub batch: usize,
    pub steps: u64,
    pub seed: u64,
    pub optimizer: OptimizerKind,
    pub lr: f32,
    /// The schedule's final learning rate, as a fraction of `lr`.
    pub min_lr_ratio: f32,
    pub warmup: u64,
    pub weight_decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    /// Global gradient-norm clip; 0 turns it off.
    pub clip: f32,
    /// Batches per validation estimate.
    pub eval_batches: usize,
}

impl Default for Config {
    /// The main job's run: about three minutes on two cores.
    fn default() -> Config {
        Config {
            d_model: 96,
            heads: 4,
            d_ff: 384,
            layers: 2,
            context: 64,
            batch: 16,
            steps: 1500,
            seed: 1,
            optimizer: OptimizerKind::AdamW,
            lr: 3e-3,
            min_lr_ratio: 0.1,
            warmup: 100,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            clip: 1.0,
            eval_batches: 8,
        }
    }
}

impl Config {
    pub fn sizes(&self) -> gpt::Sizes {
        gpt::Sizes {
            T: self.context,
            D: self.d_model,
            H: self.heads,
            F: self.d_ff,
            V: corpus::VOCAB,
            L: self.layers,
        }
    }

    pub fn method(&self) -> Method {
        match self.optimizer {
            OptimizerKind::Sgd => Method::Sgd,
            OptimizerKind::AdamW => Method::AdamW {
                beta1: self.beta1,
                beta2: self.beta2,
                eps: 1e-8,
                weight_decay: self.weight_decay,
            },
        }
    }

    pub fn schedule(&self) -> Schedule {
        Schedule { lr: self.lr, warmup: self.warmup, total: self.steps, min_ratio: self.min_lr_ratio }
    }

    /// Problems a run would only meet later, found now.
    pub fn check(&self) -> Res<()> {
        let mut problems = Vec::new();
        for (name, v) in [
            ("d-model", self.d_model),
            ("heads", self.heads),
            ("d-ff", self.d_ff),
            ("layers", self.layers),
            ("context", self.context),
            ("batch", self.batch),
            ("eval-batches", self.eval_batches),
        ] {
            if v == 0 {
                problems.push(format!("--{name} must be at least 1"));
            }
        }
        // Far beyond what this runtime can train; also keeps a corrupt checkpoint's
        // numbers from asking for absurd allocations.
        for (name, v, max) in [
            ("d-model", self.d_model, 1 << 16),
            ("d-ff", self.d_ff, 1 << 18),
            ("context", self.context, 1 << 16),
            ("layers", self.layers, 1024),
            ("batch", self.batch, 1 << 16),
            ("eval-batches", self.eval_batches, 1 << 16),
        ] {
            if v > max {
                problems.push(format!("--{name} {v} is above the limit of {max}"));
            }
        }
        if self.heads > 0 && !self.d_model.is_multiple_of(self.heads) {
            problems.push(format!("--d-model {} is not a multiple of --heads {}", self.d_model, self.heads));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            problems.push(format!("--lr must be positive, not {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            problems.push("--beta1 and --beta2 must be in [0, 1)".into());
        }
        if !(self.weight_decay >= 0.0 && self.clip >= 0.0 && (0.0..=1.0).contains(&self.min_lr_ratio)) {
            problems.push("--weight-decay and --clip must be ≥ 0, --min-lr-ratio in [0, 1]".into());
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
    }
}

/// One step's numbers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    pub step: u64,
    pub loss: f32,
    pub lr: f32,
    /// The gradient norm before clipping.
    pub grad_norm: f32,
}

/// A run in progress.
pub struct Trainer {
    pub config: Config,
    pub params: gpt::Params,
    pub optimizer: Optimizer,
    /// Steps done.
    pub step: u64,
    /// The training batches' stream.
    pub data_rng: Rng,
    /// Which corpus this run trains on (`Corpus::fingerprint`).
    pub corpus_fingerprint: u64,
    grads: gpt::Grads,
}

impl Trainer {
    /// A fresh run: parameters from `config.seed`, the data stream from a seed derived
    /// from it.
    pub fn new(config: Config, corpus: &Corpus) -> Res<Trainer> {
        config.check()?;
        let sizes = config.sizes();
        let params = gpt::Params::init(&sizes, config.seed).map_err(|e| e.to_string())?;
        let grads = gpt::Params::zeros(&sizes).map_err(|e| e.to_string())?;
        Ok(Trainer {
            optimizer: Optimizer::new(config.method()),
            data_rng: Rng::new(config.seed ^ 0xDA7A),
            corpus_fingerprint: corpus.fingerprint,
            config,
            params,
            grads,
            step: 0,
        })
    }

    /// One update: a batch, the loss and gradients, clipping, the optimizer step.
    pub fn train_step(&mut self, corpus: &Corpus) -> Res<StepReport> {
        let c = &self.config;
        let (tokens, targets) = corpus::batch(&corpus.train, c.batch, c.context, &mut self.data_rng);
        let inputs = gpt::Inputs { tokens: tokens.view().into_dyn(), targets: targets.view().into_dyn() };
        let loss = gpt::grads(&self.params, &inputs, &mut self.grads).map_err(|e| e.to_string())?;
        if !loss.is_finite() {
            return Err(format!("step {}: the loss is {loss}; lower --lr or set --clip", self.step));
        }
        let grad_norm =
            optim::clip_grad_norm(self.grads.named_mut().into_iter().map(|(_, g)| g).collect(), c.clip);
        let lr = c.schedule().at(self.step);
        let grads = self.grads.named();
        self.optimizer.update(lr, self.params.named_mut(), &grads).map_err(|e| e.to_string())?;
        self.step += 1;
        Ok(StepReport { step: self.step, loss, lr, grad_norm })
    }

    /// The mean loss over `eval_batches` validation batches, the same batches every
    /// time (their own fixed stream), so successive estimates are comparable.
    pub fn evaluate(&self, corpus: &Corpus) -> Res<f32> {
        let c = &self.config;
        let mut rng = Rng::new(0xE7A1 ^ c.seed);
        let mut total = 0.0f64;
        for _ in 0..c.eval_batches {
            let (tokens, targets) = corpus::batch(&corpus.val, c.batch, c.context, &mut rng);
            let inputs = gpt::Inputs { tokens: tokens.view().into_dyn(), targets: targets.view().into_dyn() };
            total += f64::from(gpt::loss(&self.params, &inputs).map_err(|e| e.to_string())?);
        }
        Ok((total / c.eval_batches as f64) as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_problems_are_listed_together() {
        let bad = Config { heads: 5, batch: 0, lr: -1.0, ..Config::default() };
        let e = bad.check().unwrap_err();
        assert!(e.contains("--batch must be at least 1"), "{e}");
        assert!(e.contains("not a multiple of --heads 5"), "{e}");
        assert!(e.contains("--lr must be positive"), "{e}");
        assert!(Config::default().check().is_ok());
    }
}
