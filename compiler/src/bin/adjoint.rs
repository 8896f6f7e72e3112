//! `adjoint`: compile a model file without the macro.
//!
//! ```text
//! adjoint MODEL.adj                 every parameter's gradient formula, Unicode
//! adjoint MODEL.adj --latex         the same in LaTeX
//! adjoint MODEL.adj --markdown      a Markdown report with LaTeX math
//! adjoint MODEL.adj --out gen.rs    also write the generated Rust, formatted
//! ```

use adjoint_compiler::backend::param_formulas;
use adjoint_compiler::build::{compile_text, rust_source};
use adjoint_compiler::pretty::Style;

fn main() {
    if let Err(e) = run(std::env::args().skip(1).collect()) {
        eprint!("{e}");
        if !e.ends_with('\n') {
            eprintln!();
        }
        std::process::exit(1);
    }
}

fn run(args: Vec<String>) -> Result<(), String> {
    let usage = "usage: adjoint MODEL.adj [--latex | --markdown] [--out FILE.rs]";
    let (mut file, mut style, mut markdown, mut out) = (None, Style::Unicode, false, None);
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--latex" => style = Style::Latex,
            "--markdown" => (style, markdown) = (Style::Latex, true),
            "--out" => out = Some(it.next().ok_or(usage)?),
            _ if a.starts_with("--") || file.is_some() => return Err(format!("unexpected `{a}`\n{usage}")),
            _ => file = Some(a),
        }
    }
    let file = file.ok_or(usage)?;
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
    let compiled = compile_text(&text, &file)?;
    let formulas = param_formulas(&compiled.program, style);
    if markdown {
        println!("# Gradients of `{}`\n", compiled.program.name);
        for (name, f) in formulas {
            println!("## `{name}`\n\n$$\n\\begin{{aligned}}");
            for line in f.lines() {
                match line.split_once(" = ") {
                    Some((l, r)) => println!("{l} &= {r} \\\\"),
                    None => println!("{line} \\\\"),
                }
            }
            println!("\\end{{aligned}}\n$$\n");
        }
    } else {
        for (name, f) in formulas {
            println!("## {name}\n{f}");
        }
    }
    if let Some(path) = out {
        std::fs::write(&path, rust_source(&compiled)?).map_err(|e| format!("{path}: {e}"))?;
        eprintln!("wrote {path}");
    }
    Ok(())
}
