//! The reference interpreter: evaluates any graph in f64 on `ndarray`.
//!
//! It is the oracle every later stage is tested against (finite differences, the
//! e-graph's rewrites, generated code), so it is written for obviousness, not speed:
//! each node runs its op's reference kernel from the op table. Bad feeds (missing,
//! unknown, wrong dtype or shape) are errors naming the input and the dimension.

use std::collections::BTreeMap;

use ndarray::ArrayD;

use crate::dim::DimEnv;
use crate::error::{Error, Result, bail};
use crate::ir::{DType, Graph, Shape, ValueId};
use crate::ops::{Op, Source};

/// A value at run time: real numbers (f64 here) or indices.
#[derive(Clone, Debug, PartialEq)]
pub enum Tensor {
    Real(ArrayD<f64>),
    Index(ArrayD<i64>),
}

impl Tensor {
    pub fn real(&self, op: &str) -> Result<&ArrayD<f64>> {
        match self {
            Tensor::Real(a) => Ok(a),
            Tensor::Index(_) => bail!("{op}: expected real values, got indices"),
        }
    }

    pub fn index(&self, op: &str) -> Result<&ArrayD<i64>> {
        match self {
            Tensor::Index(a) => Ok(a),
            Tensor::Real(_) => bail!("{op}: expected indices, got real values"),
        }
    }

    pub fn shape(&self) -> &[usize] {
        match self {
            Tensor::Real(a) => a.shape(),
            Tensor::Index(a) => a.shape(),
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            Tensor::Real(_) => DType::F32,
            Tensor::Index(_) => DType::Index,
        }
    }

    /// The single value of a scalar (or one-element) real tensor.
    pub fn scalar(&self) -> Result<f64> {
        let a = self.real("scalar")?;
        if a.len() != 1 {
            bail!("expected a scalar, got shape {:?}", a.shape());
        }
        Ok(a.iter().copied().next().unwrap_or(f64::NAN))
    }
}

/// The sizes of `shape` under `env`.
pub fn concrete_shape(shape: &Shape, env: &DimEnv) -> Result<Vec<usize>> {
    shape.0.iter().map(|d| d.eval(env).map(|v| v as usize)).collect()
}

/// Binds every dimension symbol that some fed input has as a whole axis (`T` in
/// `[B, T]`) to that axis's size, on top of `given`. A symbol fed two sizes is an error.
pub fn infer_dims(graph: &Graph, feeds: &BTreeMap<String, Tensor>, given: &DimEnv) -> Result<DimEnv> {
    let mut env = given.clone();
    for (id, name, _) in graph.inputs() {
        let Some(t) = feeds.get(name) else { continue };
        let shape = graph.shape(id);
        if t.shape().len() != shape.rank() {
            bail!("input `{name}`: expected {} axes {shape}, got shape {:?}", shape.rank(), t.shape());
        }
        for (axis, dim) in shape.0.iter().enumerate() {
            let size = t.shape()[axis] as i64;
            if let Some(sym) = dim.as_sym()
                && !env.contains_key(sym)
            {
                env.insert(sym.to_string(), size);
            }
        }
    }
    Ok(env)
}

/// Checks one fed tensor against its declaration, naming the first dimension that
/// disagrees.
fn check_feed(graph: &Graph, id: ValueId, name: &str, t: &Tensor, env: &DimEnv) -> Result<()> {
    let ty = graph.ty(id);
    if t.dtype() != ty.dtype {
        bail!("input `{name}`: expected {:?} values, got {:?}", ty.dtype, t.dtype());
    }
    if t.shape().len() != ty.shape.rank() {
        bail!("input `{name}`: expected shape {}, got {:?}", ty.shape, t.shape());
    }
    for (axis, dim) in ty.shape.0.iter().enumerate() {
        let want = dim.eval(env)? as usize;
        if t.shape()[axis] != want {
            bail!(
                "input `{name}`: axis {axis} is dimension {dim} = {want}, got {} (shape {:?})",
                t.shape()[axis],
                t.shape()
            );
        }
    }
    Ok(())
}

/// Every value the interpreter computed, by id (`None` where not needed).
pub struct Values {
    values: Vec<Option<Tensor>>,
}

impl Values {
    pub fn get(&self, id: ValueId) -> Result<&Tensor> {
        self.values
            .get(id.index())
            .and_then(Option::as_ref)
            .ok_or_else(|| Error::new(format!("value {} was not computed", id.0)))
    }
}

/// Evaluates the values `outputs` depend on. Dimension sizes come from `given` and
/// from the fed shapes; every needed input must be fed, and no unknown name may be.
pub fn evaluate(
    graph: &Graph,
    given: &DimEnv,
    feeds: &BTreeMap<String, Tensor>,
    outputs: &[ValueId],
) -> Result<Values> {
    let inputs = graph.inputs();
    for name in feeds.keys() {
        if !inputs.iter().any(|(_, n, _)| n == name) {
            bail!("`{name}` is fed but the graph has no such input");
        }
    }
    let env = infer_dims(graph, feeds, given)?;
    let live = graph.ancestors(outputs);
    let mut values: Vec<Option<Tensor>> = vec![None; graph.len()];
    for id in graph.ids() {
        if !live[id.index()] {
            continue;
        }
        let node = graph.node(id);
        let value = match &node.op {
            Op::Source(Source::Input { name, .. }) => {
                let t = feeds.get(name).ok_or_else(|| Error::new(format!("input `{name}` was not fed")))?;
                check_feed(graph, id, name, t, &env)?;
                t.clone()
            }
            op => {
                let ins: Vec<&Tensor> = node
                    .inputs
                    .iter()
                    .map(|i| values[i.index()].as_ref().ok_or_else(|| Error::new("input not computed")))
                    .collect::<Result<_>>()?;
                op.eval(&env, &ins, &node.ty)
                    .map_err(|e| Error::new(format!("evaluating {} (value {}): {e}", op.mnemonic(), id.0)))?
            }
        };
        values[id.index()] = Some(value);
    }
    Ok(Values { values })
}
