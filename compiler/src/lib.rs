//! adjoint's compiler: a tensor IR with symbolic shapes, a symbolic backward pass
//! derived by the matrix-product rule, formulas, and a reference interpreter.
//!
//! ```
//! use adjoint_compiler::{autodiff, dim::Dim, ir::{Graph, Shape}, pretty};
//!
//! // Y = X·W + b, with upstream gradient G.
//! let (n, d, f) = (Dim::sym("N"), Dim::sym("D"), Dim::sym("F"));
//! let mut g = Graph::new();
//! let x = g.data("X", Shape::new([n.clone(), d.clone()]))?;
//! let w = g.param("W", Shape::new([d.clone(), f.clone()]))?;
//! let b = g.param("b", Shape::new([f.clone()]))?;
//! let xw = g.matmul(x, w)?;
//! let bias = g.broadcast(b, 0, n.clone())?;
//! let y = g.add(xw, bias)?;
//! let upstream = g.data("G", Shape::new([n, f]))?;
//! let grads = autodiff::backward(&mut g, &[(y, upstream)], &[w, b, x])?;
//! let labels = ["∂L/∂W", "∂L/∂b", "∂L/∂X"].map(String::from);
//! let outputs: Vec<_> = labels.into_iter().zip(grads).collect();
//! let text = pretty::formulas(&g, &outputs, pretty::Style::Unicode);
//! assert_eq!(text, "∂L/∂W = Xᵀ·G\n∂L/∂b = colsum(G)\n∂L/∂X = G·Wᵀ\n");
//! # Ok::<(), adjoint_compiler::error::Error>(())
//! ```

pub mod autodiff;
pub mod backend;
pub mod build;
pub mod dim;
pub mod driver;
pub mod egraph;
pub mod error;
pub mod frontend;
pub mod interp;
pub mod ir;
pub mod library;
pub mod ops;
pub mod pretty;
pub mod program;
pub mod scalar;

pub use driver::{compile, expand};
