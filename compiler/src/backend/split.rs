//! Batch splitting: whether a model's loss is a sum over the examples of its batch, so
//! `grads` may run the two halves of a batch as independent steps (one per core) and
//! add their gradients.
//!
//! Why: on a 2-core machine the step's products are too small to split well (each
//! split hands work to a sleeping core and waits for it), and everything that is not a
//! product runs on one core. Two half-batch steps side by side keep both cores busy
//! with one hand-off per step (BENCHMARKS.md has the measurements).
//!
//! The proof is a walk over each stage's forward nodes, in id order, giving every value
//! a [`Form`]: independent of the examples (`Free`), per-example along one axis whose
//! size is the batch size times a batch-free size (`Axis`), or a sum over the examples
//! (`Total`). With each form goes `exponent`: the value is `B^(exponent/2)` times a
//! function of the examples that does not depend on how many there are (the `1/N` of a
//! mean loss). An op that mixes examples (a slice, a max, a product contracting over
//! the batch axis) or a batch-dependent constant anywhere but on the loss ends the
//! proof with the reason. The backward pass needs no check: a gradient of a sum is the
//! sum of the gradients, whatever graph computes it.
//!
//! Invariant: when [`analyse`] returns a [`Split`], the loss of the whole batch is
//! `Σ_parts (B / B_part)^(exponent/2) · loss(part)`, and so is every gradient.

use crate::dim::Dim;
use crate::ir::{Graph, Role, ValueId};
use crate::ops::{IndexOp, Layout, Op, Pointwise, Reduce, SelectOp, Source};
use crate::program::Program;
use crate::scalar::Scalar;

/// How a step splits over its batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// The batch dimension: axis 0 of every data input.
    pub dim: String,
    /// The loss is `B^(exponent/2)` times a sum over examples (−2 for a mean over `B`).
    pub exponent: i32,
}

/// What a value is, as a function of the batch's examples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// The same for every batch (parameters, constants).
    Free,
    /// Example `b`'s values are block `b` of this axis.
    Axis(usize),
    /// A sum over the examples.
    Total,
}

/// A value's form and its batch exponent (in halves).
type Fact = (Form, i32);

/// The split `grads` may use, or why there is none.
pub fn analyse(p: &Program) -> Result<Split, String> {
    let first = p.inputs.first().ok_or("the model has no data inputs")?;
    let dim = first.shape.0.first().and_then(Dim::as_sym).ok_or_else(|| {
        format!("the first axis of input `{}` is not a single dimension symbol", first.name)
    })?;
    for i in &p.inputs {
        if i.shape.0.first().and_then(Dim::as_sym) != Some(dim) {
            return Err(format!("input `{}` does not have the batch `{dim}` as its first axis", i.name));
        }
    }
    let mut carry: Option<Fact> = None;
    let mut exponent = None;
    for (k, stage) in p.stages.iter().enumerate() {
        let last = k + 1 == p.stages.len();
        let walk = Walk { g: &stage.graph, dim };
        let out = walk.stage(stage, carry)?;
        match (last, out) {
            (true, (Form::Total, e)) => exponent = Some(e),
            (true, _) => return Err("the loss is not a sum over the batch's examples".into()),
            (false, (Form::Axis(_), 0)) => {
                // A loop body must give back what it was given.
                if stage.repeat.is_some() && carry.is_some_and(|c| c != out) {
                    return Err(format!("stage {k}'s carried value changes its batch axis"));
                }
                carry = Some(out);
            }
            (false, _) => return Err(format!("stage {k}'s carried value is not per example")),
        }
    }
    Ok(Split { dim: dim.to_string(), exponent: exponent.ok_or("the model has no stages")? })
}

struct Walk<'a> {
    g: &'a Graph,
    dim: &'a str,
}

impl Walk<'_> {
    /// The fact of the stage's output, given the carried value's.
    fn stage(&self, stage: &crate::program::Stage, carry: Option<Fact>) -> Result<Fact, String> {
        let g = self.g;
        let live = g.ancestors(&[stage.output]);
        let mut facts: Vec<Option<Fact>> = vec![None; g.len()];
        for id in g.ids().filter(|id| live[id.index()]) {
            let fact = if stage.carry_in.as_ref().is_some_and(|c| c.1 == id) {
                carry.ok_or("a carried value without a stage before it")?
            } else {
                let ins: Vec<Fact> =
                    g.node(id).inputs.iter().map(|i| facts[i.index()].expect("inputs come first")).collect();
                self.node(id, &ins).map_err(|why| format!("{why} (`{}`)", g.node(id).op.mnemonic()))?
            };
            self.check_shape(id, fact)?;
            facts[id.index()] = Some(fact);
        }
        Ok(facts[stage.output.index()].expect("the output is live"))
    }

    /// The batch exponent (halves) of a dimension size, if it is homogeneous in the
    /// batch (every term has the same power of it).
    fn degree(&self, d: &Dim) -> Option<i32> {
        let mut powers = d
            .terms()
            .into_iter()
            .map(|(_, _, m)| m.iter().find(|(s, _)| s == self.dim).map_or(0, |(_, e)| *e));
        let first = powers.next().unwrap_or(0);
        powers.all(|e| e == first).then_some(first)
    }

    fn scalar_degree(&self, s: &Scalar) -> Result<i32, String> {
        s.factors.iter().try_fold(0, |acc, (d, half)| {
            self.degree(d)
                .map(|e| acc + e * half)
                .ok_or_else(|| format!("the constant {s} is not a power of the batch"))
        })
    }

    /// A per-example value has the batch on its batch axis once and nowhere else; other
    /// values never mention it.
    fn check_shape(&self, id: ValueId, (form, _): Fact) -> Result<(), String> {
        for (axis, d) in self.g.shape(id).0.iter().enumerate() {
            let want = if form == Form::Axis(axis) { 1 } else { 0 };
            if self.degree(d) != Some(want) {
                return Err(format!(
                    "value {} of shape {} has the batch where no example is",
                    id.0,
                    self.g.shape(id)
                ));
            }
        }
        Ok(())
    }

    fn node(&self, id: ValueId, ins: &[Fact]) -> Result<Fact, String> {
        let node = self.g.node(id);
        let rank = node.ty.shape.rank();
        // Inputs that depend on the examples must agree on the axis.
        let common = |ins: &[Fact]| -> Result<Form, String> {
            let mut form = Form::Free;
            for &(f, _) in ins {
                match (form, f) {
                    (_, Form::Free) => {}
                    (Form::Free, f) => form = f,
                    (a, b) if a == b => {}
                    _ => return Err("it combines values that split the batch differently".into()),
                }
            }
            Ok(form)
        };
        let plain = |ins: &[Fact]| -> Result<(), String> {
            match ins.iter().any(|&(_, e)| e != 0) {
                true => Err("a nonlinear function of a batch-dependent constant".into()),
                false => Ok(()),
            }
        };
        Ok(match &node.op {
            Op::Source(Source::Input { role: Role::Param, .. }) => (Form::Free, 0),
            Op::Source(Source::Input { role: Role::Data, .. }) => (Form::Axis(0), 0),
            Op::Source(Source::Fill { value, shape }) => {
                let form =
                    shape.0.iter().position(|d| self.degree(d) != Some(0)).map_or(Form::Free, Form::Axis);
                (form, self.scalar_degree(value)?)
            }
            Op::Pointwise(p) => {
                let form = common(ins)?;
                let e = |i: usize| ins[i].1;
                let exponent = match p {
                    Pointwise::Add | Pointwise::Sub => {
                        if e(0) != e(1) {
                            return Err("a sum of terms that scale differently with the batch".into());
                        }
                        e(0)
                    }
                    Pointwise::Mul => e(0) + e(1),
                    Pointwise::Div => e(0) - e(1),
                    Pointwise::Neg | Pointwise::StopGrad => e(0),
                    Pointwise::Scale(s) => e(0) + self.scalar_degree(s)?,
                    Pointwise::Shift(s) => {
                        if self.scalar_degree(s)? != e(0) {
                            return Err("a shift that scales differently with the batch".into());
                        }
                        e(0)
                    }
                    _ => {
                        plain(ins)?;
                        0
                    }
                };
                // A sum over examples may only be scaled, and added to another such
                // sum: anything else would be a function of the whole batch (or count a
                // batch-free term once per part).
                if form == Form::Total {
                    let fine = match p {
                        Pointwise::Add | Pointwise::Sub => ins.iter().all(|f| f.0 == Form::Total),
                        Pointwise::Neg | Pointwise::Scale(_) | Pointwise::StopGrad => true,
                        Pointwise::Mul => ins.iter().any(|f| f.0 == Form::Free),
                        Pointwise::Div => ins[1].0 == Form::Free,
                        _ => false,
                    };
                    if !fine {
                        return Err("a sum over the batch is used as more than a scaled term".into());
                    }
                }
                (form, exponent)
            }
            Op::Select(SelectOp::Select) => {
                plain(&ins[..1])?;
                if ins[1].1 != ins[2].1 {
                    return Err("a select between values that scale differently with the batch".into());
                }
                (common(ins)?, ins[1].1)
            }
            Op::Select(SelectOp::Causal { fill }) => {
                if let Form::Axis(a) = ins[0].0
                    && a + 2 >= rank
                {
                    return Err("a causal mask over the batch axis".into());
                }
                if ins[0].0 == Form::Total {
                    return Err("a mask on a sum over the batch".into());
                }
                // Masking commutes with the batch's positive scale only for 0 and ±∞.
                if ins[0].1 != 0 && fill.coef.is_finite() && fill.coef != 0.0 {
                    return Err("a mask filling a batch-scaled value with a constant".into());
                }
                if self.scalar_degree(fill)? != 0 {
                    return Err("a mask filling with a batch-dependent constant".into());
                }
                ins[0]
            }
            Op::Reduce(r) => {
                let (Reduce::Sum { axis } | Reduce::Max { axis } | Reduce::ArgmaxMask { axis }) = r;
                match ins[0].0 {
                    Form::Axis(a) if a == *axis => match r {
                        Reduce::Sum { .. } => (Form::Total, ins[0].1),
                        _ => return Err("a max across the batch's examples".into()),
                    },
                    Form::Axis(a) if matches!(r, Reduce::ArgmaxMask { .. }) => (Form::Axis(a), 0),
                    Form::Axis(a) => (Form::Axis(if a > *axis { a - 1 } else { a }), ins[0].1),
                    // Summing a sum over examples further is still one.
                    Form::Total if matches!(r, Reduce::Sum { .. }) => ins[0],
                    Form::Total => return Err("a max of a sum over the batch".into()),
                    Form::Free => (Form::Free, ins[0].1),
                }
            }
            Op::Matmul => {
                let (a, b) = (ins[0].0, ins[1].0);
                let form = match (a, b) {
                    (Form::Total, _) | (_, Form::Total) => {
                        return Err("a product of a sum over the batch".into());
                    }
                    (Form::Axis(x), Form::Axis(y)) if x == y && x + 2 < rank => Form::Axis(x),
                    (Form::Axis(x), Form::Free) if x + 1 != rank => Form::Axis(x),
                    (Form::Free, Form::Axis(y)) if y + 2 != rank => Form::Axis(y),
                    (Form::Free, Form::Free) => Form::Free,
                    _ => return Err("a product that sums over the batch's examples".into()),
                };
                (form, ins[0].1 + ins[1].1)
            }
            // Every part of a concatenation splits the same way and scales alike.
            Op::Layout(Layout::Concat { axis }) => {
                let form = common(ins)?;
                if form == Form::Axis(*axis) {
                    return Err("a concatenation along the batch axis".into());
                }
                // A batch-free part beside sums over examples would count once per part.
                if form == Form::Total && ins.iter().any(|f| f.0 != Form::Total) {
                    return Err("a concatenation of a sum over the batch with other values".into());
                }
                if ins.iter().any(|f| f.1 != ins[0].1) {
                    return Err("a concatenation of values that scale differently".into());
                }
                (form, ins[0].1)
            }
            Op::Layout(l) => {
                let (form, e) = ins[0];
                let form = match (l, form) {
                    // A broadcast to a batch-sized axis makes a free value per example.
                    (Layout::Broadcast { axis, size }, Form::Free) if self.degree(size) != Some(0) => {
                        Form::Axis(*axis)
                    }
                    (_, Form::Free) => Form::Free,
                    (_, Form::Total) => return Err("a layout op on a sum over the batch".into()),
                    (Layout::Permute(p), Form::Axis(a)) => {
                        Form::Axis(p.iter().position(|&i| i == a).expect("a permutation"))
                    }
                    (Layout::Reshape(to), Form::Axis(a)) => {
                        // Example blocks stay blocks only if the axes before the batch
                        // axis are the same.
                        let from = self.g.shape(node.inputs[0]);
                        if a >= to.rank() || from.0[..a] != to.0[..a] {
                            return Err("a reshape that moves the batch axis".into());
                        }
                        Form::Axis(a)
                    }
                    (Layout::Slice { axis, .. } | Layout::Pad { axis, .. }, Form::Axis(a)) if *axis != a => {
                        Form::Axis(a)
                    }
                    (Layout::Broadcast { axis, .. }, Form::Axis(a)) => {
                        Form::Axis(if *axis <= a { a + 1 } else { a })
                    }
                    _ => return Err("a layout op along the batch axis".into()),
                };
                (form, e)
            }
            Op::Index(IndexOp::Gather) => match (ins[0].0, ins[1].0) {
                (Form::Free, Form::Axis(a)) => (Form::Axis(a), ins[0].1),
                (Form::Free, Form::Free) => (Form::Free, ins[0].1),
                _ => return Err("a gather from a per-example table".into()),
            },
            Op::Index(IndexOp::OneHot { .. }) => ins[0],
            Op::Index(IndexOp::ScatterAdd { .. }) => return Err("a scatter-add in the forward pass".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(text: &str) -> Program {
        let tokens: proc_macro2::TokenStream = text.parse().expect("the model text lexes");
        crate::driver::compile(tokens).map_err(|e| format!("{e:?}")).expect("the model compiles").program
    }

    #[test]
    fn the_gpt_splits_with_a_mean_loss() {
        let p = program(include_str!("../../../tests/models/gpt.adj"));
        assert_eq!(analyse(&p), Ok(Split { dim: "B".into(), exponent: -2 }));
        let p = program(include_str!("../../../tests/models/mlp.adj"));
        assert_eq!(analyse(&p), Ok(Split { dim: "N".into(), exponent: -2 }));
    }

    /// A one-line loss over `x: [N, D]` and `w: [D, D]`.
    fn loss(text: &str) -> Result<Split, String> {
        analyse(&program(&format!(
            "model M {{ dims N = 8, D = 4; input x: [N, D]; param w: [D, D]; loss {text}; }}"
        )))
    }

    #[test]
    fn a_sum_loss_splits_unscaled() {
        assert_eq!(loss("sum(relu(x @ w))"), Ok(Split { dim: "N".into(), exponent: 0 }));
        assert_eq!(loss("sum(x @ w) * 3.0 - sum(exp(x))"), Ok(Split { dim: "N".into(), exponent: 0 }));
    }

    #[test]
    fn losses_that_mix_examples_do_not_split() {
        let cases = [
            // The softmax of a transpose runs across the examples.
            ("sum(softmax(transpose(x @ w)))", "a max across the batch's examples"),
            // A batch-free term would be counted once per part.
            ("sum(x @ w) + sum(w)", "more than a scaled term"),
            ("mean(x @ w) + sum(w)", "scale differently with the batch"),
            // Not linear in the examples.
            ("sum(x @ w) * sum(x)", "more than a scaled term"),
            ("exp(sum(x @ w))", "more than a scaled term"),
            // A product over the batch axis mixes examples (a Gram matrix).
            ("sum(transpose(x @ w) @ x)", "sums over the batch's examples"),
        ];
        for (text, why) in cases {
            let got = loss(text);
            assert!(matches!(&got, Err(e) if e.contains(why)), "{text}: {got:?}");
        }
    }
}
