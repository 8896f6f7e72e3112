//! The runtime's own single-precision GEMM: an AVX-512 8×32 micro-kernel that reads `a`
//! where it lies and packs only `b`.
//!
//! Why this shape of algorithm: on the workload's products (`K` of 64–3072, one side
//! of 256–1024) packing both operands, as `matrixmultiply` does, cost a fifth of the
//! product's time on this machine (`perf`, BENCHMARKS.md). Here `a` is never packed:
//! the micro-kernel broadcasts each `a[i, p]` from its own storage, which is as cheap
//! from a row-major `a` (eight row streams) as from a transposed one (eight adjacent
//! floats), so `xᵀ·dY` reads `x` in place. Only `b` is packed, once per `KC × NC`
//! block, into 32-column panels aligned to cache lines; the calling thread owns the
//! columns it packs, so nothing is packed twice when products are split by columns.
//!
//! Loop order: for each `KC × NC` block of `b` (packed, 512 KiB: it stays in L2), for
//! each 8-row strip of `a` (8 × `KC` floats: they stay in L1), for each 32-column
//! panel: one 8×32 tile of `c`, written for the first `KC` block and added to after.
//! The tile is 16 accumulators; per step of `k` it loads two vectors of `b` and
//! broadcasts eight floats of `a` into sixteen FMAs, so it is bound by the FMA units,
//! not by loads, on both AMD Zen 4 and Intel's AVX-512 cores. Edge tiles use masked
//! loads and stores (columns) and a kernel built for fewer rows (rows): no padding of
//! `c`, no copies.
//!
//! Each element of `c` is one sum over `k` in order (blocks of `KC` added in order), so
//! the result does not depend on how the caller splits `c` between threads.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use crate::gemm::{MatRef, Task};

/// Rows of a tile.
const MR: usize = 8;
/// Columns of a tile (two vectors of 16).
const NR: usize = 32;
/// Steps of `k` per packed block of `b`.
const KC: usize = 256;
/// Columns per packed block of `b` (`KC × NC` floats = 512 KiB).
const NC: usize = 512;

/// Whether this CPU can run the kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `c = a·b` (or `c += a·b` when `task.accumulate`) for the `a.rows × b.cols` block of
/// `c` at `c`, rows `ldc` apart (column stride 1), on this thread, skipping the tiles
/// and steps of `k` the task's structure rules out. `a` and `b` are checked views of
/// compatible shapes.
///
/// # Safety
/// AVX-512F must be available (`available()`), and `c` must be exclusive access to the
/// `a.rows × b.cols` block it addresses (rows `ldc ≥ b.cols` apart).
pub(crate) unsafe fn sgemm(a: MatRef, b: MatRef, c: *mut f32, ldc: usize, task: Task) {
    // The packing buffer is kept per thread: allocating it per call cost more than the
    // product itself on the tiny shapes. 16 floats of slack to align it to 64 bytes.
    thread_local! {
        static PACKED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    PACKED.with_borrow_mut(|packed| {
        let need = KC.min(a.cols) * NC.min(b.cols.div_ceil(NR) * NR) + 16;
        if packed.len() < need {
            packed.resize(need, 0.0);
        }
        let align = packed.as_ptr().align_offset(64).min(16);
        // SAFETY: forwarded from this function's contract.
        unsafe { blocks(a, b, c, ldc, task, &mut packed[align..]) }
    })
}

/// The block loops.
///
/// # Safety
/// As for `sgemm`; `bp` is 64-byte aligned and holds `min(KC, k) × NC` rounded up.
unsafe fn blocks(a: MatRef, b: MatRef, c: *mut f32, ldc: usize, task: Task, bp: &mut [f32]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let accumulate = task.accumulate;
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                // SAFETY: row `i < m` of the block `c` gives exclusive access to.
                unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), n) }.fill(0.0);
            }
        }
        return;
    }
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            pack_b(b, pc, kc, jc, nc, bp);
            for ir in (0..m).step_by(MR) {
                let rows = MR.min(m - ir);
                for jr in (0..nc).step_by(NR) {
                    let cols = NR.min(nc - jr);
                    // The steps of this block that can contribute to the tile.
                    let (lo, hi) = task.k_range(ir, ir + rows, jc + jr, jc + jr + cols, k);
                    let (lo, hi) = (lo.max(pc), hi.min(pc + kc));
                    let first = !accumulate && pc == 0;
                    // Nothing to add: a tile is still written (as zeros) the first time.
                    let (lo, steps) = if lo < hi {
                        (lo, hi - lo)
                    } else if first {
                        (pc, 0)
                    } else {
                        continue;
                    };
                    // After the first block, and when accumulating, the tile is added to;
                    // a tile whose first block had nothing to add was written as zeros.
                    let add = !first;
                    // The strip's first element, `a[ir, lo]`: inside `a.data` (checked view).
                    let strip = &a.data[ir * a.row_stride + lo * a.col_stride..];
                    let panel = &bp[jr * kc + (lo - pc) * NR..(jr + NR) * kc];
                    // SAFETY: AVX-512F is available (contract). `strip` starts at
                    // `a[ir, lo]`, and the kernel reads `a[ir + i, lo + p]` for
                    // `i < rows`, `p < steps ≤ k - lo`: all inside the checked view, so
                    // inside `a.data`. `panel` holds `steps` rows of 32 floats from a
                    // 64-byte aligned start (`bp` is aligned, and `jr · kc` and
                    // `(lo - pc) · 32` are multiples of 16). The tile `c[ir.., jc + jr..]`,
                    // `rows × cols`, lies in the block `c` gives exclusive access to.
                    unsafe {
                        let tile = c.add(ir * ldc + jc + jr);
                        kernel(rows, cols, steps, strip, a.row_stride, a.col_stride, panel, tile, ldc, add)
                    };
                }
            }
        }
    }
}

/// `b[pc.., jc..]` (`kc × nc`) as 32-column panels, each `kc` rows of 32 floats, zero
/// past the last column.
fn pack_b(b: MatRef, pc: usize, kc: usize, jc: usize, nc: usize, bp: &mut [f32]) {
    for (panel, j0) in (0..nc).step_by(NR).enumerate() {
        let out = &mut bp[panel * NR * kc..(panel + 1) * NR * kc];
        let cols = NR.min(nc - j0);
        let first = pc * b.row_stride + (jc + j0) * b.col_stride;
        if b.col_stride == 1 {
            // Row-major `b`: each panel row is a contiguous run.
            for (p, row) in out.chunks_exact_mut(NR).enumerate() {
                let at = first + p * b.row_stride;
                row[..cols].copy_from_slice(&b.data[at..at + cols]);
                row[cols..].fill(0.0);
            }
        } else {
            // Column-major or strided `b` (a transposed weight): columns are the
            // contiguous runs; write them down the panel.
            if cols < NR {
                out.fill(0.0);
            }
            for j in 0..cols {
                let col = &b.data[first + j * b.col_stride..];
                for (p, row) in out.chunks_exact_mut(NR).enumerate() {
                    row[j] = col[p * b.row_stride];
                }
            }
        }
    }
}

/// One `rows × cols` tile (`rows ≤ 8`, `cols ≤ 32`) over `kc` steps (0: the tile is
/// written as zeros, or left as it is when adding): dispatches to the kernel built for
/// that many rows.
///
/// # Safety
/// AVX-512F is available; `a` reads `a[i · rs + p · cs]` for `i < rows`, `p < kc` are in
/// bounds of `a`; `b` holds `kc × 32` floats from a 64-byte aligned start; `c` is
/// exclusive access to `rows` rows of `cols` floats, `ldc` apart.
#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
unsafe fn kernel(
    rows: usize,
    cols: usize,
    kc: usize,
    a: &[f32],
    rs: usize,
    cs: usize,
    b: &[f32],
    c: *mut f32,
    ldc: usize,
    add: bool,
) {
    debug_assert!(b.len() >= kc * NR && (kc == 0 || (rows - 1) * rs + (kc - 1) * cs < a.len()));
    let (a, b) = (a.as_ptr(), b.as_ptr());
    // SAFETY: forwarded from this function's contract.
    unsafe {
        match rows {
            8 => tile::<8>(kc, a, rs, cs, b, c, ldc, cols, add),
            7 => tile::<7>(kc, a, rs, cs, b, c, ldc, cols, add),
            6 => tile::<6>(kc, a, rs, cs, b, c, ldc, cols, add),
            5 => tile::<5>(kc, a, rs, cs, b, c, ldc, cols, add),
            4 => tile::<4>(kc, a, rs, cs, b, c, ldc, cols, add),
            3 => tile::<3>(kc, a, rs, cs, b, c, ldc, cols, add),
            2 => tile::<2>(kc, a, rs, cs, b, c, ldc, cols, add),
            _ => tile::<1>(kc, a, rs, cs, b, c, ldc, cols, add),
        }
    }
}

/// Off x86-64 the kernel is never chosen (`available()` is false).
#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(
    _rows: usize,
    _cols: usize,
    _kc: usize,
    _a: &[f32],
    _rs: usize,
    _cs: usize,
    _b: &[f32],
    _c: *mut f32,
    _ldc: usize,
    _add: bool,
) {
    unreachable!("the AVX-512 GEMM is only chosen on x86-64")
}

/// The micro-kernel for `R` rows: `R × 2` accumulators over `kc` steps, then one masked
/// store (or load, add, store) per row and vector.
///
/// # Safety
/// As for `kernel`, with `rows = R`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize>(
    kc: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    add: bool,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let rows: [usize; R] = std::array::from_fn(|i| i * rs);
    let (mut ap, mut bp) = (a, b);
    for _ in 0..kc {
        // SAFETY: `bp` walks the panel 32 floats a step, 64-byte aligned (contract);
        // `ap + rows[i]` is `a[i, p]`, in bounds (contract).
        unsafe {
            let b0 = _mm512_load_ps(bp);
            let b1 = _mm512_load_ps(bp.add(16));
            for i in 0..R {
                let ai = _mm512_set1_ps(*ap.add(rows[i]));
                acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
                acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
            }
        }
        // Wrapping: after the last step these point past the data and are not read.
        ap = ap.wrapping_add(cs);
        bp = bp.wrapping_add(NR);
    }
    let mask = |n: usize| -> __mmask16 { if n >= 16 { 0xFFFF } else { ((1u32 << n) - 1) as __mmask16 } };
    let (m0, m1) = (mask(cols), mask(cols.saturating_sub(16)));
    for (i, acc) in acc.iter().enumerate() {
        let row = c.wrapping_add(i * ldc);
        // SAFETY: row `i < R` of the tile holds `cols` floats from `row` (contract);
        // the masks cover exactly those, and masked-off lanes are not accessed.
        unsafe {
            let (mut v0, mut v1) = (acc[0], acc[1]);
            if add {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, row));
            }
            _mm512_mask_storeu_ps(row, m0, v0);
            if m1 != 0 {
                let row1 = row.add(16);
                if add {
                    v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, row1));
                }
                _mm512_mask_storeu_ps(row1, m1, v1);
            }
        }
    }
}
