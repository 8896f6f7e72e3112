//! The benchmark GPT (`shared/peers/WORKLOAD.md`) written in adjoint's DSL, and the
//! command-line entry points around it:
//!
//! ```text
//! cargo run --release --example gpt -- grads --heads H --params P.safetensors --batch X.safetensors --out G.safetensors
//! cargo run --release --example gpt -- formulas [--latex]
//! cargo run --release --example gpt -- bench --config tiny|small|gpt2 --steps N
//! cargo run --release --example gpt -- generate --checkpoint C --prompt "..." [--temperature 0.8 --top-k 20 --seed 0]
//! ```
//!
//! The model itself is `examples/model.rs`.

mod bench;
mod cli;

use adjoint_examples::model::gpt;

fn main() {
    use clap::Parser;
    let args = cli::Args::parse();
    // The steps run here rather than being handed to a pool thread each time.
    if let Err(e) =
        adjoint::parallel::pool_on_this_thread().map_err(|e| e.to_string()).and_then(|()| cli::run(args))
    {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
