//! A lowered model: its declarations and its stages, each a forward graph joined with
//! its backward pass.
//!
//! A model with `for h in 0..L { x = block(x); }` is cut at the loop: a stage before it
//! (inputs → `x`), the loop body as one stage run `L` times (`x` → `x`, its parameters
//! per layer), and a stage after it (`x` → loss). Each stage is compiled once whatever
//! `L` is, which is what lets one generated model take any number of layers (read from
//! the parameter file), and keeps the graphs, the e-graph and the formulas per block
//! small. The backward pass runs the stages in reverse, each as a vector-Jacobian
//! product from the gradient of its output (`d{x}`); a parameter used by several stages
//! (the tied embedding) sums its contributions.
//!
//! Invariant: every stage's `output` is its carried value (or the scalar loss, last);
//! `carry_in` is a data input of the same type as the previous stage's output.

use crate::autodiff;
use crate::dim::Dim;
use crate::egraph;
use crate::error::Result;
use crate::frontend::ast::{Init, Range};
use crate::ir::{DType, Graph, Role, Shape, ValueId};

/// Where a parameter lives: once in the model, or once per layer of a loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Model,
    Loop(usize),
}

#[derive(Clone, Debug)]
pub struct ParamInfo {
    /// The dotted name inside its scope (`attn.wq`); the file name adds `h{i}.`.
    pub name: String,
    pub scope: Scope,
    pub shape: Shape,
    pub init: Init,
    /// What the formulas call it (`W_q`).
    pub display: String,
    pub range: Range,
}

#[derive(Clone, Debug)]
pub struct InputInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Shape,
}

#[derive(Clone, Debug)]
pub struct LoopInfo {
    /// The loop variable: the layer prefix (`h` → `h0.`, `h1.`).
    pub var: String,
    pub count: Dim,
}

/// A stage's backward pass, in the same graph as its forward pass.
#[derive(Clone, Debug)]
pub struct Backward {
    /// The input holding the gradient of the stage's output (none for the loss stage,
    /// whose seed is the constant 1).
    pub seed: Option<ValueId>,
    /// The gradient of `carry_in`, passed to the previous stage.
    pub carry_grad: Option<ValueId>,
    /// `(parameter index, its gradient)`, in `Stage::params` order.
    pub param_grads: Vec<(usize, ValueId)>,
}

#[derive(Clone, Debug)]
pub struct Stage {
    pub graph: Graph,
    /// The loop this stage is the body of.
    pub repeat: Option<usize>,
    /// The carried value's name (`x`) and input, for every stage but the first.
    pub carry_in: Option<(String, ValueId)>,
    pub output: ValueId,
    /// `(index into Program::params, the stage's input for it)`.
    pub params: Vec<(usize, ValueId)>,
    /// `(index into Program::inputs, the stage's input for it)`.
    pub inputs: Vec<(usize, ValueId)>,
    pub backward: Option<Backward>,
}

#[derive(Clone, Debug, Default)]
pub struct Program {
    pub name: String,
    /// Declared dimension symbols, in order.
    pub dims: Vec<String>,
    /// Representative sizes (`dims T = 128;`), for the simplifier's cost model.
    pub sizes: std::collections::BTreeMap<String, i64>,
    /// `dim N = B * T;` declarations.
    pub aliases: Vec<(String, Dim)>,
    pub inputs: Vec<InputInfo>,
    pub params: Vec<ParamInfo>,
    pub loops: Vec<LoopInfo>,
    pub stages: Vec<Stage>,
    /// `output` values: names and values of the last stage's graph.
    pub outputs: Vec<(String, ValueId)>,
}

impl Program {
    /// Adds every stage's backward pass. Parameters get gradients; so does each carried
    /// input, for the stage before.
    pub fn differentiate(&mut self) -> Result<()> {
        let last = self.stages.len().saturating_sub(1);
        for (k, stage) in self.stages.iter_mut().enumerate() {
            let g = &mut stage.graph;
            let mut wrt: Vec<ValueId> = stage.params.iter().map(|p| p.1).collect();
            if let Some((_, c)) = &stage.carry_in {
                wrt.push(*c);
            }
            let (seed, grads) = if k == last {
                (None, autodiff::grad(g, stage.output, &wrt)?)
            } else {
                let name = format!("d{}", g.display_name(stage.output).unwrap_or("out"));
                let seed = g.input(&name, Role::Data, g.ty(stage.output).clone())?;
                (Some(seed), autodiff::backward(g, &[(stage.output, seed)], &wrt)?)
            };
            let carry_grad = stage.carry_in.as_ref().map(|_| grads[grads.len() - 1]);
            let param_grads = stage.params.iter().zip(&grads).map(|(p, &d)| (p.0, d)).collect();
            stage.backward = Some(Backward { seed, carry_grad, param_grads });
        }
        Ok(())
    }

    /// Simplifies every stage's joint graph with the e-graph (`crate::egraph`), keeping
    /// as roots its output, the carried value's gradient, every parameter gradient and
    /// (last stage) the `output` values; one report per stage. The representative sizes
    /// are `sizes` (`dims T = 128;`), 64 for the others.
    pub fn simplify(&mut self, limits: &egraph::Limits) -> Result<Vec<egraph::Report>> {
        let options = egraph::Options {
            sizes: egraph::Sizes { sizes: self.sizes.clone(), default: 64 },
            limits: limits.clone(),
            explain: false,
        };
        let last = self.stages.len().saturating_sub(1);
        let mut reports = Vec::new();
        for (k, stage) in self.stages.iter_mut().enumerate() {
            let Some(back) = stage.backward.clone() else { continue };
            let mut roots = vec![stage.output];
            roots.extend(back.carry_grad);
            roots.extend(back.param_grads.iter().map(|p| p.1));
            if k == last {
                roots.extend(self.outputs.iter().map(|o| o.1));
            }
            let simplified = egraph::simplify(&stage.graph, &roots, &options)?;
            let mut g = simplified.graph;
            let mut ids = simplified.outputs.into_iter();
            let mut next = || ids.next().expect("one output per root");
            stage.output = next();
            let carry_grad = back.carry_grad.map(|_| next());
            let param_grads = back.param_grads.iter().map(|p| (p.0, next())).collect();
            if k == last {
                for o in &mut self.outputs {
                    o.1 = next();
                }
            }
            // Inputs keep their names; one the simplified graph no longer reads is declared
            // again, so the stage's interface stays the same.
            let old = &stage.graph;
            let mut input = |id: ValueId| -> Result<ValueId> {
                let (name, role, ty) = match &old.node(id).op {
                    crate::ops::Op::Source(crate::ops::Source::Input { name, role, ty }) => {
                        (name.clone(), *role, ty.clone())
                    }
                    _ => crate::error::bail!("simplify: stage input {} is not an input", id.0),
                };
                match g.find_input(&name) {
                    Some(v) => Ok(v),
                    None => g.input(&name, role, ty),
                }
            };
            let seed = back.seed.map(&mut input).transpose()?;
            let carry_in = match &stage.carry_in {
                Some((n, id)) => Some((n.clone(), input(*id)?)),
                None => None,
            };
            let params = stage.params.iter().map(|&(i, id)| Ok((i, input(id)?))).collect::<Result<_>>()?;
            let inputs = stage.inputs.iter().map(|&(i, id)| Ok((i, input(id)?))).collect::<Result<_>>()?;
            stage.graph = g;
            stage.backward = Some(Backward { seed, carry_grad, param_grads });
            stage.carry_in = carry_in;
            stage.params = params;
            stage.inputs = inputs;
            reports.push(simplified.report);
        }
        Ok(reports)
    }

    /// The indices of the parameters in `scope`, in declaration order.
    pub fn members(&self, scope: Scope) -> Vec<usize> {
        (0..self.params.len()).filter(|&i| self.params[i].scope == scope).collect()
    }
}
