//! The `model!` front end: tokens → syntax tree (`parse`) → checked, staged IR
//! (`lower`, `expr`), with the op library's signatures in `calls`.
//!
//! Errors are `syn::Error`s carrying the source range of the offending tokens, all of
//! an expansion's errors together; the macro turns them into `compile_error!`s, the
//! build-script path prints them with line and column.

pub mod ast;
pub mod calls;
mod expr;
mod lower;
mod parse;

pub use lower::{Diag, Mode};
pub use parse::parse_model;

use proc_macro2::{Ident, TokenStream, TokenTree};

use crate::program::Program;

/// A diagnostic as a `syn::Error` spanning its range.
pub fn to_syn(d: &Diag) -> syn::Error {
    let ends: TokenStream = [d.range.start, d.range.end]
        .into_iter()
        .map(|span| TokenTree::Ident(Ident::new("x", span)))
        .collect();
    syn::Error::new_spanned(ends, &d.message)
}

/// Parses and lowers model text; with `Mode::Staged`, also derives the backward pass.
pub fn lower_model(tokens: TokenStream, mode: &Mode) -> Result<Program, Vec<syn::Error>> {
    let model = parse_model(tokens)?;
    let mut program = lower::lower(&model, mode).map_err(|ds| ds.iter().map(to_syn).collect::<Vec<_>>())?;
    program.differentiate().map_err(|e| vec![syn::Error::new(model.name.span(), e.message)])?;
    Ok(program)
}

/// Renders errors for a terminal: `file:line:col: message`, one per line.
pub fn render_errors(errors: &[syn::Error], file: &str) -> String {
    let mut out = String::new();
    for e in errors {
        for e in e.clone() {
            let at = e.span().start();
            out += &format!("{file}:{}:{}: error: {e}\n", at.line, at.column + 1);
        }
    }
    out
}
