//! Symbolic dimension sizes: polynomials over named dimension symbols.
//!
//! A shape is written over symbols (`B`, `T`, `D`, ...) so one compiled model serves
//! many sizes. Sizes combine by product (`B*T`, after a reshape), quotient by a
//! monomial (`D/H`, a head's width) and sum (`D+F`, after a concat), so a [`Dim`] is a
//! polynomial with rational coefficients in normal form: two dims are equal exactly
//! when their normal forms are, which is what the shape rules compare.
//!
//! Invariant: no zero coefficient and no zero exponent is ever stored, so derived
//! `Eq`/`Ord`/`Hash` are structural equality of the polynomial.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::{Error, Result};

/// Sizes bound to dimension symbols when a graph is evaluated.
pub type DimEnv = BTreeMap<String, i64>;

/// An exact fraction `num/den`, `den > 0`, in lowest terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ratio {
    num: i64,
    den: i64,
}

fn gcd(a: i128, b: i128) -> i128 {
    let (mut a, mut b) = (a.abs(), b.abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

impl Ratio {
    pub fn new(num: i64, den: i64) -> Ratio {
        Ratio::reduce(num as i128, den as i128)
    }

    /// Lowest terms from wide parts. Sizes this large never occur in a real model; a
    /// result outside `i64` saturates rather than overflowing (fuzzed model text may
    /// write `[99999999999 * 99999999999]`, and the compiler must not panic on it).
    fn reduce(num: i128, den: i128) -> Ratio {
        assert!(den != 0, "Ratio with zero denominator");
        let sign = if den < 0 { -1 } else { 1 };
        let g = gcd(num, den);
        let clamp = |v: i128| v.clamp(-(i64::MAX as i128), i64::MAX as i128) as i64;
        Ratio { num: clamp(sign * num / g), den: clamp(sign * den / g).max(1) }
    }
    pub fn int(n: i64) -> Ratio {
        Ratio { num: n, den: 1 }
    }
    pub fn is_zero(self) -> bool {
        self.num == 0
    }
    fn add(self, o: Ratio) -> Ratio {
        let (a, b, c, d) = (self.num as i128, self.den as i128, o.num as i128, o.den as i128);
        Ratio::reduce(a.saturating_mul(d).saturating_add(c.saturating_mul(b)), b.saturating_mul(d))
    }
    fn mul(self, o: Ratio) -> Ratio {
        let (a, b, c, d) = (self.num as i128, self.den as i128, o.num as i128, o.den as i128);
        Ratio::reduce(a.saturating_mul(c), b.saturating_mul(d))
    }
    fn recip(self) -> Ratio {
        Ratio::new(self.den, self.num)
    }
}

/// A product of symbols with integer exponents, e.g. `D*H^-1`.
type Monomial = BTreeMap<String, i32>;

/// One term of a [`Dim`] as plain data: `(num, den, [(symbol, exponent)])`.
pub type Term = (i64, i64, Vec<(String, i32)>);

/// A dimension size: a polynomial in dimension symbols with rational coefficients.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Dim {
    terms: BTreeMap<Monomial, Ratio>,
}

impl Dim {
    /// A named dimension symbol such as `T`.
    pub fn sym(name: &str) -> Dim {
        let mut m = Monomial::new();
        m.insert(name.to_string(), 1);
        Dim { terms: BTreeMap::from([(m, Ratio::int(1))]) }
    }

    /// A fixed size.
    pub fn lit(n: i64) -> Dim {
        Dim::from_ratio(Ratio::int(n))
    }

    fn from_ratio(r: Ratio) -> Dim {
        let mut terms = BTreeMap::new();
        if !r.is_zero() {
            terms.insert(Monomial::new(), r);
        }
        Dim { terms }
    }

    /// The fixed size, if this dim has no symbols.
    pub fn as_lit(&self) -> Option<i64> {
        match self.terms.len() {
            0 => Some(0),
            1 => {
                let (m, r) = self.terms.iter().next()?;
                (m.is_empty() && r.den == 1).then_some(r.num)
            }
            _ => None,
        }
    }

    pub fn add(&self, other: &Dim) -> Dim {
        let mut terms = self.terms.clone();
        for (m, r) in &other.terms {
            let sum = terms.get(m).map_or(*r, |old| old.add(*r));
            if sum.is_zero() {
                terms.remove(m);
            } else {
                terms.insert(m.clone(), sum);
            }
        }
        Dim { terms }
    }

    pub fn sub(&self, other: &Dim) -> Dim {
        self.add(&other.scale(Ratio::int(-1)))
    }

    fn scale(&self, r: Ratio) -> Dim {
        if r.is_zero() {
            return Dim::default();
        }
        Dim { terms: self.terms.iter().map(|(m, c)| (m.clone(), c.mul(r))).collect() }
    }

    pub fn mul(&self, other: &Dim) -> Dim {
        let mut out = Dim::default();
        for (ma, ra) in &self.terms {
            for (mb, rb) in &other.terms {
                let mut m = ma.clone();
                for (s, e) in mb {
                    let new = m.get(s).copied().unwrap_or(0) + e;
                    if new == 0 {
                        m.remove(s);
                    } else {
                        m.insert(s.clone(), new);
                    }
                }
                out = out.add(&Dim { terms: BTreeMap::from([(m, ra.mul(*rb))]) });
            }
        }
        out
    }

    /// `self / other`, defined when `other` is a single nonzero monomial (`H`, `2*D`);
    /// dividing by a sum has no polynomial result.
    pub fn div(&self, other: &Dim) -> Option<Dim> {
        if other.terms.len() != 1 {
            return None;
        }
        let (m, r) = other.terms.iter().next()?;
        let inv: Monomial = m.iter().map(|(s, e)| (s.clone(), -e)).collect();
        Some(self.mul(&Dim { terms: BTreeMap::from([(inv, r.recip())]) }))
    }

    /// The product of a list of dims (an element count); `1` for none.
    pub fn product<'a>(dims: impl IntoIterator<Item = &'a Dim>) -> Dim {
        dims.into_iter().fold(Dim::lit(1), |acc, d| acc.mul(d))
    }

    /// The size under `env`: it must be a whole number ≥ 0 (offsets may be 0).
    pub fn eval(&self, env: &DimEnv) -> Result<i64> {
        let mut total = Ratio::int(0);
        for (m, r) in &self.terms {
            let mut term = *r;
            for (s, e) in m {
                let v = *env
                    .get(s)
                    .ok_or_else(|| Error::new(format!("dimension `{s}` has no size bound (in `{self}`)")))?;
                if v <= 0 {
                    return Err(Error::new(format!("dimension `{s}` = {v} is not positive")));
                }
                let p = Ratio::int(v);
                for _ in 0..e.unsigned_abs() {
                    term = if *e > 0 { term.mul(p) } else { term.mul(p.recip()) };
                }
            }
            total = total.add(term);
        }
        if total.den != 1 || total.num < 0 {
            return Err(Error::new(format!(
                "dimension `{self}` is not a whole number ≥ 0 for these sizes ({}/{})",
                total.num, total.den
            )));
        }
        Ok(total.num)
    }

    /// The symbol, if this dim is exactly one symbol (`T`, not `B*T` or `2*T`).
    pub fn as_sym(&self) -> Option<&str> {
        let mut syms = self.symbols();
        let s = syms.next()?;
        (syms.next().is_none() && *self == Dim::sym(s)).then_some(s)
    }

    /// The terms as `(num, den, [(symbol, exponent)])`, for code generation.
    pub fn terms(&self) -> Vec<Term> {
        self.terms
            .iter()
            .map(|(m, r)| (r.num, r.den, m.iter().map(|(s, e)| (s.clone(), *e)).collect()))
            .collect()
    }

    /// Every symbol this dim mentions.
    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        self.terms.keys().flat_map(|m| m.keys().map(String::as_str))
    }
}

fn fmt_monomial(f: &mut fmt::Formatter<'_>, coef: Ratio, m: &Monomial) -> fmt::Result {
    let num: Vec<String> = m
        .iter()
        .filter(|(_, e)| **e > 0)
        .map(|(s, e)| if *e == 1 { s.clone() } else { format!("{s}^{e}") })
        .collect();
    let den: Vec<String> = m
        .iter()
        .filter(|(_, e)| **e < 0)
        .map(|(s, e)| if *e == -1 { s.clone() } else { format!("{s}^{}", -e) })
        .collect();
    let mut parts = Vec::new();
    if coef.num.abs() != 1 || num.is_empty() {
        parts.push(coef.num.abs().to_string());
    }
    parts.extend(num);
    write!(f, "{}", parts.join("*"))?;
    let mut dens = den;
    if coef.den != 1 {
        dens.insert(0, coef.den.to_string());
    }
    match dens.len() {
        0 => Ok(()),
        1 => write!(f, "/{}", dens[0]),
        _ => write!(f, "/({})", dens.join("*")),
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terms.is_empty() {
            return write!(f, "0");
        }
        // Highest-degree terms first reads naturally: `D+1`, not `1+D`.
        let mut terms: Vec<_> = self.terms.iter().collect();
        terms.sort_by_key(|(m, _)| std::cmp::Reverse(m.values().map(|e| e.abs()).sum::<i32>()));
        for (i, (m, r)) in terms.into_iter().enumerate() {
            if r.num < 0 {
                write!(f, "-")?;
            } else if i > 0 {
                write!(f, "+")?;
            }
            fmt_monomial(f, *r, m)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_and_quotients_normalise() {
        let (b, t, d, h) = (Dim::sym("B"), Dim::sym("T"), Dim::sym("D"), Dim::sym("H"));
        assert_eq!(b.mul(&t), t.mul(&b));
        assert_eq!(b.mul(&t).to_string(), "B*T");
        let dk = d.div(&h).unwrap();
        assert_eq!(dk.to_string(), "D/H");
        assert_eq!(dk.mul(&h), d);
        assert_eq!(d.add(&d).to_string(), "2*D");
        assert_eq!(d.add(&Dim::sym("F")).to_string(), "D+F");
        assert_eq!(d.sub(&d), Dim::lit(0));
        assert!(d.div(&d.add(&h)).is_none());
    }

    #[test]
    fn eval_checks_whole_positive_sizes() {
        let env = DimEnv::from([("D".into(), 12), ("H".into(), 3), ("K".into(), 5)]);
        let dk = Dim::sym("D").div(&Dim::sym("H")).unwrap();
        assert_eq!(dk.eval(&env).unwrap(), 4);
        let bad = Dim::sym("D").div(&Dim::sym("K")).unwrap();
        assert!(bad.eval(&env).is_err());
        assert!(Dim::sym("Q").eval(&env).is_err());
    }
}
