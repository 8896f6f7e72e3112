//! Every rewrite rule, verified: its left side is built from the example binding in its
//! family's table, the rule alone is run, and then every e-node of every class is
//! evaluated with the interpreter (children as their smallest terms) on random inputs
//! of random sizes: all nodes of a class must agree. A wrong rule merges classes whose
//! values differ, and fails here.

use std::collections::BTreeMap;

use adjoint_compiler::dim::{Dim, DimEnv};
use adjoint_compiler::egraph::analysis::{Graph as EGraph, Typing};
use adjoint_compiler::egraph::lang::{Kind, Leaf, Tensor, fold_attr, to_op};
use adjoint_compiler::egraph::rules;
use adjoint_compiler::interp::{Tensor as Value, evaluate};
use adjoint_compiler::ir::{DType, Graph, Role, Shape, ValueId, ValueType};
use adjoint_compiler::scalar::Scalar;
use egg::{AstSize, ENodeOrVar, Extractor, FromOp, Id, Language, RecExpr, Runner};
use ndarray::{ArrayD, IxDyn};

mod common;
use common::Rng;

/// A variable's binding: an attribute leaf, or a tensor (input or constant).
enum Binding {
    Leaf(Leaf),
    Input { shape: Vec<String>, dtype: DType, positive: bool },
    Fill { shape: Vec<String>, value: f64 },
}

fn binding(text: &str) -> Binding {
    let dims = |s: &str| s.split(',').map(String::from).collect::<Vec<_>>();
    if let Some(d) = text.strip_prefix("d:") {
        return Binding::Leaf(Leaf::Dim(Dim::sym(d)));
    }
    for (prefix, value) in [("zeros:", 0.0), ("ones:", 1.0)] {
        if let Some(s) = text.strip_prefix(prefix) {
            return Binding::Fill { shape: dims(s), value };
        }
    }
    if let Some(s) = text.strip_prefix("positive:") {
        return Binding::Input { shape: dims(s), dtype: DType::F32, positive: true };
    }
    if let Some(s) = text.strip_prefix("index:") {
        return Binding::Input { shape: dims(s), dtype: DType::Index, positive: false };
    }
    if let Some(s) = text.strip_prefix("shape:") {
        return Binding::Leaf(Leaf::Shape(shape(&dims(s))));
    }
    if text == "s:-inf" {
        return Binding::Leaf(Leaf::Scalar(Scalar::num(f64::NEG_INFINITY)));
    }
    if let Ok(Tensor::Leaf(l)) = Tensor::from_op(text, vec![]) {
        return Binding::Leaf(l);
    }
    Binding::Input { shape: dims(text), dtype: DType::F32, positive: false }
}

fn shape(names: &[String]) -> Shape {
    Shape::new(names.iter().map(|n| Dim::sym(n)))
}

/// Adds a variable's binding to the e-graph.
fn add_binding(eg: &mut EGraph, var: &str, b: &Binding) -> Id {
    match b {
        Binding::Leaf(l) => eg.add(Tensor::Leaf(l.clone())),
        Binding::Input { shape: s, dtype, .. } => eg.add(Tensor::Leaf(Leaf::Input {
            name: var.trim_start_matches('?').to_string(),
            role: Role::Data,
            ty: ValueType { dtype: *dtype, shape: shape(s) },
        })),
        Binding::Fill { shape: s, value } => {
            let v = eg.add(Tensor::Leaf(Leaf::Scalar(Scalar::num(*value))));
            let sh = eg.add(Tensor::Leaf(Leaf::Shape(shape(s))));
            eg.add(Tensor::Op(Kind::Fill, vec![v, sh]))
        }
    }
}

/// Builds an e-graph term as an IR graph; returns the value of its root.
fn to_ir(expr: &RecExpr<Tensor>, g: &mut Graph) -> Option<ValueId> {
    let mut leaves: Vec<Option<Leaf>> = Vec::new();
    let mut values: Vec<Option<ValueId>> = Vec::new();
    for node in expr.as_ref() {
        let (leaf, value) = match node {
            Tensor::Leaf(Leaf::Input { name, role, ty }) => {
                let v = match g.find_input(name) {
                    Some(v) => v,
                    None => g.input(name, *role, ty.clone()).ok()?,
                };
                (None, Some(v))
            }
            Tensor::Leaf(l) => (Some(l.clone()), None),
            Tensor::Op(kind, children) => {
                let n = kind.attrs();
                let attrs: Vec<&Leaf> =
                    children[..n].iter().map(|c| leaves[usize::from(*c)].as_ref()).collect::<Option<_>>()?;
                if kind.is_attr_op() {
                    (fold_attr(*kind, &attrs), None)
                } else {
                    let op = to_op(*kind, &attrs)?;
                    let ins: Vec<ValueId> =
                        children[n..].iter().map(|c| values[usize::from(*c)]).collect::<Option<_>>()?;
                    (None, Some(g.apply(op, &ins).ok()?))
                }
            }
        };
        leaves.push(leaf);
        values.push(value);
    }
    *values.last()?
}

fn random_feeds(bindings: &[(&str, Binding)], env: &DimEnv, rng: &mut Rng) -> BTreeMap<String, Value> {
    let mut feeds = BTreeMap::new();
    for (var, b) in bindings {
        if let Binding::Input { shape: s, dtype, positive } = b {
            let dims: Vec<usize> = s.iter().map(|d| env[d] as usize).collect();
            let n: usize = dims.iter().product();
            let value = match dtype {
                DType::F32 => Value::Real(
                    ArrayD::from_shape_vec(
                        IxDyn(&dims),
                        (0..n)
                            .map(|_| if *positive { 0.5 + rng.uniform() * 1.5 } else { rng.normal() })
                            .collect(),
                    )
                    .unwrap(),
                ),
                DType::Index => Value::Index(
                    ArrayD::from_shape_vec(
                        IxDyn(&dims),
                        (0..n).map(|_| (rng.uniform() * 2.0) as i64).collect(),
                    )
                    .unwrap(),
                ),
            };
            feeds.insert(var.trim_start_matches('?').to_string(), value);
        }
    }
    feeds
}

#[test]
fn every_rule_has_an_example_and_every_example_a_rule() {
    let names: Vec<String> = rules::all().iter().map(|r| r.name.to_string()).collect();
    let examples: Vec<&str> = rules::examples().iter().map(|e| e.0).collect();
    for n in &names {
        assert!(examples.contains(&n.as_str()), "rule `{n}` has no example");
    }
    for e in &examples {
        assert!(names.iter().any(|n| n == e), "example `{e}` names no rule");
    }
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "rule names are unique");
}

#[test]
fn every_rule_fires_on_its_example_and_preserves_values() {
    let all = rules::all();
    let mut rng = Rng::new(41);
    for (name, vars) in rules::examples() {
        let rule = all.iter().find(|r| r.name.as_str() == name).unwrap();
        let bindings: Vec<(&str, Binding)> = vars.iter().map(|(v, b)| (*v, binding(b))).collect();
        let mut eg = EGraph::new(Typing);
        // The left side(s), instantiated.
        let asts: Vec<egg::PatternAst<Tensor>> = match rule.searcher.get_pattern_ast() {
            Some(ast) => vec![ast.clone()],
            None => {
                let multi = rules::concat::MULTI
                    .iter()
                    .find(|m| m.0 == name)
                    .expect("a multi-pattern rule is listed");
                multi.1.iter().map(|p| p.parse().unwrap()).collect()
            }
        };
        let mut lhs = None;
        for ast in &asts {
            let mut ids: Vec<Id> = Vec::new();
            for node in ast.as_ref() {
                let id = match node {
                    ENodeOrVar::Var(v) => {
                        let b = &bindings
                            .iter()
                            .find(|(n, _)| *n == v.to_string())
                            .unwrap_or_else(|| panic!("{name}: no binding for {v}"))
                            .1;
                        add_binding(&mut eg, &v.to_string(), b)
                    }
                    ENodeOrVar::ENode(n) => {
                        let n = n.clone().map_children(|c| ids[usize::from(c)]);
                        eg.add(n)
                    }
                };
                ids.push(id);
            }
            lhs = Some(*ids.last().unwrap());
        }
        let lhs = lhs.unwrap();
        eg.rebuild();
        assert!(eg[lhs].data.ty.is_some(), "{name}: the example's left side is ill-typed");
        let before = eg[lhs].nodes.len();
        let classes_before = eg.number_of_classes();
        let nodes_before = eg.total_number_of_nodes();
        let runner = Runner::default().with_egraph(eg).with_iter_limit(2).run(std::slice::from_ref(rule));
        let eg = runner.egraph;
        let lhs = eg.find(lhs);
        assert!(
            eg[lhs].nodes.len() > before
                || eg.number_of_classes() < classes_before
                || (asts.len() > 1 && eg.total_number_of_nodes() > nodes_before),
            "{name}: the rule did not fire on its example"
        );
        // Every node of every class against the class's smallest term.
        let extractor = Extractor::new(&eg, AstSize);
        for trial in 0..3 {
            let syms: std::collections::BTreeSet<String> = bindings
                .iter()
                .flat_map(|(_, b)| match b {
                    Binding::Input { shape, .. } | Binding::Fill { shape, .. } => shape.clone(),
                    Binding::Leaf(Leaf::Dim(d)) => d.symbols().map(String::from).collect(),
                    Binding::Leaf(Leaf::Shape(s)) => {
                        s.0.iter().flat_map(|d| d.symbols().map(String::from)).collect()
                    }
                    _ => vec![],
                })
                .collect();
            let env: DimEnv = syms.iter().map(|s| (s.clone(), 2 + ((rng.uniform() * 4.0) as i64))).collect();
            let feeds = random_feeds(&bindings, &env, &mut rng);
            for class in eg.classes() {
                if class.data.ty.is_none() {
                    continue;
                }
                let (_, best) = extractor.find_best(class.id);
                let mut g = Graph::new();
                let Some(want_id) = to_ir(&best, &mut g) else { continue };
                for node in &class.nodes {
                    let mut expr = RecExpr::default();
                    let mut kids = Vec::new();
                    for &c in node.children() {
                        let (_, t) = extractor.find_best(c);
                        let offset = expr.as_ref().len();
                        for n in t.as_ref() {
                            expr.add(n.clone().map_children(|k| Id::from(usize::from(k) + offset)));
                        }
                        kids.push(Id::from(expr.as_ref().len() - 1));
                    }
                    let mut k = kids.into_iter();
                    expr.add(node.clone().map_children(|_| k.next().unwrap()));
                    let Some(got_id) = to_ir(&expr, &mut g) else {
                        panic!("{name}: a node of class {} does not build: {expr}", class.id)
                    };
                    let used: BTreeMap<String, Value> = common::feeds_of(&g, &feeds);
                    let values = evaluate(&g, &env, &used, &[want_id, got_id])
                        .unwrap_or_else(|e| panic!("{name} trial {trial}: {e}"));
                    let (want, got) = (values.get(want_id).unwrap(), values.get(got_id).unwrap());
                    match (want, got) {
                        (Value::Real(a), Value::Real(b)) => {
                            assert_eq!(a.shape(), b.shape(), "{name}: shapes");
                            for (x, y) in a.iter().zip(b) {
                                let ok =
                                    (x - y).abs() <= 1e-9 * (1.0 + x.abs()) || (x.is_infinite() && x == y);
                                assert!(ok, "{name}: {best} = {x} but {expr} = {y}");
                            }
                        }
                        (a, b) => assert_eq!(a, b, "{name}"),
                    }
                }
            }
        }
    }
}
