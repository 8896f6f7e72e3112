//! Two generated versions of the benchmark GPT in one process, training step for
//! training step: the A/B for a change to the compiler's code generation.
//!
//! Separate runs of two builds (`examples/gpt/ab.sh`) differ by up to ±1.5% on this
//! kind of machine when nothing changed (a build against its own copy, tiny, 30
//! rounds: 0.986), more than most code-generation changes move a step. Here both
//! versions train side by side, each with its own parameters, on the same batch; their
//! steps alternate, which one goes first alternating too, and the report is the median
//! of the new/old ratios of each pair: slow phases of the machine touch both alike.
//!
//! Built only with `--features codegen-ab`, from the two files `examples/gpt/codegen_ab.sh`
//! writes (`target/codegen_ab/{old,new}.rs`: `adjoint tests/models/gpt.adj --out` at
//! two revisions).

mod old {
    include!(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/codegen_ab/old.rs"));
}
mod new {
    include!(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/codegen_ab/new.rs"));
}

use std::time::Instant;

use adjoint::ndarray::ArrayD;
use adjoint::optim::{Method, Optimizer};

/// One version's model, its parameters, gradients and optimizer, and one timed step.
macro_rules! side {
    ($m:ident, $sizes:expr, $tokens:expr, $targets:expr) => {{
        let [t, d, h, f, l, v] = $sizes;
        let sizes = $m::gpt::Sizes { T: t, D: d, H: h, F: f, V: v, L: l };
        let mut params = $m::gpt::Params::init(&sizes, 0).map_err(|e| e.to_string())?;
        let mut grads = $m::gpt::Params::zeros(&sizes).map_err(|e| e.to_string())?;
        let mut sgd = Optimizer::new(Method::Sgd);
        let (tokens, targets): (&ArrayD<i32>, &ArrayD<i32>) = ($tokens, $targets);
        move || -> Result<(f64, f32), String> {
            let inputs = $m::gpt::Inputs { tokens: tokens.view(), targets: targets.view() };
            let started = Instant::now();
            let loss = $m::gpt::train_step(&mut params, &inputs, &mut grads, &mut sgd, 1e-3)
                .map_err(|e| e.to_string())?;
            Ok((started.elapsed().as_secs_f64(), loss))
        }
    }};
}

fn main() {
    if let Err(e) = adjoint::parallel::pool_on_this_thread().map_err(|e| e.to_string()).and_then(|()| run()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: codegen_ab tiny|small|gpt2 STEPS";
    let (config, steps) = match &args[..] {
        [c, s] => (c.as_str(), s.parse::<usize>().map_err(|_| usage.to_string())?),
        _ => return Err(usage.into()),
    };
    let Some(&(_, [b, t, d, h, f, l, v])) = adjoint_examples::GPT_CONFIGS.iter().find(|c| c.0 == config)
    else {
        return Err(usage.into());
    };
    let sizes = [t, d, h, f, l, v];
    let tokens = ArrayD::from_shape_fn(vec![b, t], |ix| ((ix[0] * 7919 + ix[1] * 104_729) % v) as i32);
    let targets = ArrayD::from_shape_fn(vec![b, t], |ix| ((ix[0] * 31 + ix[1] * 17 + 5) % v) as i32);
    let mut old_step = side!(old, sizes, &tokens, &targets);
    let mut new_step = side!(new, sizes, &tokens, &targets);
    let warmup = 3;
    let (mut olds, mut news, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut losses = (0.0, 0.0);
    for i in 0..warmup + steps {
        let (o, n) = if i % 2 == 0 {
            let o = old_step()?;
            (o, new_step()?)
        } else {
            let n = new_step()?;
            (old_step()?, n)
        };
        losses = (o.1, n.1);
        if i >= warmup {
            olds.push(o.0);
            news.push(n.0);
            ratios.push(n.0 / o.0);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "config={config} steps={steps} old_median_ms={:.3} new_median_ms={:.3} new_over_old={:.4} (median of adjacent pairs) last_losses={} {}",
        median(&mut olds) * 1e3,
        median(&mut news) * 1e3,
        median(&mut ratios),
        losses.0,
        losses.1
    );
    Ok(())
}
