//! One fused group as Rust: a closure run per row by `::adjoint::fused::rows`.
//!
//! Inside a row the group runs in *passes*: a pass is one `for` loop over the row's
//! columns computing the elementwise members whose operands are ready; between passes,
//! the row values (reductions over what the last pass stored, and arithmetic on them).
//! Layernorm is three passes (mean; centred values and their squares; the normalised
//! row), softmax three (max; exponentials and their sum; the quotient). An elementwise
//! value read in a later pass, or reduced, is kept in a row buffer: its output row when
//! it is materialised, else a scratch row. Everything fallible (sizes, constants, shape
//! checks) is hoisted before the loop, so the loop body cannot fail.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use super::emit::Emit;
use super::schedule::{Level, Read, Schedule, lead, reads};
use crate::dim::Dim;
use crate::ir::{DType, Graph, ValueId};
use crate::ops::{Op, Reduce, SelectOp, Source};
use crate::scalar::Scalar;

/// How the surrounding code names values.
pub struct Names<'a> {
    /// A node's local.
    pub local: &'a dyn Fn(ValueId) -> Ident,
    /// Whether that local is a reference (a leaf) rather than an owned tensor.
    pub is_ref: &'a dyn Fn(ValueId) -> bool,
}

/// A product the group runs as the epilogue of (`schedule::epilogues`): its rows reach
/// the body as `__prod` instead of being read from a tensor.
pub struct Epilogue {
    pub product: ValueId,
    /// The product's operands as `product_rows` takes them: `a, pa, b, pb`.
    pub call: TokenStream,
}

/// Where a row-long value is kept for later passes.
#[derive(Clone)]
enum Buffer {
    Output(usize),
    Scratch(usize),
}

/// `let` statements hoisted out of the loop, deduplicated by text.
#[derive(Default)]
struct Hoisted {
    lines: Vec<TokenStream>,
    by_text: BTreeMap<String, Ident>,
}

impl Hoisted {
    fn add(&mut self, prefix: &str, expr: TokenStream) -> Ident {
        let text = expr.to_string();
        if let Some(id) = self.by_text.get(&text) {
            return id.clone();
        }
        let id = format_ident!("__{}{}", prefix, self.by_text.len());
        self.lines.push(quote!(let #id = #expr;));
        self.by_text.insert(text, id.clone());
        id
    }
}

fn dims_of(g: &Graph, id: ValueId) -> Vec<Dim> {
    g.shape(id).0.clone()
}

/// The code computing group `gi`: output allocations, then one `rows` call. With
/// `lower` (`Causal::lower_loop`), row `r` computes only its columns up to the
/// diagonal (`..=r mod T`, rounded up to a multiple of 16) and writes zeros past them.
pub fn emit_group(
    g: &Graph,
    s: &Schedule,
    gi: usize,
    names: &Names,
    epilogue: Option<&Epilogue>,
    lower: bool,
    cx: &Emit,
) -> TokenStream {
    let product = epilogue.map(|e| e.product);
    let group = &s.groups[gi];
    let k = lead(g, group);
    let space = dims_of(g, group.space);
    let members = &group.members;
    let level = |m: ValueId| s.member(m).map(|x| x.1).unwrap_or(Level::Elem);
    let all_reads: BTreeMap<ValueId, Vec<Read>> =
        members.iter().map(|&m| (m, reads(g, s, gi, m, level(m)).unwrap_or_default())).collect();

    // ---- passes ----
    let mut pass: BTreeMap<ValueId, usize> = BTreeMap::new(); // Elem members
    let mut avail: BTreeMap<ValueId, usize> = BTreeMap::new(); // Row members
    let mut col_pass: BTreeMap<ValueId, usize> = BTreeMap::new(); // Col members: added to in this pass
    for &m in members {
        let ready = |r: &Read| match r {
            Read::Member(x) => pass.get(x).or(avail.get(x)).copied().unwrap_or(0),
            _ => 0,
        };
        match level(m) {
            Level::Elem => {
                let p = all_reads[&m].iter().map(ready).max().unwrap_or(0);
                pass.insert(m, p);
            }
            Level::Row => {
                let a = match (&g.node(m).op, &all_reads[&m][..]) {
                    (Op::Reduce(_), [Read::Member(x)]) => pass[x] + 1,
                    (Op::Reduce(_), [Read::Leaf { coords, .. }]) if coords.contains(&k) => 0,
                    // A reduction of a constant or a row-constant value: stored in pass 0.
                    (Op::Reduce(_), _) => 1,
                    _ => all_reads[&m].iter().map(ready).max().unwrap_or(0),
                };
                avail.insert(m, a);
            }
            // Added to in the pass that computes its operand (a leaf's row: the first).
            Level::Col => {
                col_pass.insert(m, all_reads[&m].iter().map(ready).max().unwrap_or(0));
            }
        }
    }
    let passes = pass
        .values()
        .chain(col_pass.values())
        .copied()
        .max()
        .map_or(0, |p| p + 1)
        .max(avail.values().copied().max().unwrap_or(0));

    // ---- buffers ----
    let outputs: Vec<ValueId> =
        members.iter().copied().filter(|&m| s.is_needed(m) && level(m) != Level::Col).collect();
    let sums: Vec<ValueId> = members.iter().copied().filter(|&m| level(m) == Level::Col).collect();
    let mut buffer: BTreeMap<ValueId, Buffer> = BTreeMap::new();
    for (i, &m) in outputs.iter().enumerate() {
        if level(m) == Level::Elem {
            buffer.insert(m, Buffer::Output(i));
        }
    }
    let mut scratch = 0;
    let mut kept: BTreeSet<ValueId> = BTreeSet::new();
    for &u in members {
        for r in &all_reads[&u] {
            if let Read::Member(x) = r
                && level(*x) == Level::Elem
                && ((level(u) == Level::Row && matches!(g.node(u).op, Op::Reduce(_)))
                    || pass.get(&u).is_some_and(|p| *p > pass[x]))
            {
                kept.insert(*x);
            }
        }
    }
    for &x in &kept {
        buffer.entry(x).or_insert_with(|| {
            scratch += 1;
            Buffer::Scratch(scratch - 1)
        });
    }
    // Reductions of non-members that are not contiguous rows get a scratch row too.
    let mut reduce_scratch: BTreeMap<ValueId, usize> = BTreeMap::new();
    for &m in members {
        if level(m) == Level::Row
            && matches!(g.node(m).op, Op::Reduce(_))
            && avail[&m] == 1
            && !matches!(all_reads[&m][0], Read::Member(_))
        {
            reduce_scratch.insert(m, scratch);
            scratch += 1;
        }
    }

    // ---- hoisted: sizes, constants, leaf views ----
    let mut hoist = Hoisted::default();
    let n = cx.dim(&space[k]);
    let rows = cx.dim(&Dim::product(&space[..k]));
    let lead_dims: Vec<TokenStream> = space[..k].iter().map(|d| cx.dim(d)).collect();
    let consts = RefCell::new(Hoisted::default());
    // Literal constants stay inline; ones that depend on sizes are computed once.
    let konst = |c: &Scalar| -> TokenStream {
        if c.factors.is_empty() {
            return cx.scalar(c);
        }
        let k = consts.borrow_mut().add("k", cx.scalar(c));
        quote!(#k)
    };
    // Leaf views: one flat slice per tensor, one per-row binding per way it is read.
    let mut views: BTreeMap<ValueId, Ident> = BTreeMap::new();
    let mut row_reads: BTreeMap<ReadKey, (Ident, bool)> = BTreeMap::new();
    let mut per_row = Vec::new();
    let leaf_reads = all_reads.values().flat_map(|rs| rs.iter());
    for r in leaf_reads {
        let (base, coords, col) = match r {
            Read::Leaf { base, coords, col } => (base, coords, col),
            Read::OneHot { index: base, coords } => (base, coords, &None),
            _ => continue,
        };
        let key = read_key(r);
        if row_reads.contains_key(&key) {
            continue;
        }
        if Some(*base) == product {
            // The product's row, handed over by the GEMM (read row by row: `epilogues`).
            let name = format_ident!("__prod_r{}", row_reads.len());
            per_row.push(quote!(let #name = &__prod[..__n];));
            row_reads.insert(key, (name, true));
            continue;
        }
        let flat = views
            .entry(*base)
            .or_insert_with(|| {
                let v = (names.local)(*base);
                let v = if (names.is_ref)(*base) { quote!(#v) } else { quote!(&#v) };
                let shape = cx.shape(&dims_of(g, *base));
                // Indices only feed one-hots along the row: each must be below its length.
                let call = if g.ty(*base).dtype == DType::Index {
                    quote!(::adjoint::fused::read_index(#v, #shape, __n)?)
                } else {
                    quote!(::adjoint::fused::read(#v, #shape)?)
                };
                hoist.add("x", call)
            })
            .clone();
        let along_row = coords.contains(&k);
        let lead_coords: Vec<usize> = coords.iter().copied().filter(|&c| c < k).collect();
        let all_lead = lead_coords == (0..k).collect::<Vec<_>>();
        let row_offset = if lead_coords.is_empty() {
            quote!(0usize)
        } else if all_lead && col.is_none() {
            if along_row { quote!(__r * __n) } else { quote!(__r) }
        } else if all_lead && along_row {
            // A slice of a wider row-major tensor: rows are its own width apart.
            let width = hoist.add("w", cx.dim(dims_of(g, *base).last().expect("a row has a last axis")));
            quote!(__r * #width)
        } else {
            // Strides of the tensor along each loop axis (0 where it is broadcast).
            let base_dims = dims_of(g, *base);
            let strides: Vec<TokenStream> = (0..k)
                .map(|axis| match coords.iter().position(|&c| c == axis) {
                    Some(p) => cx.dim(&Dim::product(&base_dims[p + 1..])),
                    None => quote!(0usize),
                })
                .collect();
            let st = hoist.add("st", quote!([#(#strides),*]));
            quote!(::adjoint::fused::offset(__r, &__lead, &#st))
        };
        // Read through a slice of its last axis: from that column of each row.
        let offset = match col {
            Some(c) => {
                let c = hoist.add("col", cx.dim(c));
                quote!(#row_offset + #c)
            }
            None => row_offset,
        };
        let name = format_ident!("{}_r{}", flat, row_reads.len());
        per_row.push(if along_row {
            quote!(let #name = &#flat[#offset..][..__n];)
        } else if g.ty(*base).dtype == DType::Index {
            quote!(let #name = #flat[#offset] as usize;)
        } else {
            quote!(let #name = #flat[#offset];)
        });
        row_reads.insert(key, (name, along_row));
    }

    // ---- the body ----
    let operand = |r: &Read, cur: Option<usize>| -> TokenStream {
        match r {
            Read::Member(x) => match level(*x) {
                Level::Row => {
                    let v = format_ident!("r{}", x.0);
                    quote!(#v)
                }
                Level::Elem if Some(pass[x]) == cur => {
                    let v = format_ident!("e{}", x.0);
                    quote!(#v)
                }
                Level::Elem => {
                    let b = buffer_ident(&buffer[x]);
                    quote!(#b[__c])
                }
                Level::Col => unreachable!("nothing in a loop reads its column sums"),
            },
            Read::Fill(f) => match &g.node(*f).op {
                Op::Source(Source::Fill { value, .. }) => {
                    let c = konst(value);
                    quote!(#c)
                }
                _ => unreachable!("a fill read is a fill node"),
            },
            Read::Leaf { .. } => {
                let (name, along_row) = &row_reads[&read_key(r)];
                if *along_row { quote!(#name[__c]) } else { quote!(#name) }
            }
            Read::OneHot { .. } => {
                let (name, _) = &row_reads[&read_key(r)];
                quote!((if __c == #name { 1.0f32 } else { 0.0f32 }))
            }
        }
    };
    let causal = members.iter().any(|&m| matches!(g.node(m).op, Op::Select(SelectOp::Causal { .. })));
    let lower = lower && k >= 1;
    let query = if k >= 1 && (causal || lower) {
        let q = hoist.add("d", cx.dim(&space[k - 1]));
        quote!(#q)
    } else {
        quote!(1usize)
    };
    // The columns each row computes: all of them, or those on or below the diagonal.
    let extent = if lower { quote!(__m) } else { quote!(__n) };
    let mut body = Vec::new();
    if lower {
        // Up to the diagonal, rounded up to whole 16-lane vectors (no scalar tails): the
        // columns past the diagonal that this adds are computed as the full loop would
        // (masked), and hold the reductions' identities (`Causal::lower_loop`).
        body.push(quote!(let __m: usize = (__r % #query + 1).next_multiple_of(16).min(__n);));
    }
    let row_values = |stage: usize, body: &mut Vec<TokenStream>| {
        for &m in members.iter().filter(|&&m| level(m) == Level::Row && avail[&m] == stage) {
            let v = format_ident!("r{}", m.0);
            let rs = &all_reads[&m];
            let value = match &g.node(m).op {
                Op::Reduce(r) => {
                    // The row reduced: a scratch row it was copied to, the row buffer of
                    // the member it reduces, or a contiguous row of a tensor.
                    let row = match (&rs[0], reduce_scratch.get(&m)) {
                        (_, Some(&j)) => buffer_ident(&Buffer::Scratch(j)),
                        (Read::Member(x), None) => buffer_ident(&buffer[x]),
                        (leaf, None) => row_reads[&read_key(leaf)].0.clone(),
                    };
                    match r {
                        Reduce::Max { .. } => quote!(::adjoint::fused::max(&#row[..#extent])),
                        _ => quote!(::adjoint::fused::sum(&#row[..#extent])),
                    }
                }
                op => {
                    scalar_expr(op, &rs.iter().map(|r| operand(r, None)).collect::<Vec<_>>(), &konst, &query)
                }
            };
            body.push(quote!(let #v: f32 = #value;));
        }
    };
    for p in 0..=passes {
        row_values(p, &mut body);
        if p == passes {
            break;
        }
        let mut lines = Vec::new();
        for &m in members.iter().filter(|&&m| pass.get(&m) == Some(&p)) {
            let v = format_ident!("e{}", m.0);
            let args: Vec<TokenStream> = all_reads[&m].iter().map(|r| operand(r, Some(p))).collect();
            let value = scalar_expr(&g.node(m).op, &args, &konst, &query);
            lines.push(quote!(let #v: f32 = #value;));
            if let Some(b) = buffer.get(&m) {
                let b = buffer_ident(b);
                lines.push(quote!(#b[__c] = #v;));
            }
        }
        for (i, &m) in sums.iter().enumerate().filter(|(_, m)| col_pass[*m] == p) {
            let a = format_ident!("__a{}", i);
            let value = operand(&all_reads[&m][0], Some(p));
            lines.push(quote!(#a[__c] += #value;));
        }
        if p == 0 {
            for (&m, &j) in &reduce_scratch {
                let b = buffer_ident(&Buffer::Scratch(j));
                let value = operand(&all_reads[&m][0], Some(0));
                lines.push(quote!(#b[__c] = #value;));
            }
        }
        if !lines.is_empty() {
            body.push(quote!(for __c in 0..#extent { #(#lines)* }));
        }
    }
    let mut stores = Vec::new();
    for (i, &m) in outputs.iter().enumerate() {
        let o = format_ident!("__o{}", i);
        if level(m) == Level::Row {
            let v = format_ident!("r{}", m.0);
            stores.push(quote!(#o[0] = #v;));
        } else if lower {
            stores.push(quote!(#o[__m..].fill(0.0);));
        }
    }

    // ---- assembly ----
    let out_locals: Vec<Ident> = outputs.iter().map(|&m| (names.local)(m)).collect();
    let out_shapes: Vec<TokenStream> = outputs.iter().map(|&m| cx.shape(&dims_of(g, m))).collect();
    let out_idents: Vec<Ident> = (0..outputs.len()).map(|i| format_ident!("__o{}", i)).collect();
    let widths: Vec<TokenStream> =
        outputs.iter().map(|&m| if level(m) == Level::Elem { quote!(__n) } else { quote!(1usize) }).collect();
    let reslice: Vec<TokenStream> = outputs
        .iter()
        .zip(&out_idents)
        .filter(|(m, _)| level(**m) == Level::Elem)
        .map(|(_, o)| quote!(let #o = &mut #o[..__n];))
        .collect();
    let scratch_idents: Vec<Ident> = (0..scratch).map(|j| format_ident!("__s{}", j)).collect();
    let scratch_lines = if scratch == 0 {
        quote!()
    } else {
        quote! {
            let [#(#scratch_idents),*] = ::adjoint::fused::scratch::<#scratch>(__scratch, __n);
            #(let #scratch_idents = &mut #scratch_idents[..__n];)*
        }
    };
    let consts = consts.into_inner().lines;
    let hoisted = hoist.lines;
    let lead_line = if lead_dims.is_empty() { quote!() } else { quote!(let __lead = [#(#lead_dims),*];) };
    let outs = quote!([#((::adjoint::fused::write(&mut #out_locals)?, #widths)),*]);
    let sum_locals: Vec<Ident> = sums.iter().map(|&m| (names.local)(m)).collect();
    let sum_shapes: Vec<TokenStream> = sums.iter().map(|&m| cx.shape(&dims_of(g, m))).collect();
    let sum_idents: Vec<Ident> = (0..sums.len()).map(|i| format_ident!("__a{}", i)).collect();
    let sums_arg = quote!([#((::adjoint::fused::write(&mut #sum_locals)?, __n)),*]);
    let row_body = quote! {
        #(#reslice)*
        #(let #sum_idents = &mut #sum_idents[..__n];)*
        #scratch_lines
        #(#per_row)*
        #(#body)*
        #(#stores)*
    };
    // The product's shape gives the rows of an epilogue.
    let rows_line = if epilogue.is_none() { quote!(let __rows: usize = #rows;) } else { quote!() };
    // Column sums: the `_with_sums` form of the call, their partial rows after the outputs.
    let (with_sums, sums_arg, sums_param) = if sums.is_empty() {
        ("", quote!(), quote!())
    } else {
        ("_with_sums", quote!(#sums_arg,), quote!([#(#sum_idents),*],))
    };
    let call = match epilogue {
        // Inlined into each instruction-set build of the row driver.
        None => {
            let driver = format_ident!("rows{with_sums}");
            quote! {
                ::adjoint::fused::#driver(
                    __rows, __n, #scratch, #outs, #sums_arg
                    #[inline(always)]
                    |__r, [#(#out_idents),*], #sums_param __scratch, __arith| { #row_body },
                )?;
            }
        }
        Some(e) => {
            let operands = &e.call;
            let driver = format_ident!("product_rows{with_sums}");
            quote! {
                // The product, each row handed to the loop body as soon as it is done.
                ::adjoint::epilogue::#driver(
                    #operands, #scratch, #outs, #sums_arg
                    #[inline(always)]
                    |__r, __prod: &[f32], [#(#out_idents),*], #sums_param __scratch, __arith| { #row_body },
                )?;
            }
        }
    };
    quote! {
        #(let mut #out_locals = ::adjoint::fused::output(#out_shapes)?;)*
        #(let mut #sum_locals = ::adjoint::fused::output(#sum_shapes)?;)*
        {
            let __n: usize = #n;
            #rows_line
            #lead_line
            #(#hoisted)*
            #(#consts)*
            #call
        }
    }
}

/// A per-row binding: the tensor, its axes' space axes, and the column a slice starts at.
type ReadKey = (ValueId, Vec<usize>, Option<Dim>);

fn read_key(r: &Read) -> ReadKey {
    match r {
        Read::Leaf { base, coords, col } => (*base, coords.clone(), col.clone()),
        Read::OneHot { index, coords } => (*index, coords.clone(), None),
        _ => unreachable!("only leaf and one-hot reads have keys"),
    }
}

fn buffer_ident(b: &Buffer) -> Ident {
    match b {
        Buffer::Output(i) => format_ident!("__o{}", i),
        Buffer::Scratch(j) => format_ident!("__s{}", j),
    }
}

/// One element (or row value) of a member op, from its operands.
fn scalar_expr(
    op: &Op,
    args: &[TokenStream],
    konst: &dyn Fn(&Scalar) -> TokenStream,
    query_rows: &TokenStream,
) -> TokenStream {
    match op {
        Op::Pointwise(p) => p.emit_scalar(args, konst),
        Op::Select(sel) => sel.emit_scalar(args, konst, &quote!(__c), &quote!((__r % #query_rows))),
        other => unreachable!("{} is not a member op", other.mnemonic()),
    }
}
