//! Reverse-mode symbolic differentiation: extends a graph with its backward pass.
//!
//! Walks the forward graph from the outputs back (reverse id order is reverse
//! topological order), asking each node's op for its adjoint rule (`ops`), and sums the
//! contributions a value receives from all its users (fan-out: the residual stream's
//! gradient is the sum of its two uses). The result is IR in the same graph — the joint
//! forward+backward graph — so the printer, the interpreter and later stages treat
//! gradients like any other value.
//!
//! Only *active* nodes get an adjoint: those that depend on a requested input and that
//! an output depends on. Index values never get one; asking for one is an error.

use std::collections::BTreeMap;

use crate::error::{Result, bail};
use crate::ir::{DType, Graph, ValueId};
use crate::ops::AdjointArgs;
use crate::scalar::Scalar;

/// The gradient of a scalar `loss` with respect to each of `wrt`, as new graph values.
/// A value the loss does not depend on gets an explicit zero.
pub fn grad(g: &mut Graph, loss: ValueId, wrt: &[ValueId]) -> Result<Vec<ValueId>> {
    if g.shape(loss).rank() != 0 {
        bail!("the loss must be a scalar, got shape {}", g.shape(loss));
    }
    let one = g.fill(Scalar::num(1.0), g.shape(loss).clone())?;
    backward(g, &[(loss, one)], wrt)
}

/// Vector-Jacobian products: for seeds `(output, upstream gradient of output)`, the
/// gradient of `Σ ⟨seed, output⟩` with respect to each of `wrt`.
pub fn backward(g: &mut Graph, seeds: &[(ValueId, ValueId)], wrt: &[ValueId]) -> Result<Vec<ValueId>> {
    let n_forward = g.len();
    for &w in wrt {
        if w.index() >= n_forward {
            bail!("gradient asked of value {}, which is not in the graph", w.0);
        }
        if g.ty(w).dtype == DType::Index {
            let what = g.display_name(w).unwrap_or("an index value").to_string();
            bail!("gradient asked of `{what}`, which holds indices: indices have no gradient");
        }
    }
    for &(out, seed) in seeds {
        if g.ty(out) != g.ty(seed) {
            bail!("the upstream gradient {} does not match its output {}", g.ty(seed), g.ty(out));
        }
    }

    // depends[i]: node i is a function of some requested input.
    let mut depends = vec![false; n_forward];
    for &w in wrt {
        depends[w.index()] = true;
    }
    for id in g.ids().take(n_forward) {
        if g.node(id).inputs.iter().any(|i| depends[i.index()]) {
            depends[id.index()] = true;
        }
    }
    let outputs: Vec<ValueId> = seeds.iter().map(|s| s.0).collect();
    let needed = g.ancestors(&outputs);
    let active = |i: ValueId| i.index() < n_forward && depends[i.index()] && needed[i.index()];

    // Contributions to each value's gradient, in the order they were produced.
    let mut contributions: BTreeMap<ValueId, Vec<ValueId>> = BTreeMap::new();
    for &(out, seed) in seeds {
        if active(out) {
            contributions.entry(out).or_default().push(seed);
        }
    }
    let mut total: BTreeMap<ValueId, ValueId> = BTreeMap::new();
    for id in (0..n_forward as u32).rev().map(ValueId) {
        let Some(parts) = contributions.remove(&id) else { continue };
        // The same contribution k times (x ⊙ x gives G ⊙ x twice) is k·c, not c + c.
        let mut counted: Vec<(ValueId, u32)> = Vec::new();
        for p in parts {
            match counted.iter_mut().find(|(c, _)| *c == p) {
                Some(entry) => entry.1 += 1,
                None => counted.push((p, 1)),
            }
        }
        let mut terms = Vec::new();
        for (c, k) in counted {
            terms.push(g.scale(c, Scalar::num(k as f64))?);
        }
        let mut sum = terms[0];
        for &t in &terms[1..] {
            sum = g.add(sum, t)?;
        }
        if let Some(name) = g.display_name(id) {
            let name = format!("d{name}");
            g.name(sum, &name);
        }
        total.insert(id, sum);

        let node = g.node(id).clone();
        let needs: Vec<bool> =
            node.inputs.iter().map(|&i| active(i) && g.ty(i).dtype == DType::F32).collect();
        if !needs.iter().any(|&n| n) {
            continue;
        }
        let args = AdjointArgs { out: id, inputs: &node.inputs, grad: sum, needs: &needs };
        let adjoints = node.op.adjoint(g, &args)?;
        for ((&input, adjoint), need) in node.inputs.iter().zip(adjoints).zip(&needs) {
            if let (Some(a), true) = (adjoint, need) {
                contributions.entry(input).or_default().push(a);
            }
        }
    }

    wrt.iter()
        .map(|&w| match total.get(&w) {
            Some(&t) => Ok(t),
            None => g.zeros_like(w),
        })
        .collect()
}
