//! adjoint's runtime, and the crate users depend on: the [`model!`] macro, and what the
//! code it generates calls — reference kernels ([`ops`]), run-time dimension binding
//! ([`dims`]), seeded initialisation ([`init`]) and the error type.
//!
//! Generated code refers to everything by absolute path (`::adjoint::ops::matmul`), so
//! a crate that embeds it needs `adjoint` as its only dependency.
//!
//! # The language, by example: the benchmark GPT
//!
//! `dims` declares size symbols; `input` and `param` declare tensors with shapes
//! (`index[..]` for token ids); `@` is the matrix product, `*` `/` `+` `-` are
//! elementwise (a bias `[D]` is repeated over rows), `x.T` transposes, `table[ids]`
//! looks rows up; `fn` defines a block, and `for h in 0..L { x = block(x); }` repeats
//! it with parameters per layer, named `h0.attn.wq`, `h1.attn.wq`, ...
//! The macro derives the backward pass and generates a module:
//!
//! ```
//! adjoint::model! {
//!     /// A GPT-2 style pre-LN decoder, the benchmark model of `shared/peers/WORKLOAD.md`:
//!     /// learned positions, causal multi-head attention, a GELU MLP, tied embeddings and
//!     /// mean cross-entropy. Weights are `[in, out]` (y = x W + b).
//!     model Gpt {
//!         dims B, T, D, H, F, V, L;
//!         dim N = B * T;
//!
//!         input tokens: index[B, T];
//!         input targets: index[B, T];
//!
//!         param wte: [V, D] = normal(0.02) as E;
//!         param wpe: [T, D] = normal(0.02) as P;
//!
//!         fn self_attention(x) {
//!             param attn.wq: [D, D] as W_q;
//!             param attn.bq: [D] as b_q;
//!             param attn.wk: [D, D] as W_k;
//!             param attn.bk: [D] as b_k;
//!             param attn.wv: [D, D] as W_v;
//!             param attn.bv: [D] as b_v;
//!             param attn.wo: [D, D] as W_o;
//!             param attn.bo: [D] as b_o;
//!             let q = x @ attn.wq + attn.bq;
//!             let k = x @ attn.wk + attn.bk;
//!             let v = x @ attn.wv + attn.bv;
//!             causal_attention(q, k, v, heads = H, seq = T) @ attn.wo + attn.bo
//!         }
//!
//!         fn mlp(x) {
//!             param mlp.w1: [D, F] as W_1;
//!             param mlp.b1: [F] as b_1;
//!             param mlp.w2: [F, D] as W_2;
//!             param mlp.b2: [D] as b_2;
//!             gelu(x @ mlp.w1 + mlp.b1) @ mlp.w2 + mlp.b2
//!         }
//!
//!         fn block(x) {
//!             param ln1.g: [D] = 1 + normal(0.1) as "γ_1";
//!             param ln1.b: [D] as "β_1";
//!             param ln2.g: [D] = 1 + normal(0.1) as "γ_2";
//!             param ln2.b: [D] as "β_2";
//!             let x = x + self_attention(layernorm(x, ln1.g, ln1.b));
//!             x + mlp(layernorm(x, ln2.g, ln2.b))
//!         }
//!
//!         let x = reshape(wte[tokens] + wpe, [N, D]);
//!         for h in 0..L {
//!             x = block(x);
//!         }
//!         param lnf.g: [D] = 1 + normal(0.1) as "γ_f";
//!         param lnf.b: [D] as "β_f";
//!         let logits = layernorm(x, lnf.g, lnf.b) @ wte.T;
//!         loss cross_entropy(logits, reshape(targets, [N]));
//!     }
//! }
//!
//! // Any sizes (the layer count too): the code is compiled once.
//! let sizes = gpt::Sizes { V: 17, T: 6, D: 12, H: 3, F: 20, L: 2 };
//! let params = gpt::Params::init(&sizes, 0)?;
//! let tokens = adjoint::ndarray::ArrayD::from_shape_fn(vec![2, 6], |i| ((i[0] + 3 * i[1]) % 17) as i32);
//! let targets = tokens.mapv(|t| (t + 1) % 17);
//! let inputs = gpt::Inputs { tokens: tokens.view(), targets: targets.view() };
//! let mut grads = gpt::Params::zeros(&sizes)?;
//! let loss = gpt::grads(&params, &inputs, &mut grads)?;
//! assert!((loss - (17f32).ln()).abs() < 0.5, "a fresh model is near-uniform: {loss}");
//! assert_eq!(grads.h[1].attn_wq.shape(), &[12, 12]);
//! // Every parameter's derived gradient, as text:
//! assert!(gpt::formulas::H_ATTN_WQ.contains("∂L/∂W_q ="));
//! assert_eq!(gpt::formulas::ALL.len(), 20);
//! # Ok::<(), adjoint::Error>(())
//! ```

// Generated code says `::adjoint::...`; this lets the crate's own tests use it too.
extern crate self as adjoint;

mod column_sums;
pub mod dims;
pub mod epilogue;
pub mod error;
pub mod fused;
pub mod gemm;
mod gemm_times;
pub mod init;
pub mod math;
pub mod microkernel;
pub mod ops;
pub mod optim;
pub mod parallel;
pub mod pool;
pub mod sample;
mod sgemm;
mod structure;
pub mod tensorfile;

pub use adjoint_macros::model;
pub use error::{Error, Result};
pub use ndarray;
