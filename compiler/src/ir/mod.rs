//! The IR: a DAG of typed tensor values.
//!
//! A [`Graph`] is an append-only list of [`Node`]s; a node's inputs always come before
//! it, so id order is a topological order (autodiff walks it backwards, the interpreter
//! forwards). Every node carries its [`ValueType`] (dtype and symbolic [`Shape`]),
//! computed by its op's shape rule when it is added: a graph that exists is well typed.
//!
//! Nodes are hash-consed: adding the same op on the same inputs twice returns the first
//! id, so common subexpressions are shared by construction and the same construction
//! sequence always yields the same ids (the formulas' determinism rests on it).
//! Display names (`P`, `dS`) are annotations for the printer, not identity.

mod builder;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::dim::Dim;
use crate::error::{Result, bail};
use crate::ops::{Op, Source};

/// A value in a [`Graph`]; its index is its position in topological order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Element type: real numbers, or integer indices (token ids, targets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    Index,
}

/// A shape over symbolic dimensions, outermost first.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    pub fn new(dims: impl IntoIterator<Item = Dim>) -> Shape {
        Shape(dims.into_iter().collect())
    }
    pub fn scalar() -> Shape {
        Shape(Vec::new())
    }
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    pub fn numel(&self) -> Dim {
        Dim::product(&self.0)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueType {
    pub dtype: DType,
    pub shape: Shape,
}

impl ValueType {
    pub fn f32(shape: Shape) -> ValueType {
        ValueType { dtype: DType::F32, shape }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dtype {
            DType::F32 => write!(f, "{}", self.shape),
            DType::Index => write!(f, "{} index", self.shape),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub ty: ValueType,
    /// The name the formulas show for this value, if it has one.
    pub name: Option<String>,
}

/// Whether an input is trained (a parameter) or fed per call (data).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Param,
    Data,
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    nodes: Vec<Node>,
    interned: HashMap<(Op, Vec<ValueId>), ValueId>,
    /// Readable names for derived dimensions (`D/H` prints as `d_k`).
    dim_aliases: BTreeMap<Dim, String>,
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    pub fn node(&self, id: ValueId) -> &Node {
        &self.nodes[id.index()]
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn ids(&self) -> impl DoubleEndedIterator<Item = ValueId> + use<> {
        (0..self.nodes.len() as u32).map(ValueId)
    }

    pub fn ty(&self, id: ValueId) -> &ValueType {
        &self.nodes[id.index()].ty
    }

    pub fn shape(&self, id: ValueId) -> &Shape {
        &self.nodes[id.index()].ty.shape
    }

    /// Adds `op` applied to `inputs` after checking its shape rule; returns the existing
    /// id if the same node is already present.
    pub fn apply(&mut self, op: Op, inputs: &[ValueId]) -> Result<ValueId> {
        for &i in inputs {
            if i.index() >= self.nodes.len() {
                bail!("{}: input {} is not a value of this graph", op.mnemonic(), i.0);
            }
        }
        let key = (op, inputs.to_vec());
        if let Some(&id) = self.interned.get(&key) {
            return Ok(id);
        }
        let (op, inputs) = key;
        let in_types: Vec<&ValueType> = inputs.iter().map(|&i| self.ty(i)).collect();
        let ty = op.infer(&in_types)?;
        let id = ValueId(self.nodes.len() as u32);
        self.interned.insert((op.clone(), inputs.clone()), id);
        self.nodes.push(Node { op, inputs, ty, name: None });
        Ok(id)
    }

    /// Declares a named input; a second declaration of the same name is an error.
    pub fn input(&mut self, name: &str, role: Role, ty: ValueType) -> Result<ValueId> {
        if self.find_input(name).is_some() {
            bail!("input `{name}` is declared twice");
        }
        let op = Op::Source(Source::Input { name: name.to_string(), role, ty });
        self.apply(op, &[])
    }

    /// A trained f32 parameter.
    pub fn param(&mut self, name: &str, shape: Shape) -> Result<ValueId> {
        self.input(name, Role::Param, ValueType::f32(shape))
    }

    /// An f32 data input.
    pub fn data(&mut self, name: &str, shape: Shape) -> Result<ValueId> {
        self.input(name, Role::Data, ValueType::f32(shape))
    }

    /// An index-valued data input (token ids, targets).
    pub fn index_input(&mut self, name: &str, shape: Shape) -> Result<ValueId> {
        let ty = ValueType { dtype: DType::Index, shape };
        self.input(name, Role::Data, ty)
    }

    pub fn find_input(&self, name: &str) -> Option<ValueId> {
        self.ids()
            .find(|&id| matches!(&self.node(id).op, Op::Source(Source::Input { name: n, .. }) if n == name))
    }

    /// Every declared input, in declaration order, with its name and role.
    pub fn inputs(&self) -> Vec<(ValueId, &str, Role)> {
        self.ids()
            .filter_map(|id| match &self.node(id).op {
                Op::Source(Source::Input { name, role, .. }) => Some((id, name.as_str(), *role)),
                _ => None,
            })
            .collect()
    }

    /// Names `id` for the printer (the first name given wins, so a library's name for a
    /// value is not overwritten by a later, more generic one). Constants are shared by
    /// hash-consing and always print as their value, so they take no name.
    pub fn name(&mut self, id: ValueId, name: &str) -> ValueId {
        let node = &mut self.nodes[id.index()];
        if matches!(node.op, Op::Source(Source::Fill { .. })) {
            return id;
        }
        let slot = &mut node.name;
        if slot.is_none() {
            *slot = Some(name.to_string());
        }
        id
    }

    /// The name the formulas use for `id`: its display name, or an input's own name.
    pub fn display_name(&self, id: ValueId) -> Option<&str> {
        let node = self.node(id);
        node.name.as_deref().or(match &node.op {
            Op::Source(Source::Input { name, .. }) => Some(name.as_str()),
            _ => None,
        })
    }

    /// Prints `dim` as `alias` in formulas (e.g. `D/H` as `d_k`).
    pub fn alias_dim(&mut self, dim: Dim, alias: &str) {
        self.dim_aliases.entry(dim).or_insert_with(|| alias.to_string());
    }

    pub fn dim_aliases(&self) -> impl Iterator<Item = (&Dim, &str)> {
        self.dim_aliases.iter().map(|(d, a)| (d, a.as_str()))
    }

    pub fn dim_alias(&self, dim: &Dim) -> Option<&str> {
        self.dim_aliases.get(dim).map(String::as_str)
    }

    /// Which nodes each node feeds, in id order.
    pub fn users(&self) -> Vec<Vec<ValueId>> {
        let mut users = vec![Vec::new(); self.nodes.len()];
        for id in self.ids() {
            for &i in &self.node(id).inputs {
                users[i.index()].push(id);
            }
        }
        users
    }

    /// The nodes `roots` depend on (themselves included), as a mask over ids.
    pub fn ancestors(&self, roots: &[ValueId]) -> Vec<bool> {
        let mut live = vec![false; self.nodes.len()];
        for r in roots {
            live[r.index()] = true;
        }
        for id in self.ids().rev() {
            if live[id.index()] {
                for &i in &self.node(id).inputs {
                    live[i.index()] = true;
                }
            }
        }
        live
    }
}
