//! Simplification by equality saturation (egg): a graph and its outputs in, a cheaper
//! equivalent graph out.
//!
//! The joint forward+backward graph goes in with every output as a root (the loss, each
//! gradient, the carried value), so the shared forward activations stay shared. Rules
//! (`rules/`, one file per op family, each verified numerically by the tests) grow the
//! e-graph in phases with node, iteration and time limits; [`extract`] then picks the
//! cheapest DAG under the cost model of [`cost`] (FLOPs plus bytes at representative
//! sizes). The result is never costlier than the input: if extraction does not beat
//! the input's own choice, the input is kept. Every value of the output graph that
//! stands for a named value of the input takes its name, so the formulas stay readable.

pub mod analysis;
pub mod cost;
pub mod extract;
pub mod lang;
pub mod rules;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use egg::{Id, Language as _, RecExpr, Runner, StopReason};

use crate::error::{Result, bail};
use crate::ir::{Graph, ValueId};
use crate::ops::{Op, Source};
use analysis::{Graph as EGraph, Typing};
pub use cost::Sizes;
use lang::{Leaf, Tensor, split, to_op};

/// Limits of one saturation phase.
#[derive(Clone, Debug)]
pub struct Limits {
    pub nodes: usize,
    pub iterations: usize,
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { nodes: 200_000, iterations: 30, time: Duration::from_secs(2) }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Options {
    pub sizes: Sizes,
    pub limits: Limits,
    /// Record why classes merged, for [`explain`] (slower).
    pub explain: bool,
}

/// What a simplification did.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// FLOPs plus bytes (the objective), before and after.
    pub cost_before: f64,
    pub cost_after: f64,
    pub flops_before: f64,
    pub flops_after: f64,
    pub bytes_before: f64,
    pub bytes_after: f64,
    pub nodes_before: usize,
    pub nodes_after: usize,
    pub enodes: usize,
    pub eclasses: usize,
    pub iterations: usize,
    /// Why saturation stopped: `saturated`, or the limit that was hit.
    pub stop: String,
    pub time: Duration,
    /// How many times each rule applied, by name.
    pub applied: BTreeMap<String, usize>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct =
            if self.cost_before > 0.0 { 100.0 * (1.0 - self.cost_after / self.cost_before) } else { 0.0 };
        write!(
            f,
            "FLOPs {:.4e} → {:.4e}, bytes {:.4e} → {:.4e} (cost {pct:.1}% less); nodes {} → {}; e-graph {} nodes in {} classes after {} iterations ({}); {:.1} ms",
            self.flops_before,
            self.flops_after,
            self.bytes_before,
            self.bytes_after,
            self.nodes_before,
            self.nodes_after,
            self.enodes,
            self.eclasses,
            self.iterations,
            self.stop,
            self.time.as_secs_f64() * 1e3
        )
    }
}

/// The simplified graph, its outputs (in the order given) and the report.
pub struct Simplified {
    pub graph: Graph,
    pub outputs: Vec<ValueId>,
    pub report: Report,
}

/// Adds `graph`'s values under `outputs` to an e-graph; returns each value's class.
pub fn to_egraph(graph: &Graph, egraph: &mut EGraph, outputs: &[ValueId]) -> BTreeMap<ValueId, Id> {
    let live = graph.ancestors(outputs);
    let mut ids = BTreeMap::new();
    for v in graph.ids().filter(|v| live[v.index()]) {
        let node = enode(graph, v, |leaf| Some(egraph.add(leaf)), |i| ids[&i]).expect("adding never fails");
        ids.insert(v, egraph.add(node));
    }
    ids
}

/// The e-node of graph value `v`: its attribute leaves interned by `leaf` (`None` if
/// one is missing), its operands by `operand`.
fn enode(
    graph: &Graph,
    v: ValueId,
    mut leaf: impl FnMut(Tensor) -> Option<Id>,
    operand: impl Fn(ValueId) -> Id,
) -> Option<Tensor> {
    let node = graph.node(v);
    Some(match split(&node.op) {
        Err(input) => Tensor::Leaf(input),
        Ok((kind, attrs)) => {
            let mut children: Vec<Id> =
                attrs.into_iter().map(|a| leaf(Tensor::Leaf(a))).collect::<Option<_>>()?;
            children.extend(node.inputs.iter().map(|&i| operand(i)));
            Tensor::Op(kind, children)
        }
    })
}

/// Builds the graph that `choice` selects under `roots`; values take the names of the
/// input graph's values in the same class (`names`).
pub fn from_choice(
    egraph: &EGraph,
    choice: &BTreeMap<Id, Tensor>,
    roots: &[Id],
    names: &BTreeMap<Id, String>,
    like: &Graph,
) -> Result<(Graph, Vec<ValueId>)> {
    let mut g = Graph::new();
    for (dim, alias) in like.dim_aliases() {
        g.alias_dim(dim.clone(), alias);
    }
    let mut built: BTreeMap<Id, ValueId> = BTreeMap::new();
    let mut outputs = Vec::new();
    for &root in roots {
        outputs.push(build(egraph, choice, egraph.find(root), names, &mut g, &mut built)?);
    }
    Ok((g, outputs))
}

fn build(
    egraph: &EGraph,
    choice: &BTreeMap<Id, Tensor>,
    class: Id,
    names: &BTreeMap<Id, String>,
    g: &mut Graph,
    built: &mut BTreeMap<Id, ValueId>,
) -> Result<ValueId> {
    if let Some(&v) = built.get(&class) {
        return Ok(v);
    }
    let Some(node) = choice.get(&class) else { bail!("simplify: class {class} was not extracted") };
    let v = match node {
        Tensor::Leaf(Leaf::Input { name, role, ty }) => {
            g.apply(Op::Source(Source::Input { name: name.clone(), role: *role, ty: ty.clone() }), &[])?
        }
        Tensor::Leaf(_) => bail!("simplify: an attribute was extracted as a value"),
        Tensor::Op(kind, children) => {
            let n = kind.attrs();
            let attrs: Option<Vec<&Leaf>> =
                children[..n].iter().map(|&c| egraph[c].data.leaf.as_ref()).collect();
            let Some(op) = attrs.and_then(|a| to_op(*kind, &a)) else {
                bail!("simplify: `{}` has unfolded attributes", kind.name())
            };
            let mut inputs = Vec::new();
            for &c in &children[n..] {
                inputs.push(build(egraph, choice, egraph.find(c), names, g, built)?);
            }
            g.apply(op, &inputs)?
        }
    };
    if let Some(name) = names.get(&class) {
        g.name(v, name);
    }
    built.insert(class, v);
    Ok(v)
}

/// An e-graph grown from a graph by the rule phases.
struct Saturated {
    egraph: EGraph,
    classes: BTreeMap<ValueId, Id>,
    roots: Vec<Id>,
    /// The input graph's own node per class.
    original: BTreeMap<Id, Tensor>,
    cost_before: f64,
    iterations: usize,
    stop: String,
    applied: BTreeMap<String, usize>,
}

fn saturate(graph: &Graph, outputs: &[ValueId], options: &Options) -> Result<Saturated> {
    let mut egraph = EGraph::new(Typing);
    if options.explain {
        egraph = egraph.with_explanations_enabled();
    }
    let classes = to_egraph(graph, &mut egraph, outputs);
    egraph.rebuild();
    let roots: Vec<Id> = outputs.iter().map(|o| classes[o]).collect();
    // The input's own choice, to compare against (and fall back on).
    let Some(original) = input_choice(graph, &egraph, &classes) else {
        bail!("simplify: an input node is missing from the e-graph")
    };
    let cost_before = cost::dag_cost(&egraph, &options.sizes, &original, &roots);
    let mut iterations = 0;
    let mut applied: BTreeMap<String, usize> = BTreeMap::new();
    let mut stop = String::from("saturated");
    for phase in rules::phases() {
        let runner = Runner::default()
            .with_egraph(egraph)
            .with_node_limit(options.limits.nodes)
            .with_iter_limit(options.limits.iterations.min(phase.iterations))
            .with_time_limit(options.limits.time)
            .run(&phase.rules);
        iterations += runner.iterations.len();
        for it in &runner.iterations {
            for (rule, n) in &it.applied {
                *applied.entry(rule.to_string()).or_default() += n;
            }
        }
        match &runner.stop_reason {
            Some(StopReason::Saturated) | None => {}
            Some(StopReason::IterationLimit(n)) if phase.iterations < options.limits.iterations => {
                stop = format!("{} phase: stopped at its {n}-iteration cap", phase.name)
            }
            Some(other) => stop = format!("{} phase: {}", phase.name, describe(other)),
        }
        egraph = runner.egraph;
    }
    let roots = roots.iter().map(|&r| egraph.find(r)).collect();
    let original =
        original.into_iter().map(|(c, n)| (egraph.find(c), n.map_children(|k| egraph.find(k)))).collect();
    Ok(Saturated { egraph, classes, roots, original, cost_before, iterations, stop, applied })
}

/// Simplifies `graph` keeping `outputs` (the loss, gradients, saved values).
pub fn simplify(graph: &Graph, outputs: &[ValueId], options: &Options) -> Result<Simplified> {
    let started = Instant::now();
    let sat = saturate(graph, outputs, options)?;
    let (choice, cost_after) = best_choice(&sat, options);
    // Names: the first named input value in each class.
    let mut names: BTreeMap<Id, String> = BTreeMap::new();
    for (v, &c) in &sat.classes {
        if let Some(name) = graph.node(*v).name.as_ref() {
            names.entry(sat.egraph.find(c)).or_insert_with(|| name.clone());
        }
    }
    let (out_graph, out_ids) = from_choice(&sat.egraph, &choice, &sat.roots, &names, graph)?;
    let (flops_before, bytes_before) =
        cost::dag_parts(&sat.egraph, &options.sizes, &sat.original, &sat.roots);
    let (flops_after, bytes_after) = cost::dag_parts(&sat.egraph, &options.sizes, &choice, &sat.roots);
    let report = Report {
        cost_before: sat.cost_before,
        cost_after,
        flops_before,
        flops_after,
        bytes_before,
        bytes_after,
        nodes_before: graph.ancestors(outputs).iter().filter(|&&b| b).count(),
        nodes_after: out_graph.len(),
        enodes: sat.egraph.total_number_of_nodes(),
        eclasses: sat.egraph.number_of_classes(),
        iterations: sat.iterations,
        stop: sat.stop,
        time: started.elapsed(),
        applied: sat.applied,
    };
    Ok(Simplified { graph: out_graph, outputs: out_ids, report })
}

/// The extracted choice, or the input's own if extraction did not beat it.
fn best_choice(sat: &Saturated, options: &Options) -> (BTreeMap<Id, Tensor>, f64) {
    let extracted = extract::extract(&sat.egraph, &options.sizes, &sat.roots);
    let cost = cost::dag_cost(&sat.egraph, &options.sizes, &extracted, &sat.roots);
    if cost <= sat.cost_before { (extracted, cost) } else { (sat.original.clone(), sat.cost_before) }
}

/// egg's explanation of why output `which` of `graph` equals its simplified form: the
/// chain of rewrites, one step per line, between the two terms.
pub fn explain(graph: &Graph, outputs: &[ValueId], which: usize, options: &Options) -> Result<String> {
    let options = Options { explain: true, ..options.clone() };
    let mut sat = saturate(graph, outputs, &options)?;
    let (choice, _) = best_choice(&sat, &options);
    let Some(&root) = sat.roots.get(which) else { bail!("explain: there is no output {which}") };
    let derived = term_of_graph(graph, outputs[which]);
    let mut simplified = RecExpr::default();
    term_of_choice(&sat.egraph, &choice, root, &mut simplified, &mut BTreeMap::new());
    let mut explanation = sat.egraph.explain_equivalence(&derived, &simplified);
    Ok(explanation.get_flat_string())
}

/// The term computing `v` in `graph`.
fn term_of_graph(graph: &Graph, v: ValueId) -> RecExpr<Tensor> {
    let mut expr = RecExpr::default();
    let mut ids: BTreeMap<ValueId, Id> = BTreeMap::new();
    let live = graph.ancestors(&[v]);
    for u in graph.ids().filter(|u| live[u.index()]) {
        let node = enode(graph, u, |leaf| Some(expr.add(leaf)), |i| ids[&i]).expect("adding never fails");
        ids.insert(u, expr.add(node));
    }
    expr
}

/// The term `choice` selects for `class` (attribute classes as their leaves).
fn term_of_choice(
    egraph: &EGraph,
    choice: &BTreeMap<Id, Tensor>,
    class: Id,
    expr: &mut RecExpr<Tensor>,
    done: &mut BTreeMap<Id, Id>,
) -> Id {
    let class = egraph.find(class);
    if let Some(&id) = done.get(&class) {
        return id;
    }
    let node = match (choice.get(&class), &egraph[class].data.leaf) {
        (Some(n), _) => n.clone(),
        (None, Some(leaf)) => Tensor::Leaf(leaf.clone()),
        (None, None) => egraph[class].nodes[0].clone(),
    };
    let node = node.map_children(|k| term_of_choice(egraph, choice, k, expr, done));
    let id = expr.add(node);
    done.insert(class, id);
    id
}

/// The e-node each input value became, per class.
fn input_choice(
    graph: &Graph,
    egraph: &EGraph,
    classes: &BTreeMap<ValueId, Id>,
) -> Option<BTreeMap<Id, Tensor>> {
    let mut out = BTreeMap::new();
    for (&v, &c) in classes {
        let node = enode(graph, v, |leaf| egraph.lookup(leaf), |i| classes[&i])?;
        out.insert(egraph.find(c), node);
    }
    Some(out)
}

fn describe(r: &StopReason) -> String {
    match r {
        StopReason::Saturated => "saturated".into(),
        StopReason::IterationLimit(n) => format!("iteration limit {n} hit"),
        StopReason::NodeLimit(n) => format!("node limit {n} hit"),
        StopReason::TimeLimit(t) => format!("time limit {t:.1} s hit"),
        StopReason::Other(s) => s.clone(),
    }
}
