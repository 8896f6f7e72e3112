//! Composite ops built from primitives: softmax, log-softmax, layernorm, cross-entropy,
//! one attention head, multi-head attention; `gpt` assembles the benchmark model.
//!
//! Composites have no adjoint rules of their own: autodiff differentiates through their
//! primitives, and the e-graph rediscovers the compact textbook forms. Each composite
//! names its interesting intermediates (`A`, `x̂`, `σ`) so the formulas can refer to them.
//!
//! Softmax subtracts the row maximum for stability through a stop-gradient. That is
//! exact, not an approximation: softmax(s − c) = softmax(s) for any row constant c, so
//! the derivative through c is zero.

pub mod gpt;

use crate::dim::Dim;
use crate::error::{Result, bail};
use crate::ir::{Graph, ValueId};
use crate::scalar::Scalar;

fn last_axis(g: &Graph, x: ValueId, what: &str) -> Result<usize> {
    match g.shape(x).rank() {
        0 => bail!("{what}: needs at least one axis, got a scalar"),
        r => Ok(r - 1),
    }
}

/// Subtracts the (gradient-free) row maximum: the stable logits of softmax.
fn shift_by_max(g: &mut Graph, s: ValueId, axis: usize) -> Result<ValueId> {
    let m = g.max(s, axis)?;
    let m = g.stop_grad(m)?;
    let m = g.expand_as(m, axis, s)?;
    g.sub(s, m)
}

/// Row-wise softmax over the last axis: `exp(s − max s) ⊘ rowsum(exp(s − max s))`.
pub fn softmax(g: &mut Graph, s: ValueId) -> Result<ValueId> {
    let axis = last_axis(g, s, "softmax")?;
    let z = shift_by_max(g, s, axis)?;
    let e = g.exp(z)?;
    g.name(e, "e");
    let total = g.sum(e, axis)?;
    g.name(total, "s");
    let total = g.expand_as(total, axis, e)?;
    g.div(e, total)
}

/// Row-wise log-softmax over the last axis: `z − log rowsum(exp z)`, `z = s − max s`.
pub fn log_softmax(g: &mut Graph, s: ValueId) -> Result<ValueId> {
    let axis = last_axis(g, s, "log_softmax")?;
    let z = shift_by_max(g, s, axis)?;
    g.name(z, "z");
    let e = g.exp(z)?;
    let total = g.sum(e, axis)?;
    let lse = g.log(total)?;
    g.name(lse, "lse");
    let lse = g.expand_as(lse, axis, z)?;
    g.sub(z, lse)
}

/// LayerNorm over the last axis of `x`: `γ ⊙ (x − μ)/√(var + ε) + β`.
pub fn layernorm(g: &mut Graph, x: ValueId, gamma: ValueId, beta: ValueId, eps: f64) -> Result<ValueId> {
    let axis = last_axis(g, x, "layernorm")?;
    let shape = g.shape(x).clone();
    let width = shape.0[axis].clone();
    if *g.shape(gamma) != crate::ir::Shape::new([width.clone()]) || g.shape(gamma) != g.shape(beta) {
        bail!(
            "layernorm: γ {} and β {} must both be [{width}] to normalise {shape}",
            g.shape(gamma),
            g.shape(beta)
        );
    }
    let total = g.sum(x, axis)?;
    let mu = g.scale(total, Scalar::inv(&width))?;
    g.name(mu, "μ");
    let mu_b = g.expand_as(mu, axis, x)?;
    let centred = g.sub(x, mu_b)?;
    g.name(centred, "x_c");
    let sq = g.mul(centred, centred)?;
    let sq_sum = g.sum(sq, axis)?;
    let var = g.scale(sq_sum, Scalar::inv(&width))?;
    g.name(var, "var");
    let var_eps = g.shift(var, Scalar::named("ε", eps))?;
    let sigma = g.sqrt(var_eps)?;
    g.name(sigma, "σ");
    let sigma_b = g.expand_as(sigma, axis, x)?;
    let xhat = g.div(centred, sigma_b)?;
    g.name(xhat, "x̂");
    let (gamma_b, beta_b) =
        (broadcast_rows(g, gamma, &shape.0[..axis])?, broadcast_rows(g, beta, &shape.0[..axis])?);
    let scaled = g.mul(xhat, gamma_b)?;
    g.add(scaled, beta_b)
}

/// Repeats a `[..r]` value over leading axes `lead`: `[..lead, ..r]`.
pub fn broadcast_rows(g: &mut Graph, v: ValueId, lead: &[Dim]) -> Result<ValueId> {
    let mut out = v;
    for d in lead.iter().rev() {
        out = g.broadcast(out, 0, d.clone())?;
    }
    Ok(out)
}

/// `x·W + b`, with `b` broadcast over the rows of `x`.
pub fn linear(g: &mut Graph, x: ValueId, w: ValueId, b: ValueId) -> Result<ValueId> {
    let xw = g.matmul(x, w)?;
    let lead = g.shape(xw).0[..g.shape(xw).rank() - 1].to_vec();
    let bias = broadcast_rows(g, b, &lead)?;
    g.add(xw, bias)
}

/// Mean cross-entropy of row-wise logits `[N, V]` against index targets `[N]`:
/// `−(1/N) Σ_rows log softmax(z)[y]`.
pub fn cross_entropy(g: &mut Graph, logits: ValueId, targets: ValueId) -> Result<ValueId> {
    let shape = g.shape(logits).clone();
    if shape.rank() != 2 || g.shape(targets).0[..] != shape.0[..1] {
        bail!("cross_entropy: logits must be [N, V] and targets [N], got {shape} and {}", g.shape(targets));
    }
    let logp = log_softmax(g, logits)?;
    g.name(logp, "logp");
    let hot = g.one_hot(targets, shape.0[1].clone())?;
    g.name(hot, "Y");
    let picked = g.mul(logp, hot)?;
    let total = g.sum_all(picked)?;
    g.scale(total, Scalar::inv(&shape.0[0]).neg())
}

/// One attention head on `[.., T, d_k]` queries, keys and values:
/// `softmax(mask(Q·Kᵀ / √d_k))·V` (mask only if `causal`).
pub fn attention_head(g: &mut Graph, q: ValueId, k: ValueId, v: ValueId, causal: bool) -> Result<ValueId> {
    let dk = g.shape(q).0.last().cloned().unwrap_or_default();
    let kt = g.transpose(k)?;
    let qk = g.matmul(q, kt)?;
    g.name(qk, "S");
    let mut scores = g.scale(qk, Scalar::inv_sqrt(&dk))?;
    if causal {
        scores = g.causal_mask(scores, Scalar::num(f64::NEG_INFINITY))?;
    }
    g.name(scores, "S'");
    let probs = softmax(g, scores)?;
    g.name(probs, "A");
    let out = g.matmul(probs, v)?;
    g.name(out, "O");
    Ok(out)
}

/// The weights of one multi-head attention layer (each `[D, D]`, biases `[D]`).
pub struct MhaWeights {
    pub wq: ValueId,
    pub bq: ValueId,
    pub wk: ValueId,
    pub bk: ValueId,
    pub wv: ValueId,
    pub bv: ValueId,
    pub wo: ValueId,
    pub bo: ValueId,
}

/// Causal multi-head self-attention on `x: [B*T, D]` with `heads` heads of
/// `d_k = D/heads` columns: `x` is projected to Q, K and V, the heads attend
/// ([`heads_attention`]) and the result is projected by `W_O`.
pub fn multi_head_attention(
    g: &mut Graph,
    x: ValueId,
    w: &MhaWeights,
    (_, t): (&Dim, &Dim),
    heads: &Dim,
) -> Result<ValueId> {
    let q = linear(g, x, w.wq, w.bq)?;
    let k = linear(g, x, w.wk, w.bk)?;
    let v = linear(g, x, w.wv, w.bv)?;
    let merged = heads_attention(g, [q, k, v], t, heads, true)?;
    linear(g, merged, w.wo, w.bo)
}

/// Attention over `heads` heads of already projected `[N, D]` queries, keys and values,
/// `N = batch·seq`: the columns are split into heads of `d_k = D/heads`, each head
/// attends within its sequence ([`attention_head`]), and the heads are put back side
/// by side, `[N, D]`.
pub fn heads_attention(
    g: &mut Graph,
    [q, k, v]: [ValueId; 3],
    seq: &Dim,
    heads: &Dim,
    causal: bool,
) -> Result<ValueId> {
    let shape = g.shape(q).clone();
    if shape.rank() != 2 || g.shape(k) != &shape || g.shape(v) != &shape {
        bail!(
            "attention: queries, keys and values must be the same [N, D], got {}, {} and {}",
            shape,
            g.shape(k),
            g.shape(v)
        );
    }
    let (n, d) = (shape.0[0].clone(), shape.0[1].clone());
    let Some(dk) = d.div(heads) else {
        bail!("attention: cannot split {d} columns into {heads} heads");
    };
    let Some(batch) = n.div(seq) else {
        bail!("attention: cannot split {n} rows into sequences of {seq}");
    };
    g.alias_dim(dk.clone(), "d_k");
    // [N, D] → [B, H, T, d_k]: head c is columns c·d_k .. (c+1)·d_k.
    let split = |g: &mut Graph, y: ValueId, name: &str| -> Result<ValueId> {
        g.name(y, name);
        let four = crate::ir::Shape::new([batch.clone(), seq.clone(), heads.clone(), dk.clone()]);
        let y = g.reshape(y, four)?;
        let y = g.permute(y, &[0, 2, 1, 3])?;
        Ok(g.name(y, &format!("{name}_h")))
    };
    let q = split(g, q, "Q")?;
    let k = split(g, k, "K")?;
    let v = split(g, v, "V")?;
    let heads_out = attention_head(g, q, k, v, causal)?;
    // [B, H, T, d_k] → [B, T, H, d_k] → [N, D]: the heads side by side per token.
    let merged = g.permute(heads_out, &[0, 2, 1, 3])?;
    g.name(merged, "O_cat");
    g.reshape(merged, crate::ir::Shape::new([n, d]))
}
