//! Reproduces the worked numbers of the user's seeds (MATH.md §4) with the compiler's
//! derived gradients and its reference interpreter.
//!
//!     cargo run --example seeds

use adjoint_examples::{seed_001, seed_003};

fn row(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x:.4}")).collect();
    format!("[{}]", parts.join(", "))
}

fn main() -> Result<(), adjoint_compiler::error::Error> {
    let s = seed_003()?;
    println!("Seed 003: one linear unit, y = w₁x₁ + w₂x₂ + b, L = (y − 10)², x = (4, −3)");
    println!("  y                          = {:.4}", s.y);
    println!("  L                          = {:.4}", s.loss);
    println!("  ∂L/∂(w₁, w₂, b)            = {}", row(&s.grads));
    println!("  (w₁, w₂, b) after η = 0.01 = {}", row(&s.updated));
    println!("  y after the step           = {:.4}", s.y_after);
    let (loss, grads) =
        adjoint_examples::seed_003_dsl().map_err(|e| adjoint_compiler::error::Error::new(e.message))?;
    let grads: Vec<f64> = grads.iter().map(|&v| v as f64).collect();
    println!("  the same model in model!   : L = {loss:.4}, ∂L/∂(w₁, w₂, b) = {}", row(&grads));
    println!("{}", adjoint_examples::linear_unit::formulas::W);
    println!();
    let s = seed_001()?;
    println!("Seed 001: LM head for one token, logits = z·W_vocabᵀ, target index 1");
    println!("  logits          = {}", row(&s.logits));
    println!("  p = softmax     = {}", row(&s.probs));
    println!("  L = −log p[1]   = {:.4}", s.loss);
    println!("  g = p − y       = {}", row(&s.g));
    println!("  ∂L/∂W_vocab = gᵀ·z (3×2):");
    for r in s.grad_w_vocab.chunks(2) {
        println!("                    {}", row(r));
    }
    println!("  ∂L/∂z = g·W_vocab = {}", row(&s.grad_z));
    Ok(())
}
