//! `adjoint`: compile a model file without the macro.
//!
//! ```text
//! adjoint MODEL.adj                 every parameter's gradient formula, Unicode
//! adjoint MODEL.adj --latex         the same in LaTeX
//! adjoint MODEL.adj --markdown      a Markdown report with LaTeX math
//! adjoint MODEL.adj --out gen.rs    also write the generated Rust, formatted
//! adjoint MODEL.adj --derived       the derivation as autodiff wrote it, unsimplified
//! adjoint MODEL.adj --report        the simplifier's report per stage (cost, e-graph, time)
//! adjoint MODEL.adj --plan          the execution plan: fused loops, kernels, saved bytes
//! adjoint MODEL.adj --sizes T=64,D=768   representative sizes for the cost model
//! adjoint MODEL.adj --explain h.attn.wq  why the simplified gradient equals the derived one
//! ```

use adjoint_compiler::backend::param_formulas;
use adjoint_compiler::build::{compile_text_with, rust_source};
use adjoint_compiler::driver::Settings;
use adjoint_compiler::egraph;
use adjoint_compiler::pretty::Style;
use adjoint_compiler::program::{Program, Scope};

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
    let usage = "usage: adjoint MODEL.adj [--latex | --markdown] [--out FILE.rs] [--derived] [--report] [--plan] [--sizes K=V,...] [--explain PARAM]";
    let (mut file, mut style, mut markdown, mut out) = (None, Style::Unicode, false, None);
    let (mut settings, mut report, mut explain, mut plan) = (Settings::default(), false, None, false);
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--latex" => style = Style::Latex,
            "--markdown" => (style, markdown) = (Style::Latex, true),
            "--out" => out = Some(it.next().ok_or(usage)?),
            "--derived" => settings.simplify = false,
            "--report" => report = true,
            "--plan" => plan = true,
            "--explain" => explain = Some(it.next().ok_or(usage)?),
            "--sizes" => {
                for kv in it.next().ok_or(usage)?.split(',') {
                    let (k, v) = kv.split_once('=').ok_or(format!("--sizes: `{kv}` is not NAME=SIZE"))?;
                    let v: i64 = v.parse().map_err(|_| format!("--sizes: `{v}` is not a whole number"))?;
                    settings.sizes.insert(k.to_string(), v);
                }
            }
            _ if a.starts_with("--") || file.is_some() => return Err(format!("unexpected `{a}`\n{usage}")),
            _ => file = Some(a),
        }
    }
    let file = file.ok_or(usage)?;
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
    if let Some(param) = explain {
        settings.simplify = false;
        let compiled = compile_text_with(&text, &file, &settings)?;
        return explain_param(&compiled.program, &param);
    }
    let started = std::time::Instant::now();
    let compiled = compile_text_with(&text, &file, &settings)?;
    if plan {
        print!("{}", adjoint_compiler::backend::plan::describe(&compiled.program));
        return Ok(());
    }
    if report {
        let p = &compiled.program;
        for (k, (stage, r)) in p.stages.iter().zip(&compiled.reports).enumerate() {
            let what = match stage.repeat {
                Some(l) => format!("loop body over `{}` (one graph for every layer)", p.loops[l].var),
                None if k + 1 == p.stages.len() => "the loss stage".to_string(),
                None => "before the loop".to_string(),
            };
            println!("stage {k}, {what}: {r}");
        }
        println!(
            "total: {:.1} ms to compile (parse, derive, simplify, generate)",
            started.elapsed().as_secs_f64() * 1e3
        );
        return Ok(());
    }
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

/// egg's explanation for each stage gradient of `param` (a file name like `wte` or a
/// loop parameter like `h.attn.wq` / `attn.wq`).
fn explain_param(p: &Program, param: &str) -> Result<(), String> {
    let wanted = |i: usize| {
        let info = &p.params[i];
        match info.scope {
            Scope::Model => info.name == param,
            Scope::Loop(l) => info.name == param || format!("{}.{}", p.loops[l].var, info.name) == param,
        }
    };
    let mut found = false;
    for (k, stage) in p.stages.iter().enumerate() {
        let Some(back) = &stage.backward else { continue };
        let mut roots = vec![stage.output];
        roots.extend(back.carry_grad);
        let first = roots.len();
        roots.extend(back.param_grads.iter().map(|g| g.1));
        for (j, &(i, _)) in back.param_grads.iter().enumerate() {
            if !wanted(i) {
                continue;
            }
            found = true;
            let options = egraph::Options {
                sizes: egraph::Sizes { sizes: p.sizes.clone(), default: 64 },
                ..Default::default()
            };
            let text = egraph::explain(&stage.graph, &roots, first + j, &options).map_err(|e| e.message)?;
            println!("# stage {k}: ∂L/∂{param}\n{text}");
        }
    }
    if found { Ok(()) } else { Err(format!("no parameter `{param}` has a gradient")) }
}
