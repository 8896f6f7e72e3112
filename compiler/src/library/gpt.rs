//! The benchmark model (`shared/peers/WORKLOAD.md`): a GPT-2 style pre-LN decoder with
//! tied embeddings, built from the library's composites.
//!
//! Per block (MATH.md §3): t¹ = LN(x), t² = MHA(t¹), t³ = t² + x, t⁴ = LN(t³),
//! t⁵ = FFN(t⁴) with GELU, h = t⁵ + t³. Input x = E[tokens] + P; logits = LN_f(h)·Eᵀ;
//! loss = mean cross-entropy. Parameters carry the workload's names (`h0.attn.wq`,
//! weights `[in, out]`) so they line up with the PyTorch and JAX peers' files.

use crate::dim::Dim;
use crate::error::Result;
use crate::ir::{Graph, Shape, ValueId};
use crate::library::{MhaWeights, cross_entropy, layernorm, linear, multi_head_attention};

/// The workload's LayerNorm epsilon.
pub const EPS: f64 = 1e-5;

/// A built GPT: its graph, loss, and parameters in the workload's canonical order.
pub struct Gpt {
    pub graph: Graph,
    pub loss: ValueId,
    pub logits: ValueId,
    /// `(workload name, value)`, in `workload.py`'s `param_shapes` order.
    pub params: Vec<(String, ValueId)>,
    pub tokens: ValueId,
    pub targets: ValueId,
}

/// The dimension symbols: batch, time, width, heads, FFN width, vocabulary.
pub fn dims() -> [Dim; 6] {
    ["B", "T", "D", "H", "F", "V"].map(Dim::sym)
}

/// Builds the GPT with `layers` blocks over symbolic dims `B, T, D, H, F, V`.
pub fn build(layers: usize) -> Result<Gpt> {
    let [b, t, d, h, f, v] = dims();
    let mut g = Graph::new();
    let mut params = Vec::new();
    // A parameter with its workload name, and a formula name that is readable
    // (`W_q`) and, with several layers, says which layer (`W_q⁽⁰⁾`).
    let mut param = |g: &mut Graph, name: String, pretty: &str, layer: Option<usize>, shape: Vec<Dim>| {
        let id = g.param(&name, Shape::new(shape))?;
        let shown = match layer {
            Some(i) if layers > 1 => format!("{pretty}⁽{}⁾", crate::pretty::superscript(i)),
            _ => pretty.to_string(),
        };
        g.name(id, &shown);
        params.push((name, id));
        Ok::<ValueId, crate::error::Error>(id)
    };

    let wte = param(&mut g, "wte".into(), "E", None, vec![v.clone(), d.clone()])?;
    let wpe = param(&mut g, "wpe".into(), "P", None, vec![t.clone(), d.clone()])?;
    let mut blocks = Vec::new();
    for i in 0..layers {
        let mut p = |name: &str, pretty: &str, shape: Vec<Dim>| {
            param(&mut g, format!("h{i}.{name}"), pretty, Some(i), shape)
        };
        let ln1 = (p("ln1.g", "γ_1", vec![d.clone()])?, p("ln1.b", "β_1", vec![d.clone()])?);
        let mut qkvo = Vec::new();
        for w in ["q", "k", "v", "o"] {
            let weight = p(&format!("attn.w{w}"), &format!("W_{w}"), vec![d.clone(), d.clone()])?;
            let bias = p(&format!("attn.b{w}"), &format!("b_{w}"), vec![d.clone()])?;
            qkvo.push((weight, bias));
        }
        let ln2 = (p("ln2.g", "γ_2", vec![d.clone()])?, p("ln2.b", "β_2", vec![d.clone()])?);
        let w1 = (p("mlp.w1", "W_1", vec![d.clone(), f.clone()])?, p("mlp.b1", "b_1", vec![f.clone()])?);
        let w2 = (p("mlp.w2", "W_2", vec![f.clone(), d.clone()])?, p("mlp.b2", "b_2", vec![d.clone()])?);
        blocks.push((ln1, qkvo, ln2, w1, w2));
    }
    let lnf = (
        param(&mut g, "lnf.g".into(), "γ_f", None, vec![d.clone()])?,
        param(&mut g, "lnf.b".into(), "β_f", None, vec![d.clone()])?,
    );

    let tokens = g.index_input("tokens", Shape::new([b.clone(), t.clone()]))?;
    let targets = g.index_input("targets", Shape::new([b.clone(), t.clone()]))?;
    let bt = b.mul(&t);
    g.alias_dim(bt.clone(), "N");

    let tok_emb = g.gather(wte, tokens)?;
    let pos_emb = g.broadcast(wpe, 0, b.clone())?;
    let x = g.add(tok_emb, pos_emb)?;
    g.name(x, "x");
    let mut x = g.reshape(x, Shape::new([bt.clone(), d.clone()]))?;
    for (ln1, qkvo, ln2, (w1, b1), (w2, b2)) in blocks {
        let t1 = layernorm(&mut g, x, ln1.0, ln1.1, EPS)?;
        g.name(t1, "t¹");
        let weights = MhaWeights {
            wq: qkvo[0].0,
            bq: qkvo[0].1,
            wk: qkvo[1].0,
            bk: qkvo[1].1,
            wv: qkvo[2].0,
            bv: qkvo[2].1,
            wo: qkvo[3].0,
            bo: qkvo[3].1,
        };
        let t2 = multi_head_attention(&mut g, t1, &weights, (&b, &t), &h)?;
        let t3 = g.add(t2, x)?;
        g.name(t3, "t³");
        let t4 = layernorm(&mut g, t3, ln2.0, ln2.1, EPS)?;
        g.name(t4, "t⁴");
        let pre = linear(&mut g, t4, w1, b1)?;
        g.name(pre, "U");
        let act = g.gelu(pre)?;
        g.name(act, "Φ");
        let t5 = linear(&mut g, act, w2, b2)?;
        x = g.add(t5, t3)?;
        g.name(x, "h");
    }
    let hf = layernorm(&mut g, x, lnf.0, lnf.1, EPS)?;
    g.name(hf, "h_f");
    let et = g.transpose(wte)?;
    let logits = g.matmul(hf, et)?;
    g.name(logits, "Z");
    let flat_targets = g.reshape(targets, Shape::new([bt]))?;
    let loss = cross_entropy(&mut g, logits, flat_targets)?;
    g.name(loss, "L");
    Ok(Gpt { graph: g, loss, logits, params, tokens, targets })
}
