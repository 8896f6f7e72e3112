//! The e-graph's language: the IR's ops, with each op's attributes (axis, permutation,
//! scalar, dimension, shape) as leaf children, so rewrite patterns can bind and move
//! them like any operand (`(sum ?a (bcast ?a ?n ?x))`).
//!
//! One table (`KINDS`) lists every kind with its pattern name and how many attribute
//! leaves precede its tensor operands; [`Tensor::from_op`] and [`Tensor::to_op`]
//! convert between IR ops and e-nodes through it. A few kinds compute attributes
//! (`smul`, `dimscalar`, `pcompose`): the analysis folds them to leaves, which is how a
//! rule writes "the product of the two scales" in one line.

use std::fmt;

use egg::{Id, Language};

use crate::dim::Dim;
use crate::ir::{Role, Shape, ValueType};
use crate::ops::{IndexOp, Layout, Op, Pointwise, Reduce, SelectOp, Source};
use crate::scalar::Scalar;

/// An attribute value, or an input.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Leaf {
    Axis(usize),
    Dim(Dim),
    Scalar(Scalar),
    Perm(Vec<usize>),
    Shape(Shape),
    /// A parameter or data input: the only tensor-valued leaf.
    Input {
        name: String,
        role: Role,
        ty: ValueType,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Matmul,
    Add,
    Sub,
    Mul,
    Div,
    Neg,
    Scale,
    Shift,
    Exp,
    Log,
    Tanh,
    Sqrt,
    Relu,
    Step,
    Gelu,
    GeluGrad,
    StopGrad,
    Permute,
    Reshape,
    Slice,
    Pad,
    Concat,
    Broadcast,
    Sum,
    Max,
    ArgmaxMask,
    Gather,
    ScatterAdd,
    OneHot,
    Causal,
    Select,
    Fill,
    /// Attribute arithmetic, folded by the analysis: the product of two scalars.
    SMul,
    /// A dimension's size as a scalar.
    DimScalar,
    /// The composition of two permutations: `permute(p, permute(q, x)) = permute(pcompose(p, q), x)`.
    PCompose,
}

/// `(kind, pattern name, attribute leaves before the operands, operands or None if variadic)`.
const KINDS: &[(Kind, &str, usize, Option<usize>)] = &[
    (Kind::Matmul, "matmul", 0, Some(2)),
    (Kind::Add, "add", 0, Some(2)),
    (Kind::Sub, "sub", 0, Some(2)),
    (Kind::Mul, "mul", 0, Some(2)),
    (Kind::Div, "div", 0, Some(2)),
    (Kind::Neg, "neg", 0, Some(1)),
    (Kind::Scale, "scale", 1, Some(1)),
    (Kind::Shift, "shift", 1, Some(1)),
    (Kind::Exp, "exp", 0, Some(1)),
    (Kind::Log, "log", 0, Some(1)),
    (Kind::Tanh, "tanh", 0, Some(1)),
    (Kind::Sqrt, "sqrt", 0, Some(1)),
    (Kind::Relu, "relu", 0, Some(1)),
    (Kind::Step, "step", 0, Some(1)),
    (Kind::Gelu, "gelu", 0, Some(1)),
    (Kind::GeluGrad, "gelu'", 0, Some(1)),
    (Kind::StopGrad, "stopgrad", 0, Some(1)),
    (Kind::Permute, "permute", 1, Some(1)),
    (Kind::Reshape, "reshape", 1, Some(1)),
    (Kind::Slice, "slice", 3, Some(1)),
    (Kind::Pad, "pad", 3, Some(1)),
    (Kind::Concat, "concat", 1, None),
    (Kind::Broadcast, "bcast", 2, Some(1)),
    (Kind::Sum, "sum", 1, Some(1)),
    (Kind::Max, "max", 1, Some(1)),
    (Kind::ArgmaxMask, "argmax", 1, Some(1)),
    (Kind::Gather, "gather", 0, Some(2)),
    (Kind::ScatterAdd, "scatter", 1, Some(2)),
    (Kind::OneHot, "onehot", 1, Some(1)),
    (Kind::Causal, "causal", 1, Some(1)),
    (Kind::Select, "select", 0, Some(3)),
    (Kind::Fill, "fill", 2, Some(0)),
    (Kind::SMul, "smul", 2, Some(0)),
    (Kind::DimScalar, "dimscalar", 1, Some(0)),
    (Kind::PCompose, "pcompose", 2, Some(0)),
];

impl Kind {
    fn row(self) -> &'static (Kind, &'static str, usize, Option<usize>) {
        KINDS.iter().find(|r| r.0 == self).expect("every kind has a row")
    }

    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// How many leading children are attributes.
    pub fn attrs(self) -> usize {
        self.row().2
    }

    /// Kinds that compute an attribute rather than a tensor.
    pub fn is_attr_op(self) -> bool {
        matches!(self, Kind::SMul | Kind::DimScalar | Kind::PCompose)
    }
}

/// An e-node: a leaf, or a kind applied to attribute children then operands.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tensor {
    Leaf(Leaf),
    Op(Kind, Vec<Id>),
}

impl Language for Tensor {
    type Discriminant = (Option<Kind>, usize);

    fn discriminant(&self) -> Self::Discriminant {
        match self {
            Tensor::Leaf(_) => (None, 0),
            Tensor::Op(k, c) => (Some(*k), c.len()),
        }
    }

    fn matches(&self, other: &Self) -> bool {
        match (self, other) {
            (Tensor::Leaf(a), Tensor::Leaf(b)) => a == b,
            (Tensor::Op(a, x), Tensor::Op(b, y)) => a == b && x.len() == y.len(),
            _ => false,
        }
    }

    fn children(&self) -> &[Id] {
        match self {
            Tensor::Leaf(_) => &[],
            Tensor::Op(_, c) => c,
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            Tensor::Leaf(_) => &mut [],
            Tensor::Op(_, c) => c,
        }
    }
}

impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tensor::Op(k, _) => f.write_str(k.name()),
            Tensor::Leaf(Leaf::Axis(a)) => write!(f, "{a}"),
            Tensor::Leaf(Leaf::Dim(d)) => write!(f, "d:{d}"),
            Tensor::Leaf(Leaf::Scalar(s)) => write!(f, "s:{s}"),
            Tensor::Leaf(Leaf::Perm(p)) => {
                write!(f, "p:{}", p.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(","))
            }
            Tensor::Leaf(Leaf::Shape(s)) => write!(f, "shape:{s}"),
            Tensor::Leaf(Leaf::Input { name, .. }) => write!(f, "{name}"),
        }
    }
}

impl egg::FromOp for Tensor {
    type Error = String;

    /// Pattern syntax: kind names (`matmul`, `sum`, `bcast`, ...); `0`, `1`, … axes;
    /// `p:1,0` permutations; `s:-1` numeric scalars.
    fn from_op(op: &str, children: Vec<Id>) -> Result<Tensor, String> {
        if let Some(row) = KINDS.iter().find(|r| r.1 == op) {
            let ok = match row.3 {
                Some(n) => children.len() == row.2 + n,
                None => children.len() > row.2,
            };
            if !ok {
                return Err(format!("`{op}` takes {} attribute(s) and {:?} operand(s)", row.2, row.3));
            }
            return Ok(Tensor::Op(row.0, children));
        }
        if !children.is_empty() {
            return Err(format!("unknown operator `{op}`"));
        }
        if let Ok(a) = op.parse::<usize>() {
            return Ok(Tensor::Leaf(Leaf::Axis(a)));
        }
        if let Some(p) = op.strip_prefix("p:") {
            let perm = p.split(',').map(|i| i.parse::<usize>()).collect::<Result<Vec<_>, _>>();
            return perm.map(|p| Tensor::Leaf(Leaf::Perm(p))).map_err(|e| format!("`{op}`: {e}"));
        }
        if let Some(s) = op.strip_prefix("s:") {
            return s
                .parse::<f64>()
                .map(|v| Tensor::Leaf(Leaf::Scalar(Scalar::num(v))))
                .map_err(|e| e.to_string());
        }
        Err(format!("unknown operator `{op}`"))
    }
}

/// An IR op as a kind and its attribute leaves (an input is a leaf of its own).
pub fn split(op: &Op) -> Result<(Kind, Vec<Leaf>), Leaf> {
    use Leaf as L;
    Ok(match op {
        Op::Source(Source::Input { name, role, ty }) => {
            return Err(L::Input { name: name.clone(), role: *role, ty: ty.clone() });
        }
        Op::Source(Source::Fill { value, shape }) => {
            (Kind::Fill, vec![L::Scalar(value.clone()), L::Shape(shape.clone())])
        }
        Op::Matmul => (Kind::Matmul, vec![]),
        Op::Layout(l) => match l {
            Layout::Permute(p) => (Kind::Permute, vec![L::Perm(p.clone())]),
            Layout::Reshape(s) => (Kind::Reshape, vec![L::Shape(s.clone())]),
            Layout::Slice { axis, start, len } => {
                (Kind::Slice, vec![L::Axis(*axis), L::Dim(start.clone()), L::Dim(len.clone())])
            }
            Layout::Pad { axis, before, after } => {
                (Kind::Pad, vec![L::Axis(*axis), L::Dim(before.clone()), L::Dim(after.clone())])
            }
            Layout::Concat { axis } => (Kind::Concat, vec![L::Axis(*axis)]),
            Layout::Broadcast { axis, size } => (Kind::Broadcast, vec![L::Axis(*axis), L::Dim(size.clone())]),
        },
        Op::Pointwise(p) => match p {
            Pointwise::Scale(c) => (Kind::Scale, vec![L::Scalar(c.clone())]),
            Pointwise::Shift(c) => (Kind::Shift, vec![L::Scalar(c.clone())]),
            Pointwise::Add => (Kind::Add, vec![]),
            Pointwise::Sub => (Kind::Sub, vec![]),
            Pointwise::Mul => (Kind::Mul, vec![]),
            Pointwise::Div => (Kind::Div, vec![]),
            Pointwise::Neg => (Kind::Neg, vec![]),
            Pointwise::Exp => (Kind::Exp, vec![]),
            Pointwise::Log => (Kind::Log, vec![]),
            Pointwise::Tanh => (Kind::Tanh, vec![]),
            Pointwise::Sqrt => (Kind::Sqrt, vec![]),
            Pointwise::Relu => (Kind::Relu, vec![]),
            Pointwise::Step => (Kind::Step, vec![]),
            Pointwise::Gelu => (Kind::Gelu, vec![]),
            Pointwise::GeluGrad => (Kind::GeluGrad, vec![]),
            Pointwise::StopGrad => (Kind::StopGrad, vec![]),
        },
        Op::Reduce(r) => match r {
            Reduce::Sum { axis } => (Kind::Sum, vec![L::Axis(*axis)]),
            Reduce::Max { axis } => (Kind::Max, vec![L::Axis(*axis)]),
            Reduce::ArgmaxMask { axis } => (Kind::ArgmaxMask, vec![L::Axis(*axis)]),
        },
        Op::Index(i) => match i {
            IndexOp::Gather => (Kind::Gather, vec![]),
            IndexOp::ScatterAdd { rows } => (Kind::ScatterAdd, vec![L::Dim(rows.clone())]),
            IndexOp::OneHot { depth } => (Kind::OneHot, vec![L::Dim(depth.clone())]),
        },
        Op::Select(s) => match s {
            SelectOp::Causal { fill } => (Kind::Causal, vec![L::Scalar(fill.clone())]),
            SelectOp::Select => (Kind::Select, vec![]),
        },
    })
}

/// The IR op of a tensor kind with these attributes (`None` for attribute kinds or
/// attributes of the wrong sort, which only an ill-formed rule produces).
pub fn to_op(kind: Kind, attrs: &[&Leaf]) -> Option<Op> {
    use Leaf as L;
    let p = |x: Pointwise| Some(Op::Pointwise(x));
    match (kind, attrs) {
        (Kind::Fill, [L::Scalar(value), L::Shape(shape)]) => {
            Some(Op::Source(Source::Fill { value: value.clone(), shape: shape.clone() }))
        }
        (Kind::Matmul, []) => Some(Op::Matmul),
        (Kind::Permute, [L::Perm(perm)]) => Some(Op::Layout(Layout::Permute(perm.clone()))),
        (Kind::Reshape, [L::Shape(s)]) => Some(Op::Layout(Layout::Reshape(s.clone()))),
        (Kind::Slice, [L::Axis(axis), L::Dim(start), L::Dim(len)]) => {
            Some(Op::Layout(Layout::Slice { axis: *axis, start: start.clone(), len: len.clone() }))
        }
        (Kind::Pad, [L::Axis(axis), L::Dim(before), L::Dim(after)]) => {
            Some(Op::Layout(Layout::Pad { axis: *axis, before: before.clone(), after: after.clone() }))
        }
        (Kind::Concat, [L::Axis(axis)]) => Some(Op::Layout(Layout::Concat { axis: *axis })),
        (Kind::Broadcast, [L::Axis(axis), L::Dim(size)]) => {
            Some(Op::Layout(Layout::Broadcast { axis: *axis, size: size.clone() }))
        }
        (Kind::Scale, [L::Scalar(c)]) => p(Pointwise::Scale(c.clone())),
        (Kind::Shift, [L::Scalar(c)]) => p(Pointwise::Shift(c.clone())),
        (Kind::Add, []) => p(Pointwise::Add),
        (Kind::Sub, []) => p(Pointwise::Sub),
        (Kind::Mul, []) => p(Pointwise::Mul),
        (Kind::Div, []) => p(Pointwise::Div),
        (Kind::Neg, []) => p(Pointwise::Neg),
        (Kind::Exp, []) => p(Pointwise::Exp),
        (Kind::Log, []) => p(Pointwise::Log),
        (Kind::Tanh, []) => p(Pointwise::Tanh),
        (Kind::Sqrt, []) => p(Pointwise::Sqrt),
        (Kind::Relu, []) => p(Pointwise::Relu),
        (Kind::Step, []) => p(Pointwise::Step),
        (Kind::Gelu, []) => p(Pointwise::Gelu),
        (Kind::GeluGrad, []) => p(Pointwise::GeluGrad),
        (Kind::StopGrad, []) => p(Pointwise::StopGrad),
        (Kind::Sum, [L::Axis(axis)]) => Some(Op::Reduce(Reduce::Sum { axis: *axis })),
        (Kind::Max, [L::Axis(axis)]) => Some(Op::Reduce(Reduce::Max { axis: *axis })),
        (Kind::ArgmaxMask, [L::Axis(axis)]) => Some(Op::Reduce(Reduce::ArgmaxMask { axis: *axis })),
        (Kind::Gather, []) => Some(Op::Index(IndexOp::Gather)),
        (Kind::ScatterAdd, [L::Dim(rows)]) => Some(Op::Index(IndexOp::ScatterAdd { rows: rows.clone() })),
        (Kind::OneHot, [L::Dim(depth)]) => Some(Op::Index(IndexOp::OneHot { depth: depth.clone() })),
        (Kind::Causal, [L::Scalar(fill)]) => Some(Op::Select(SelectOp::Causal { fill: fill.clone() })),
        (Kind::Select, []) => Some(Op::Select(SelectOp::Select)),
        _ => None,
    }
}

/// The attribute an attribute kind computes, from its (folded) children.
pub fn fold_attr(kind: Kind, attrs: &[&Leaf]) -> Option<Leaf> {
    match (kind, attrs) {
        (Kind::SMul, [Leaf::Scalar(a), Leaf::Scalar(b)]) => Some(Leaf::Scalar(a.mul(b))),
        (Kind::DimScalar, [Leaf::Dim(d)]) => Some(Leaf::Scalar(Scalar::dim(d))),
        (Kind::PCompose, [Leaf::Perm(p), Leaf::Perm(q)]) if p.len() == q.len() => {
            // permute(p, permute(q, x)): output axis i is q's output axis p[i], which is x's axis q[p[i]].
            Some(Leaf::Perm(p.iter().map(|&i| q[i]).collect()))
        }
        _ => None,
    }
}
