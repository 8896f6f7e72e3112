//! End-to-end tests. This crate embeds the models of `models/` (the GPT, a residual
//! MLP, an attention block, an untied embedding), compiled by `build.rs` through
//! `adjoint_compiler::build::compile_file`, with `adjoint` as its only (non-build)
//! dependency: the way a user embeds generated code without the macro.

include!(concat!(env!("OUT_DIR"), "/gpt.rs"));
include!(concat!(env!("OUT_DIR"), "/mlp.rs"));
include!(concat!(env!("OUT_DIR"), "/attention.rs"));
include!(concat!(env!("OUT_DIR"), "/embedding.rs"));
