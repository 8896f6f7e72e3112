//! Graphs as formulas: matrix notation in Unicode or LaTeX, and Graphviz DOT.
//!
//! Each op states its notation as a [`Form`] (in its op-family file); this module
//! decides which values get a line of their own and renders the rest inline:
//! a value is bound to a name when it is used more than once (so a shared
//! subexpression is printed once), when the graph names it (`P`, `dS`), or when it is a
//! requested output. Everything is done in id order over ordered maps, so the same
//! graph prints the same text byte for byte.

mod dot;
mod render;

pub use dot::dot;
pub use render::{label, superscript};

use std::collections::{BTreeMap, BTreeSet};

use crate::dim::Dim;
use crate::ir::{Graph, ValueId};
use crate::scalar::Scalar;

/// Which notation to print in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Unicode,
    Latex,
}

/// Binary operators, by notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Infix {
    Add,
    Sub,
    /// `·`, the matrix product.
    Matmul,
    /// `⊙`.
    Hadamard,
    /// `⊘`.
    Divide,
}

/// Named elementwise functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Exp,
    Log,
    Tanh,
    Relu,
    Gelu,
    GeluGrad,
}

/// How an op is written.
#[derive(Clone, Debug, PartialEq)]
pub enum Form {
    /// An input: its name.
    Leaf,
    /// A constant tensor: its value.
    Const(Scalar),
    Infix(Infix),
    Neg,
    /// `c·X`, or `X / √d_k` when `c` is a reciprocal.
    Scale(Scalar),
    /// `X + c`.
    Shift(Scalar),
    Call(Func),
    Sqrt,
    /// `[X > 0]`.
    Positive,
    Transpose,
    Permute(Vec<usize>),
    /// Printed as its operand (broadcast, reshape, stop-gradient).
    Transparent,
    Slice {
        axis: usize,
        start: Dim,
        len: Dim,
    },
    Pad {
        axis: usize,
        before: Dim,
        after: Dim,
    },
    /// Joined along an axis: side by side (last axis) or stacked (the one before).
    Concat(usize),
    /// Sum over an axis: `rowsum`, `colsum` or `Σ_dim`.
    Sum(usize),
    Max(usize),
    Argmax(usize),
    /// `E[tokens]`.
    Gather,
    ScatterAdd,
    OneHot,
    /// `mask₋∞(S)`, `mask₀(G)`.
    Causal(Scalar),
    Select,
}

impl Form {
    pub const MATMUL: Form = Form::Infix(Infix::Matmul);
}

/// Skips transparent nodes: the value a reader sees.
fn visible(g: &Graph, mut id: ValueId) -> ValueId {
    while g.node(id).op.form() == Form::Transparent {
        id = g.node(id).inputs[0];
    }
    id
}

fn is_atomic(form: &Form) -> bool {
    matches!(form, Form::Leaf | Form::Const(_))
}

/// The formulas for `outputs` (label, value), one `name = expression` per line.
pub fn formulas(g: &Graph, outputs: &[(String, ValueId)], style: Style) -> String {
    // Count visible uses among everything the outputs depend on.
    let roots: Vec<ValueId> = outputs.iter().map(|(_, id)| visible(g, *id)).collect();
    let live = g.ancestors(&roots);
    let mut uses = vec![0usize; g.len()];
    for id in g.ids().filter(|id| live[id.index()]) {
        if g.node(id).op.form() == Form::Transparent {
            continue;
        }
        let distinct: BTreeSet<ValueId> = g.node(id).inputs.iter().map(|&i| visible(g, i)).collect();
        for i in distinct {
            uses[i.index()] += 1;
        }
    }
    let output_of: BTreeMap<ValueId, &str> =
        outputs.iter().rev().map(|(label, id)| (visible(g, *id), label.as_str())).collect();

    // A name given to a reshape or broadcast of a value (`dQ` is the reshape of the
    // heads' gradient) names the value the reader sees.
    let mut wrapper_name: BTreeMap<ValueId, &str> = BTreeMap::new();
    for id in g.ids().filter(|id| live[id.index()] || g.node(*id).op.form() == Form::Transparent) {
        if let (Form::Transparent, Some(n)) = (g.node(id).op.form(), g.node(id).name.as_deref()) {
            wrapper_name.entry(visible(g, id)).or_insert(n);
        }
    }

    // Choose what gets a line, and its name, in id order.
    let mut names = render::Names::new(style);
    let mut bound: Vec<ValueId> = Vec::new();
    let mut labelled: BTreeSet<ValueId> = BTreeSet::new();
    for id in g.ids().filter(|id| live[id.index()]) {
        let form = g.node(id).op.form();
        if form == Form::Transparent {
            continue;
        }
        if is_atomic(&form) {
            if let (Form::Leaf, Some(n)) = (&form, g.display_name(id)) {
                names.assign_leaf(id, n);
            }
            continue;
        }
        let named = g.node(id).name.as_deref().or(wrapper_name.get(&id).copied());
        let is_output = output_of.contains_key(&id);
        // A bare transpose is as short as a name: it is never worth a line.
        let shared = uses[id.index()] >= 2 && form != Form::Transpose;
        if shared || named.is_some() || is_output {
            let base = named.map(str::to_string).unwrap_or_else(|| fallback_name(g, id));
            // An output used nowhere else is printed under its label only.
            if is_output && uses[id.index()] == 0 {
                names.assign_label(id, output_of[&id]);
                labelled.insert(id);
            } else {
                names.assign(id, &base);
                bound.push(id);
            }
        }
    }

    let mut lines = Vec::new();
    let mut printer = render::Printer::new(g, &names, style);
    for &id in &bound {
        lines.push(format!("{} = {}", names.get(id).unwrap_or("?"), printer.expr_of(id)));
    }
    for (label, id) in outputs {
        let id = visible(g, *id);
        let name = names.get(id).map(str::to_string);
        match name {
            Some(_) if labelled.contains(&id) => {
                lines.push(format!("{} = {}", render::label(label, style), printer.expr_of(id)))
            }
            Some(n) => lines.push(format!("{} = {n}", render::label(label, style))),
            None => lines.push(format!("{} = {}", render::label(label, style), printer.render(id).text)),
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// A readable name for an unnamed shared value, from what it is.
fn fallback_name(g: &Graph, id: ValueId) -> String {
    match g.node(id).op.form() {
        Form::Sum(_) => "s".into(),
        Form::Max(_) => "m".into(),
        Form::Call(Func::Exp) => "e".into(),
        Form::Infix(Infix::Matmul) => "M".into(),
        _ => "u".into(),
    }
}
