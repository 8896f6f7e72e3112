//! The DSL's op library: every function a model may call, with its signature and what
//! it lowers to, in one table. User-defined `fn`s are looked up after these.

use crate::dim::Dim;
use crate::error::{Result, bail};
use crate::ir::{Graph, Shape, ValueId};
use crate::library;
use crate::scalar::Scalar;

/// What a named argument holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KwKind {
    Dim,
    Number,
}

/// A library op's signature.
pub struct Sig {
    pub name: &'static str,
    pub args: &'static [&'static str],
    /// Named arguments; a `None` default means the argument is required.
    pub kwargs: &'static [(&'static str, KwKind, Option<f64>)],
}

const X: &[&str] = &["x"];

/// The op library, alphabetical.
pub const OPS: &[Sig] = &[
    Sig { name: "attention", args: &["q", "k", "v"], kwargs: &[HEADS, SEQ] },
    Sig { name: "causal_attention", args: &["q", "k", "v"], kwargs: &[HEADS, SEQ] },
    Sig { name: "causal_mask", args: X, kwargs: &[] },
    Sig { name: "cross_entropy", args: &["logits", "targets"], kwargs: &[] },
    Sig { name: "embed", args: &["table", "indices"], kwargs: &[] },
    Sig { name: "exp", args: X, kwargs: &[] },
    Sig { name: "gelu", args: X, kwargs: &[] },
    Sig { name: "layernorm", args: &["x", "gain", "bias"], kwargs: &[("eps", KwKind::Number, Some(1e-5))] },
    Sig { name: "log", args: X, kwargs: &[] },
    Sig { name: "log_softmax", args: X, kwargs: &[] },
    Sig { name: "mean", args: X, kwargs: &[] },
    Sig { name: "relu", args: X, kwargs: &[] },
    Sig { name: "reshape", args: &["x", "shape"], kwargs: &[] },
    Sig { name: "softmax", args: X, kwargs: &[] },
    Sig { name: "sqrt", args: X, kwargs: &[] },
    Sig { name: "stop_grad", args: X, kwargs: &[] },
    Sig { name: "sum", args: X, kwargs: &[] },
    Sig { name: "tanh", args: X, kwargs: &[] },
    Sig { name: "transpose", args: X, kwargs: &[] },
];

const HEADS: (&str, KwKind, Option<f64>) = ("heads", KwKind::Dim, None);
const SEQ: (&str, KwKind, Option<f64>) = ("seq", KwKind::Dim, None);

pub fn lookup(name: &str) -> Option<&'static Sig> {
    OPS.iter().find(|s| s.name == name)
}

/// A named argument's value.
#[derive(Clone, Debug)]
pub enum KwValue {
    Dim(Dim),
    Number(f64),
}

/// Lowers a call whose arity and named arguments are already checked; `shape` is the
/// `[..]` argument of `reshape`.
pub fn lower(
    g: &mut Graph,
    name: &str,
    args: &[ValueId],
    kwargs: &[KwValue],
    shape: Option<Shape>,
) -> Result<ValueId> {
    let dim = |i: usize| match kwargs.get(i) {
        Some(KwValue::Dim(d)) => d.clone(),
        _ => Dim::lit(1),
    };
    Ok(match name {
        "attention" | "causal_attention" => {
            let causal = name == "causal_attention";
            let out = library::heads_attention(g, [args[0], args[1], args[2]], &dim(1), &dim(0), causal)?;
            g.name(out, "O_cat")
        }
        "causal_mask" => g.causal_mask(args[0], Scalar::num(f64::NEG_INFINITY))?,
        "cross_entropy" => library::cross_entropy(g, args[0], args[1])?,
        "embed" => g.gather(args[0], args[1])?,
        "exp" => g.exp(args[0])?,
        "gelu" => g.gelu(args[0])?,
        "layernorm" => {
            let eps = match kwargs.first() {
                Some(KwValue::Number(e)) => *e,
                _ => 1e-5,
            };
            library::layernorm(g, args[0], args[1], args[2], eps)?
        }
        "log" => g.log(args[0])?,
        "log_softmax" => library::log_softmax(g, args[0])?,
        "mean" => {
            let n = g.shape(args[0]).numel();
            let total = g.sum_all(args[0])?;
            g.scale(total, Scalar::inv(&n))?
        }
        "relu" => g.relu(args[0])?,
        "reshape" => match shape {
            Some(s) => g.reshape(args[0], s)?,
            None => bail!("reshape: the second argument must be a shape such as `[N, D]`"),
        },
        "softmax" => library::softmax(g, args[0])?,
        "sqrt" => g.sqrt(args[0])?,
        "stop_grad" => g.stop_grad(args[0])?,
        "sum" => g.sum_all(args[0])?,
        "tanh" => g.tanh(args[0])?,
        "transpose" => g.transpose(args[0])?,
        other => bail!("`{other}` is not in the op library"),
    })
}

/// The closest of `candidates` to `name` by edit distance, if close enough to be a
/// likely typo.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = edit_distance(name, c);
        if d <= (name.chars().count().max(3) / 3).max(1) && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut diag = row[0];
        row[0] = i;
        for j in 1..=b.len() {
            let up = row[j];
            row[j] = (diag + usize::from(a[i - 1] != b[j - 1])).min(row[j - 1] + 1).min(up + 1);
            diag = up;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_only() {
        let names = OPS.iter().map(|s| s.name);
        assert_eq!(did_you_mean("sofmax", names.clone()), Some("softmax"));
        assert_eq!(did_you_mean("layer_norm", names.clone()), Some("layernorm"));
        assert_eq!(did_you_mean("convolution", names), None);
    }

    #[test]
    fn the_table_is_sorted_and_every_op_lowers() {
        let names: Vec<&str> = OPS.iter().map(|s| s.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(lower(&mut Graph::new(), "nonsense", &[], &[], None).is_err());
    }
}
