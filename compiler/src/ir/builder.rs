//! Typed constructors for every primitive op (`g.matmul(x, w)`), used by the library,
//! the adjoint rules and the front end.
//!
//! Besides naming the ops, the constructors fold (never through a value the graph
//! names, so the formulas keep every named step) the handful of identities that are
//! pure bookkeeping and can never cost anything: a permute of a permute is one permute
//! (so the adjoint of `Kᵀ` is not `(Gᵀ)ᵀ`), an identity permute or reshape is nothing,
//! scaling by 1 is nothing, scales compose, a scaled or broadcast constant is a constant,
//! and `(X·Y)ᵀ` is `Yᵀ·Xᵀ`. Real algebra is the e-graph's job.

use crate::dim::Dim;
use crate::error::Result;
use crate::ir::{Graph, Shape, ValueId};
use crate::ops::{IndexOp, Layout, Op, Pointwise, Reduce, SelectOp, Source, swaps_last_two};
use crate::scalar::Scalar;

impl Graph {
    fn pw(&mut self, p: Pointwise, inputs: &[ValueId]) -> Result<ValueId> {
        self.apply(Op::Pointwise(p), inputs)
    }

    /// `a · b`: the matrix product (batched over equal leading axes).
    pub fn matmul(&mut self, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.apply(Op::Matmul, &[a, b])
    }

    /// `aᵀ`: swaps the last two axes. `(X·Y)ᵀ` is built as `Yᵀ·Xᵀ`: the same product
    /// with its operands read transposed, which costs nothing and reads as the
    /// textbook writes it (seed 004: `∂L/∂K = Gᵀ·Q`).
    pub fn transpose(&mut self, a: ValueId) -> Result<ValueId> {
        let rank = self.shape(a).rank();
        if rank < 2 {
            // Let the shape rule report it.
            return self.apply(Op::Layout(Layout::Permute(vec![0, 0])), &[a]);
        }
        let mut perm: Vec<usize> = (0..rank).collect();
        perm.swap(rank - 2, rank - 1);
        self.permute(a, &perm)
    }

    /// Output axis `i` is input axis `perm[i]`.
    pub fn permute(&mut self, a: ValueId, perm: &[usize]) -> Result<ValueId> {
        if perm.iter().enumerate().all(|(i, &p)| i == p) && perm.len() == self.shape(a).rank() {
            return Ok(a);
        }
        if swaps_last_two(perm)
            && let (Op::Matmul, None) = (&self.node(a).op, &self.node(a).name)
        {
            let (x, y) = (self.node(a).inputs[0], self.node(a).inputs[1]);
            let (yt, xt) = (self.transpose(y)?, self.transpose(x)?);
            return self.matmul(yt, xt);
        }
        let node = self.node(a);
        // A named permute (`K_h`, the heads) stays, so formulas can say `K_hᵀ`.
        if let Op::Layout(Layout::Permute(inner)) = &node.op
            && node.name.is_none()
            && inner.len() == perm.len()
            && perm.iter().all(|&p| p < inner.len())
        {
            let composed: Vec<usize> = perm.iter().map(|&p| inner[p]).collect();
            let src = node.inputs[0];
            return self.permute(src, &composed);
        }
        self.apply(Op::Layout(Layout::Permute(perm.to_vec())), &[a])
    }

    pub fn reshape(&mut self, a: ValueId, shape: Shape) -> Result<ValueId> {
        if *self.shape(a) == shape {
            return Ok(a);
        }
        let node = self.node(a);
        if let (Op::Layout(Layout::Reshape(_)), None) = (&node.op, &node.name) {
            let src = node.inputs[0];
            return self.reshape(src, shape);
        }
        self.apply(Op::Layout(Layout::Reshape(shape)), &[a])
    }

    pub fn slice(&mut self, a: ValueId, axis: usize, start: Dim, len: Dim) -> Result<ValueId> {
        self.apply(Op::Layout(Layout::Slice { axis, start, len }), &[a])
    }

    /// Splits `axis` into `parts` equal slices (heads, Q/K/V from one product).
    pub fn split(&mut self, a: ValueId, axis: usize, parts: usize) -> Result<Vec<ValueId>> {
        let Some(size) = self.shape(a).0.get(axis).cloned() else {
            // Let the shape rule report the bad axis.
            return Ok(vec![self.slice(a, axis, Dim::lit(0), Dim::lit(0))?]);
        };
        let Some(len) = size.div(&Dim::lit(parts.max(1) as i64)) else {
            return Err(crate::error::Error::new(format!("split: cannot divide {size} by {parts}")));
        };
        (0..parts).map(|k| self.slice(a, axis, len.mul(&Dim::lit(k as i64)), len.clone())).collect()
    }

    pub fn pad(&mut self, a: ValueId, axis: usize, before: Dim, after: Dim) -> Result<ValueId> {
        self.apply(Op::Layout(Layout::Pad { axis, before, after }), &[a])
    }

    pub fn concat(&mut self, parts: &[ValueId], axis: usize) -> Result<ValueId> {
        self.apply(Op::Layout(Layout::Concat { axis }), parts)
    }

    /// Inserts a new axis `axis` of `size`, repeating `a` along it.
    pub fn broadcast(&mut self, a: ValueId, axis: usize, size: Dim) -> Result<ValueId> {
        if let Op::Source(Source::Fill { value, shape }) = &self.node(a).op
            && axis <= shape.rank()
        {
            let (value, mut shape) = (value.clone(), shape.clone());
            shape.0.insert(axis, size);
            return self.fill(value, shape);
        }
        self.apply(Op::Layout(Layout::Broadcast { axis, size }), &[a])
    }

    /// Broadcasts `a` back over the axis a reduction of `like` removed.
    pub fn expand_as(&mut self, a: ValueId, axis: usize, like: ValueId) -> Result<ValueId> {
        let size = self.shape(like).0.get(axis).cloned().unwrap_or_default();
        self.broadcast(a, axis, size)
    }

    pub fn add(&mut self, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.pw(Pointwise::Add, &[a, b])
    }

    pub fn sub(&mut self, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.pw(Pointwise::Sub, &[a, b])
    }

    /// `a ⊙ b`.
    pub fn mul(&mut self, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.pw(Pointwise::Mul, &[a, b])
    }

    /// `a ⊘ b`.
    pub fn div(&mut self, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.pw(Pointwise::Div, &[a, b])
    }

    pub fn neg(&mut self, a: ValueId) -> Result<ValueId> {
        if let Op::Pointwise(Pointwise::Neg) = self.node(a).op {
            return Ok(self.node(a).inputs[0]);
        }
        self.pw(Pointwise::Neg, &[a])
    }

    /// `c · a` for a symbolic constant `c`.
    pub fn scale(&mut self, a: ValueId, c: Scalar) -> Result<ValueId> {
        if c.is_one() {
            return Ok(a);
        }
        if let (Op::Pointwise(Pointwise::Scale(inner)), None) = (&self.node(a).op, &self.node(a).name) {
            let (c, src) = (inner.mul(&c), self.node(a).inputs[0]);
            return self.scale(src, c);
        }
        if let Op::Source(Source::Fill { value, shape }) = &self.node(a).op {
            let (value, shape) = (value.mul(&c), shape.clone());
            return self.fill(value, shape);
        }
        self.pw(Pointwise::Scale(c), &[a])
    }

    /// `a + c` for a symbolic constant `c`.
    pub fn shift(&mut self, a: ValueId, c: Scalar) -> Result<ValueId> {
        self.pw(Pointwise::Shift(c), &[a])
    }

    pub fn exp(&mut self, a: ValueId) -> Result<ValueId> {
        self.pw(Pointwise::Exp, &[a])
    }

    pub fn log(&mut self, a: ValueId) -> Result<ValueId> {
        self.pw(Pointwise::Log, &[a])
    }

    pub fn tanh(&mut self, a: ValueId) -> Result<ValueId> {
        self.pw(Pointwise::Tanh, &[a])
    }

    pub fn sqrt(&mut self, a: ValueId) -> Result<ValueId> {
        self.pw(Pointwise::Sqrt, &[a])
    }

    pub fn relu(&mut self, a: ValueId) -> Result<ValueId> {
        self.pw(Pointwise::Relu, &[a])
    }

    /// `[a > 0]`: 1 where positive, else 0.
    pub fn step(&mut self, a: ValueId) -> Result<ValueId> {
        self.pw(Pointwise::Step, &[a])
    }

    /// GELU, tanh approximation.
    pub fn gelu(&mut self, a: ValueId) -> Result<ValueId> {
        self.pw(Pointwise::Gelu, &[a])
    }

    /// The derivative of [`Graph::gelu`].
    pub fn gelu_grad(&mut self, a: ValueId) -> Result<ValueId> {
        self.pw(Pointwise::GeluGrad, &[a])
    }

    /// `a`, through which no gradient flows (exact where the result does not depend on
    /// it, as for the max subtracted inside softmax).
    pub fn stop_grad(&mut self, a: ValueId) -> Result<ValueId> {
        self.pw(Pointwise::StopGrad, &[a])
    }

    pub fn sum(&mut self, a: ValueId, axis: usize) -> Result<ValueId> {
        self.apply(Op::Reduce(Reduce::Sum { axis }), &[a])
    }

    /// The sum of every element: a scalar. Innermost axis first: a last-axis sum fuses
    /// into the loop that produces its operand, so the summand is never stored.
    pub fn sum_all(&mut self, a: ValueId) -> Result<ValueId> {
        let mut v = a;
        while self.shape(v).rank() > 0 {
            let last = self.shape(v).rank() - 1;
            v = self.sum(v, last)?;
        }
        Ok(v)
    }

    pub fn max(&mut self, a: ValueId, axis: usize) -> Result<ValueId> {
        self.apply(Op::Reduce(Reduce::Max { axis }), &[a])
    }

    /// One-hot of the (first) position of the maximum along `axis`.
    pub fn argmax_mask(&mut self, a: ValueId, axis: usize) -> Result<ValueId> {
        self.apply(Op::Reduce(Reduce::ArgmaxMask { axis }), &[a])
    }

    /// `table[idx]`: rows of `table` named by `idx`.
    pub fn gather(&mut self, table: ValueId, idx: ValueId) -> Result<ValueId> {
        self.apply(Op::Index(IndexOp::Gather), &[table, idx])
    }

    /// Adds the rows of `g` into a zero `[rows, ..]` table at the rows named by `idx`.
    pub fn scatter_add(&mut self, g: ValueId, idx: ValueId, rows: Dim) -> Result<ValueId> {
        self.apply(Op::Index(IndexOp::ScatterAdd { rows }), &[g, idx])
    }

    pub fn one_hot(&mut self, idx: ValueId, depth: Dim) -> Result<ValueId> {
        self.apply(Op::Index(IndexOp::OneHot { depth }), &[idx])
    }

    /// Sets the entries above the diagonal of the last two axes to `fill`.
    pub fn causal_mask(&mut self, a: ValueId, fill: Scalar) -> Result<ValueId> {
        self.apply(Op::Select(SelectOp::Causal { fill }), &[a])
    }

    /// `mask ≠ 0 ? a : b`, elementwise.
    pub fn select(&mut self, mask: ValueId, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.apply(Op::Select(SelectOp::Select), &[mask, a, b])
    }

    /// A constant tensor.
    pub fn fill(&mut self, value: Scalar, shape: Shape) -> Result<ValueId> {
        self.apply(Op::Source(Source::Fill { value, shape }), &[])
    }

    pub fn zeros_like(&mut self, a: ValueId) -> Result<ValueId> {
        let shape = self.shape(a).clone();
        self.fill(Scalar::num(0.0), shape)
    }
}
