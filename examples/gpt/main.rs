//! The benchmark GPT (`shared/peers/WORKLOAD.md`) written in adjoint's DSL, and the
//! command-line entry points around it:
//!
//! ```text
//! cargo run --release --example gpt -- grads --heads H --params P.safetensors --batch X.safetensors --out G.safetensors
//! cargo run --release --example gpt -- formulas [--latex]
//! ```
//!
//! The model itself is `examples/model.rs`.

mod cli;

use adjoint_examples::model::gpt;

fn main() {
    if let Err(e) = cli::run(std::env::args().skip(1).collect()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
