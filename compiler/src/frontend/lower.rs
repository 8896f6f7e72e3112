//! Syntax tree to [`Program`]: name resolution, shape checking and stage cutting.
//!
//! Every problem becomes a [`Diag`] at the source range it concerns, and lowering goes
//! on after one, so a single expansion reports all mistakes. An expression that failed
//! lowers to nothing, and nothing built on it reports again (no error cascades).
//!
//! Two modes: `Staged` cuts the model at each `for` loop (what code generation uses,
//! see `program`), `Unrolled` repeats a loop's body `L` times in one graph for given
//! sizes (what the whole-model interpreter tests and full formulas use). Both apply the
//! same scoping rules, so a model valid in one is valid in the other.

use std::collections::BTreeMap;

use super::ast::*;
use super::calls;
use crate::dim::{Dim, DimEnv};
use crate::ir::{DType, Graph, Role, Shape, ValueId, ValueType};
use crate::program::{InputInfo, LoopInfo, ParamInfo, Program, Scope, Stage};

/// A compile error at a source range.
#[derive(Clone, Debug)]
pub struct Diag {
    pub range: Range,
    pub message: String,
}

#[derive(Clone, Debug)]
pub enum Mode {
    Staged,
    /// Loops unrolled; their counts evaluated under these sizes.
    Unrolled(DimEnv),
}

/// How deep user functions may call each other (recursion is reported, not run).
pub(super) const MAX_CALL_DEPTH: usize = 64;

pub fn lower(model: &Model, mode: &Mode) -> Result<Program, Vec<Diag>> {
    let mut l = Lower {
        mode,
        diags: Vec::new(),
        dims: BTreeMap::new(),
        fns: BTreeMap::new(),
        inputs: BTreeMap::new(),
        model_params: BTreeMap::new(),
        declared: BTreeMap::new(),
        program: Program { name: model.name.to_string(), ..Program::default() },
        stage: StageBuild::default(),
        calls: Vec::new(),
        layer: None,
        loss: None,
        outputs: Vec::new(),
    };
    l.declarations(model);
    l.body(model);
    if l.diags.is_empty() {
        l.check_unused();
    }
    if l.diags.is_empty() { Ok(l.program) } else { Err(l.diags) }
}

#[derive(Clone, Copy)]
pub(super) enum Binding {
    Value(ValueId),
    /// Computed on the other side of a loop cut, so not available in this stage.
    Stale,
    /// Its definition failed (already reported).
    Poisoned,
}

pub(super) type Env = BTreeMap<String, Binding>;

/// A value being lowered: a tensor, a plain number, or a `[..]` shape.
pub(super) enum Operand {
    Tensor(ValueId),
    Num(f64),
    Shape(Shape),
}

#[derive(Default)]
pub(super) struct StageBuild {
    graph: Graph,
    repeat: Option<usize>,
    carry_in: Option<(String, ValueId)>,
    params: Vec<(usize, ValueId)>,
    inputs: Vec<(usize, ValueId)>,
}

/// Which loop body is being lowered, and in unrolled mode which layer.
#[derive(Clone)]
pub(super) struct Layer {
    pub(super) index: usize,
    pub(super) var: String,
    /// `(layer, layers)` when unrolling.
    pub(super) unrolled: Option<(usize, usize)>,
}

pub(super) struct Lower<'m> {
    pub(super) mode: &'m Mode,
    pub(super) diags: Vec<Diag>,
    pub(super) dims: BTreeMap<String, Dim>,
    pub(super) fns: BTreeMap<String, &'m FnDef>,
    pub(super) inputs: BTreeMap<String, usize>,
    pub(super) model_params: BTreeMap<String, usize>,
    /// Every parameter declared so far, by scope and dotted name.
    pub(super) declared: BTreeMap<(Scope, String), usize>,
    pub(super) program: Program,
    pub(super) stage: StageBuild,
    pub(super) calls: Vec<String>,
    pub(super) layer: Option<Layer>,
    pub(super) loss: Option<Range>,
    /// `output` statements of the current stage: name, value, where.
    pub(super) outputs: Vec<(String, ValueId, Range)>,
}

impl<'m> Lower<'m> {
    pub(super) fn err(&mut self, range: Range, message: impl Into<String>) {
        self.diags.push(Diag { range, message: message.into() });
    }

    pub(super) fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
        calls::did_you_mean(name, candidates).map(|c| format!("; did you mean `{c}`?")).unwrap_or_default()
    }

    /// The pre-pass: dims, inputs, model-level parameters and functions, so they may be
    /// used before the line that declares them.
    fn declarations(&mut self, model: &'m Model) {
        for item in &model.items {
            match item {
                Item::Dims(names) => {
                    for (n, size) in names {
                        let s = n.to_string();
                        if self.dims.contains_key(&s) {
                            self.err(Range::one(n.span()), format!("dimension `{s}` is declared twice"));
                        } else {
                            self.dims.insert(s.clone(), Dim::sym(&s));
                            self.program.dims.push(s.clone());
                        }
                        if let Some(lit) = size {
                            match lit.base10_parse::<i64>() {
                                Ok(v) if v > 0 => {
                                    self.program.sizes.insert(s, v);
                                }
                                _ => self.err(
                                    Range::one(lit.span()),
                                    "a representative size is a positive whole number, e.g. `T = 128`",
                                ),
                            }
                        }
                    }
                }
                Item::DimAlias { name, value } => {
                    let s = name.to_string();
                    if self.dims.contains_key(&s) {
                        self.err(Range::one(name.span()), format!("dimension `{s}` is declared twice"));
                    } else if let Some(d) = self.dim(value) {
                        self.dims.insert(s.clone(), d.clone());
                        self.program.aliases.push((s, d));
                    }
                }
                Item::Fn(f) => {
                    let s = f.name.to_string();
                    if self.fns.contains_key(&s) || calls::lookup(&s).is_some() {
                        self.err(Range::one(f.name.span()), format!("function `{s}` is already defined"));
                    } else {
                        self.fns.insert(s, f);
                    }
                }
                _ => {}
            }
        }
        for item in &model.items {
            match item {
                Item::Input { name, ty } => {
                    let s = name.to_string();
                    let Some(shape) = self.shape(&ty.dims) else { continue };
                    if self.inputs.contains_key(&s) || self.model_params.contains_key(&s) {
                        self.err(Range::one(name.span()), format!("`{s}` is declared twice"));
                        continue;
                    }
                    let dtype = if ty.index { DType::Index } else { DType::F32 };
                    self.inputs.insert(s.clone(), self.program.inputs.len());
                    self.program.inputs.push(InputInfo { name: s, dtype, shape });
                }
                Item::Stmt(Stmt::Param(p)) => {
                    if let Some(i) = self.declare_param(p, Scope::Model, "") {
                        let name = p.dotted();
                        if self.inputs.contains_key(&name) {
                            self.err(p.range, format!("`{name}` is declared twice"));
                        }
                        self.model_params.insert(name, i);
                    }
                }
                _ => {}
            }
        }
    }

    fn declare_param(&mut self, p: &ParamDecl, scope: Scope, prefix: &str) -> Option<usize> {
        let name = format!("{prefix}{}", p.dotted());
        if p.ty.index {
            self.err(
                p.ty.range,
                format!(
                    "parameter `{name}` would hold indices, and indices have no gradient: \
                     declare it with `input`"
                ),
            );
            return None;
        }
        let shape = self.shape(&p.ty.dims)?;
        if let Some(&first) = self.declared.get(&(scope, name.clone())) {
            let where_ = if p.range.start.start() == self.program.params[first].range.start.start() {
                " (a function that declares parameters can be called once per scope)"
            } else {
                ""
            };
            self.err(p.range, format!("parameter `{name}` is declared twice{where_}"));
            return None;
        }
        let mut display = p.display.clone().unwrap_or_else(|| p.dotted());
        if let Some(Layer { unrolled: Some((i, n)), .. }) = &self.layer
            && *n > 1
        {
            display = format!("{display}⁽{}⁾", crate::pretty::superscript(*i));
        }
        let init = p
            .init
            .as_ref()
            .map_or(crate::frontend::ast::Init::Normal { offset: 0.0, std: 0.02 }, |i| i.0.clone());
        let index = self.program.params.len();
        self.program.params.push(ParamInfo {
            name: name.clone(),
            scope,
            shape,
            init,
            display,
            range: p.range,
        });
        self.declared.insert((scope, name), index);
        Some(index)
    }

    pub(super) fn dim(&mut self, d: &DimExpr) -> Option<Dim> {
        match d {
            DimExpr::Sym(i) => {
                let s = i.to_string();
                match self.dims.get(&s) {
                    Some(d) => Some(d.clone()),
                    None => {
                        let hint = Self::suggest(&s, self.dims.keys().map(String::as_str));
                        self.err(Range::one(i.span()), format!("unknown dimension `{s}`{hint}"));
                        None
                    }
                }
            }
            DimExpr::Lit(n, span) => {
                if *n < 1 {
                    self.err(Range::one(*span), "a dimension must be at least 1");
                    return None;
                }
                Some(Dim::lit(*n))
            }
            DimExpr::Bin(a, op, b) => {
                let (a, b) = (self.dim(a)?, self.dim(b)?);
                match op {
                    '+' => Some(a.add(&b)),
                    '-' => Some(a.sub(&b)),
                    '*' => Some(a.mul(&b)),
                    _ => {
                        let q = a.div(&b);
                        if q.is_none() {
                            self.err(
                                d.range(),
                                format!("cannot divide by `{b}`: a divisor must be one term"),
                            );
                        }
                        q
                    }
                }
            }
        }
    }

    pub(super) fn shape(&mut self, dims: &[DimExpr]) -> Option<Shape> {
        let dims: Vec<Option<Dim>> = dims.iter().map(|d| self.dim(d)).collect();
        dims.into_iter().collect::<Option<Vec<_>>>().map(Shape)
    }

    // ---- stages -------------------------------------------------------------------

    fn new_graph(&self) -> Graph {
        let mut g = Graph::new();
        for (name, d) in &self.program.aliases {
            g.alias_dim(d.clone(), name);
        }
        g
    }

    fn finish_stage(&mut self, output: ValueId) {
        let b = std::mem::take(&mut self.stage);
        self.program.stages.push(Stage {
            graph: b.graph,
            repeat: b.repeat,
            carry_in: b.carry_in,
            output,
            params: b.params,
            inputs: b.inputs,
            backward: None,
        });
        self.stage.graph = self.new_graph();
    }

    /// The current stage's value for parameter `i`, declaring it on first use.
    pub(super) fn param_value(&mut self, i: usize, range: Range) -> Option<ValueId> {
        if let Some(&(_, id)) = self.stage.params.iter().find(|p| p.0 == i) {
            return Some(id);
        }
        let info = &self.program.params[i];
        let key = match (info.scope, &self.layer) {
            (Scope::Loop(_), Some(l)) => format!("{}.{}", l.var, info.name),
            _ => info.name.clone(),
        };
        let (shape, display) = (info.shape.clone(), info.display.clone());
        let id = self.built(range, |g| g.param(&key, shape))?;
        self.stage.graph.name(id, &display);
        self.stage.params.push((i, id));
        Some(id)
    }

    pub(super) fn input_value(&mut self, i: usize, range: Range) -> Option<ValueId> {
        if let Some(&(_, id)) = self.stage.inputs.iter().find(|p| p.0 == i) {
            return Some(id);
        }
        let info = self.program.inputs[i].clone();
        let ty = ValueType { dtype: info.dtype, shape: info.shape };
        let id = self.built(range, |g| g.input(&info.name, Role::Data, ty))?;
        self.stage.inputs.push((i, id));
        Some(id)
    }

    /// Runs a graph-building step; its error becomes a diagnostic at `range`.
    pub(super) fn built<T>(
        &mut self,
        range: Range,
        f: impl FnOnce(&mut Graph) -> crate::error::Result<T>,
    ) -> Option<T> {
        match f(&mut self.stage.graph) {
            Ok(v) => Some(v),
            Err(e) => {
                self.err(range, e.message);
                None
            }
        }
    }

    // ---- the model body -------------------------------------------------------------

    fn body(&mut self, model: &'m Model) {
        self.stage.graph = self.new_graph();
        let mut env = Env::new();
        for item in &model.items {
            let Item::Stmt(stmt) = item else { continue };
            if let (Some(_), false) = (self.loss, matches!(stmt, Stmt::Param(_))) {
                let at = match stmt {
                    Stmt::Loss { range: r, .. }
                    | Stmt::For { range: r, .. }
                    | Stmt::Output { range: r, .. } => *r,
                    Stmt::Param(p) => p.range,
                    Stmt::Let { name, .. } | Stmt::Assign { name, .. } => Range::one(name.span()),
                };
                self.err(at, "nothing may follow the `loss` statement except declarations");
                continue;
            }
            match stmt {
                Stmt::Param(_) => {} // declared in the pre-pass
                Stmt::For { var, count, body, range } => self.repeat(&mut env, var, count, body, *range),
                Stmt::Loss { value, range } => {
                    self.loss = Some(*range);
                    let Some(v) = self.tensor(&env, value) else { continue };
                    let ty = self.stage.graph.ty(v).clone();
                    if ty.shape.rank() != 0 {
                        self.err(
                            value.range,
                            format!("the loss must be a scalar, but this has shape {}", ty.shape),
                        );
                        continue;
                    }
                    self.program.outputs = self.outputs.drain(..).map(|(n, v, _)| (n, v)).collect();
                    self.finish_stage(v);
                }
                Stmt::Output { value, range } => self.output(&env, value, *range),
                other => self.stmt(&mut env, other),
            }
        }
        if self.loss.is_none() {
            self.err(
                Range::one(model.name.span()),
                "the model has no `loss` statement: end it with `loss <expr>;`",
            );
        }
    }

    /// Statements allowed in function bodies and loop bodies (and at the top level).
    pub(super) fn stmt(&mut self, env: &mut Env, stmt: &'m Stmt) {
        match stmt {
            Stmt::Let { name, value } => {
                if let Some(v) = self.tensor(env, value) {
                    self.stage.graph.name(v, &name.to_string());
                    env.insert(name.to_string(), Binding::Value(v));
                } else {
                    // Later uses of a failed binding must not report again.
                    env.insert(name.to_string(), Binding::Poisoned);
                }
            }
            Stmt::Param(p) => {
                let (scope, prefix) = match &self.layer {
                    Some(Layer { unrolled: Some((i, _)), var, .. }) => (Scope::Model, format!("{var}{i}.")),
                    Some(Layer { index, .. }) => (Scope::Loop(*index), String::new()),
                    None => (Scope::Model, String::new()),
                };
                if let Some(i) = self.declare_param(p, scope, &prefix)
                    && let Some(v) = self.param_value(i, p.range)
                {
                    env.insert(p.dotted(), Binding::Value(v));
                }
            }
            Stmt::Assign { name, .. } => self.err(
                Range::one(name.span()),
                "assignment is only for the value a loop carries: `x = block(x);` inside `for`",
            ),
            Stmt::For { range, .. } => self
                .err(*range, "loops are written at the model's top level, not in a function or another loop"),
            Stmt::Loss { range, .. } => self.err(*range, "`loss` is written at the model's top level"),
            Stmt::Output { range, .. } => self.err(*range, "`output` is written at the model's top level"),
        }
    }

    /// `output name;`: a named value of the last stage that `outputs` returns.
    fn output(&mut self, env: &Env, value: &'m Expr, range: Range) {
        let crate::frontend::ast::ExprKind::Path(path) = &value.kind else {
            self.err(value.range, "`output` takes the name of a `let` value: `output logits;`");
            return;
        };
        let name = path.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("_");
        if self.outputs.iter().any(|o| o.0 == name) {
            self.err(range, format!("`{name}` is already an output"));
            return;
        }
        if let Some(v) = self.tensor(env, value) {
            self.outputs.push((name, v, range));
        }
    }

    /// `for var in 0..count { x = f(x); }` at the top level.
    fn repeat(&mut self, env: &mut Env, var: &syn::Ident, count: &DimExpr, body: &'m Block, range: Range) {
        // `outputs` runs the last stage only; earlier values are gone once a loop starts.
        for (name, _, at) in std::mem::take(&mut self.outputs) {
            self.err(
                at,
                format!("output `{name}` comes before a loop; outputs are written after the last loop"),
            );
        }
        let mut carried: Vec<&syn::Ident> = Vec::new();
        for s in &body.stmts {
            if let Stmt::Assign { name, .. } = s
                && !carried.contains(&name)
            {
                carried.push(name);
            }
        }
        let x = match carried.as_slice() {
            [x] => x.to_string(),
            [] => {
                return self
                    .err(range, "a repeated block must update the value it carries, e.g. `x = block(x);`");
            }
            [_, second, ..] => {
                return self.err(
                    Range::one(second.span()),
                    "a repeated block carries one value; this is a second one",
                );
            }
        };
        if let Some(tail) = &body.tail {
            self.err(tail.range, "a loop body ends with `x = ...;`, not with a value");
        }
        let Some(count_dim) = self.dim(count) else { return };
        if count_dim.as_sym().is_none() && count_dim.as_lit().is_none() {
            return self.err(count.range(), "a loop count is one dimension name (`L`) or a number");
        }
        let x_in = match env.get(&x) {
            Some(Binding::Value(v)) => *v,
            Some(Binding::Poisoned) => return,
            Some(Binding::Stale) => return self.stale(&x, Range::one(carried[0].span())),
            None => {
                let hint = Self::suggest(&x, env.keys().map(String::as_str));
                return self.err(
                    Range::one(carried[0].span()),
                    format!("`{x}` must be defined before the loop that carries it{hint}"),
                );
            }
        };
        if self.layer.is_some() {
            return self.err(range, "loops do not nest");
        }
        let index = self.program.loops.len();
        self.program.loops.push(LoopInfo { var: var.to_string(), count: count_dim.clone() });
        match self.mode {
            Mode::Staged => {
                let ty = self.stage.graph.ty(x_in).clone();
                self.finish_stage(x_in);
                let carry = self.open_stage(&x, &ty, Some(index), range);
                let mut inner: Env = env.keys().map(|k| (k.clone(), Binding::Stale)).collect();
                inner.insert(x.clone(), Binding::Value(carry));
                self.layer = Some(Layer { index, var: var.to_string(), unrolled: None });
                let out = self.loop_body(&mut inner, body, &x, carry);
                self.layer = None;
                // After a failed body the next stage still starts afresh, so no value of
                // the loop's graph leaks into it; `x` is then poisoned, not reported again.
                let next = match out {
                    Some(out) => {
                        self.finish_stage(out);
                        Binding::Value(self.open_stage(&x, &ty, None, range))
                    }
                    None => {
                        self.stage = StageBuild { graph: self.new_graph(), ..StageBuild::default() };
                        Binding::Poisoned
                    }
                };
                for b in env.values_mut() {
                    *b = Binding::Stale;
                }
                env.insert(x, next);
            }
            Mode::Unrolled(sizes) => {
                let n = match count_dim.eval(sizes) {
                    Ok(n) => n as usize,
                    Err(e) => return self.err(count.range(), e.message),
                };
                let mut value = x_in;
                for i in 0..n {
                    let mut inner = env.clone();
                    inner.insert(x.clone(), Binding::Value(value));
                    self.layer = Some(Layer { index, var: var.to_string(), unrolled: Some((i, n)) });
                    let out = self.loop_body(&mut inner, body, &x, value);
                    self.layer = None;
                    let Some(out) = out else {
                        env.insert(x, Binding::Poisoned);
                        return;
                    };
                    value = out;
                }
                env.insert(x, Binding::Value(value));
            }
        }
    }

    /// A new stage whose carried input is `x: ty`.
    fn open_stage(&mut self, x: &str, ty: &ValueType, repeat: Option<usize>, range: Range) -> ValueId {
        self.stage.repeat = repeat;
        let id = self.built(range, |g| g.input(x, Role::Data, ty.clone())).unwrap_or(ValueId(0));
        self.stage.carry_in = Some((x.to_string(), id));
        id
    }

    /// Lowers a loop body; returns the carried value's new value.
    fn loop_body(&mut self, env: &mut Env, body: &'m Block, x: &str, x_in: ValueId) -> Option<ValueId> {
        let mut out = None;
        for s in &body.stmts {
            match s {
                Stmt::Assign { name, value } if *name == x => {
                    let v = self.tensor(env, value)?;
                    let (want, got) = (self.stage.graph.ty(x_in).clone(), self.stage.graph.ty(v).clone());
                    if want != got {
                        self.err(
                            value.range,
                            format!(
                                "a repeated block must keep `{x}`'s shape: {} in, {} out",
                                want.shape, got.shape
                            ),
                        );
                        return None;
                    }
                    env.insert(x.to_string(), Binding::Value(v));
                    out = Some(v);
                }
                other => self.stmt(env, other),
            }
        }
        out
    }

    pub(super) fn stale(&mut self, name: &str, at: Range) {
        self.err(
            at,
            format!(
                "`{name}` was computed on the other side of a `for` loop; only the value the loop \
                 carries, inputs and parameters cross a repeated block"
            ),
        );
    }

    /// Every parameter must reach the loss: an unused one is almost always a typo.
    fn check_unused(&mut self) {
        let mut used = vec![false; self.program.params.len()];
        for stage in &self.program.stages {
            let live = stage.graph.ancestors(&[stage.output]);
            for &(i, id) in &stage.params {
                used[i] |= live[id.index()];
            }
        }
        for (i, p) in self.program.params.clone().iter().enumerate() {
            if !used[i] {
                self.err(
                    p.range,
                    format!("parameter `{}` is declared but the loss does not depend on it", p.name),
                );
            }
        }
    }
}
