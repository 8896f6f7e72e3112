//! The whole pipeline behind `model!` and the build-script path: tokens → syntax tree →
//! staged IR with its backward pass → simplified (e-graph) → Rust.

use proc_macro2::TokenStream;

use crate::backend;
use crate::egraph;
use crate::frontend::{self, Mode};
use crate::program::Program;

/// A compiled model: the lowered and simplified program, the generated module, and
/// the simplifier's report per stage.
pub struct Compiled {
    pub program: Program,
    pub code: TokenStream,
    pub reports: Vec<egraph::Report>,
}

/// How to compile: whether to simplify, at which representative sizes (overriding the
/// model's `dims T = 128`), within which limits.
#[derive(Clone, Debug)]
pub struct Settings {
    pub simplify: bool,
    pub sizes: std::collections::BTreeMap<String, i64>,
    pub limits: egraph::Limits,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { simplify: true, sizes: Default::default(), limits: egraph::Limits::default() }
    }
}

/// Compiles model text; `source` is kept in the generated module as `SOURCE`.
pub fn compile_with_source(tokens: TokenStream, source: &str) -> Result<Compiled, Vec<syn::Error>> {
    compile_with(tokens, source, &Settings::default())
}

/// Compiles model text with explicit settings (the `adjoint` tool's options).
pub fn compile_with(
    tokens: TokenStream,
    source: &str,
    settings: &Settings,
) -> Result<Compiled, Vec<syn::Error>> {
    let model = frontend::parse_model(tokens.clone())?;
    let mut program = frontend::lower_model(tokens, &Mode::Staged)?;
    program.sizes.extend(settings.sizes.iter().map(|(k, v)| (k.clone(), *v)));
    let reports = if settings.simplify {
        program.simplify(&settings.limits).map_err(|e| {
            vec![syn::Error::new(model.name.span(), format!("simplifying the derivation: {}", e.message))]
        })?
    } else {
        Vec::new()
    };
    let code = backend::generate(&program, source, &model.docs);
    Ok(Compiled { program, code, reports })
}

/// Compiles model tokens (the macro's input).
pub fn compile(tokens: TokenStream) -> Result<Compiled, Vec<syn::Error>> {
    let source = tokens.to_string();
    compile_with_source(tokens, &source)
}

/// What `model!` expands to: the generated module, or every error as a
/// `compile_error!` at its tokens.
pub fn expand(tokens: TokenStream) -> TokenStream {
    match compile(tokens) {
        Ok(c) => c.code,
        Err(errors) => errors.into_iter().map(|e| e.into_compile_error()).collect(),
    }
}
