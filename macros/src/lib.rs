//! The `model!` macro: hands its tokens to `adjoint_compiler::expand`, which returns
//! the generated Rust, or one `compile_error!` per mistake at the offending tokens.
//! No logic lives here, so the build-script path (`adjoint_compiler::build`) and the
//! macro produce the same code.

use proc_macro::TokenStream;

/// Compiles a model written in adjoint's DSL into a module of plain Rust: sizes,
/// parameter and gradient structs, `loss`, `grads` and the derived formulas.
/// See the `adjoint` crate's documentation for the language and a complete GPT.
#[proc_macro]
pub fn model(input: TokenStream) -> TokenStream {
    adjoint_compiler::expand(input.into()).into()
}
