//! adjoint's runtime: what generated code calls, and the crate users depend on.
//!
//! It holds no compiler types (the `compiler` crate never depends on it). The `model!`
//! macro, kernels, optimizers and checkpoints arrive with the DSL and code-generation
//! issues; today it re-exports `ndarray`, the type generated code exchanges at its API.

pub use ndarray;
