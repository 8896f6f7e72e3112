//! What a product may skip, as the compiler proved it from the graph (causal
//! attention): a triangular operand, or an output read only on and below the diagonal.
//! `Structure` is the description the generated code passes to `gemm`; `k_range` turns
//! it into each tile's range of `k` (or a skipped tile) in the own kernel's block loops.

use crate::error::{Result, bail};
use crate::gemm::MatRef;

/// Where a square operand is known to be zero: the masked half of causal attention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tri {
    /// Nothing known.
    #[default]
    Full,
    /// `x[i, j] = 0` wherever `j > i` (lower triangular: softmax of masked scores).
    ZeroAbove,
    /// `x[i, j] = 0` wherever `j < i` (upper triangular: its transpose).
    ZeroBelow,
}

/// What a product may skip, as the compiler proved it from the graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Structure {
    /// Zeros of the left operand (square).
    pub a: Tri,
    /// Zeros of the right operand (square).
    pub b: Tri,
    /// Only `c[i, j]` with `j ≤ i` is ever read (scores before the causal mask): tiles
    /// wholly above the diagonal are not computed and are left zero.
    pub lower_only: bool,
}

impl Structure {
    /// A triangular operand must be square.
    pub(crate) fn check(&self, a: MatRef, b: MatRef) -> Result<()> {
        if self.a != Tri::Full && a.rows != a.cols {
            bail!("gemm: a triangular left operand must be square, not {}×{}", a.rows, a.cols);
        }
        if self.b != Tri::Full && b.rows != b.cols {
            bail!("gemm: a triangular right operand must be square, not {}×{}", b.rows, b.cols);
        }
        if self.lower_only && a.rows != b.cols {
            bail!("gemm: a lower-only output must be square, not {}×{}", a.rows, b.cols);
        }
        Ok(())
    }

    /// The range of `p` that can contribute to rows `i0..i1`, columns `j0..j1` (whole
    /// product coordinates) of `c`, within `0..k`; empty when the tile is skipped.
    #[inline]
    pub(crate) fn k_range(&self, i0: usize, i1: usize, j0: usize, j1: usize, k: usize) -> (usize, usize) {
        if self.lower_only && j0 >= i1 {
            return (0, 0);
        }
        let (mut lo, mut hi) = (0, k);
        match self.a {
            Tri::ZeroAbove => hi = hi.min(i1),
            Tri::ZeroBelow => lo = lo.max(i0),
            Tri::Full => {}
        }
        match self.b {
            Tri::ZeroAbove => lo = lo.max(j0),
            Tri::ZeroBelow => hi = hi.min(j1),
            Tri::Full => {}
        }
        (lo, hi.max(lo))
    }
}
