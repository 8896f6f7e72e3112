//! adjoint's runtime, and the crate users depend on: the [`model!`] macro, and what the
//! code it generates calls — reference kernels ([`ops`]), run-time dimension binding
//! ([`dims`]), seeded initialisation ([`init`]) and the error type.
//!
//! Generated code refers to everything by absolute path (`::adjoint::ops::matmul`), so
//! a crate that embeds it needs `adjoint` as its only dependency.

// Generated code says `::adjoint::...`; this lets the crate's own tests use it too.
extern crate self as adjoint;

pub mod dims;
pub mod error;
pub mod init;
pub mod ops;

pub use adjoint_macros::model;
pub use error::{Error, Result};
pub use ndarray;
