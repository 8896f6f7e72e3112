//! Dimension sizes at run time: binding symbols (`B`, `T`, `D`) from the shapes of the
//! tensors a call is given, and evaluating the compiler's size polynomials (`B*T`,
//! `D/H`) and constants (`1/√d_k`) under them.
//!
//! The compiler emits each size as a list of [`Term`]s, `num/den · Π symbolᵉ`, so this
//! module needs no knowledge of the model. Binding is two passes: first every axis that
//! is a bare symbol binds it (the first tensor to mention a symbol fixes it, and is
//! remembered for the error message), then every axis is checked against its value.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Error, Result, bail};

/// One term of a size polynomial: `(num, den, [(symbol, exponent)])`.
pub type Term = (i64, i64, &'static [(&'static str, i32)]);

/// A size polynomial: a sum of terms.
pub type Size = &'static [Term];

/// Symbol values, each with the tensor that fixed it.
#[derive(Debug, Default)]
pub struct Env {
    values: BTreeMap<&'static str, (usize, String)>,
    /// Sizes already evaluated, by the address of their `'static` terms: generated code
    /// asks for the same few sizes hundreds of times a step, and each evaluation looks
    /// symbols up by name (a few percent of the tiny config's step). Emptied whenever a
    /// symbol is bound.
    cache: SizeCache,
}

impl Clone for Env {
    fn clone(&self) -> Env {
        Env { values: self.values.clone(), cache: SizeCache::default() }
    }
}

/// Slots of `(address of a size's terms, value + 1)`, 0 when empty; open addressing.
/// Atomics, so an `Env` stays `Sync`; a lost race only costs an evaluation.
#[derive(Debug, Default)]
struct SizeCache([(AtomicUsize, AtomicUsize); SLOTS]);

const SLOTS: usize = 32;

impl SizeCache {
    fn slot(size: Size) -> usize {
        (size.as_ptr() as usize >> 3) % SLOTS
    }

    fn get(&self, size: Size) -> Option<usize> {
        let key = size.as_ptr() as usize;
        let start = Self::slot(size);
        for i in 0..SLOTS {
            let (k, v) = &self.0[(start + i) % SLOTS];
            match k.load(Ordering::Acquire) {
                0 => return None,
                k if k == key => return v.load(Ordering::Acquire).checked_sub(1),
                _ => {}
            }
        }
        None
    }

    fn put(&self, size: Size, value: usize) {
        let key = size.as_ptr() as usize;
        let start = Self::slot(size);
        for i in 0..SLOTS {
            let (k, v) = &self.0[(start + i) % SLOTS];
            // The key is claimed first, then the value stored: a reader that sees the
            // key before its value reads 0, not cached.
            match k.compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    v.store(value + 1, Ordering::Release);
                    return;
                }
                Err(k) if k == key => return,
                Err(_) => {}
            }
        }
    }

    fn clear(&mut self) {
        for (k, v) in &mut self.0 {
            *k.get_mut() = 0;
            *v.get_mut() = 0;
        }
    }
}

fn show(size: Size) -> String {
    let terms: Vec<String> = size
        .iter()
        .map(|(n, d, syms)| {
            let mut parts = Vec::new();
            if (*n, *d) != (1, 1) || syms.is_empty() {
                parts.push(if *d == 1 { n.to_string() } else { format!("{n}/{d}") });
            }
            for (s, e) in *syms {
                parts.push(if *e == 1 { s.to_string() } else { format!("{s}^{e}") });
            }
            parts.join("*")
        })
        .collect();
    if terms.is_empty() { "0".into() } else { terms.join(" + ") }
}

impl Env {
    pub fn new() -> Env {
        Env::default()
    }

    /// Sets `symbol` directly (a size no shape determines, such as the head count).
    pub fn set(&mut self, symbol: &'static str, value: usize, from: &str) -> Result<()> {
        self.bind(symbol, value, from)
    }

    fn bind(&mut self, symbol: &'static str, value: usize, from: &str) -> Result<()> {
        if value == 0 {
            bail!("{from}: dimension {symbol} is 0; every dimension must be at least 1");
        }
        match self.values.get(symbol) {
            Some((v, _)) if *v == value => Ok(()),
            Some((v, src)) => bail!("{from}: dimension {symbol} is {value} here but {v} in {src}"),
            None => {
                self.values.insert(symbol, (value, from.to_string()));
                self.cache.clear();
                Ok(())
            }
        }
    }

    pub fn get(&self, symbol: &str) -> Option<usize> {
        self.values.get(symbol).map(|v| v.0)
    }

    /// Pass 1: binds every axis of `shape` that is a bare symbol; checks the rank.
    pub fn bind_shape(&mut self, what: &str, want: &[Size], shape: &[usize]) -> Result<()> {
        check_rank(&what, want, shape)?;
        for (size, &got) in want.iter().zip(shape) {
            if let [(1, 1, [(sym, 1)])] = size {
                self.bind(sym, got, what)?;
            }
        }
        Ok(())
    }

    /// Pass 2: checks `shape`'s rank and every axis against its size. `what` names the
    /// tensor in an error; it is formatted only then (the generated `bind` passes a
    /// layer's names as `format_args!`, so a step's checks allocate nothing).
    pub fn check_shape(&self, what: impl std::fmt::Display, want: &[Size], shape: &[usize]) -> Result<()> {
        check_rank(&what, want, shape)?;
        for (axis, (size, &got)) in want.iter().zip(shape).enumerate() {
            let expect = self.eval(size)?;
            if expect != got {
                let from = match size {
                    [(1, 1, [(sym, 1)])] => self.values.get(sym).map(|v| format!(" (from {})", v.1)),
                    _ => None,
                }
                .unwrap_or_default();
                bail!("{what}: axis {axis} should be {} = {expect}{from}, got {got}", show(size));
            }
        }
        Ok(())
    }

    /// A size's value: it must be a whole number.
    pub fn eval(&self, size: Size) -> Result<usize> {
        if let Some(v) = self.cache.get(size) {
            return Ok(v);
        }
        let v = self.evaluate(size)?;
        self.cache.put(size, v);
        Ok(v)
    }

    fn evaluate(&self, size: Size) -> Result<usize> {
        let (mut num, mut den) = (0i128, 1i128);
        for (n, d, syms) in size {
            let (mut tn, mut td) = (*n as i128, *d as i128);
            for (s, e) in *syms {
                let Some(v) = self.get(s) else {
                    bail!(
                        "dimension {s} is not determined by any tensor's shape (needed for {})",
                        show(size)
                    );
                };
                for _ in 0..e.unsigned_abs() {
                    if *e > 0 {
                        tn = tn.saturating_mul(v as i128);
                    } else {
                        td = td.saturating_mul(v as i128);
                    }
                }
            }
            num = num.saturating_mul(td).saturating_add(tn.saturating_mul(den));
            den = den.saturating_mul(td);
        }
        if den == 0 || num % den != 0 || num < 0 || num / den > usize::MAX as i128 {
            let vals: Vec<String> = self.values.iter().map(|(k, v)| format!("{k}={}", v.0)).collect();
            bail!("size {} is not a whole number for {}", show(size), vals.join(", "));
        }
        Ok((num / den) as usize)
    }

    /// A constant `coef · Π sizeᵉ/²` (e.g. `1/√d_k`), in f32.
    pub fn scalar(&self, coef: f64, factors: &[(Size, i32)]) -> Result<f32> {
        let mut v = coef;
        for (size, half_exp) in factors {
            v *= (self.eval(size)? as f64).powf(*half_exp as f64 / 2.0);
        }
        Ok(v as f32)
    }
}

/// Checks a named set of tensors against the names and shapes a model expects, listing
/// every missing, unexpected and wrong-shaped tensor at once.
pub fn check_names(
    expected: &[(String, Vec<usize>)],
    got: &BTreeMap<String, Vec<usize>>,
) -> std::result::Result<(), Error> {
    let mut problems = Vec::new();
    for (name, shape) in expected {
        match got.get(name) {
            None => problems.push(format!("missing tensor `{name}` {shape:?}")),
            Some(s) if s != shape => problems.push(format!("`{name}` has shape {s:?}, expected {shape:?}")),
            Some(_) => {}
        }
    }
    for name in got.keys() {
        if !expected.iter().any(|(n, _)| n == name) {
            problems.push(format!("unexpected tensor `{name}`"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::new(format!("{} problem(s):\n  {}", problems.len(), problems.join("\n  "))))
    }
}

/// `shape` has as many axes as `want` sizes them, else an error naming `what`.
fn check_rank(what: &dyn std::fmt::Display, want: &[Size], shape: &[usize]) -> Result<()> {
    if want.len() != shape.len() {
        let names: Vec<String> = want.iter().map(|s| show(s)).collect();
        bail!("{what}: expected {} axes [{}], got shape {shape:?}", want.len(), names.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BT: Size = &[(1, 1, &[("B", 1), ("T", 1)])];
    const T: Size = &[(1, 1, &[("T", 1)])];
    const DK: Size = &[(1, 1, &[("D", 1), ("H", -1)])];

    #[test]
    fn binds_then_checks_and_names_the_dimension() {
        let mut env = Env::new();
        env.bind_shape("wpe", &[T], &[5]).unwrap();
        env.bind_shape("tokens", &[T, T], &[5, 7]).unwrap_err();
        let err = env.check_shape("x", &[BT], &[9]).unwrap_err();
        assert!(err.message.contains("dimension B is not determined"), "{err}");
        env.set("B", 2, "config").unwrap();
        let err = env.check_shape("x", &[BT], &[9]).unwrap_err();
        assert_eq!(err.message, "x: axis 0 should be B*T = 10, got 9");
        env.check_shape("x", &[BT], &[10]).unwrap();
        // A missing or extra axis is an error, not a check of the axes both have.
        let err = env.check_shape(format_args!("h{}.w", 3), &[BT], &[10, 1]).unwrap_err();
        assert_eq!(err.message, "h3.w: expected 1 axes [B*T], got shape [10, 1]");
        env.check_shape("x", &[BT, T], &[10]).unwrap_err();
    }

    #[test]
    fn fractional_sizes_are_errors() {
        let mut env = Env::new();
        env.set("D", 10, "d").unwrap();
        env.set("H", 3, "h").unwrap();
        assert!(env.eval(DK).unwrap_err().message.contains("not a whole number"));
        env = Env::new();
        env.set("D", 12, "d").unwrap();
        env.set("H", 3, "h").unwrap();
        assert_eq!(env.eval(DK).unwrap(), 4);
        assert!((env.scalar(1.0, &[(DK, -1)]).unwrap() - 0.5).abs() < 1e-7);
    }

    #[test]
    fn cached_sizes_follow_later_bindings_and_many_sizes() {
        let mut env = Env::new();
        env.set("T", 5, "t").unwrap();
        assert!(env.eval(BT).is_err(), "B is not bound yet");
        assert_eq!(env.eval(T).unwrap(), 5);
        env.set("B", 3, "b").unwrap();
        assert_eq!(env.eval(BT).unwrap(), 15);
        assert_eq!(env.eval(BT).unwrap(), 15, "from the cache");
        // More sizes than slots: the ones that do not fit are evaluated each time.
        let sizes: Vec<Size> =
            (1..=40i64).map(|k| &*Box::leak(vec![(k, 1, &[("T", 1)][..])].into_boxed_slice())).collect();
        for _ in 0..2 {
            for (k, size) in (1..).zip(&sizes) {
                assert_eq!(env.eval(size).unwrap(), 5 * k);
            }
        }
        let copy = env.clone();
        assert_eq!(copy.eval(BT).unwrap(), 15);
    }

    #[test]
    fn name_check_lists_every_problem() {
        let expected = vec![("a".to_string(), vec![2]), ("b".to_string(), vec![3])];
        let got = BTreeMap::from([("b".to_string(), vec![4]), ("c".to_string(), vec![1])]);
        let msg = check_names(&expected, &got).unwrap_err().message;
        assert!(msg.starts_with("3 problem(s)"), "{msg}");
        assert!(
            msg.contains("missing tensor `a`") && msg.contains("`b` has shape [4]") && msg.contains("`c`")
        );
    }
}
