//! Prints the derived gradient formula of every parameter of one pre-LN transformer block
//! with the tied LM head and mean cross-entropy (MATH.md §3).
//!
//!     cargo run --example formulas            # Unicode
//!     cargo run --example formulas -- --latex # LaTeX
//!     cargo run --example formulas -- --dot   # the joint graph, Graphviz DOT

use adjoint_compiler::pretty::{self, Style};
use adjoint_examples::{block_formulas, block_gradients};

fn main() -> Result<(), adjoint_compiler::error::Error> {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        None => print!("{}", block_formulas(Style::Unicode)?),
        Some("--latex") => print!("{}", block_formulas(Style::Latex)?),
        Some("--dot") => {
            let (g, outputs) = block_gradients()?;
            print!("{}", pretty::dot(&g, &outputs));
        }
        Some(other) => {
            eprintln!("unknown option {other:?}; use --latex or --dot");
            std::process::exit(2);
        }
    }
    Ok(())
}
