//! The cost of an e-node: FLOPs plus bytes moved, at representative sizes.
//!
//! Layout that a GEMM or a fused loop absorbs costs nothing: a transpose of the last two
//! axes (a GEMM reads it as a transposed operand; an output that is a bare transpose,
//! or one any other op reads, pays its copy in [`dag_cost`]), reshape and broadcast (views),
//! concat and slice (producers write into, consumers read from, parts of one buffer).
//! Everything else pays its arithmetic and reads and writes every operand once; f32 is
//! 4 bytes. An ill-typed node (a rule applied where it should not) costs infinity, so it
//! is never extracted.

use std::collections::BTreeMap;

use egg::{Id, Language as _};

use super::analysis::Graph;
use super::lang::{Kind, Leaf, Tensor, to_op};
use crate::dim::DimEnv;
use crate::ir::{Shape, ValueType};
use crate::ops::swaps_last_two;

/// Dimension sizes for costing; symbols not given count as `default`.
#[derive(Clone, Debug)]
pub struct Sizes {
    pub sizes: DimEnv,
    pub default: i64,
}

impl Default for Sizes {
    fn default() -> Sizes {
        Sizes { sizes: BTreeMap::new(), default: 64 }
    }
}

impl Sizes {
    /// Elements of `shape` at these sizes.
    pub fn numel(&self, shape: &Shape) -> f64 {
        shape.0.iter().map(|d| self.dim(d)).product()
    }

    pub fn dim(&self, d: &crate::dim::Dim) -> f64 {
        let mut env = self.sizes.clone();
        for s in d.symbols() {
            env.entry(s.to_string()).or_insert(self.default);
        }
        d.eval(&env).map(|v| v.max(1) as f64).unwrap_or(self.default as f64)
    }
}

/// The cost of `node` in `egraph`: FLOPs plus bytes.
pub fn node_cost(egraph: &Graph, sizes: &Sizes, node: &Tensor) -> f64 {
    let (flops, bytes) = node_parts(egraph, sizes, node);
    flops + bytes
}

const NEVER: (f64, f64) = (f64::INFINITY, 0.0);

/// `(FLOPs, bytes)` of `node` in `egraph`.
pub fn node_parts(egraph: &Graph, sizes: &Sizes, node: &Tensor) -> (f64, f64) {
    let Tensor::Op(kind, children) = node else { return (0.0, 0.0) };
    if kind.is_attr_op() {
        return NEVER; // the folded leaf in the same class is free
    }
    let n = kind.attrs();
    let attrs: Option<Vec<&Leaf>> = children[..n].iter().map(|&c| egraph[c].data.leaf.as_ref()).collect();
    let Some(op) = attrs.and_then(|a| to_op(*kind, &a)) else { return NEVER };
    let ins: Option<Vec<&ValueType>> = children[n..].iter().map(|&c| egraph[c].data.ty.as_ref()).collect();
    let Some(ins) = ins else { return NEVER };
    let Ok(out) = op.infer(&ins) else { return NEVER };
    let out_n = sizes.numel(&out.shape);
    let in_n: f64 = ins.iter().map(|t| sizes.numel(&t.shape)).sum();
    let bytes = |elements: f64| 4.0 * elements;
    match kind {
        Kind::Fill | Kind::Reshape | Kind::Broadcast | Kind::Concat | Kind::Slice | Kind::StopGrad => {
            (0.0, 0.0)
        }
        Kind::Permute => match &egraph[children[0]].data.leaf {
            Some(Leaf::Perm(p)) if swaps_last_two(p) => (0.0, 0.0),
            _ => (0.0, bytes(2.0 * out_n)),
        },
        Kind::Matmul => {
            let a = &ins[0].shape.0;
            let k = sizes.dim(&a[a.len() - 1]);
            (2.0 * out_n * k, bytes(in_n + out_n))
        }
        // A positive factor on a value some elementwise loop computes anyway is one
        // multiply in that loop: it moves no bytes of its own. Charging it a pass made
        // attention scale `Q_h` and `K_h` (smaller than the scores, but views of the
        // heads' layout) in copying loops of their own instead of in the masked softmax
        // and its gradient. A negative factor keeps its pass (plus one unit, which breaks
        // ties toward `(P − Y)/N` over `−(Y − P)/N`, for readable formulas): free signs
        // let the MLP test model's extraction move one into a product that then read
        // `x` beside `−x`, saving both, which this model does not price.
        Kind::Scale => {
            let tie = matches!(&egraph[children[0]].data.leaf, Some(Leaf::Scalar(c)) if c.coef < 0.0);
            let moved = if !tie && computed(egraph, children[1]) { 0.0 } else { bytes(in_n + out_n) };
            (f64::from(u8::from(tie)) + out_n.max(in_n), moved)
        }
        Kind::Exp | Kind::Log | Kind::Tanh | Kind::Sqrt | Kind::Gelu | Kind::GeluGrad => {
            (4.0 * out_n, bytes(in_n + out_n))
        }
        _ => (out_n.max(in_n), bytes(in_n + out_n)),
    }
}

/// Whether some node of `class` computes its value in an elementwise loop, so a factor
/// on it can ride in that loop. A product is not one: its epilogue could take the
/// factor, but a product whose only reader is a permute writes that layout directly,
/// which a scaling epilogue would stop (attention's `dK_h`, `dQ_h`).
fn computed(egraph: &Graph, class: Id) -> bool {
    egraph[class].nodes.iter().any(|node| {
        matches!(
            node,
            Tensor::Op(
                Kind::Add
                    | Kind::Sub
                    | Kind::Mul
                    | Kind::Div
                    | Kind::Neg
                    | Kind::Scale
                    | Kind::Shift
                    | Kind::Exp
                    | Kind::Log
                    | Kind::Tanh
                    | Kind::Sqrt
                    | Kind::Relu
                    | Kind::Step
                    | Kind::Gelu
                    | Kind::GeluGrad
                    | Kind::Causal
                    | Kind::Select,
                _
            )
        )
    })
}

/// The total cost of the DAG `choice` selects under `roots`, each class counted once;
/// infinite if the choice is cyclic or leaves a needed class out.
pub fn dag_cost(egraph: &Graph, sizes: &Sizes, choice: &BTreeMap<Id, Tensor>, roots: &[Id]) -> f64 {
    let (flops, bytes) = dag_parts(egraph, sizes, choice, roots);
    flops + bytes
}

/// `(FLOPs, bytes)` of the DAG `choice` selects under `roots` (see [`dag_cost`]).
pub fn dag_parts(egraph: &Graph, sizes: &Sizes, choice: &BTreeMap<Id, Tensor>, roots: &[Id]) -> (f64, f64) {
    const NONE: (f64, f64) = (f64::INFINITY, f64::INFINITY);
    // Iterative DFS with colours: 1 on the stack, 2 done.
    let mut colour: BTreeMap<Id, u8> = BTreeMap::new();
    let (mut flops, mut bytes) = (0.0, 0.0);
    let mut copied: std::collections::BTreeSet<Id> = std::collections::BTreeSet::new();
    for &root in roots {
        // An output that is a bare transpose has no GEMM to absorb it: it is a copy.
        if let Some(node @ Tensor::Op(Kind::Permute, _)) = choice.get(&egraph.find(root))
            && let Some(ty) = &egraph[egraph.find(root)].data.ty
            && node_cost(egraph, sizes, node) == 0.0
            && copied.insert(egraph.find(root))
        {
            bytes += 8.0 * sizes.numel(&ty.shape);
        }
        let mut stack: Vec<(Id, bool)> = vec![(egraph.find(root), false)];
        while let Some((c, leaving)) = stack.pop() {
            if leaving {
                colour.insert(c, 2);
                continue;
            }
            match colour.get(&c) {
                Some(2) => continue,
                Some(_) => return NONE,
                None => {}
            }
            let Some(node) = choice.get(&c) else {
                if egraph[c].data.leaf.is_some() {
                    colour.insert(c, 2);
                    continue; // an attribute: free
                }
                return NONE;
            };
            colour.insert(c, 1);
            let (f, b) = node_parts(egraph, sizes, node);
            flops += f;
            bytes += b;
            // Only a product reads a transpose through strides (and a permute folds into
            // the one under it); any other reader gets a copy, once per transpose.
            if !matches!(node, Tensor::Op(Kind::Matmul | Kind::Permute, _)) {
                for &k in node.children() {
                    let k = egraph.find(k);
                    if let Some(t @ Tensor::Op(Kind::Permute, _)) = choice.get(&k)
                        && node_cost(egraph, sizes, t) == 0.0
                        && copied.insert(k)
                        && let Some(ty) = &egraph[k].data.ty
                    {
                        bytes += 8.0 * sizes.numel(&ty.shape);
                    }
                }
            }
            stack.push((c, true));
            for &k in node.children() {
                let k = egraph.find(k);
                match colour.get(&k) {
                    Some(1) => return NONE,
                    Some(_) => {}
                    None => stack.push((k, false)),
                }
            }
        }
    }
    (flops, bytes)
}
