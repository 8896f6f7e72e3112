//! The backend's lowering (`backend::lower`): every stage of every model file, lowered,
//! computes what it computed before (interpreter, f64, random inputs at odd sizes), and
//! the GPT's layer runs with no concatenation or slice left under its results.

use std::collections::BTreeMap;

use adjoint_compiler::backend::lower::lower;
use adjoint_compiler::build::compile_text;
use adjoint_compiler::dim::DimEnv;
use adjoint_compiler::interp::evaluate;
use adjoint_compiler::ir::{Graph, ValueId};
use adjoint_compiler::ops::{Layout, Op};
use adjoint_compiler::program::Stage;

mod common;

/// A model file's name, its text, and the sizes it is checked at.
type Model = (&'static str, &'static str, &'static [(&'static str, i64)]);

/// Odd sizes, heads dividing the width.
const MODELS: &[Model] = &[
    (
        "gpt.adj",
        include_str!("../../tests/models/gpt.adj"),
        &[("B", 2), ("T", 5), ("D", 12), ("H", 3), ("F", 14), ("V", 11), ("L", 2)],
    ),
    ("mlp.adj", include_str!("../../tests/models/mlp.adj"), &[("N", 3), ("D", 5), ("F", 7), ("L", 2)]),
    (
        "attention.adj",
        include_str!("../../tests/models/attention.adj"),
        &[("B", 2), ("T", 4), ("D", 6), ("H", 2)],
    ),
];

/// What a stage hands back: its output and its gradients.
fn roots(stage: &Stage) -> Vec<ValueId> {
    let mut roots = vec![stage.output];
    if let Some(b) = &stage.backward {
        roots.extend(b.carry_grad);
        roots.extend(b.param_grads.iter().map(|p| p.1));
    }
    roots
}

fn used_ops(g: &Graph, roots: &[ValueId]) -> Vec<&'static str> {
    let live = g.ancestors(roots);
    g.ids()
        .filter(|id| live[id.index()])
        .filter_map(|id| match &g.node(id).op {
            Op::Layout(Layout::Concat { .. }) => Some("concat"),
            Op::Layout(Layout::Slice { .. }) => Some("slice"),
            Op::Matmul => Some("matmul"),
            _ => None,
        })
        .collect()
}

#[test]
fn lowered_stages_compute_what_they_did() {
    for &(file, text, sizes) in MODELS {
        let compiled = compile_text(text, file).unwrap();
        let (program, lowered) = (&compiled.program, lower(&compiled.program));
        let env: DimEnv = sizes.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let v = sizes.iter().find(|s| s.0 == "V").map_or(1, |s| s.1 as usize);
        let bounds: BTreeMap<&str, usize> = [("tokens", v), ("targets", v)].into();
        for (k, (before, after)) in program.stages.iter().zip(&lowered.stages).enumerate() {
            let mut rng = common::Rng::new(11 + k as u64);
            let feeds = common::random_feeds(&before.graph, &env, &mut rng, &[], &bounds);
            let fed = |g: &Graph| common::feeds_of(g, &feeds);
            let (want_ids, got_ids) = (roots(before), roots(after));
            let want = evaluate(&before.graph, &env, &fed(&before.graph), &want_ids).unwrap();
            let got = evaluate(&after.graph, &env, &fed(&after.graph), &got_ids).unwrap();
            for (&a, &b) in want_ids.iter().zip(&got_ids) {
                let (x, y) =
                    (want.get(a).unwrap().real("want").unwrap(), got.get(b).unwrap().real("got").unwrap());
                let err = common::rel_err(y, x, 1e-12);
                assert!(err < 1e-9, "{file} stage {k}: relative error {err:e}");
            }
        }
        if file == "gpt.adj" {
            // The layer: the fused Q/K/V products of the formulas run part by part.
            let (before, after) = (&program.stages[1], &lowered.stages[1]);
            let (was, is) = (used_ops(&before.graph, &roots(before)), used_ops(&after.graph, &roots(after)));
            assert!(was.contains(&"concat") && was.contains(&"slice"), "{was:?}");
            assert!(!is.contains(&"concat") && !is.contains(&"slice"), "{is:?}");
            let count = |ops: &[&str]| ops.iter().filter(|&&o| o == "matmul").count();
            // Q/K/V forward, their input gradient and their weight gradients: three each.
            assert_eq!(count(&is), count(&was) + 6, "three products for each fused one: {was:?} → {is:?}");
        }
    }
}
