//! Lowering expressions: names, numbers, operators (with row broadcasting), calls of
//! the op library and of user functions.

use super::ast::*;
use super::calls::{self, KwKind, KwValue};
use super::lower::{Binding, Env, Lower, Operand};
use crate::dim::Dim;
use crate::ir::{Graph, Shape, ValueId};
use crate::scalar::Scalar;

impl<'m> Lower<'m> {
    /// Lowers `e`, which must be a tensor.
    pub(super) fn tensor(&mut self, env: &Env, e: &'m Expr) -> Option<ValueId> {
        match self.operand(env, e)? {
            Operand::Tensor(v) => Some(v),
            Operand::Num(_) => {
                self.err(e.range, "a number alone is not a tensor here");
                None
            }
            Operand::Shape(_) => {
                self.err(e.range, "a shape `[..]` is only an argument of `reshape`");
                None
            }
        }
    }

    pub(super) fn operand(&mut self, env: &Env, e: &'m Expr) -> Option<Operand> {
        match &e.kind {
            ExprKind::Num(v) => Some(Operand::Num(*v)),
            ExprKind::Shape(dims) => self.shape(dims).map(Operand::Shape),
            ExprKind::Path(path) => self.path(env, path, e.range).map(Operand::Tensor),
            ExprKind::Neg(inner) => match self.operand(env, inner)? {
                Operand::Num(v) => Some(Operand::Num(-v)),
                Operand::Tensor(v) => self.built(e.range, |g| g.neg(v)).map(Operand::Tensor),
                Operand::Shape(_) => {
                    self.err(inner.range, "cannot negate a shape");
                    None
                }
            },
            ExprKind::Transpose(inner) => {
                let v = self.tensor(env, inner)?;
                self.built(e.range, |g| g.transpose(v)).map(Operand::Tensor)
            }
            ExprKind::Lookup { table, index } => {
                let (t, i) = (self.tensor(env, table), self.tensor(env, index));
                let (t, i) = (t?, i?);
                self.built(e.range, |g| g.gather(t, i)).map(Operand::Tensor)
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let (a, b) = (self.operand(env, lhs), self.operand(env, rhs));
                self.binary(*op, a?, b?, e.range)
            }
            ExprKind::Call { func, args, kwargs } => self.call(env, func, args, kwargs, e.range),
        }
    }

    /// A name: a local, a parameter, an input; `x.T` is the transpose of `x` when no
    /// parameter is called `x.T`.
    fn path(&mut self, env: &Env, path: &[syn::Ident], range: Range) -> Option<ValueId> {
        let name = path.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(".");
        if let Some(v) = self.resolve(env, &name, range) {
            return v;
        }
        if path.len() > 1 && path[path.len() - 1] == "T" {
            let base = Range { start: range.start, end: path[path.len() - 2].span() };
            let v = self.path(env, &path[..path.len() - 1], base)?;
            return self.built(range, |g| g.transpose(v));
        }
        let candidates: Vec<String> =
            env.keys().chain(self.model_params.keys()).chain(self.inputs.keys()).cloned().collect();
        let hint = Self::suggest(&name, candidates.iter().map(String::as_str));
        let what = if self.dims.contains_key(&name) {
            format!("`{name}` is a dimension, not a tensor")
        } else {
            format!("unknown name `{name}`{hint}")
        };
        self.err(range, what);
        None
    }

    /// `Some(result)` if `name` is bound (the result is `None` after an error).
    fn resolve(&mut self, env: &Env, name: &str, range: Range) -> Option<Option<ValueId>> {
        if let Some(b) = env.get(name) {
            return Some(match *b {
                Binding::Value(v) => Some(v),
                Binding::Poisoned => None,
                Binding::Stale => {
                    self.stale(name, range);
                    None
                }
            });
        }
        if let Some(&i) = self.model_params.get(name) {
            return Some(self.param_value(i, range));
        }
        if let Some(&i) = self.inputs.get(name) {
            return Some(self.input_value(i, range));
        }
        None
    }

    fn binary(&mut self, op: BinOp, a: Operand, b: Operand, range: Range) -> Option<Operand> {
        use Operand::{Num, Tensor};
        let sym = match op {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Matmul => "@",
        };
        let out = match (a, b) {
            (Operand::Shape(_), _) | (_, Operand::Shape(_)) => {
                self.err(range, "a shape `[..]` is only an argument of `reshape`");
                return None;
            }
            (Num(x), Num(y)) => {
                return Some(Num(match op {
                    BinOp::Add => x + y,
                    BinOp::Sub => x - y,
                    BinOp::Mul | BinOp::Matmul => x * y,
                    BinOp::Div => x / y,
                }));
            }
            (Tensor(x), Num(c)) => match op {
                BinOp::Add => self.built(range, |g| g.shift(x, Scalar::num(c))),
                BinOp::Sub => self.built(range, |g| g.shift(x, Scalar::num(-c))),
                BinOp::Mul => self.built(range, |g| g.scale(x, Scalar::num(c))),
                BinOp::Div if c != 0.0 => self.built(range, |g| g.scale(x, Scalar::num(1.0 / c))),
                BinOp::Div => {
                    self.err(range, "division by zero");
                    None
                }
                BinOp::Matmul => {
                    self.err(range, "`@` multiplies two matrices; use `*` to scale by a number");
                    None
                }
            },
            (Num(c), Tensor(x)) => match op {
                BinOp::Add => self.built(range, |g| g.shift(x, Scalar::num(c))),
                BinOp::Sub => self.built(range, |g| {
                    let n = g.neg(x)?;
                    g.shift(n, Scalar::num(c))
                }),
                BinOp::Mul => self.built(range, |g| g.scale(x, Scalar::num(c))),
                BinOp::Div => self.built(range, |g| {
                    let num = g.fill(Scalar::num(c), g.shape(x).clone())?;
                    g.div(num, x)
                }),
                BinOp::Matmul => {
                    self.err(range, "`@` multiplies two matrices; use `*` to scale by a number");
                    None
                }
            },
            (Tensor(x), Tensor(y)) => self.built(range, |g| match op {
                BinOp::Matmul => matmul(g, x, y),
                _ => elementwise(g, op, sym, x, y),
            }),
        };
        out.map(Tensor)
    }

    fn call(
        &mut self,
        env: &Env,
        func: &syn::Ident,
        args: &'m [Expr],
        kwargs: &'m [(syn::Ident, Expr)],
        range: Range,
    ) -> Option<Operand> {
        let name = func.to_string();
        if let Some(f) = self.fns.get(&name).copied() {
            return self.call_user(env, f, args, kwargs, range).map(Operand::Tensor);
        }
        let Some(sig) = calls::lookup(&name) else {
            let names = calls::OPS.iter().map(|s| s.name).chain(self.fns.keys().map(String::as_str));
            let hint = Self::suggest(&name, names.collect::<Vec<_>>());
            self.err(Range::one(func.span()), format!("unknown op `{name}`{hint}"));
            return None;
        };
        if args.len() != sig.args.len() {
            self.err(
                range,
                format!(
                    "`{name}` takes {} argument{} ({}), got {}",
                    sig.args.len(),
                    if sig.args.len() == 1 { "" } else { "s" },
                    sig.args.join(", "),
                    args.len()
                ),
            );
            return None;
        }
        let mut kw_values: Vec<Option<KwValue>> =
            sig.kwargs.iter().map(|k| k.2.map(KwValue::Number)).collect();
        let mut ok = true;
        for (key, value) in kwargs {
            let k = key.to_string();
            let Some(pos) = sig.kwargs.iter().position(|s| s.0 == k) else {
                let hint = Self::suggest(&k, sig.kwargs.iter().map(|s| s.0));
                self.err(Range::one(key.span()), format!("`{name}` has no argument `{k}`{hint}"));
                ok = false;
                continue;
            };
            let v = self.kw_value(sig.kwargs[pos].1, value);
            ok &= v.is_some();
            kw_values[pos] = v;
        }
        for (slot, k) in kw_values.iter().zip(sig.kwargs) {
            if slot.is_none() && ok {
                self.err(range, format!("`{name}` needs the named argument `{} = ...`", k.0));
                ok = false;
            }
        }
        let mut values = Vec::new();
        let mut shape = None;
        for a in args {
            match self.operand(env, a) {
                Some(Operand::Tensor(v)) => values.push(v),
                Some(Operand::Shape(s)) if name == "reshape" => shape = Some(s),
                Some(Operand::Shape(_)) => {
                    self.err(a.range, "a shape `[..]` is only an argument of `reshape`");
                    ok = false;
                }
                Some(Operand::Num(_)) => {
                    self.err(a.range, format!("`{name}` takes tensors; a number alone is not a tensor here"));
                    ok = false;
                }
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        if name == "reshape" && shape.is_none() {
            self.err(range, "reshape: the second argument must be a shape such as `[N, D]`");
            return None;
        }
        let kws: Vec<KwValue> = kw_values.into_iter().flatten().collect();
        self.built(range, |g| calls::lower(g, &name, &values, &kws, shape)).map(Operand::Tensor)
    }

    fn kw_value(&mut self, kind: KwKind, value: &'m Expr) -> Option<KwValue> {
        match (kind, &value.kind) {
            (KwKind::Number, ExprKind::Num(v)) => Some(KwValue::Number(*v)),
            (KwKind::Dim, ExprKind::Num(v)) if v.fract() == 0.0 && *v >= 1.0 && *v < 1e9 => {
                Some(KwValue::Dim(Dim::lit(*v as i64)))
            }
            (KwKind::Dim, ExprKind::Path(p)) if p.len() == 1 && self.dims.contains_key(&p[0].to_string()) => {
                Some(KwValue::Dim(self.dims[&p[0].to_string()].clone()))
            }
            (KwKind::Dim, _) => {
                self.err(value.range, "expected a dimension name such as `H`, or a whole number");
                None
            }
            (KwKind::Number, _) => {
                self.err(value.range, "expected a number");
                None
            }
        }
    }

    fn call_user(
        &mut self,
        env: &Env,
        f: &'m FnDef,
        args: &'m [Expr],
        kwargs: &'m [(syn::Ident, Expr)],
        range: Range,
    ) -> Option<ValueId> {
        let name = f.name.to_string();
        if let Some((k, _)) = kwargs.first() {
            self.err(
                Range::one(k.span()),
                format!("`{name}` is a user function: it takes positional arguments only"),
            );
            return None;
        }
        if args.len() != f.args.len() {
            self.err(range, format!("`{name}` takes {} argument(s), got {}", f.args.len(), args.len()));
            return None;
        }
        if self.calls.contains(&name) || self.calls.len() >= super::lower::MAX_CALL_DEPTH {
            self.err(range, format!("`{name}` calls itself: functions may not recurse"));
            return None;
        }
        let values: Vec<Option<ValueId>> = args.iter().map(|a| self.tensor(env, a)).collect();
        let values: Vec<ValueId> = values.into_iter().collect::<Option<_>>()?;
        // A function sees its arguments and its own parameters; model-level names are
        // resolved after the local scope.
        let mut local = Env::new();
        for (a, v) in f.args.iter().zip(values) {
            local.insert(a.to_string(), Binding::Value(v));
        }
        self.calls.push(name.clone());
        for s in &f.body.stmts {
            self.stmt(&mut local, s);
        }
        let out = match &f.body.tail {
            Some(t) => self.tensor(&local, t),
            None => {
                self.err(
                    Range::one(f.name.span()),
                    format!("`{name}` has no result: end its body with an expression"),
                );
                None
            }
        };
        self.calls.pop();
        out
    }
}

/// `x @ y`; a `[.., n, k]` stack times a `[k, m]` matrix multiplies every row.
fn matmul(g: &mut Graph, x: ValueId, y: ValueId) -> crate::error::Result<ValueId> {
    let (xs, ys) = (g.shape(x).clone(), g.shape(y).clone());
    if xs.rank() > 2 && ys.rank() == 2 {
        let lead = &xs.0[..xs.rank() - 1];
        let rows = Dim::product(lead);
        let flat = g.reshape(x, Shape::new([rows, xs.0[xs.rank() - 1].clone()]))?;
        let prod = g.matmul(flat, y)?;
        let mut out = lead.to_vec();
        out.push(ys.0[1].clone());
        return g.reshape(prod, Shape(out));
    }
    g.matmul(x, y)
}

/// Elementwise `x op y`; a value whose shape is a suffix of the other's is repeated
/// over the leading axes (a bias over rows, positions over a batch).
fn elementwise(g: &mut Graph, op: BinOp, sym: &str, x: ValueId, y: ValueId) -> crate::error::Result<ValueId> {
    let (xs, ys) = (g.shape(x).clone(), g.shape(y).clone());
    let (x, y) = if xs == ys {
        (x, y)
    } else if xs.rank() < ys.rank() && ys.0.ends_with(&xs.0) {
        (crate::library::broadcast_rows(g, x, &ys.0[..ys.rank() - xs.rank()])?, y)
    } else if ys.rank() < xs.rank() && xs.0.ends_with(&ys.0) {
        (x, crate::library::broadcast_rows(g, y, &xs.0[..xs.rank() - ys.rank()])?)
    } else {
        crate::error::bail!("`{sym}`: shapes {xs} and {ys} do not match (nor is one a suffix of the other)");
    };
    match op {
        BinOp::Add => g.add(x, y),
        BinOp::Sub => g.sub(x, y),
        BinOp::Mul => g.mul(x, y),
        _ => g.div(x, y),
    }
}
