//! The execution plan as text (`adjoint MODEL --plan`): per stage, the fused loops and
//! kernels of each pass, what the forward pass saves for the backward pass with its
//! size at the representative sizes, what the backward pass recomputes and why, what the
//! forward pass computes for it, and which gradients are scattered where they lie.
//! Deterministic, so it can be snapshot-tested.

use std::fmt::Write;

use super::causal::Causal;
use super::schedule::{Item, Level, Schedule, permute_source};
use super::stage::{self, HoistWhy, StagePlan};
use crate::egraph::Sizes;
use crate::ir::{Graph, ValueId};
use crate::ops::{Op, swaps_last_two};
use crate::program::Program;

/// A value's name for the plan: its formula name if it has one.
fn name(g: &Graph, id: ValueId) -> String {
    match g.display_name(id) {
        Some(n) => format!("{n} (v{})", id.0),
        None => format!("v{}", id.0),
    }
}

fn bytes(sizes: &Sizes, g: &Graph, id: ValueId) -> f64 {
    // f32 values and i32 indices alike.
    sizes.numel(g.shape(id)) * 4.0
}

fn human(b: f64) -> String {
    if b >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

/// One pass's schedule: a line per fused loop and per kernel (`roots`: what the pass
/// hands back, which the causal analysis must leave whole).
fn pass(out: &mut String, g: &Graph, s: &Schedule, sizes: &Sizes, roots: &[ValueId]) {
    let root_set = roots.iter().copied().collect();
    let causal = Causal::of(g, &root_set);
    let epilogues = stage::fused_epilogues(g, s, &root_set, &causal);
    let merged = stage::merged_permutes(g, s, &root_set, &epilogues);
    let (mut loops, mut kernels, mut products) = (0, 0, 0);
    for item in &s.items {
        match *item {
            Item::Group(gi) => {
                loops += 1;
                let group = &s.groups[gi];
                let level_count =
                    |l: Level| group.members.iter().filter(|&&m| s.member(m).map(|x| x.1) == Some(l)).count();
                let sums = match level_count(Level::Col) {
                    0 => String::new(),
                    1 => ", 1 column sum added up as the rows go by".to_string(),
                    k => format!(", {k} column sums added up as the rows go by"),
                };
                let writes: Vec<String> = group
                    .members
                    .iter()
                    .filter(|&&m| s.is_needed(m))
                    .map(|&m| format!("{} {}", name(g, m), g.shape(m)))
                    .collect();
                let epilogue = match epilogues.get(&gi) {
                    Some(&p) => {
                        format!(" [epilogue of {}: reads its rows as the GEMM finishes them]", name(g, p))
                    }
                    None if causal.lower_loop(g, s, gi) => {
                        " [causal: each row computes its columns up to the diagonal, zeros past it]"
                            .to_string()
                    }
                    None => String::new(),
                };
                let _ = writeln!(
                    out,
                    "    loop over {} ({} ops, {} row values{sums}): writes {}{epilogue}",
                    g.shape(group.space),
                    group.members.len(),
                    level_count(Level::Row),
                    writes.join(", ")
                );
            }
            Item::Kernel(id) => {
                kernels += 1;
                if matches!(g.node(id).op, Op::Matmul) {
                    products += 1;
                }
                // Products name a permuted operand by its source, read through strides.
                let operand = |i: ValueId| match (&g.node(id).op, permute_source(g, i)) {
                    (Op::Matmul, Some((src, p))) if swaps_last_two(&p) => format!("{}ᵀ", name(g, src)),
                    (Op::Matmul, Some((src, p))) => format!("{} read as permute{p:?}", name(g, src)),
                    _ => name(g, i),
                };
                // What the kernel does beyond its op: fused, merged into a permute, causal.
                let notes: Vec<String> = if epilogues.values().any(|&p| p == id) {
                    vec!["fused: its loop below runs as its epilogue".to_string()]
                } else if merged.contains_key(&id) {
                    vec!["no copy: the product above writes its layout".to_string()]
                } else if matches!(g.node(id).op, Op::Matmul) {
                    let into = merged.iter().filter(|e| *e.1 == id);
                    let into = into.map(|(&q, _)| format!("written straight into {}'s layout", name(g, q)));
                    causal.product(g, id).describe().into_iter().chain(into).collect()
                } else {
                    Vec::new()
                };
                let skip = (!notes.is_empty()).then(|| format!(" [{}]", notes.join("; ")));
                let _ = writeln!(
                    out,
                    "    {} {} → {} ({}){}",
                    g.node(id).op.mnemonic(),
                    g.node(id).inputs.iter().map(|&i| operand(i)).collect::<Vec<_>>().join(", "),
                    name(g, id),
                    human(bytes(sizes, g, id)),
                    skip.unwrap_or_default()
                );
            }
        }
    }
    let _ = writeln!(out, "    = {loops} fused loops, {kernels} kernels ({products} products)");
}

/// The whole program's plan.
pub fn describe(p: &Program) -> String {
    let sizes = Sizes { sizes: p.sizes.clone(), default: 64 };
    let mut out = String::new();
    let at: Vec<String> = p.sizes.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(out, "plan of `{}` (bytes at {})", p.name, at.join(", "));
    let _ = match super::split::analyse(p) {
        Ok(s) => writeln!(
            out,
            "batch split: `grads` runs the two halves of the batch side by side: the loss is a sum over the examples along `{}`{}",
            s.dim,
            match s.exponent {
                0 => String::new(),
                e if e % 2 == 0 => format!(", times {}^{}", s.dim, e / 2),
                e => format!(", times {}^({e}/2)", s.dim),
            }
        ),
        Err(why) => writeln!(out, "batch split: none, the whole batch runs at once ({why})"),
    };
    // What runs: the lowered stages (`lower.rs`).
    let lowered = super::lower::lower(p);
    for (k, st) in lowered.stages.iter().enumerate() {
        let g = &st.graph;
        let what = match st.repeat {
            Some(l) => format!("loop body over `{}`, once per layer", p.loops[l].var),
            None if k + 1 == p.stages.len() => "the loss stage".to_string(),
            None => "before the loop".to_string(),
        };
        let _ = writeln!(out, "\nstage {k}, {what}");
        let Some(StagePlan {
            forward_set,
            forward_roots,
            grad_roots,
            backward,
            saved,
            recompute,
            hoisted,
            ..
        }) = stage::plan(st)
        else {
            continue;
        };
        let forward = stage::forward_schedule(st, &forward_set, &forward_roots);
        let _ = writeln!(out, "  forward:");
        pass(&mut out, g, &forward, &sizes, &forward_roots);
        let total = saved.iter().fold(0.0, |t, &id| t + bytes(&sizes, g, id));
        let _ = writeln!(out, "  saved for the backward pass: {} tensors, {}", saved.len(), human(total));
        for &id in &saved {
            let _ = writeln!(out, "    {} {} {}", name(g, id), g.shape(id), human(bytes(&sizes, g, id)));
        }
        for &id in &recompute {
            let _ = writeln!(
                out,
                "  recomputed: {} {}, a one-hot, from its indices where it is read: saving it would \
                 cost {} per step",
                name(g, id),
                g.shape(id),
                human(bytes(&sizes, g, id))
            );
        }
        for h in &hoisted {
            let instead: Vec<String> = h.instead_of.iter().map(|&x| name(g, x)).collect();
            let _ = match h.why {
                HoistWhy::SharesGeluTanh => writeln!(
                    out,
                    "  computed in the forward pass: {} = gelu′({}), saved instead of {}: it shares GELU's tanh there",
                    name(g, h.value),
                    instead.join(", "),
                    instead.join(", ")
                ),
                HoistWhy::NoGradient => writeln!(
                    out,
                    "  computed in the forward pass: {} {} ({} ops, no gradient in it), saved instead of {}: \
                     only products read it, so the backward pass would give it a loop of its own",
                    name(g, h.value),
                    g.shape(h.value),
                    h.nodes.len(),
                    instead.join(", ")
                ),
            };
        }
        let _ = writeln!(out, "  backward:");
        pass(&mut out, g, &backward, &sizes, &grad_roots);
        for &(i, grad) in st.backward.iter().flat_map(|b| &b.param_grads) {
            if let Some((rows, input)) = stage::scattered(st, grad) {
                let _ = writeln!(
                    out,
                    "  the gradient of `{}`: the rows of {} added where it lies, at the indices `{}` (no {} temporary)",
                    p.params[i].name,
                    name(g, rows),
                    p.inputs[input].name,
                    human(bytes(&sizes, g, grad))
                );
            }
        }
    }
    out
}
