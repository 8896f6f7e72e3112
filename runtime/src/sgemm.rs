//! The runtime's own single-precision GEMM: micro-kernels (`microkernel.rs`: AVX-512
//! 8×32, AVX2 6×16, portable 4×8) that read `a` where it lies (or one strip of it,
//! copied), and packs of `b`.
//!
//! Why this shape of algorithm: on the workload's products (`K` of 64–3072, one side
//! of 256–1024) packing both operands, as `matrixmultiply` does, cost a fifth of the
//! product's time on this machine (`perf`, BENCHMARKS.md). Here `a` is not packed as a
//! whole: the micro-kernel broadcasts each `a[i, p]` from its own storage, which is as
//! cheap from a row-major `a` (one stream per row) as from a transposed one (adjacent
//! floats), so `xᵀ·dY` reads `x` in place. `b` is packed, once per `KC × NC`
//! block, into `NR`-column panels aligned to cache lines; the calling thread owns the
//! columns it packs, so nothing is packed twice when products are split by columns.
//! Short products (few strips of `a` to reuse a packed panel) read a row-major `b`'s
//! full panels where they lie instead (`b_in_place`), packing only a last, partial one.
//! The exception for `a`: a transposed `a` whose steps are 1 KiB or more apart falls in
//! a few sets of L1, so read in place its strip is fetched from L2 again for every
//! panel; such a strip is copied (`MR × KC` floats) before the panels of a block read
//! it (`a_packed`), when enough panels do.
//!
//! Loop order: for each `KC × NC` block of `b` (packed, 512 KiB: it stays in L2), for
//! each `MR`-row strip of `a` (`MR × KC` floats: they stay in L1), for each panel: one
//! tile of `c`, written for the first `KC` block and added to after. Edge tiles are the
//! kernel's business (masked or staged stores for columns, a kernel built for fewer
//! rows): no padding of `c`, no copies. A task's structure (causal attention) narrows
//! each tile's range of `k` or skips the tile.
//!
//! Each element of `c` is one sum over `k` in order (blocks of `KC` added in order), so
//! the result does not depend on how the caller splits `c` between threads.

use crate::gemm::{MatRef, Task};
use crate::microkernel::Micro;
use std::sync::atomic::{AtomicU8, Ordering};

/// Steps of `k` per packed block of `b`.
const KC: usize = 256;
/// Columns per packed block of `b` (`KC × NC` floats = 512 KiB).
const NC: usize = 512;

/// `c = a·b` (or `c += a·b` when `task.accumulate`) for the `a.rows × b.cols` block of
/// `c` at `c`, rows `ldc` apart (column stride 1), on this thread, skipping the tiles
/// and steps of `k` the task's structure rules out. `a` and `b` are checked views of
/// compatible shapes.
///
/// # Safety
/// The CPU must have `K`'s instruction set, and `c` must be exclusive access to the
/// `a.rows × b.cols` block it addresses (rows `ldc ≥ b.cols` apart).
pub(crate) unsafe fn sgemm<K: Micro>(
    a: MatRef,
    b: MatRef,
    c: *mut f32,
    ldc: usize,
    task: Task,
    on_strip: Option<OnStrip>,
) {
    let whole = whole_b::<K>(a, b, on_strip.is_some());
    // SAFETY: forwarded from this function's contract.
    unsafe { with_buffers::<K>(a, b, Some((c, ldc)), task, whole, on_strip) }
}

/// `c = a·b` on this thread with `c` never held whole: the product is run in blocks of
/// rows (`in_row_blocks`' answer), each block's `c` in a per-thread buffer that the next
/// block overwrites, and `on_strip` handed each block's rows as they are finished.
/// Returns false, having done nothing, where the loop order cannot finish rows a block
/// at a time (`in_row_blocks` is `None`); the caller then needs a whole `c`.
///
/// Why: a product with an epilogue reads `c` only through `on_strip`, so writing all
/// of it to memory is traffic for nothing. In a block buffer `c` stays in L1 (one
/// strip, where one block of `b` holds all of it) or in L2 (`whole_b`'s blocks of
/// rows). Measured on the 2-core Xeon over alternate steps in one process (`gpt bench
/// --alternate row-blocks=off,on`, BENCHMARKS.md): small 0.984–0.994 of its step time; tiny
/// level (its halves read `b` in place, which this does not cover).
///
/// # Safety
/// The CPU must have `K`'s instruction set.
pub(crate) unsafe fn sgemm_row_blocks<K: Micro>(a: MatRef, b: MatRef, task: Task, on_strip: OnStrip) -> bool {
    let Some(whole) = in_row_blocks::<K>(a, b, task.accumulate) else { return false };
    // SAFETY: forwarded from this function's contract.
    unsafe { with_buffers::<K>(a, b, None, task, Some(whole), Some(on_strip)) };
    true
}

/// `(floats of b packed at once, rows a block)` for a product whose rows can be finished
/// a block at a time with all of `b` packed first: what `whole_b` picks, or, where one
/// `KC × NC` block of `b` is all of it, one strip of `MR` rows. `None` where `b` is read
/// in place, for a product that adds to `c` (`accumulate`), or where neither holds.
fn in_row_blocks<K: Micro>(a: MatRef, b: MatRef, accumulate: bool) -> Option<(usize, usize)> {
    if accumulate || b_in_place(a, b) || ROW_BLOCKS.get() == Some(false) {
        return None;
    }
    let one_block = a.cols <= KC && b.cols <= NC;
    let block = a.cols * b.cols.div_ceil(K::NR) * K::NR;
    whole_b::<K>(a, b, true).or(one_block.then_some((block, K::MR)))
}

/// Runs the block loops with this thread's packing buffer, which holds the packed `b`
/// (`whole`'s floats, or one block), one strip of `a`, and, where `c` is `None`, one
/// block of rows of `c` (rows `ldc` apart from a pointer otherwise).
///
/// # Safety
/// As for `sgemm`; where `c` is `None`, `whole` is `Some`.
unsafe fn with_buffers<K: Micro>(
    a: MatRef,
    b: MatRef,
    c: Option<(*mut f32, usize)>,
    task: Task,
    whole: Option<(usize, usize)>,
    on_strip: Option<OnStrip>,
) {
    // The packing buffer is kept per thread: allocating it per call cost more than the
    // product itself on the tiny shapes. 16 floats of slack to align it to 64 bytes.
    thread_local! {
        static PACKED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    PACKED.with_borrow_mut(|packed| {
        let block = KC.min(a.cols) * NC.min(b.cols.div_ceil(K::NR) * K::NR);
        let b_len = whole.map_or(block, |(len, _)| len);
        // Room for one packed strip of `a` after `b`'s floats, and for a block of `c`
        // after that, each from a cache line.
        let a_at = b_len.div_ceil(16) * 16;
        let c_at = a_at + K::MR * KC;
        let c_len = if c.is_none() { whole.map_or(0, |(_, rows)| rows) * b.cols } else { 0 };
        let need = c_at + c_len + 16;
        if packed.len() < need {
            packed.resize(need, 0.0);
        }
        let align = packed.as_ptr().align_offset(64).min(16);
        let (bp, rest) = packed[align..].split_at_mut(a_at);
        let (ap, c_block) = rest.split_at_mut(c_at - a_at);
        let out = match c {
            Some((c, ldc)) => Rows::At(c, ldc),
            None => Rows::Block(&mut c_block[..c_len]),
        };
        // SAFETY: forwarded from this function's contract (the CPU has `K`'s set).
        unsafe {
            K::with_features(
                #[inline(always)]
                || blocks::<K>(a, b, out, task, bp, ap, whole, on_strip),
            )
        }
    })
}

/// `c` as the block loops see it: rows `ldc` apart from a pointer, or one block of rows
/// (`rows × b.cols`, adjacent) that each block of rows is computed into in turn.
enum Rows<'a> {
    At(*mut f32, usize),
    Block(&'a mut [f32]),
}

/// Called with `(i0, rows, c_rows)` as rows `i0..i0 + rows` of the block are finished
/// (`c_rows`: their elements, from row `i0`, rows `ldc` apart), in row order: a
/// product's fused epilogue runs on them while they are in cache.
pub(crate) type OnStrip<'a> = &'a mut dyn FnMut(usize, usize, &[f32]);

/// Bytes of `c` per block of rows in a product with an epilogue whose rows span more
/// than one block of `b`'s columns (`whole_b`).
const EPILOGUE_ROWS_BYTES: usize = 256 << 10;
/// The most floats `whole_b` packs at once (4 MiB: the small config's 1 and 2 MiB,
/// where it was measured to help; not GPT-2's 9 MiB GELU product, where all of `b`
/// would stream from L3 once per block of rows and an A/B was within noise).
const WHOLE_B_MAX: usize = 1 << 20;

/// For a product with an epilogue (`on_strip`) whose rows span more than one block of
/// `b`'s columns, and whose `c` is more than two blocks of rows: `(floats, rows)` when all of `b` is packed at once (block `(jc, pc)`
/// at `jc·k + pc·nc`, `nc` the block's columns rounded up to `NR`) and `c` is computed
/// in blocks of `rows` rows, each through every block of `b`, so that each row is
/// finished, and its epilogue run, while the block of `c` (256 KiB) is still in L2.
/// In the column-block order, a row's first columns were written a whole pass over
/// `c` earlier: the small config's GELU (1024 columns) and cross-entropy (2048) epilogues
/// read half and three quarters of their rows back from L3. `None`: the usual order.
fn whole_b<K: Micro>(a: MatRef, b: MatRef, epilogue: bool) -> Option<(usize, usize)> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let len = k * n.div_ceil(K::NR) * K::NR;
    let rows = (EPILOGUE_ROWS_BYTES / 4 / n.max(1) / K::MR).max(1) * K::MR;
    // A `c` of at most two blocks of rows stays in L2 in the usual order anyway.
    let big_c = m * n * 4 > 2 * EPILOGUE_ROWS_BYTES;
    (epilogue && n > NC && big_c && len <= WHOLE_B_MAX && !b_in_place(a, b)).then_some((len, rows))
}

/// The block loops.
///
/// # Safety
/// As for `sgemm`, `out` standing for `c`; `bp` is 64-byte aligned and holds
/// `min(KC, k) × NC` rounded up, or what `whole` (`whole_b`'s or `in_row_blocks`'
/// answer) asks for. A `Rows::Block` comes with `whole` and holds its rows × `n`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn blocks<K: Micro>(
    a: MatRef,
    b: MatRef,
    mut out: Rows,
    task: Task,
    bp: &mut [f32],
    ap: &mut [f32],
    whole: Option<(usize, usize)>,
    mut on_strip: Option<OnStrip>,
) {
    let (mr, nr) = (K::MR, K::NR);
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let accumulate = task.accumulate;
    if m == 0 || n == 0 {
        return;
    }
    // Rows `i0..i0 + rows` of `c` (from `c`, rows `ldc` apart), finished.
    // SAFETY (of each call): the rows lie in the block `c` gives exclusive access to,
    // and nothing writes them before the slice's last use.
    let finished = |c: *mut f32, ldc: usize, i0: usize, rows: usize| unsafe {
        std::slice::from_raw_parts(c.add(i0 * ldc), (rows - 1) * ldc + n)
    };
    if k == 0 {
        // Only a whole `c` comes here: `in_row_blocks` needs `b`'s packed floats.
        let Rows::At(c, ldc) = out else { return };
        if !accumulate {
            for i in 0..m {
                // SAFETY: row `i < m` of the block `c` gives exclusive access to.
                unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), n) }.fill(0.0);
            }
        }
        if let Some(f) = on_strip.as_mut() {
            f(0, m, finished(c, ldc, 0, m));
        }
        return;
    }
    let in_place = b_in_place(a, b);
    let pack_a = a_packed::<K>(a, b);
    // Where block `(jc, pc)` of `b` lies in `bp` when all of `b` is packed.
    let block_at = |jc: usize, pc: usize| jc * k + pc * NC.min(n - jc).div_ceil(nr) * nr;
    if whole.is_some() {
        for jc in (0..n).step_by(NC) {
            for pc in (0..k).step_by(KC) {
                pack_b(b, pc, KC.min(k - pc), jc, NC.min(n - jc), nr, &mut bp[block_at(jc, pc)..]);
            }
        }
    }
    let block_rows = whole.map_or(m, |(_, rows)| rows);
    for ic in (0..m).step_by(block_rows) {
        // Where this block's rows go, and the row of `c` there holds.
        let (c, ldc, row0) = match &mut out {
            Rows::At(c, ldc) => (*c, *ldc, 0),
            Rows::Block(rows) => (rows.as_mut_ptr(), n, ic),
        };
        for jc in (0..n).step_by(NC) {
            let nc = NC.min(n - jc);
            for pc in (0..k).step_by(KC) {
                let kc = KC.min(k - pc);
                let bp = if whole.is_some() {
                    &mut bp[block_at(jc, pc)..]
                } else if !in_place {
                    pack_b(b, pc, kc, jc, nc, nr, bp);
                    &mut *bp
                } else {
                    if !nc.is_multiple_of(nr) {
                        // Read in place, the last panel's rows would run past `b`'s
                        // columns: that one panel is packed (zero-padded), at the start of
                        // `bp`.
                        let j0 = nc - nc % nr;
                        pack_panel(b, pc, jc + j0, nc - j0, nr, &mut bp[..kc * nr]);
                    }
                    &mut *bp
                };
                let block = Block { jc, nc, pc, kc, in_place };
                for ir in (ic..m.min(ic + block_rows)).step_by(mr) {
                    let rows = mr.min(m - ir);
                    let a_strip = if pack_a {
                        pack_a_strip(a, ir, rows, pc, kc, mr, ap);
                        Some(&*ap)
                    } else {
                        None
                    };
                    // SAFETY: forwarded from this function's contract; `bp` holds block
                    // `(jc, pc)` of `b` as packed above.
                    unsafe { strip::<K>(a, b, c, ldc, row0, task, bp, a_strip, block, ir, rows) };
                    // The last block of `b`'s columns and of `k`: these rows are done.
                    if jc + nc == n
                        && pc + kc == k
                        && let Some(f) = on_strip.as_mut()
                    {
                        f(ir, rows, finished(c, ldc, ir - row0, rows));
                    }
                }
            }
        }
    }
}

/// Block `(jc, pc)` of `b`: columns `jc..jc + nc`, steps `pc..pc + kc`, packed into
/// panels or (`in_place`) read where its full panels lie.
#[derive(Clone, Copy)]
struct Block {
    jc: usize,
    nc: usize,
    pc: usize,
    kc: usize,
    in_place: bool,
}

/// Rows `ir..ir + rows` of `c` through one block of `b`: a tile per panel. Row `i` of
/// `c` is at `c + (i − row0)·ldc` (`row0` is 0 but in a block buffer of rows).
///
/// # Safety
/// As for `blocks`, with `bp` holding the block as `blocks` packed it (panels of `kc`
/// rows from its start, or the last partial panel alone when read in place).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn strip<K: Micro>(
    a: MatRef,
    b: MatRef,
    c: *mut f32,
    ldc: usize,
    row0: usize,
    task: Task,
    bp: &[f32],
    a_strip: Option<&[f32]>,
    block: Block,
    ir: usize,
    rows: usize,
) {
    let nr = K::NR;
    let Block { jc, nc, pc, kc, in_place } = block;
    for jr in (0..nc).step_by(nr) {
        let cols = nr.min(nc - jr);
        // The steps of this block that can contribute to the tile.
        let (lo, hi) = task.k_range(ir, ir + rows, jc + jr, jc + jr + cols, a.cols);
        let (lo, hi) = (lo.max(pc), hi.min(pc + kc));
        let first = !task.accumulate && pc == 0;
        // Nothing to add: a tile is still written (as zeros) the first time.
        let (lo, steps) = if lo < hi {
            (lo, hi - lo)
        } else if first {
            (pc, 0)
        } else {
            continue;
        };
        // After the first block, and when accumulating, the tile is added to; a tile
        // whose first block had nothing to add was written as zeros.
        let add = !first;
        // The strip's first element, `a[ir, lo]`: inside `a.data` (checked view), or
        // step `lo` of its copy, `MR` floats a step.
        let (strip, rs, cs) = match a_strip {
            Some(packed) => (&packed[(lo - pc) * K::MR..], 1, K::MR),
            None => (&a.data[ir * a.row_stride + lo * a.col_stride..], a.row_stride, a.col_stride),
        };
        let (panel, ldb) = if !in_place {
            (&bp[jr * kc + (lo - pc) * nr..(jr + nr) * kc], nr)
        } else if cols == nr {
            (&b.data[lo * b.row_stride + jc + jr..], b.row_stride)
        } else {
            (&bp[(lo - pc) * nr..kc * nr], nr)
        };
        // SAFETY: the CPU has `K`'s instruction set (contract). `strip` starts at
        // `a[ir, lo]`, and the kernel reads `a[ir + i, lo + p]` for `i < rows`,
        // `p < steps ≤ k - lo`: all inside the checked view, so inside `a.data`; or
        // `strip` is the copy from step `lo`, whose `(kc - (lo - pc))·MR` floats hold
        // every `i + p·MR` the kernel reads (`steps ≤ pc + kc - lo`). `panel`
        // holds `steps` rows of `nr` floats, `ldb` apart: packed, or (in place, full
        // panels only) `b[lo + p, jc + jr + j]` for `p < steps ≤ k - lo`, `j < nr = cols`,
        // inside the checked view of `b` (column stride 1). The tile `c[ir.., jc + jr..]`,
        // `rows × cols`, lies in the block `c` gives exclusive access to (a block
        // buffer's row `ir - row0`: `row0 ≤ ir` and `ir + rows ≤ row0 + ` its rows).
        unsafe {
            let tile = c.add((ir - row0) * ldc + jc + jr);
            K::tile(rows, cols, steps, strip, rs, cs, panel, ldb, tile, ldc, add)
        };
    }
}

/// Whether each strip of `a` is copied (rows adjacent, steps `MR` floats apart) before
/// the panels read it: a transposed `a` whose steps are far apart, read by enough
/// panels to pay for the copy. `gemm_bench --quick --serial --pack-a off` against the
/// default on the 2-core Xeon (GFLOP/s, best of each run, BENCHMARKS.md): small's `xᵀ·dY`
/// (1 KiB steps) 141–147 → 146–153, GPT-2's (3 KiB) 126 → 148–152, the 4 KiB ones
/// 113–118 → 136–147 (level with `matrixmultiply`, which `gemm::kernel_for` still picks
/// for those); tiny's `hᵀ·dY` (1 KiB, two panels) 148–150 → 113–114 when forced, hence
/// the panel count.
fn a_packed<K: Micro>(a: MatRef, b: MatRef) -> bool {
    let transposed = a.row_stride == 1 && a.col_stride > 1;
    transposed
        && PACK_A.get().unwrap_or(a.col_stride >= A_PACK_MIN_STRIDE && b.cols >= A_PACK_MIN_PANELS * K::NR)
}

/// The least distance between steps of `a`, in floats, at which a strip is copied: 1
/// KiB, where a strip's lines fall in 4 of L1's 64 sets.
const A_PACK_MIN_STRIDE: usize = 256;
/// The fewest panels of `b` (per block) that must read a strip for it to be copied.
const A_PACK_MIN_PANELS: usize = 8;

/// Whether products with an epilogue may run in blocks of rows (`sgemm_row_blocks`);
/// `None` or `Some(true)`: wherever `in_row_blocks` allows.
static ROW_BLOCKS: Forced = Forced::new();

/// `Some(false)` keeps every product with an epilogue on a whole `c`, process-wide;
/// `None` (or `Some(true)`) runs them in blocks of rows wherever the loop order allows
/// (`sgemm_row_blocks`). For tests and benchmarks.
pub fn force_row_blocks(allow: Option<bool>) {
    ROW_BLOCKS.set(allow);
}

/// Whether every transposed `a`'s strips are copied; `None`: `a_packed`'s rule.
static PACK_A: Forced = Forced::new();

/// Forces every transposed `a`'s strips to be copied (`Some(true)`) or read in place
/// (`Some(false)`) in every product on the own kernels, process-wide; `None`: by
/// stride and width (`a_packed`). For tests and benchmarks.
pub fn force_a_packing(pack: Option<bool>) {
    PACK_A.set(pack);
}

/// Rows `ir..ir + rows` and steps `pc..pc + kc` of a transposed `a` (`row_stride` 1)
/// into `ap`, step `p`'s rows at `p·mr`.
#[inline(always)]
fn pack_a_strip(a: MatRef, ir: usize, rows: usize, pc: usize, kc: usize, mr: usize, ap: &mut [f32]) {
    let first = ir + pc * a.col_stride;
    // A full strip's rows are copied at the kernel's constant width (inline moves, not a
    // `memcpy` call per step, which was 1.8% of a small step in `perf`).
    match (rows == mr).then_some(mr) {
        Some(8) => return pack_a_full::<8>(a, first, kc, ap),
        Some(6) => return pack_a_full::<6>(a, first, kc, ap),
        Some(4) => return pack_a_full::<4>(a, first, kc, ap),
        _ => {}
    }
    for p in 0..kc {
        let at = first + p * a.col_stride;
        ap[p * mr..p * mr + rows].copy_from_slice(&a.data[at..at + rows]);
    }
}

/// `pack_a_strip` for a strip of `MR` rows, from `a.data[first..]`.
#[inline(always)]
fn pack_a_full<const MR: usize>(a: MatRef, first: usize, kc: usize, ap: &mut [f32]) {
    for (p, dst) in ap[..kc * MR].chunks_exact_mut(MR).enumerate() {
        let at = first + p * a.col_stride;
        let dst: &mut [f32; MR] = dst.try_into().expect("MR floats");
        *dst = a.data[at..at + MR].try_into().expect("MR floats");
    }
}

/// Whether the product reads `b`'s full panels where they lie rather than packing them.
/// Packing copies each element of `b` once and pays for itself over the `m / MR` strips
/// that read the packed panel; for short products (the tiny config's 64-row halves)
/// the copy cost more than the strips gained (`gemm_bench`, BENCHMARKS.md). Only a
/// row-major `b` can be read in place: the kernel loads `NR` adjacent floats a step.
fn b_in_place(a: MatRef, b: MatRef) -> bool {
    b.col_stride == 1 && PACK_B.get().map_or(a.rows * a.cols <= IN_PLACE_MAX_A, |pack| !pack)
}

/// Products whose `a` has at most this many elements read a row-major `b` in place
/// (`b_in_place`). Measured on the AMD EPYC (`gemm_bench --quick --serial`, two runs,
/// BENCHMARKS.md): in place 3–11% ahead on every tiny shape (64 and 128 rows, `a` up to
/// 128×256) and on the attention heads (128×128×64); at 512 rows mixed, and packing
/// ahead by up to 18% where `b` is wide (512×256×1024).
const IN_PLACE_MAX_A: usize = 128 * 256;

/// Whether `b` is packed (else read in place where it is row-major); `None`:
/// `b_in_place`'s rule.
static PACK_B: Forced = Forced::new();

/// Forces `b` to be packed (`Some(true)`) or read in place where it is row-major
/// (`Some(false)`) in every product on the own kernels, process-wide; `None`: by size.
/// For tests and benchmarks.
pub fn force_b_packing(pack: Option<bool>) {
    PACK_B.set(pack);
}

/// A yes/no choice that tests and benchmarks can force process-wide; `None` leaves it
/// to the product's own rule.
struct Forced(AtomicU8);

impl Forced {
    const fn new() -> Forced {
        Forced(AtomicU8::new(0))
    }

    fn set(&self, choice: Option<bool>) {
        self.0.store(choice.map_or(0, |yes| if yes { 2 } else { 1 }), Ordering::Relaxed);
    }

    fn get(&self) -> Option<bool> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            choice => Some(choice == 2),
        }
    }
}

/// `b[pc.., jc..]` (`kc × nc`) as `nr`-column panels, each `kc` rows of `nr` floats,
/// zero past the last column.
fn pack_b(b: MatRef, pc: usize, kc: usize, jc: usize, nc: usize, nr: usize, bp: &mut [f32]) {
    if b.col_stride == 1 {
        // Row-major `b`: rows outer, so each row of the block is read once, front to
        // back, instead of once per panel in `nr`-float pieces 1–4 KiB apart; the
        // copies have the kernel's constant width (inline moves, not a `memmove` call
        // per 128 bytes, which was 3% of a small step in `perf`).
        match nr {
            32 => return pack_rows::<32>(b, pc, kc, jc, nc, bp),
            16 => return pack_rows::<16>(b, pc, kc, jc, nc, bp),
            8 => return pack_rows::<8>(b, pc, kc, jc, nc, bp),
            _ => {}
        }
    }
    for (panel, j0) in (0..nc).step_by(nr).enumerate() {
        let out = &mut bp[panel * nr * kc..(panel + 1) * nr * kc];
        pack_panel(b, pc, jc + j0, nr.min(nc - j0), nr, out);
    }
}

/// `pack_b` for a row-major `b` and panels of `NR` columns.
fn pack_rows<const NR: usize>(b: MatRef, pc: usize, kc: usize, jc: usize, nc: usize, bp: &mut [f32]) {
    let full = nc / NR;
    let tail = nc % NR;
    for p in 0..kc {
        let row = &b.data[(pc + p) * b.row_stride + jc..][..nc];
        let (whole, rest) = row.split_at(full * NR);
        for (panel, src) in whole.chunks_exact(NR).enumerate() {
            let dst: &mut [f32; NR] = (&mut bp[(panel * kc + p) * NR..][..NR]).try_into().expect("NR floats");
            *dst = src.try_into().expect("NR floats");
        }
        if tail > 0 {
            let dst = &mut bp[(full * kc + p) * NR..][..NR];
            dst[..tail].copy_from_slice(rest);
            dst[tail..].fill(0.0);
        }
    }
}

/// `b[pc.., j0..]` (`out.len() / nr` rows of `cols ≤ nr` floats) into `out` as rows of
/// `nr` floats, zero past `cols`.
fn pack_panel(b: MatRef, pc: usize, j0: usize, cols: usize, nr: usize, out: &mut [f32]) {
    let first = pc * b.row_stride + j0 * b.col_stride;
    if b.col_stride == 1 {
        // Row-major `b`: each panel row is a contiguous run.
        for (p, row) in out.chunks_exact_mut(nr).enumerate() {
            let at = first + p * b.row_stride;
            row[..cols].copy_from_slice(&b.data[at..at + cols]);
            row[cols..].fill(0.0);
        }
    } else if b.row_stride == 1 {
        // Column-major `b` (a transposed weight): columns are the contiguous runs,
        // transposed into panel rows eight columns at a time (`transpose_columns`).
        let kc = out.len() / nr;
        if cols < nr {
            out.fill(0.0);
        }
        let full_j = cols - cols % 8;
        for j in (0..full_j).step_by(8) {
            let cols8: [&[f32]; 8] =
                std::array::from_fn(|jj| &b.data[first + (j + jj) * b.col_stride..][..kc]);
            crate::microkernel::transpose_columns(cols8, kc, &mut out[j..], nr);
        }
        for j in full_j..cols {
            let col = &b.data[first + j * b.col_stride..];
            for p in 0..kc {
                out[p * nr + j] = col[p];
            }
        }
    } else {
        // Any other strides: element by element, down the panel.
        if cols < nr {
            out.fill(0.0);
        }
        for j in 0..cols {
            let col = &b.data[first + j * b.col_stride..];
            for (p, row) in out.chunks_exact_mut(nr).enumerate() {
                row[j] = col[p * b.row_stride];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::microkernel::Portable;

    #[test]
    fn strips_of_a_are_copied_only_when_far_apart_and_read_by_many_panels() {
        let _serial = crate::gemm::tests::KERNEL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        force_a_packing(None);
        let x = vec![0f32; 64 * 768];
        let w = vec![0f32; 64 * 512];
        let x_t = MatRef::row_major(&x, 64, 768).t(); // steps 768 floats (3 KiB) apart
        let x_near = MatRef::row_major(&x[..64 * 64], 64, 64).t(); // 256 bytes apart
        let wide = MatRef::row_major(&w, 64, 512);
        let narrow = MatRef::row_major(&w[..64 * 16], 64, 16);
        let nr = Portable::NR;
        assert!(a_packed::<Portable>(x_t, wide), "far apart, {} panels", 512 / nr);
        assert!(!a_packed::<Portable>(x_t, narrow), "two panels do not pay for the copy");
        assert!(!a_packed::<Portable>(x_near, wide), "near steps stay in L1");
        assert!(
            !a_packed::<Portable>(MatRef::row_major(&x, 768, 64), wide),
            "a row-major `a` is read in place"
        );
        force_a_packing(Some(true));
        assert!(a_packed::<Portable>(x_near, narrow));
        force_a_packing(Some(false));
        assert!(!a_packed::<Portable>(x_t, wide));
        force_a_packing(None);
    }

    #[test]
    fn rows_come_in_blocks_only_where_all_of_b_is_packed_first() {
        let _serial = crate::gemm::tests::KERNEL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        force_b_packing(None);
        let (x, w) = (vec![0f32; 512 * 1024], vec![0f32; 1024 * 1024]);
        let a = MatRef::row_major(&x[..512 * 256], 512, 256);
        let (nr, mr) = (Portable::NR, Portable::MR);
        let one_block = MatRef::row_major(&w[..256 * 256], 256, 256);
        assert_eq!(
            in_row_blocks::<Portable>(a, one_block, false),
            Some((256 * 256, mr)),
            "one strip a block"
        );
        let wide = MatRef::row_major(&w[..256 * 1024], 256, 1024);
        let whole = whole_b::<Portable>(a, wide, true);
        assert!(whole.is_some_and(|(len, rows)| len == 256 * 1024usize.div_ceil(nr) * nr && rows > mr));
        assert_eq!(in_row_blocks::<Portable>(a, wide, false), whole, "whole_b's blocks of rows");
        let deep = MatRef::row_major(&w[..1024 * 256], 1024, 256);
        let a_deep = MatRef::row_major(&x, 512, 1024);
        assert_eq!(in_row_blocks::<Portable>(a_deep, deep, false), None, "rows finish only at the last step");
        assert_eq!(in_row_blocks::<Portable>(a, one_block, true), None, "adding to c needs all of it");
        let short = MatRef::row_major(&x[..64 * 256], 64, 256);
        assert_eq!(in_row_blocks::<Portable>(short, one_block, false), None, "b read in place");
        force_row_blocks(Some(false));
        assert_eq!(in_row_blocks::<Portable>(a, one_block, false), None, "forced off");
        force_row_blocks(None);
    }

    #[test]
    fn a_product_in_row_blocks_hands_every_row_once_in_order() {
        let _serial = crate::gemm::tests::KERNEL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        force_b_packing(None);
        // One block of `b` (one strip a block, an edge strip of 5 rows) and all of a
        // wide `b` packed first (blocks of rows, an edge block), against a plain sum.
        for &(m, k, n) in &[(2005, 37, 45), (601, 70, 1100)] {
            let value = |i: usize, seed: usize| ((i * 7919 + seed) % 997) as f32 / 997.0 - 0.5;
            let x: Vec<f32> = (0..m * k).map(|i| value(i, 1)).collect();
            let y: Vec<f32> = (0..k * n).map(|i| value(i, 2)).collect();
            let (a, b) = (MatRef::row_major(&x, m, k), MatRef::row_major(&y, k, n));
            assert!(in_row_blocks::<Portable>(a, b, false).is_some(), "{m}×{k}×{n}");
            let (mut got, mut next) = (vec![f32::NAN; m * n], 0);
            let mut on_strip = |i0: usize, rows: usize, c_rows: &[f32]| {
                assert_eq!(i0, next, "rows in order, each once");
                got[i0 * n..(i0 + rows) * n].copy_from_slice(&c_rows[..rows * n]);
                next = i0 + rows;
            };
            let task = crate::gemm::Task::plain(crate::gemm::Kernel::Portable);
            // SAFETY: the portable kernel runs on any CPU.
            assert!(unsafe { sgemm_row_blocks::<Portable>(a, b, task, &mut on_strip) });
            assert_eq!(next, m);
            for (i, &g) in got.iter().enumerate() {
                let (r, j) = (i / n, i % n);
                let want: f32 = (0..k).map(|p| x[r * k + p] * y[p * n + j]).sum();
                assert!(
                    (g - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "{m}×{k}×{n} at ({r}, {j}): {g} vs {want}"
                );
            }
        }
    }
}
