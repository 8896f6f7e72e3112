//! The micro-kernels of the runtime's own GEMM (`sgemm.rs`): one `MR × NR` tile of
//! `c` from an `MR`-row strip of `a`, read in place through its strides, and one packed
//! `NR`-column panel of `b`.
//!
//! Three builds, picked once at run time by `gemm::kernel()` (tests force each):
//! - `Avx512`: 8×32, sixteen zmm accumulators; per step of `k`, two loads of `b` and
//!   eight broadcasts of `a` into sixteen FMAs, so it is bound by the FMA units, not
//!   by loads. Column edges use masked loads and stores.
//! - `Avx2`: 6×16, twelve ymm accumulators (of sixteen registers: two for `b`, one for
//!   the broadcast); column edges go through a tile on the stack.
//! - `Portable`: 4×8 in plain arrays, which the compiler vectorises for the baseline
//!   target; for CPUs with neither.
//!
//! Each element of a tile is one in-order sum over the steps it is given, so results do
//! not depend on how `c` was split between threads.
//!
//! Beside them, `transpose_columns`: the AVX 8 × 8 transpose that packs a column-major
//! `b` (every `dY·Wᵀ`, the tied logits `h·Eᵀ`, the heads' `dO·V_hᵀ`) into panel rows.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// One micro-kernel: its tile shape and the tile itself.
pub(crate) trait Micro {
    /// Rows of a tile.
    const MR: usize;
    /// Columns of a tile, and of a packed panel of `b`.
    const NR: usize;

    /// `c[i, j] (+)= Σ_p a[i·rs + p·cs] · b[p·ldb + j]` for `i < rows ≤ MR`,
    /// `j < cols ≤ NR`, `p < kc` (`kc = 0` writes zeros, or leaves `c` when adding).
    /// `b` is a packed panel (`ldb = NR`) or, for short products, `NR` columns of a
    /// row-major `b` read where they lie (`ldb` its row stride).
    ///
    /// # Safety
    /// The CPU has the kernel's instruction set (`available`); `a[i·rs + p·cs]` is in
    /// bounds for every `i < rows`, `p < kc`; `b[p·ldb + j]` is in bounds for every
    /// `p < kc`, `j < NR` (no alignment needed); `c` is exclusive access to `rows` rows
    /// of `cols` floats, `ldc` apart.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        rows: usize,
        cols: usize,
        kc: usize,
        a: &[f32],
        rs: usize,
        cs: usize,
        b: &[f32],
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        add: bool,
    );

    /// `f()` compiled with this kernel's instruction set enabled: the block loops run
    /// inside it, so each tile is inlined into them rather than called (the call and
    /// its ten arguments cost 3% of a small step in `perf`).
    ///
    /// # Safety
    /// The CPU has the kernel's instruction set.
    unsafe fn with_features<R>(f: impl FnOnce() -> R) -> R;
}

/// AVX-512F, 8×32.
pub(crate) struct Avx512;
/// AVX2 and FMA, 6×16.
pub(crate) struct Avx2;
/// Any CPU, 4×8.
pub(crate) struct Portable;

/// Whether this CPU has AVX-512F.
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether this CPU has AVX2 and FMA.
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Calls `$f::<R>(args)` for the tile's row count `R` (`1..=$max`).
macro_rules! by_rows {
    ($rows:expr, $f:ident, [$($r:literal),*], $args:tt) => {
        match $rows {
            $( $r => by_rows!(@call $f, $r, $args), )*
            _ => unreachable!("a tile has 1 to MR rows"),
        }
    };
    (@call $f:ident, $r:literal, ($($a:expr),*)) => { $f::<$r>($($a),*) };
}

#[cfg(target_arch = "x86_64")]
impl Micro for Avx512 {
    const MR: usize = 8;
    const NR: usize = 32;

    unsafe fn with_features<R>(f: impl FnOnce() -> R) -> R {
        #[target_feature(enable = "avx512f")]
        unsafe fn enabled<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU has AVX-512F (contract).
        unsafe { enabled(f) }
    }

    #[inline(always)]
    unsafe fn tile(
        rows: usize,
        cols: usize,
        kc: usize,
        a: &[f32],
        rs: usize,
        cs: usize,
        b: &[f32],
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        add: bool,
    ) {
        debug_assert!(
            kc == 0 || (b.len() >= (kc - 1) * ldb + Self::NR && (rows - 1) * rs + (kc - 1) * cs < a.len())
        );
        let (a, b) = (a.as_ptr(), b.as_ptr());
        // SAFETY: forwarded from this function's contract.
        unsafe {
            by_rows!(rows, tile512, [1, 2, 3, 4, 5, 6, 7, 8], (kc, a, rs, cs, b, ldb, c, ldc, cols, add))
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Micro for Avx2 {
    const MR: usize = 6;
    const NR: usize = 16;

    unsafe fn with_features<R>(f: impl FnOnce() -> R) -> R {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn enabled<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU has AVX2 and FMA (contract).
        unsafe { enabled(f) }
    }

    #[inline(always)]
    unsafe fn tile(
        rows: usize,
        cols: usize,
        kc: usize,
        a: &[f32],
        rs: usize,
        cs: usize,
        b: &[f32],
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        add: bool,
    ) {
        debug_assert!(
            kc == 0 || (b.len() >= (kc - 1) * ldb + Self::NR && (rows - 1) * rs + (kc - 1) * cs < a.len())
        );
        let (a, b) = (a.as_ptr(), b.as_ptr());
        // SAFETY: forwarded from this function's contract.
        unsafe { by_rows!(rows, tile256, [1, 2, 3, 4, 5, 6], (kc, a, rs, cs, b, ldb, c, ldc, cols, add)) }
    }
}

impl Micro for Portable {
    const MR: usize = 4;
    const NR: usize = 8;

    unsafe fn with_features<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    unsafe fn tile(
        rows: usize,
        cols: usize,
        kc: usize,
        a: &[f32],
        rs: usize,
        cs: usize,
        b: &[f32],
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        add: bool,
    ) {
        let mut acc = [[0f32; 8]; 4];
        for p in 0..kc {
            let bp = &b[p * ldb..p * ldb + 8];
            for (i, acc) in acc.iter_mut().enumerate().take(rows) {
                let av = a[i * rs + p * cs];
                for (x, &bv) in acc.iter_mut().zip(bp) {
                    *x += av * bv;
                }
            }
        }
        for (i, acc) in acc.iter().enumerate().take(rows) {
            // SAFETY: row `i < rows` of the tile holds `cols` floats from here (contract).
            let row = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), cols) };
            for (x, &v) in row.iter_mut().zip(acc) {
                *x = if add { *x + v } else { v };
            }
        }
    }
}

/// The AVX-512 tile for `R` rows: `R × 2` accumulators over `kc` steps, then one
/// masked store (or load, add, store) per row and vector.
///
/// # Safety
/// As for `Micro::tile`, with `rows = R`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile512<const R: usize>(
    kc: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    add: bool,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let rows: [usize; R] = std::array::from_fn(|i| i * rs);
    let (mut ap, mut bp) = (a, b);
    for _ in 0..kc {
        // SAFETY: `bp` is `b[p·ldb]`, 32 floats in bounds from there (contract);
        // `ap + rows[i]` is `a[i, p]`, in bounds (contract).
        unsafe {
            let b0 = _mm512_loadu_ps(bp);
            let b1 = _mm512_loadu_ps(bp.add(16));
            for i in 0..R {
                let ai = _mm512_set1_ps(*ap.add(rows[i]));
                acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
                acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
            }
        }
        // Wrapping: after the last step these point past the data and are not read.
        ap = ap.wrapping_add(cs);
        bp = bp.wrapping_add(ldb);
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

/// The AVX2 tile for `R` rows: `R × 2` accumulators over `kc` steps; full tiles are
/// stored directly, edge tiles through a tile on the stack.
///
/// # Safety
/// As for `Micro::tile`, with `rows = R`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile256<const R: usize>(
    kc: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    add: bool,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let rows: [usize; R] = std::array::from_fn(|i| i * rs);
    let (mut ap, mut bp) = (a, b);
    for _ in 0..kc {
        // SAFETY: `bp` is `b[p·ldb]`, 16 floats in bounds from there (contract);
        // `ap + rows[i]` is `a[i, p]`, in bounds (contract).
        unsafe {
            let b0 = _mm256_loadu_ps(bp);
            let b1 = _mm256_loadu_ps(bp.add(8));
            for i in 0..R {
                let ai = _mm256_set1_ps(*ap.add(rows[i]));
                acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
            }
        }
        ap = ap.wrapping_add(cs);
        bp = bp.wrapping_add(ldb);
    }
    for (i, acc) in acc.iter().enumerate() {
        let row = c.wrapping_add(i * ldc);
        if cols == 16 {
            // SAFETY: row `i < R` of the tile holds 16 floats from `row` (contract).
            unsafe {
                let (mut v0, mut v1) = (acc[0], acc[1]);
                if add {
                    v0 = _mm256_add_ps(v0, _mm256_loadu_ps(row));
                    v1 = _mm256_add_ps(v1, _mm256_loadu_ps(row.add(8)));
                }
                _mm256_storeu_ps(row, v0);
                _mm256_storeu_ps(row.add(8), v1);
            }
        } else {
            let mut tmp = [0f32; 16];
            // SAFETY: `tmp` holds 16 floats; row `i` of the tile holds `cols < 16`
            // floats from `row` (contract), and only those are touched.
            unsafe {
                _mm256_storeu_ps(tmp.as_mut_ptr(), acc[0]);
                _mm256_storeu_ps(tmp.as_mut_ptr().add(8), acc[1]);
                let out = std::slice::from_raw_parts_mut(row, cols);
                for (x, &v) in out.iter_mut().zip(&tmp) {
                    *x = if add { *x + v } else { v };
                }
            }
        }
    }
}

/// `out[p · ld + jj] = cols[jj][p]` for `p < rows`, `jj < 8`: eight runs of `rows`
/// floats, transposed. This is how a column-major `b` (a transposed weight) is packed
/// into panel rows; element by element it cost a third of a tiny transposed product.
/// With AVX, per 8 × 8 block: eight loads, twenty-four shuffles, eight stores.
pub(crate) fn transpose_columns(cols: [&[f32]; 8], rows: usize, out: &mut [f32], ld: usize) {
    if rows == 0 {
        return;
    }
    let fits = cols.iter().all(|c| c.len() >= rows) && ld >= 8 && out.len() >= (rows - 1) * ld + 8;
    let full = rows - rows % 8;
    #[cfg(target_arch = "x86_64")]
    if fits && full > 0 && has_avx() {
        let src: [*const f32; 8] = std::array::from_fn(|jj| cols[jj].as_ptr());
        // SAFETY: the CPU has AVX (checked); each `src[jj]` starts `rows ≥ full` readable
        // floats, and rows `p < rows` of `out`, `ld ≥ 8` apart, hold 8 writable floats
        // each (`out.len() ≥ (rows − 1)·ld + 8`); `out` is borrowed mutably, so it cannot
        // overlap `cols`.
        unsafe { transpose_avx(src, full, out.as_mut_ptr(), ld) };
        transpose_scalar(cols, full..rows, out, ld);
        return;
    }
    transpose_scalar(cols, 0..rows, out, ld);
}

/// `transpose_columns` element by element over `rows` (CPUs without AVX, the rows past
/// the last whole block, and the tests' reference).
fn transpose_scalar(cols: [&[f32]; 8], rows: std::ops::Range<usize>, out: &mut [f32], ld: usize) {
    for p in rows {
        for (jj, col) in cols.iter().enumerate() {
            out[p * ld + jj] = col[p];
        }
    }
}

/// Whether the CPU has AVX (cached by `std`).
fn has_avx() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// # Safety
/// The CPU has AVX; `src[jj]` points at `rows` readable floats for each `jj < 8`
/// (`rows` a multiple of 8), and `dst` at 8 writable floats at each of `dst + p · ld`,
/// `p < rows`, none overlapping `src`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose_avx(src: [*const f32; 8], rows: usize, dst: *mut f32, ld: usize) {
    for p in (0..rows).step_by(8) {
        // SAFETY: `p + 8 ≤ rows`, so the loads and stores stay within the ranges the
        // contract gives.
        unsafe {
            let r: [__m256; 8] = std::array::from_fn(|jj| _mm256_loadu_ps(src[jj].add(p)));
            // Pairs of runs interleaved, then pairs of pairs, then 128-bit halves swapped.
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let out = [
                _mm256_permute2f128_ps::<0x20>(u0, u4),
                _mm256_permute2f128_ps::<0x20>(u1, u5),
                _mm256_permute2f128_ps::<0x20>(u2, u6),
                _mm256_permute2f128_ps::<0x20>(u3, u7),
                _mm256_permute2f128_ps::<0x31>(u0, u4),
                _mm256_permute2f128_ps::<0x31>(u1, u5),
                _mm256_permute2f128_ps::<0x31>(u2, u6),
                _mm256_permute2f128_ps::<0x31>(u3, u7),
            ];
            for (pp, row) in out.iter().enumerate() {
                _mm256_storeu_ps(dst.add((p + pp) * ld), *row);
            }
        }
    }
}

/// Off x86-64 only the portable kernel exists (`has_avx512`, `has_avx2` are false).
#[cfg(not(target_arch = "x86_64"))]
macro_rules! unavailable {
    ($($k:ident),*) => {$(
        impl Micro for $k {
            const MR: usize = 4;
            const NR: usize = 8;
            unsafe fn tile(
                _: usize, _: usize, _: usize, _: &[f32], _: usize, _: usize, _: &[f32],
                _: usize, _: *mut f32, _: usize, _: bool,
            ) {
                unreachable!("only the portable GEMM kernel runs off x86-64")
            }
        }
    )*};
}
#[cfg(not(target_arch = "x86_64"))]
unavailable!(Avx512, Avx2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposed_columns_match_element_by_element_at_any_length_and_stride() {
        let data: Vec<f32> = (0..3000).map(|i| i as f32 * 0.5 - 3.0).collect();
        for (rows, ld, stride, skew) in
            [(8, 8, 8, 0), (1, 8, 9, 0), (19, 32, 37, 1), (64, 13, 100, 7), (0, 8, 8, 0)]
        {
            let cols: [&[f32]; 8] = std::array::from_fn(|jj| &data[skew + jj * stride..][..rows]);
            let len = if rows == 0 { 9 } else { (rows - 1) * ld + 8 + 1 };
            let mut fast = vec![f32::NAN; len];
            let mut slow = fast.clone();
            transpose_columns(cols, rows, &mut fast[1..], ld);
            transpose_scalar(cols, 0..rows, &mut slow[1..], ld);
            for p in 0..rows {
                for jj in 0..8 {
                    assert_eq!(fast[1 + p * ld + jj], cols[jj][p], "rows {rows} ld {ld} at ({p}, {jj})");
                }
            }
            // Same bits everywhere, untouched elements (NaN) included.
            assert!(fast.iter().zip(&slow).all(|(a, b)| a.to_bits() == b.to_bits()), "rows {rows} ld {ld}");
        }
    }
}
