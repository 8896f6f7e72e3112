//! The main job: train the DSL-defined GPT (`examples/model.rs`) from scratch on a
//! text corpus, byte by byte, with a progress bar, periodic validation, atomic
//! checkpoints, a loss-curve PNG and a generated sample at the end.
//!
//! ```text
//! cargo run --release --example train_gpt                         # the bundled corpus, ~3 min
//! cargo run --release --example train_gpt -- --corpus my.txt --steps 2000 --d-model 128
//! cargo run --release --example train_gpt -- --resume             # continue from the checkpoint
//! cargo run --release --example gpt -- generate --checkpoint target/train_gpt/checkpoint.safetensors --prompt "The "
//! ```

mod plot;

use std::path::Path;
use std::time::Instant;

use adjoint_examples::train::corpus::{BUNDLED, Corpus};
use adjoint_examples::train::generate::{Sampling, generate};
use adjoint_examples::train::{Config, OptimizerKind, Trainer, checkpoint};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Opt {
    Sgd,
    Adamw,
}

/// Train a GPT written in adjoint's DSL on a text file (by default the bundled
/// fortune-file corpus). Unset options take the defaults shown; with --resume they come
/// from the checkpoint and may not be given.
#[derive(Parser, Debug)]
#[command(name = "train_gpt", version)]
struct Args {
    /// A UTF-8 text file to train on [default: the bundled examples/data/fortunes.txt]
    #[arg(long)]
    corpus: Option<String>,
    /// Width of the residual stream [default: 96]
    #[arg(long)]
    d_model: Option<usize>,
    /// Attention heads (must divide --d-model) [default: 4]
    #[arg(long)]
    heads: Option<usize>,
    /// Width of the MLP's hidden layer [default: 384]
    #[arg(long)]
    d_ff: Option<usize>,
    /// Transformer blocks [default: 2]
    #[arg(long)]
    layers: Option<usize>,
    /// Context length in bytes [default: 64]
    #[arg(long)]
    context: Option<usize>,
    /// Sequences per batch [default: 16]
    #[arg(long)]
    batch: Option<usize>,
    /// Optimizer steps in the whole run [default: 1500]
    #[arg(long)]
    steps: Option<u64>,
    /// Seed of the initialisation and the data order [default: 1]
    #[arg(long)]
    seed: Option<u64>,
    /// Optimizer [default: adamw]
    #[arg(long, value_enum)]
    optimizer: Option<Opt>,
    /// Peak learning rate [default: 0.003]
    #[arg(long)]
    lr: Option<f32>,
    /// Final learning rate of the cosine schedule, as a fraction of --lr [default: 0.1]
    #[arg(long)]
    min_lr_ratio: Option<f32>,
    /// Linear warmup steps [default: 100]
    #[arg(long)]
    warmup: Option<u64>,
    /// AdamW's decoupled weight decay, on matrices only [default: 0.1]
    #[arg(long)]
    weight_decay: Option<f32>,
    /// AdamW's β₁ [default: 0.9]
    #[arg(long)]
    beta1: Option<f32>,
    /// AdamW's β₂ [default: 0.99]
    #[arg(long)]
    beta2: Option<f32>,
    /// Clip the global gradient norm to this; 0 turns clipping off [default: 1]
    #[arg(long)]
    clip: Option<f32>,
    /// Batches per validation estimate [default: 8]
    #[arg(long)]
    eval_batches: Option<usize>,
    /// Validate every this many steps (and at the end)
    #[arg(long, default_value_t = 50)]
    eval_interval: u64,
    /// Checkpoint file (safetensors)
    #[arg(long, default_value = "target/train_gpt/checkpoint.safetensors")]
    checkpoint: String,
    /// Save every this many steps (and at the end); 0 saves only at the end
    #[arg(long, default_value_t = 200)]
    checkpoint_interval: u64,
    /// Continue the run saved in --checkpoint
    #[arg(long)]
    resume: bool,
    /// Where to write the loss curve
    #[arg(long, default_value = "target/train_gpt/loss.png")]
    plot: String,
    /// Where to write every step's numbers (CSV: step,loss,val_loss,lr,grad_norm)
    #[arg(long, default_value = "target/train_gpt/log.csv")]
    log: String,
    /// Bytes to generate at the end
    #[arg(long, default_value_t = 300)]
    sample_tokens: usize,
    /// Prompt of the final sample
    #[arg(long, default_value = "")]
    prompt: String,
    /// Sampling temperature of the final sample
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Sample among the k most likely bytes; 0 for all
    #[arg(long, default_value_t = 20)]
    top_k: usize,
    /// No progress bar: one line per evaluation instead
    #[arg(long)]
    quiet: bool,
}

impl Args {
    /// The options that define the run, as given on the command line.
    fn run_options(&self) -> Vec<&'static str> {
        let given = [
            ("--d-model", self.d_model.is_some()),
            ("--heads", self.heads.is_some()),
            ("--d-ff", self.d_ff.is_some()),
            ("--layers", self.layers.is_some()),
            ("--context", self.context.is_some()),
            ("--batch", self.batch.is_some()),
            ("--steps", self.steps.is_some()),
            ("--seed", self.seed.is_some()),
            ("--optimizer", self.optimizer.is_some()),
            ("--lr", self.lr.is_some()),
            ("--min-lr-ratio", self.min_lr_ratio.is_some()),
            ("--warmup", self.warmup.is_some()),
            ("--weight-decay", self.weight_decay.is_some()),
            ("--beta1", self.beta1.is_some()),
            ("--beta2", self.beta2.is_some()),
            ("--clip", self.clip.is_some()),
            ("--eval-batches", self.eval_batches.is_some()),
        ];
        given.iter().filter(|g| g.1).map(|g| g.0).collect()
    }

    fn config(&self) -> Config {
        let d = Config::default();
        Config {
            d_model: self.d_model.unwrap_or(d.d_model),
            heads: self.heads.unwrap_or(d.heads),
            d_ff: self.d_ff.unwrap_or(d.d_ff),
            layers: self.layers.unwrap_or(d.layers),
            context: self.context.unwrap_or(d.context),
            batch: self.batch.unwrap_or(d.batch),
            steps: self.steps.unwrap_or(d.steps),
            seed: self.seed.unwrap_or(d.seed),
            optimizer: match self.optimizer {
                Some(Opt::Sgd) => OptimizerKind::Sgd,
                Some(Opt::Adamw) => OptimizerKind::AdamW,
                None => d.optimizer,
            },
            lr: self.lr.unwrap_or(d.lr),
            min_lr_ratio: self.min_lr_ratio.unwrap_or(d.min_lr_ratio),
            warmup: self.warmup.unwrap_or(d.warmup),
            weight_decay: self.weight_decay.unwrap_or(d.weight_decay),
            beta1: self.beta1.unwrap_or(d.beta1),
            beta2: self.beta2.unwrap_or(d.beta2),
            clip: self.clip.unwrap_or(d.clip),
            eval_batches: self.eval_batches.unwrap_or(d.eval_batches),
        }
    }
}

fn main() {
    let args = Args::parse();
    // The steps run here rather than being handed to a pool thread each time.
    if let Err(e) =
        adjoint::parallel::pool_on_this_thread().map_err(|e| e.to_string()).and_then(|()| run(args))
    {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let (text, source) = match &args.corpus {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
            (String::from_utf8(bytes).map_err(|e| format!("{path}: not UTF-8 text ({e})"))?, path.clone())
        }
        None => (BUNDLED.to_string(), "bundled fortunes".to_string()),
    };
    let mut trainer = if args.resume {
        let given = args.run_options();
        if !given.is_empty() {
            return Err(format!(
                "--resume continues the run in {} with its own settings; drop {}",
                args.checkpoint,
                given.join(", ")
            ));
        }
        // The context is needed to split the corpus; the checkpoint stores it.
        let (config, _) = checkpoint::load_model(&args.checkpoint)?;
        let corpus = Corpus::new(&text, 0.1, config.context)?;
        let trainer = checkpoint::resume(&args.checkpoint, &corpus)?;
        (trainer, corpus)
    } else {
        let config = args.config();
        config.check()?;
        let corpus = Corpus::new(&text, 0.1, config.context)?;
        (Trainer::new(config, &corpus)?, corpus)
    };
    let (ref mut trainer, ref corpus) = trainer;
    for file in [&args.checkpoint, &args.plot, &args.log] {
        if let Some(dir) = Path::new(file).parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
    }
    let c = trainer.config.clone();
    let n_params: usize = trainer.params.named().iter().map(|(_, t)| t.len()).sum();
    adjoint_examples::say!(
        "corpus: {source}, {} training + {} validation bytes\nmodel: GPT d={} heads={} ff={} layers={} context={} vocab=256 ({} parameters)\ntraining: {} steps of {}×{} tokens, {:?} lr {} (warmup {}, cosine to {}×), clip {}, seed {}{}",
        corpus.train.len(),
        corpus.val.len(),
        c.d_model,
        c.heads,
        c.d_ff,
        c.layers,
        c.context,
        n_params,
        c.steps,
        c.batch,
        c.context,
        c.optimizer,
        c.lr,
        c.warmup,
        c.min_lr_ratio,
        c.clip,
        c.seed,
        if args.resume { format!("; resumed at step {}", trainer.step) } else { String::new() }
    );

    let mut log = Log::open(&args.log, args.resume, trainer.step)?;
    let bar = if args.quiet { ProgressBar::hidden() } else { ProgressBar::new(c.steps) };
    bar.set_draw_target(if args.quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() });
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30.cyan/blue} step {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]",
        )
        .map_err(|e| e.to_string())?
        .progress_chars("=> "),
    );
    bar.set_position(trainer.step);
    let started = Instant::now();
    let first_step = trainer.step;
    let mut val = if trainer.step == 0 { Some(trainer.evaluate(corpus)?) } else { log.last_val() };
    if trainer.step == 0 {
        log.eval(0, val.unwrap_or(f32::NAN))?;
    }
    let initial_val = val;
    let mut last_loss = f32::NAN;
    while trainer.step < c.steps {
        let r = trainer.train_step(corpus)?;
        last_loss = r.loss;
        let due = |interval: u64| interval > 0 && r.step.is_multiple_of(interval);
        let eval_now = due(args.eval_interval) || r.step == c.steps;
        let this_val = if eval_now { Some(trainer.evaluate(corpus)?) } else { None };
        if this_val.is_some() {
            val = this_val;
        }
        log.step(r.step, r.loss, this_val, r.lr, r.grad_norm)?;
        let tokens = (r.step - first_step) as f64 * (c.batch * c.context) as f64;
        let rate = tokens / started.elapsed().as_secs_f64().max(1e-9);
        bar.set_position(r.step);
        let val_text = val.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
        bar.set_message(format!("loss {:.3} val {val_text} {rate:.0} tok/s", r.loss));
        if args.quiet && eval_now {
            adjoint_examples::say!("step {:>5}  loss {:.4}  val {val_text}  {rate:.0} tok/s", r.step, r.loss);
        }
        if due(args.checkpoint_interval) || r.step == c.steps {
            checkpoint::save(trainer, &args.checkpoint)?;
        }
    }
    bar.finish();
    if trainer.step == first_step {
        checkpoint::save(trainer, &args.checkpoint)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let steps_run = trainer.step - first_step;
    adjoint_examples::say!(
        "done: {} steps in {elapsed:.1} s ({:.0} tokens/s); last batch loss {last_loss:.4}; validation loss {} → {}",
        steps_run,
        steps_run as f64 * (c.batch * c.context) as f64 / elapsed.max(1e-9),
        initial_val.map(|v| format!("{v:.4}")).unwrap_or_else(|| "?".into()),
        val.map(|v| format!("{v:.4}")).unwrap_or_else(|| "?".into()),
    );
    adjoint_examples::say!("checkpoint: {}", args.checkpoint);
    let (train_curve, val_curve) = log.curves()?;
    let title = format!("GPT d={} L={} on {source}: loss per byte", c.d_model, c.layers);
    plot::loss_curve(&args.plot, &title, &train_curve, &val_curve)?;
    adjoint_examples::say!("loss curve: {}\nlog: {}", args.plot, args.log);
    let sampling = Sampling {
        tokens: args.sample_tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        seed: c.seed,
    };
    let text = generate(&trainer.params, &args.prompt, sampling)?;
    adjoint_examples::say!("sample (temperature {}, top-k {}):\n{text}", args.temperature, args.top_k);
    Ok(())
}

/// The CSV log, appended to on resume (keeping only rows before the resumed step).
struct Log {
    path: String,
    file: std::fs::File,
}

impl Log {
    fn open(path: &str, resume: bool, step: u64) -> Result<Log, String> {
        let err = |e: std::io::Error| format!("{path}: {e}");
        let kept = if resume {
            let old = std::fs::read_to_string(path).unwrap_or_default();
            old.lines()
                .skip(1)
                .filter(|l| {
                    l.split(',').next().and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s <= step)
                })
                .map(|l| format!("{l}\n"))
                .collect()
        } else {
            String::new()
        };
        std::fs::write(path, format!("step,loss,val_loss,lr,grad_norm\n{kept}")).map_err(err)?;
        let file = std::fs::OpenOptions::new().append(true).open(path).map_err(err)?;
        Ok(Log { path: path.to_string(), file })
    }

    fn write(&mut self, line: String) -> Result<(), String> {
        use std::io::Write;
        self.file.write_all(line.as_bytes()).map_err(|e| format!("{}: {e}", self.path))
    }

    fn eval(&mut self, step: u64, val: f32) -> Result<(), String> {
        self.write(format!("{step},,{val},,\n"))
    }

    fn step(&mut self, step: u64, loss: f32, val: Option<f32>, lr: f32, norm: f32) -> Result<(), String> {
        let v = val.map(|v| v.to_string()).unwrap_or_default();
        self.write(format!("{step},{loss},{v},{lr},{norm}\n"))
    }

    fn rows(&self) -> Result<Vec<Vec<String>>, String> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| format!("{}: {e}", self.path))?;
        Ok(text.lines().skip(1).map(|l| l.split(',').map(String::from).collect()).collect())
    }

    fn last_val(&self) -> Option<f32> {
        self.rows().ok()?.iter().rev().find_map(|r| r.get(2)?.parse().ok())
    }

    /// `(step, training loss)` and `(step, validation loss)` points.
    #[allow(clippy::type_complexity)]
    fn curves(&self) -> Result<(Vec<(u64, f32)>, Vec<(u64, f32)>), String> {
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for r in self.rows()? {
            let Some(step) = r.first().and_then(|s| s.parse().ok()) else { continue };
            if let Some(l) = r.get(1).and_then(|s| s.parse().ok()) {
                train.push((step, l));
            }
            if let Some(v) = r.get(2).and_then(|s| s.parse().ok()) {
                val.push((step, v));
            }
        }
        Ok((train, val))
    }
}
