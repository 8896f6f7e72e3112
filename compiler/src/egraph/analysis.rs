//! What the e-graph knows about each e-class: its type (from the op table's shape
//! rules), its attribute value if it is one, and whether every element is one known
//! number (for the zero and identity rules).
//!
//! Merging is a join: a fact known on either side is kept; two known types must agree
//! (a rule that equated values of different types is a bug the rule tests catch).
//! Attribute kinds (`smul`, ...) are folded here into leaves, egg's constant-folding
//! idiom, so rules can compute attributes in one line.

use egg::{Analysis, DidMerge, EGraph, Id};

use super::lang::{Kind, Leaf, Tensor, fold_attr, to_op};
use crate::ir::ValueType;
use crate::ops::Source;
use crate::scalar::Scalar;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    /// The tensor type; `None` for attribute classes and for ill-typed nodes.
    pub ty: Option<ValueType>,
    /// The attribute this class is, folded.
    pub leaf: Option<Leaf>,
    /// Every element equals this scalar (a fill, possibly scaled or broadcast).
    pub constant: Option<Scalar>,
}

#[derive(Default)]
pub struct Typing;

pub type Graph = EGraph<Tensor, Typing>;

impl Analysis<Tensor> for Typing {
    type Data = Facts;

    fn make(egraph: &mut Graph, enode: &Tensor, _id: Id) -> Facts {
        let data = |id: Id| &egraph[id].data;
        match enode {
            Tensor::Leaf(Leaf::Input { ty, .. }) => Facts { ty: Some(ty.clone()), ..Facts::default() },
            Tensor::Leaf(l) => Facts { leaf: Some(l.clone()), ..Facts::default() },
            Tensor::Op(kind, children) => {
                let n = kind.attrs();
                let attrs: Option<Vec<&Leaf>> =
                    children[..n].iter().map(|&c| data(c).leaf.as_ref()).collect();
                let Some(attrs) = attrs else { return Facts::default() };
                if kind.is_attr_op() {
                    return Facts { leaf: fold_attr(*kind, &attrs), ..Facts::default() };
                }
                let Some(op) = to_op(*kind, &attrs) else { return Facts::default() };
                let tys: Option<Vec<&ValueType>> =
                    children[n..].iter().map(|&c| data(c).ty.as_ref()).collect();
                let ty = tys.and_then(|tys| op.infer(&tys).ok());
                let constant = match (&op, kind) {
                    (crate::ops::Op::Source(Source::Fill { value, .. }), _) => Some(value.clone()),
                    (_, Kind::Scale) => match (&attrs[0], &data(children[1]).constant) {
                        (Leaf::Scalar(c), Some(v)) => Some(c.mul(v)),
                        _ => None,
                    },
                    (_, Kind::Neg) => data(children[0]).constant.as_ref().map(Scalar::neg),
                    (_, Kind::Broadcast | Kind::Permute | Kind::Reshape) => {
                        data(children[n]).constant.clone()
                    }
                    _ => None,
                };
                Facts { ty, leaf: None, constant }
            }
        }
    }

    fn merge(&mut self, a: &mut Facts, b: Facts) -> DidMerge {
        let mut changed_a = false;
        let mut changed_b = false;
        macro_rules! join {
            ($f:ident) => {
                match (&a.$f, b.$f) {
                    (None, Some(v)) => {
                        a.$f = Some(v);
                        changed_a = true;
                    }
                    (Some(_), None) => changed_b = true,
                    (Some(x), Some(y)) => {
                        debug_assert!(*x == y, "merged classes disagree on {}", stringify!($f))
                    }
                    (None, None) => {}
                }
            };
        }
        join!(ty);
        join!(leaf);
        // Two descriptions of one constant may differ in rounding (0.1·3 and 0.3): keep one.
        match (&a.constant, b.constant) {
            (None, Some(v)) => {
                a.constant = Some(v);
                changed_a = true;
            }
            (Some(_), None) => changed_b = true,
            _ => {}
        }
        DidMerge(changed_a, changed_b)
    }

    fn modify(egraph: &mut Graph, id: Id) {
        // A computed attribute becomes a leaf, so patterns see its value.
        let computed = egraph[id].nodes.iter().any(|n| matches!(n, Tensor::Op(k, _) if k.is_attr_op()));
        if computed && let Some(leaf) = egraph[id].data.leaf.clone() {
            let added = egraph.add(Tensor::Leaf(leaf));
            egraph.union(id, added);
        }
    }
}
