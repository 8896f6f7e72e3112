//! The scheduler: which nodes run as one fused loop, which are materialised, and in what
//! order the code runs them.
//!
//! A *group* is a set of nodes computed in one pass over the rows of a *space*, a shape
//! `[..lead, n]`: elementwise nodes of that shape (level `Elem`, one value per element),
//! last-axis reductions and the scalar arithmetic on their results (level `Row`, one
//! value per row). Broadcasts are never computed: a group reads through them, as a
//! per-row scalar (a row statistic spread along the row) or a strided view (a bias
//! repeated over rows); so are permutes that keep the last axis (rows at permuted
//! offsets). Constants are inlined. Everything else (products, layout ops,
//! gathers, column sums) is a *kernel*: one runtime call, as before.
//!
//! Invariants: a node joins a group only if every operand is readable there and joining
//! cannot create a cycle between items (no path from the group back into the node
//! through an outside node), so the items always have a topological order; a member is
//! materialised exactly when something outside its group reads it (or it is a root),
//! and a group's members that nothing live reads are dropped. The same graph gives the
//! same schedule: every choice is by node id.

use std::collections::{BTreeMap, BTreeSet};

use crate::dim::Dim;
use crate::ir::{DType, Graph, ValueId};
use crate::ops::{IndexOp, Layout, Op, Reduce, SelectOp, Source};

/// Where a member's value lives in its group's loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// One value per element of the space.
    Elem,
    /// One value per row (the space without its last axis).
    Row,
    /// One value per column, summed over the rows of a 2-D space: a column sum of an
    /// elementwise member or of a tensor the loop reads row by row, added up as the rows
    /// go by (`fused::rows_with_sums`) instead of a kernel reading it back. Nothing in
    /// the group reads it: it is whole only after the last row.
    Col,
}

/// One step of the generated code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Item {
    /// One node, one runtime call.
    Kernel(ValueId),
    /// One fused loop.
    Group(usize),
}

#[derive(Clone, Debug)]
pub struct Group {
    /// A node whose shape is the loop's space (`Elem` members have this shape): the
    /// first member, or the operand of a reduction that started the group.
    pub space: ValueId,
    /// The live members, in id order.
    pub members: Vec<ValueId>,
}

/// A value read inside a loop, after looking through broadcasts and row-keeping permutes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Read {
    /// Another member of the same group.
    Member(ValueId),
    /// A constant tensor: its value is inlined.
    Fill(ValueId),
    /// A one-hot of an index tensor, computed where it is read (`column == index`)
    /// rather than stored; the index tensor is read at `coords`.
    OneHot { index: ValueId, coords: Vec<usize> },
    /// A materialised tensor; `coords[i]` is the space axis its axis `i` runs along
    /// (the last space axis is the column). `col`: read through slices of its last axis,
    /// the first column read (rows are then the base's own width apart).
    Leaf { base: ValueId, coords: Vec<usize>, col: Option<Dim> },
}

#[derive(Clone, Debug, Default)]
pub struct Schedule {
    pub items: Vec<Item>,
    pub groups: Vec<Group>,
    membership: BTreeMap<ValueId, (usize, Level)>,
    needed: BTreeSet<ValueId>,
}

impl Schedule {
    pub fn member(&self, id: ValueId) -> Option<(usize, Level)> {
        self.membership.get(&id).copied()
    }

    /// Whether `id` exists as a tensor: a kernel's result, a group's output, or a leaf
    /// the schedule reads.
    pub fn is_needed(&self, id: ValueId) -> bool {
        self.needed.contains(&id)
    }

    /// Whether `id` is computed by one of the items (a kernel, or a group's output).
    pub fn produced(&self, id: ValueId) -> bool {
        match self.member(id) {
            Some(_) => self.needed.contains(&id),
            None => self.items.contains(&Item::Kernel(id)),
        }
    }

    /// The tensors an item reads.
    pub fn reads_of(&self, g: &Graph, item: Item) -> BTreeSet<ValueId> {
        match item {
            Item::Kernel(id) => kernel_operands(g, id).into_iter().collect(),
            Item::Group(gi) => {
                let mut out = BTreeSet::new();
                for &m in &self.groups[gi].members {
                    let level = self.member(m).map_or(Level::Elem, |x| x.1);
                    for r in reads(g, self, gi, m, level).unwrap_or_default() {
                        if let Read::Leaf { base, .. } | Read::OneHot { index: base, .. } = r {
                            out.insert(base);
                        }
                    }
                }
                out
            }
        }
    }

    /// The values this schedule reads but does not compute.
    pub fn leaves_read(&self, computed: &[bool]) -> BTreeSet<ValueId> {
        self.needed.iter().copied().filter(|id| !computed[id.index()]).collect()
    }
}

/// The rank of a node's shape.
fn rank(g: &Graph, id: ValueId) -> usize {
    g.shape(id).rank()
}

/// Follows broadcasts, permutes that keep the last axis last, and slices of the last
/// axis, down from `id` read at `coords` (the space axis of each of its axes): the node
/// actually read, the space axis of each of its axes, and the column a slice starts at
/// (`None`: no slice). A permuted tensor's row is then a contiguous row of its operand
/// at a computed offset, a sliced one part of a wider row, so none of these layout ops
/// is ever materialised for a loop (the head split and merge of attention, and the
/// Q/K/V blocks of the fused product, cost no copy).
pub fn through_layout(
    g: &Graph,
    mut id: ValueId,
    mut coords: Vec<usize>,
) -> (ValueId, Vec<usize>, Option<Dim>) {
    let mut col: Option<Dim> = None;
    loop {
        match &g.node(id).op {
            Op::Layout(Layout::Broadcast { axis, .. }) => {
                coords.remove(*axis);
            }
            Op::Layout(Layout::Slice { axis, start, .. }) if *axis + 1 == rank(g, id) => {
                col = Some(col.map_or(start.clone(), |c| c.add(start)));
            }
            Op::Layout(Layout::Permute(p)) if p.last() == Some(&(p.len() - 1)) => {
                // Output axis `i` is input axis `p[i]`.
                let mut input = vec![0; p.len()];
                for (i, &a) in p.iter().enumerate() {
                    input[a] = coords[i];
                }
                coords = input;
            }
            _ => return (id, coords, col),
        }
        id = g.node(id).inputs[0];
    }
}

/// How `id`'s inputs are read at `level`: the space axes of each input's axes.
fn operand_coords(g: &Graph, id: ValueId, level: Level, lead: usize) -> Vec<Vec<usize>> {
    let node = g.node(id);
    let all: Vec<usize> = match level {
        Level::Elem | Level::Col => (0..=lead).collect(),
        Level::Row => (0..lead).collect(),
    };
    match &node.op {
        // A reduction's operand is the full space.
        Op::Reduce(_) => vec![(0..=lead).collect()],
        _ => node.inputs.iter().map(|_| all.clone()).collect(),
    }
}

/// What kind of member a node can be: `None` for kernels.
fn fusible(g: &Graph, id: ValueId) -> Option<Vec<Level>> {
    let node = g.node(id);
    if node.ty.dtype != DType::F32 {
        return None;
    }
    match &node.op {
        Op::Pointwise(_) | Op::Select(SelectOp::Select) => Some(vec![Level::Elem, Level::Row]),
        Op::Select(SelectOp::Causal { .. }) if rank(g, id) >= 2 => Some(vec![Level::Elem]),
        Op::Reduce(Reduce::Sum { axis } | Reduce::Max { axis }) if *axis + 1 == rank(g, node.inputs[0]) => {
            Some(vec![Level::Row])
        }
        Op::Reduce(Reduce::Sum { axis: 0 }) if rank(g, node.inputs[0]) == 2 => Some(vec![Level::Col]),
        _ => None,
    }
}

/// Groups `wanted` nodes (those this code computes; `leaf` ones are given) and orders
/// the result so `roots` are materialised.
pub fn schedule(g: &Graph, wanted: &[bool], leaf: &dyn Fn(ValueId) -> bool, roots: &[ValueId]) -> Schedule {
    let mut s = Schedule::default();
    let n = g.len();
    // Groups every node depends on (its own included), for the cycle check.
    let mut upstream: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    for id in g.ids() {
        let mut up: BTreeSet<usize> = BTreeSet::new();
        for &i in &g.node(id).inputs {
            up.extend(upstream[i.index()].iter().copied());
        }
        if wanted[id.index()]
            && !leaf(id)
            && let Some(levels) = fusible(g, id)
        {
            let placed = place(g, &s, &upstream, id, &levels).or_else(|| {
                (levels == [Level::Col]).then(|| beside_a_reader(g, &s, &upstream, id)).flatten()
            });
            if let Some((gi, level)) = placed {
                s.membership.insert(id, (gi, level));
                s.groups[gi].members.push(id);
                up.insert(gi);
            } else if let Some((space, level)) = new_space(g, id, &levels) {
                let gi = s.groups.len();
                s.groups.push(Group { space, members: vec![id] });
                s.membership.insert(id, (gi, level));
                up.insert(gi);
            }
        }
        upstream[id.index()] = up;
    }
    liveness(g, &mut s, wanted, leaf, roots);
    order(g, &mut s, leaf);
    s
}

/// The number of leading (row) axes of group `gi`'s space.
pub fn lead(g: &Graph, group: &Group) -> usize {
    rank(g, group.space).saturating_sub(1)
}

/// The reads of member `id` at `level` in group `gi`, or `None` if one is not readable
/// there.
pub fn reads(g: &Graph, s: &Schedule, gi: usize, id: ValueId, level: Level) -> Option<Vec<Read>> {
    let lead = lead(g, &s.groups[gi]);
    let mut out = Vec::new();
    for (&input, coords) in g.node(id).inputs.iter().zip(operand_coords(g, id, level, lead)) {
        let (base, coords, col) = through_layout(g, input, coords);
        let read = match s.member(base) {
            // A member is one row buffer: not readable at a column offset.
            Some((bg, _)) if bg == gi && col.is_some() => return None,
            Some((bg, bl)) if bg == gi => {
                let want: Vec<usize> = match bl {
                    Level::Elem => (0..=lead).collect(),
                    Level::Row => (0..lead).collect(),
                    // Whole only after the last row.
                    Level::Col => return None,
                };
                if coords != want {
                    return None;
                }
                Read::Member(base)
            }
            _ if matches!(g.node(base).op, Op::Source(Source::Fill { .. })) => Read::Fill(base),
            // A one-hot whose depth runs along the row is cheaper to recompute than to read.
            _ if matches!(g.node(base).op, Op::Index(IndexOp::OneHot { .. }))
                && coords.last() == Some(&lead)
                && col.is_none() =>
            {
                Read::OneHot { index: g.node(base).inputs[0], coords: coords[..coords.len() - 1].to_vec() }
            }
            // A leaf read along the row is a contiguous slice: its last axis must be the row.
            _ if coords.contains(&lead) && coords.last() != Some(&lead) => return None,
            _ => Read::Leaf { base, coords, col },
        };
        // A column sum adds up an elementwise member, or a tensor read row by row.
        if level == Level::Col
            && !match &read {
                Read::Member(m) => s.member(*m).map(|x| x.1) == Some(Level::Elem),
                Read::Leaf { coords, .. } => coords[..] == [0, 1],
                _ => false,
            }
        {
            return None;
        }
        // A row value cannot read anything that varies along the row.
        if level == Level::Row
            && !matches!(g.node(id).op, Op::Reduce(_))
            && match &read {
                Read::Member(m) => s.member(*m).map(|x| x.1) == Some(Level::Elem),
                Read::Leaf { coords, .. } => coords.contains(&lead),
                Read::OneHot { .. } => true,
                Read::Fill(_) => false,
            }
        {
            return None;
        }
        out.push(read);
    }
    Some(out)
}

/// The first group of an operand that `id` can join, and at which level.
fn place(
    g: &Graph,
    s: &Schedule,
    upstream: &[BTreeSet<usize>],
    id: ValueId,
    levels: &[Level],
) -> Option<(usize, Level)> {
    let shape = g.shape(id);
    let mut tried = BTreeSet::new();
    for &input in &g.node(id).inputs {
        let (base, _, _) = through_layout(g, input, (0..g.shape(input).rank()).collect());
        let Some((gi, _)) = s.member(base).or_else(|| s.member(input)) else { continue };
        if !tried.insert(gi) {
            continue;
        }
        let space = g.shape(s.groups[gi].space);
        for &level in levels {
            let fits = match (&g.node(id).op, level) {
                (Op::Reduce(_), _) => g.shape(g.node(id).inputs[0]) == space,
                (_, Level::Elem) => shape == space,
                (_, Level::Row) => space.rank() >= 1 && shape.0[..] == space.0[..space.rank() - 1],
                (_, Level::Col) => false,
            };
            if !fits {
                continue;
            }
            let Some(rs) = reads(g, s, gi, id, level) else { continue };
            // Joining must not close a cycle: no outside operand may depend on the group.
            let acyclic = rs.iter().all(|r| match r {
                Read::Leaf { base, .. } | Read::OneHot { index: base, .. } => {
                    !upstream[base.index()].contains(&gi)
                }
                _ => true,
            });
            if acyclic {
                return Some((gi, level));
            }
        }
    }
    None
}

/// For a column sum of a tensor no loop computes: the first group that already reads
/// that tensor row by row over the same space, so the sum costs no pass of its own
/// (a layernorm's `colsum(dx̂)` beside the loop reading the product `dx̂`).
fn beside_a_reader(
    g: &Graph,
    s: &Schedule,
    upstream: &[BTreeSet<usize>],
    id: ValueId,
) -> Option<(usize, Level)> {
    let input = g.node(id).inputs[0];
    (0..s.groups.len()).find_map(|gi| {
        if g.shape(s.groups[gi].space) != g.shape(input) {
            return None;
        }
        let [Read::Leaf { base, .. }] = &reads(g, s, gi, id, Level::Col)?[..] else { return None };
        let reads_it = s.groups[gi].members.iter().any(|&m| {
            let level = s.member(m).map_or(Level::Elem, |x| x.1);
            reads(g, s, gi, m, level).unwrap_or_default().iter().any(|r| {
                matches!(r, Read::Leaf { base: b, coords, col: None } if b == base && coords[..] == [0, 1])
            })
        });
        (reads_it && !upstream[base.index()].contains(&gi)).then_some((gi, Level::Col))
    })
}

/// A new group for `id`: its space and level.
fn new_space(g: &Graph, id: ValueId, levels: &[Level]) -> Option<(ValueId, Level)> {
    // A column sum on its own is `ops::sum`, which keeps columns in registers down the
    // rows: only one of a value a loop computes anyway is worth fusing.
    if levels == [Level::Col] {
        return None;
    }
    if let Op::Reduce(_) = g.node(id).op {
        return Some((g.node(id).inputs[0], Level::Row));
    }
    (levels.contains(&Level::Elem) && rank(g, id) >= 1).then_some((id, Level::Elem))
}

/// Marks what must exist as tensors, drops dead members, and drops empty groups.
fn liveness(g: &Graph, s: &mut Schedule, wanted: &[bool], leaf: &dyn Fn(ValueId) -> bool, roots: &[ValueId]) {
    let mut needed: BTreeSet<ValueId> = roots.iter().copied().collect();
    let mut live: BTreeSet<ValueId> = BTreeSet::new();
    for id in g.ids().rev() {
        if !wanted[id.index()] || leaf(id) {
            continue;
        }
        match s.member(id) {
            Some((gi, level)) => {
                if !(needed.contains(&id) || live.contains(&id)) {
                    continue;
                }
                live.insert(id);
                for r in reads(g, s, gi, id, level).unwrap_or_default() {
                    match r {
                        Read::Member(m) => {
                            live.insert(m);
                        }
                        Read::Leaf { base, .. } | Read::OneHot { index: base, .. } => {
                            needed.insert(base);
                        }
                        Read::Fill(_) => {}
                    }
                }
            }
            None if needed.contains(&id) => {
                for input in kernel_operands(g, id) {
                    needed.insert(input);
                }
            }
            None => {}
        }
    }
    for group in &mut s.groups {
        group.members.retain(|m| live.contains(m));
    }
    s.needed = needed;
}

/// Products that run with a fused loop as their epilogue, by group: a 2-D product whose
/// only reader is one fused loop over its own shape that reads it row by row (and that
/// is not a root). The loop's body then runs on each row of the product as the GEMM
/// finishes it (`::adjoint::epilogue::product_rows`), and the product is never read
/// back from memory. At most one product per loop.
pub fn epilogues(g: &Graph, s: &Schedule, roots: &BTreeSet<ValueId>) -> BTreeMap<usize, ValueId> {
    let mut readers: BTreeMap<ValueId, Vec<Item>> = BTreeMap::new();
    for &item in &s.items {
        for v in s.reads_of(g, item) {
            readers.entry(v).or_default().push(item);
        }
    }
    let mut out = BTreeMap::new();
    for &item in &s.items {
        let Item::Kernel(p) = item else { continue };
        if !matches!(g.node(p).op, Op::Matmul) || rank(g, p) != 2 || roots.contains(&p) {
            continue;
        }
        let Some([Item::Group(gi)]) = readers.get(&p).map(|r| &r[..]) else { continue };
        let gi = *gi;
        if out.contains_key(&gi) || g.shape(s.groups[gi].space) != g.shape(p) {
            continue;
        }
        let row_by_row = s.groups[gi].members.iter().all(|&m| {
            let level = s.member(m).map_or(Level::Elem, |x| x.1);
            reads(g, s, gi, m, level).unwrap_or_default().iter().all(|r| match r {
                Read::Leaf { base, coords, col } if *base == p => coords[..] == [0, 1] && col.is_none(),
                Read::OneHot { index, .. } => *index != p,
                _ => true,
            })
        });
        if row_by_row {
            out.insert(gi, p);
        }
    }
    out
}

/// What a kernel reads: its inputs, except that a product reads a permuted operand
/// (a transpose, the heads of attention) through the permute: the GEMM takes strided
/// views.
pub fn kernel_operands(g: &Graph, id: ValueId) -> Vec<ValueId> {
    let node = g.node(id);
    match node.op {
        Op::Matmul => node.inputs.iter().map(|&i| permute_source(g, i).map_or(i, |p| p.0)).collect(),
        _ => node.inputs.clone(),
    }
}

/// The operand under a chain of permutes at `id`, and the one permutation the chain
/// makes (output axis `i` is the operand's axis `perm[i]`); `None` if `id` is no permute.
pub fn permute_source(g: &Graph, id: ValueId) -> Option<(ValueId, Vec<usize>)> {
    let (mut at, mut perm) = (id, None::<Vec<usize>>);
    while let Op::Layout(Layout::Permute(p)) = &g.node(at).op {
        perm = Some(match perm {
            None => p.clone(),
            Some(outer) => outer.iter().map(|&i| p[i]).collect(),
        });
        at = g.node(at).inputs[0];
    }
    perm.map(|p| (at, p))
}

/// Orders kernels and groups so each runs after what it reads (Kahn's algorithm,
/// lowest first node id first).
fn order(g: &Graph, s: &mut Schedule, leaf: &dyn Fn(ValueId) -> bool) {
    let item_of = |s: &Schedule, id: ValueId| -> Option<Item> {
        if leaf(id) {
            return None;
        }
        match s.member(id) {
            Some((gi, _)) => Some(Item::Group(gi)),
            None => Some(Item::Kernel(id)),
        }
    };
    let mut deps: BTreeMap<Item, BTreeSet<Item>> = BTreeMap::new();
    let mut key: BTreeMap<Item, ValueId> = BTreeMap::new();
    for &id in &s.needed {
        if let Some(Item::Kernel(k)) = item_of(s, id) {
            let d = kernel_operands(g, k).into_iter().filter_map(|i| item_of(s, i)).collect();
            deps.insert(Item::Kernel(k), d);
            key.insert(Item::Kernel(k), k);
        }
    }
    for (gi, group) in s.groups.iter().enumerate() {
        let Some(&first) = group.members.first() else { continue };
        let mut d = BTreeSet::new();
        for &m in &group.members {
            let level = s.member(m).map(|x| x.1).unwrap_or(Level::Elem);
            for r in reads(g, s, gi, m, level).unwrap_or_default() {
                if let Read::Leaf { base, .. } | Read::OneHot { index: base, .. } = r
                    && let Some(item) = item_of(s, base)
                {
                    d.insert(item);
                }
            }
        }
        d.remove(&Item::Group(gi));
        deps.insert(Item::Group(gi), d);
        key.insert(Item::Group(gi), first);
    }
    let mut done: BTreeSet<Item> = BTreeSet::new();
    let mut ready: BTreeSet<(ValueId, Item)> = BTreeSet::new();
    for (item, d) in &deps {
        if d.is_empty() {
            ready.insert((key[item], *item));
        }
    }
    while let Some((_, item)) = ready.pop_first() {
        s.items.push(item);
        done.insert(item);
        for (other, d) in &deps {
            if !done.contains(other) && d.contains(&item) && d.iter().all(|x| done.contains(x)) {
                ready.insert((key[other], *other));
            }
        }
    }
    assert_eq!(s.items.len(), deps.len(), "the scheduler's items must be acyclic");
}
