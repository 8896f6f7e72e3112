//! End-to-end tests. This crate embeds the GPT of `models/gpt.adj`, compiled by
//! `build.rs` through `adjoint_compiler::build::compile_file`, with `adjoint` as its
//! only (non-build) dependency: the way a user embeds generated code without the macro.

include!(concat!(env!("OUT_DIR"), "/gpt.rs"));
