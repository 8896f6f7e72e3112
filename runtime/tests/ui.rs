//! Compile-fail tests of `model!`: each `ui/*.rs` is a model with one kind of mistake
//! (one has several), and its `.stderr` the errors rustc shows, at the offending tokens.
//! Regenerate with `TRYBUILD=overwrite cargo test -p adjoint --test ui`.

#[test]
fn dsl_mistakes_are_spanned_compile_errors() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
