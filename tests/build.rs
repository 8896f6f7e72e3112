//! Compiles the model files under `models/` to Rust in `OUT_DIR`: the build-script path.

fn main() {
    for model in ["gpt", "mlp", "attention", "embedding"] {
        if let Err(e) =
            adjoint_compiler::build::compile_file(format!("models/{model}.adj"), &format!("{model}.rs"))
        {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
