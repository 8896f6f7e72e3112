//! The `gpt` example's subcommands: `grads` (for an outside gradient checker),
//! `formulas`, `bench` (the workload's training step) and `generate` (sampling from a
//! `train_gpt` checkpoint).

use adjoint::tensorfile::TensorFile;
use adjoint_examples::train::checkpoint;
use adjoint_examples::train::generate::{Sampling, generate};
use clap::{Parser, Subcommand};

use crate::gpt;

type Res<T> = Result<T, String>;

#[derive(Parser, Debug)]
#[command(name = "gpt", version, about = "The benchmark GPT written in adjoint's DSL")]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Loss and every gradient for a parameter file and a batch (safetensors in and out,
    /// the names of shared/peers/workload.py).
    Grads {
        #[arg(long)]
        heads: usize,
        #[arg(long)]
        params: String,
        #[arg(long)]
        batch: String,
        #[arg(long)]
        out: String,
    },
    /// Every parameter's derived gradient formula.
    Formulas {
        #[arg(long)]
        latex: bool,
    },
    /// The training-step benchmark of shared/peers/WORKLOAD.md (forward, backward, SGD
    /// lr 1e-3), reported like workload.py's report().
    Bench(crate::bench::Options),
    /// Text sampled from a train_gpt checkpoint.
    Generate {
        #[arg(long, default_value = "target/train_gpt/checkpoint.safetensors")]
        checkpoint: String,
        #[arg(long, default_value = "")]
        prompt: String,
        /// Bytes to generate
        #[arg(long, default_value_t = 300)]
        tokens: usize,
        /// 0 is greedy
        #[arg(long, default_value_t = 0.8)]
        temperature: f32,
        /// Sample among the k most likely bytes; 0 for all
        #[arg(long, default_value_t = 20)]
        top_k: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

pub fn run(args: Args) -> Res<()> {
    match args.command {
        Command::Grads { heads, params, batch, out } => grads(heads, &params, &batch, &out),
        Command::Formulas { latex } => {
            for (name, uni, tex) in gpt::formulas::ALL {
                adjoint_examples::say!("## {name}\n{}", if latex { tex } else { uni });
            }
            Ok(())
        }
        Command::Bench(options) => crate::bench::run(&options),
        Command::Generate { checkpoint: path, prompt, tokens, temperature, top_k, seed } => {
            let (_, params) = checkpoint::load_model(&path)?;
            let text = generate(&params, &prompt, Sampling { tokens, temperature, top_k, seed })?;
            adjoint_examples::say!("{text}");
            Ok(())
        }
    }
}

fn grads(heads: usize, params: &str, batch: &str, out: &str) -> Res<()> {
    let params_file = TensorFile::read(params).map_err(|e| e.to_string())?;
    let mut batch_file = TensorFile::read(batch).map_err(|e| e.to_string())?;
    let mut problems: Vec<String> =
        params_file.ints.keys().map(|k| format!("params: `{k}` is an integer tensor")).collect();
    problems.extend(batch_file.reals.keys().map(|k| format!("batch: unexpected f32 tensor `{k}`")));
    for k in batch_file.ints.keys() {
        if k != "tokens" && k != "targets" {
            problems.push(format!("batch: unexpected tensor `{k}`"));
        }
    }
    for k in ["tokens", "targets"] {
        match batch_file.ints.get(k) {
            None => problems.push(format!("batch: missing `{k}` (int32 [B, T])")),
            Some(t) if t.ndim() != 2 => {
                problems.push(format!("batch: `{k}` has shape {:?}, expected [B, T]", t.shape()))
            }
            Some(_) => {}
        }
    }
    let shapes = params_file.reals.iter().map(|(k, v)| (k.clone(), v.shape().to_vec())).collect();
    let params = gpt::Sizes::infer(&shapes, &[("H", heads)])
        .and_then(|sizes| gpt::Params::from_named(params_file.reals, &sizes))
        .map_err(|e| format!("params: {e}"));
    let params = match params {
        Ok(p) if problems.is_empty() => p,
        Ok(_) => return Err(problems.join("\n")),
        Err(e) => {
            problems.push(e);
            return Err(problems.join("\n"));
        }
    };
    let tokens = batch_file.ints.remove("tokens").unwrap_or_default();
    let targets = batch_file.ints.remove("targets").unwrap_or_default();
    let inputs = gpt::Inputs { tokens: tokens.view(), targets: targets.view() };
    let mut grads = gpt::Params::zeros(&params.sizes).map_err(|e| e.to_string())?;
    let loss = gpt::grads(&params, &inputs, &mut grads).map_err(|e| e.to_string())?;
    let loss_tensor = adjoint::ndarray::ArrayD::from_elem(vec![], loss);
    let mut tensors = vec![("loss".to_string(), &loss_tensor)];
    tensors.extend(grads.named());
    TensorFile::write_atomic(out, &tensors, &Default::default()).map_err(|e| e.to_string())?;
    adjoint_examples::say!("loss={loss:.6} tensors={}", tensors.len());
    Ok(())
}
