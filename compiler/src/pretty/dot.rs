//! Graphs as Graphviz DOT: one box per value with its op and shape, edges from inputs.

use std::fmt::Write;

use crate::ir::{Graph, ValueId};
use crate::ops::{Op, Source};

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The part of `g` that `outputs` (label, value) depend on, as a DOT digraph.
pub fn dot(g: &Graph, outputs: &[(String, ValueId)]) -> String {
    let roots: Vec<ValueId> = outputs.iter().map(|o| o.1).collect();
    let live = g.ancestors(&roots);
    let mut out =
        String::from("digraph adjoint {\n  rankdir=TB;\n  node [fontname=\"monospace\", fontsize=10];\n");
    for id in g.ids().filter(|id| live[id.index()]) {
        let node = g.node(id);
        let (shape, what) = match &node.op {
            Op::Source(Source::Input { .. }) => ("ellipse", String::new()),
            _ => ("box", node.op.mnemonic()),
        };
        let name = g.display_name(id).map(str::to_string).unwrap_or_default();
        let label = [name, what, node.ty.to_string()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("\\n");
        let _ = writeln!(
            out,
            "  n{} [shape={shape}, label=\"{}\"];",
            id.0,
            escape(&label).replace("\\\\n", "\\n")
        );
        for (k, i) in node.inputs.iter().enumerate() {
            let _ = writeln!(out, "  n{} -> n{} [label=\"{k}\"];", i.0, id.0);
        }
    }
    for (label, id) in outputs {
        let _ = writeln!(out, "  out_{} [shape=plaintext, label=\"{}\"];", id.0, escape(label));
        let _ = writeln!(out, "  n{} -> out_{};", id.0, id.0);
    }
    out.push_str("}\n");
    out
}
