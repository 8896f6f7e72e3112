//! Symbolic scalar constants: a number times powers of dimension sizes.
//!
//! Constants in a transformer depend on its sizes: the attention scale `1/√d_k`, the
//! `1/D` of a mean, the `1/N` of a mean loss. Keeping them symbolic lets one graph
//! serve every size and lets the formulas print `1/√d_k` instead of `0.125`.
//! A [`Scalar`] is `coef · Π dᵢ^(eᵢ/2)` (half-integer exponents cover square roots);
//! a constant with a conventional symbol (`ε`) carries that symbol for printing.

use std::fmt;
use std::hash::{Hash, Hasher};

use crate::dim::{Dim, DimEnv};
use crate::error::Result;

#[derive(Clone, Debug)]
pub struct Scalar {
    /// The numeric factor.
    pub coef: f64,
    /// `(dim, exponent in halves)`, sorted by dim, no zero exponents.
    pub factors: Vec<(Dim, i32)>,
    /// A symbol to print instead of the number (`ε`); equal scalars must agree on it.
    pub symbol: Option<&'static str>,
}

impl PartialEq for Scalar {
    fn eq(&self, o: &Scalar) -> bool {
        self.coef.to_bits() == o.coef.to_bits() && self.factors == o.factors && self.symbol == o.symbol
    }
}
impl Eq for Scalar {}
impl Hash for Scalar {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.coef.to_bits().hash(h);
        self.factors.hash(h);
        self.symbol.hash(h);
    }
}

impl PartialOrd for Scalar {
    fn partial_cmp(&self, o: &Scalar) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scalar {
    fn cmp(&self, o: &Scalar) -> std::cmp::Ordering {
        self.coef
            .total_cmp(&o.coef)
            .then_with(|| self.factors.cmp(&o.factors))
            .then_with(|| self.symbol.cmp(&o.symbol))
    }
}

impl Scalar {
    /// The size of `dim` as a scalar (the factor a sum over a broadcast axis brings).
    pub fn dim(dim: &Dim) -> Scalar {
        Scalar::num(1.0).times_dim(dim, 2)
    }

    pub fn num(coef: f64) -> Scalar {
        Scalar { coef, factors: Vec::new(), symbol: None }
    }

    /// A number printed as a symbol, e.g. `Scalar::named("ε", 1e-5)`.
    pub fn named(symbol: &'static str, coef: f64) -> Scalar {
        Scalar { symbol: Some(symbol), ..Scalar::num(coef) }
    }

    /// `1/dim`, e.g. the factor of a mean over `dim`.
    pub fn inv(dim: &Dim) -> Scalar {
        Scalar::num(1.0).times_dim(dim, -2)
    }

    /// `1/√dim`, e.g. the attention scale.
    pub fn inv_sqrt(dim: &Dim) -> Scalar {
        Scalar::num(1.0).times_dim(dim, -1)
    }

    fn times_dim(mut self, dim: &Dim, half_exp: i32) -> Scalar {
        match self.factors.iter().position(|(d, _)| d == dim) {
            Some(i) => {
                self.factors[i].1 += half_exp;
                if self.factors[i].1 == 0 {
                    self.factors.remove(i);
                }
            }
            None => {
                self.factors.push((dim.clone(), half_exp));
                self.factors.sort();
            }
        }
        self
    }

    /// The product of two scalars (a named scalar loses its name unless the other is 1).
    pub fn mul(&self, other: &Scalar) -> Scalar {
        if other.is_one() {
            return self.clone();
        }
        if self.is_one() {
            return other.clone();
        }
        let coef = self.coef * other.coef;
        if coef == 0.0 {
            // One zero, whatever the factors and the sign: equal constants compare equal.
            return Scalar::num(0.0);
        }
        let mut out = Scalar::num(coef);
        for (d, e) in self.factors.iter().chain(&other.factors) {
            out = out.times_dim(d, *e);
        }
        out
    }

    pub fn neg(&self) -> Scalar {
        if self.coef == 0.0 {
            return Scalar::num(0.0);
        }
        Scalar { coef: -self.coef, factors: self.factors.clone(), symbol: None }
    }

    pub fn is_one(&self) -> bool {
        self.coef == 1.0 && self.factors.is_empty()
    }

    pub fn is_zero(&self) -> bool {
        self.coef == 0.0
    }

    pub fn eval(&self, env: &DimEnv) -> Result<f64> {
        let mut v = self.coef;
        for (d, e) in &self.factors {
            v *= (d.eval(env)? as f64).powf(*e as f64 / 2.0);
        }
        Ok(v)
    }

    /// Whether every factor is a reciprocal (prints as a divisor: `X / √d_k`).
    pub fn is_divisor(&self) -> bool {
        self.symbol.is_none()
            && self.coef.abs() == 1.0
            && !self.factors.is_empty()
            && self.factors.iter().all(|(_, e)| *e < 0)
    }
}

/// A plain-number rendering, used where no dimension names apply (errors, DOT).
impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = self.symbol {
            return write!(f, "{s}");
        }
        write!(f, "{}", self.coef)?;
        for (d, e) in &self.factors {
            write!(f, "*({d})^({e}/2)")?;
        }
        Ok(())
    }
}
