//! Compiles the model files under `models/` to Rust in `OUT_DIR`: the build-script path.

fn main() {
    if let Err(e) = adjoint_compiler::build::compile_file("models/gpt.adj", "gpt.rs") {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
