//! A packed single-precision GEMM with an AVX-512 12×32 micro-kernel, the runtime's own
//! candidate beside `matrixmultiply` (whose AVX-512 kernel is 16×16: one load of `b`
//! and sixteen broadcasts per sixteen FMAs, so it waits on loads; 12×32 issues two
//! loads and twelve broadcasts per twenty-four FMAs).
//!
//! BLIS's loop order: `b` is packed in `KC × NC` blocks of 32-column panels, `a` in
//! `MC × KC` blocks of 12-row panels, and the micro-kernel multiplies one `a` panel by
//! one `b` panel into a 12×32 tile of `c`, overwriting it for the first `KC` block and
//! adding for the rest. Edge tiles are computed whole into a local tile (the panels are
//! zero-padded) and only their valid part is written.
//!
//! Measured against `matrixmultiply` on the workload's shapes (`cargo run --release
//! --example gemm_bench`, BENCHMARKS.md) it does not win: within run-to-run noise on
//! the large shapes, well behind on the tiny ones. So `gemm::sgemm` never picks it on
//! its own; `gemm::force_kernel(Some(Kernel::Avx512))` does, for benchmarks and tests.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use crate::gemm::MatRef;

const MR: usize = 12;
const NR: usize = 32;
const KC: usize = 256;
const MC: usize = 240;
const NC: usize = 2048;

/// Whether this CPU can run the kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `c = a·b` for an `a.rows × b.cols` block of `c` at `c`, rows `ldc` apart (column
/// stride 1), on this thread. `a` and `b` are checked views and `k > 0`.
///
/// # Safety
/// AVX-512F must be available (`available()`), and `c` must be exclusive access to the
/// `a.rows × b.cols` block it addresses.
pub(crate) unsafe fn sgemm(a: MatRef, b: MatRef, c: *mut f32, ldc: usize) {
    let (m, n) = (a.rows, b.cols);
    // Packing buffers are kept per thread: allocating and zeroing them per call cost
    // more than the product itself on the tiny shapes.
    thread_local! {
        static PACKED: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    }
    PACKED.with_borrow_mut(|(ap, bp)| {
        let (need_a, need_b) = (MC.min(m.div_ceil(MR) * MR) * KC, KC * NC.min(n.div_ceil(NR) * NR));
        if ap.len() < need_a {
            ap.resize(need_a, 0.0);
        }
        if bp.len() < need_b {
            bp.resize(need_b, 0.0);
        }
        // SAFETY: forwarded from this function's contract.
        unsafe { blocks(a, b, c, ldc, ap, bp) }
    })
}

/// The block loops over packed panels.
///
/// # Safety
/// As for `sgemm`.
unsafe fn blocks(a: MatRef, b: MatRef, c: *mut f32, ldc: usize, ap: &mut [f32], bp: &mut [f32]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            pack_b(b, pc, kc, jc, nc, bp);
            for ic in (0..m).step_by(MC) {
                let mc = MC.min(m - ic);
                pack_a(a, ic, mc, pc, kc, ap);
                for jr in (0..nc).step_by(NR) {
                    let b_panel = &bp[jr * kc..(jr + NR) * kc];
                    for ir in (0..mc).step_by(MR) {
                        let a_panel = &ap[ir * kc..(ir + MR) * kc];
                        let mut acc = [0f32; MR * NR];
                        // SAFETY: AVX-512F is available (this function's contract); the
                        // panels hold `kc` steps of 12 and 32 floats (sliced just above),
                        // which is every read `kernel` makes.
                        unsafe { kernel(kc, a_panel, b_panel, &mut acc) };
                        let (rows, cols) = (MR.min(mc - ir), NR.min(nc - jr));
                        for i in 0..rows {
                            let src = &acc[i * NR..i * NR + cols];
                            let at = (ic + ir + i) * ldc + jc + jr;
                            // SAFETY: row `ic + ir + i < m`, columns `jc + jr .. + cols ≤
                            // n`: inside the block `c` gives exclusive access to.
                            let row = unsafe { std::slice::from_raw_parts_mut(c.add(at), cols) };
                            if pc > 0 {
                                row.iter_mut().zip(src).for_each(|(c, s)| *c += s);
                            } else {
                                row.copy_from_slice(src);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `b[pc.., jc..]` (`kc × nc`) as 32-column panels, each `kc` rows of 32, zero-padded.
fn pack_b(b: MatRef, pc: usize, kc: usize, jc: usize, nc: usize, bp: &mut [f32]) {
    for (panel, j0) in (0..nc).step_by(NR).enumerate() {
        let out = &mut bp[panel * NR * kc..(panel + 1) * NR * kc];
        let cols = NR.min(nc - j0);
        for p in 0..kc {
            let row = &mut out[p * NR..(p + 1) * NR];
            let at = (pc + p) * b.row_stride + (jc + j0) * b.col_stride;
            if b.col_stride == 1 {
                row[..cols].copy_from_slice(&b.data[at..at + cols]);
            } else {
                for (j, v) in row[..cols].iter_mut().enumerate() {
                    *v = b.data[at + j * b.col_stride];
                }
            }
            row[cols..].fill(0.0);
        }
    }
}

/// `a[ic.., pc..]` (`mc × kc`) as 12-row panels, each `kc` columns of 12, zero-padded.
fn pack_a(a: MatRef, ic: usize, mc: usize, pc: usize, kc: usize, ap: &mut [f32]) {
    for (panel, i0) in (0..mc).step_by(MR).enumerate() {
        let out = &mut ap[panel * MR * kc..(panel + 1) * MR * kc];
        let rows = MR.min(mc - i0);
        if a.row_stride == 1 {
            // Transposed `a`: each column of the panel is contiguous.
            for p in 0..kc {
                let at = (ic + i0) + (pc + p) * a.col_stride;
                out[p * MR..p * MR + rows].copy_from_slice(&a.data[at..at + rows]);
                out[p * MR + rows..(p + 1) * MR].fill(0.0);
            }
        } else {
            for i in 0..MR {
                if i < rows {
                    let at = (ic + i0 + i) * a.row_stride + pc * a.col_stride;
                    for p in 0..kc {
                        out[p * MR + i] = a.data[at + p * a.col_stride];
                    }
                } else {
                    for p in 0..kc {
                        out[p * MR + i] = 0.0;
                    }
                }
            }
        }
    }
}

/// The micro-kernel, `out = a_panel · b_panel` (12×32): 24 accumulators (12 rows × 2
/// vectors of 16), per step two loads of `b` and twelve broadcasts of `a`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn kernel(kc: usize, a: &[f32], b: &[f32], out: &mut [f32; MR * NR]) {
    assert!(a.len() >= kc * MR && b.len() >= kc * NR);
    let mut c = [[_mm512_setzero_ps(); 2]; MR];
    for p in 0..kc {
        // SAFETY: `p · 32 + 32 ≤ kc · 32 ≤ b.len()` (asserted above).
        let (b0, b1) = unsafe {
            (_mm512_loadu_ps(b.as_ptr().add(p * NR)), _mm512_loadu_ps(b.as_ptr().add(p * NR + 16)))
        };
        let ap = &a[p * MR..p * MR + MR];
        for (ci, &av) in c.iter_mut().zip(ap) {
            let ai = _mm512_set1_ps(av);
            ci[0] = _mm512_fmadd_ps(ai, b0, ci[0]);
            ci[1] = _mm512_fmadd_ps(ai, b1, ci[1]);
        }
    }
    for (i, ci) in c.iter().enumerate() {
        // SAFETY: row `i` of `out` is the 32 floats at `i · 32`, inside the array.
        unsafe {
            _mm512_storeu_ps(out.as_mut_ptr().add(i * NR), ci[0]);
            _mm512_storeu_ps(out.as_mut_ptr().add(i * NR + 16), ci[1]);
        }
    }
}

/// Off x86-64 the kernel is never chosen (`available()` is false).
#[cfg(not(target_arch = "x86_64"))]
fn kernel(_kc: usize, _a: &[f32], _b: &[f32], _out: &mut [f32; MR * NR]) {
    unreachable!("the AVX-512 GEMM is only chosen on x86-64")
}
