//! The `model!` proc macro: hands its tokens to `adjoint-compiler` and turns every error
//! into `compile_error!` at the offending token. No logic lives here.
//!
//! The DSL front end is not written yet (issue 3); this crate exists so the workspace has
//! its final shape and the dependency direction macros → compiler is fixed from the start.
