//! Single-precision matrix products, `C = A·B`, on strided matrix views.
//!
//! The product runs in the runtime's own GEMM (`sgemm.rs`) with its AVX-512 micro-kernel
//! where the CPU has AVX-512 (except the shapes `kernel_for` sends to `matrixmultiply`),
//! else in `matrixmultiply`'s packed kernels (AVX2+FMA or portable, chosen at run time
//! by that crate); on the workload's shapes these measured fastest among the candidates
//! (`cargo run --release --example gemm_bench`, BENCHMARKS.md). The own AVX2 and
//! portable micro-kernels can be forced (`force_kernel`) and are tested like the
//! others. Operand strides are passed through, so a transposed view (column stride ≠ 1)
//! needs no copy. Every view is checked against its slice before the call: a bad view
//! is an `Err`, never an out-of-bounds read.

pub use crate::gemm_times::{ProductTime, record_products, take_product_times};
pub use crate::sgemm::{force_a_packing, force_b_packing, force_row_blocks};
pub use crate::structure::{Structure, Tri};
use std::sync::atomic::{AtomicU8, Ordering};

use crate::error::{Result, bail};
use crate::gemm_times;

/// A `rows × cols` matrix in `data`: element `(i, j)` at `i·row_stride + j·col_stride`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> MatRef<'a> {
        MatRef { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The same elements read as the transpose (no copy).
    pub fn t(self) -> MatRef<'a> {
        MatRef {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Whether every element the view names lies in `data`, and the strides fit `isize`.
    fn check(&self, what: &str) -> Result<()> {
        if self.rows == 0 || self.cols == 0 {
            return Ok(());
        }
        let last = (self.rows - 1)
            .checked_mul(self.row_stride)
            .and_then(|r| (self.cols - 1).checked_mul(self.col_stride).and_then(|c| r.checked_add(c)));
        match last {
            Some(last)
                if last < self.data.len()
                    && self.row_stride <= isize::MAX as usize
                    && self.col_stride <= isize::MAX as usize =>
            {
                Ok(())
            }
            _ => bail!(
                "gemm: {what} view {}×{} with strides ({}, {}) does not fit its {} elements",
                self.rows,
                self.cols,
                self.row_stride,
                self.col_stride,
                self.data.len()
            ),
        }
    }
}

/// Products smaller than this many multiply-adds run on one thread: below it, handing
/// half to another core costs more than it saves, and the pool's threads, spinning
/// after a job, slow the single-threaded elementwise work that follows (measured: the
/// tiny config's step went from 6.2 to 7.1 ms at 2²¹).
pub(crate) const PARALLEL_MIN_WORK: usize = 1 << 24;

/// `c = a·b`, `c` row-major `a.rows × b.cols` (overwritten). Large products are split
/// across rayon's persistent pool into disjoint blocks of `c` (`split`); each element
/// is still one dot product in the same order, so the result does not depend on the
/// thread count.
pub fn sgemm(a: MatRef, b: MatRef, c: &mut [f32]) -> Result<()> {
    product(a, b, c, b.cols, false, Structure::default())
}

/// `c += a·b`: the same product added to what `c` holds (a gradient's second
/// contribution, without a temporary).
pub fn sgemm_acc(a: MatRef, b: MatRef, c: &mut [f32]) -> Result<()> {
    product(a, b, c, b.cols, true, Structure::default())
}

/// `c = a·b` where `structure` says which products are known to be zero or unread
/// (causal attention): the work they stand for is skipped. Every element of `c` the
/// structure says is read equals the full product's.
pub fn sgemm_structured(a: MatRef, b: MatRef, c: &mut [f32], structure: Structure) -> Result<()> {
    structure.check(a, b)?;
    product(a, b, c, b.cols, false, structure)
}

/// One product's settings as `split` hands it down: the block's place in the whole
/// output (the diagonal is in whole-product coordinates).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Task {
    pub accumulate: bool,
    pub structure: Structure,
    /// The block's first row and column in the whole output.
    pub row0: usize,
    pub col0: usize,
    kernel: Kernel,
}

impl Task {
    /// A product that overwrites `c`, of no structure, on `kernel`.
    #[cfg(test)]
    pub(crate) fn plain(kernel: Kernel) -> Task {
        Task { accumulate: false, structure: Structure::default(), row0: 0, col0: 0, kernel }
    }

    /// The range of `p` that can contribute to rows `i0..i1`, columns `j0..j1` (block
    /// coordinates) of `c`, within `0..k`; empty when the tile is skipped.
    pub fn k_range(&self, i0: usize, i1: usize, j0: usize, j1: usize, k: usize) -> (usize, usize) {
        self.structure.k_range(i0 + self.row0, i1 + self.row0, j0 + self.col0, j1 + self.col0, k)
    }
}

/// `c = a·b` (or `c += a·b`) with row `i` of `c` at `c[i·ldc..]`.
fn product(
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    structure: Structure,
) -> Result<()> {
    check_product(a, b, c, ldc)?;
    let (m, n) = (a.rows, b.cols);
    if a.cols == 0 {
        if !accumulate {
            (0..m).for_each(|i| c[i * ldc..][..n].fill(0.0));
        }
        return Ok(());
    }
    let task = Task { accumulate, structure, row0: 0, col0: 0, kernel: kernel_for(a, structure) };
    let (started, threads) = (gemm_times::start(), threads());
    split(a, b, Out::rows_apart(c, m, n, ldc), task, threads);
    gemm_times::finish(started, a, b, task.kernel, false, threads);
    Ok(())
}

/// `c = a·b` with row `i` of the product at `c[i·ldc..i·ldc + n]` (`ldc ≥ n`): a product
/// written straight into a wider layout, such as one attention head's columns of the
/// merged heads. What lies between the rows is left as it is; `structure` as in
/// `sgemm_structured`.
pub fn sgemm_rows_apart(a: MatRef, b: MatRef, c: &mut [f32], ldc: usize, structure: Structure) -> Result<()> {
    structure.check(a, b)?;
    product(a, b, c, ldc, false, structure)
}

/// The shapes agree, both views fit their slices, and `c` holds the product's rows
/// `ldc` apart: exactly `m × n` floats when they are adjacent (`ldc = n`), at least
/// `(m − 1)·ldc + n` otherwise.
fn check_product(a: MatRef, b: MatRef, c: &[f32], ldc: usize) -> Result<()> {
    check_operands(a, b)?;
    let (m, n) = (a.rows, b.cols);
    if ldc == n && c.len() != m * n {
        bail!("gemm: the output has {} elements, not {m}×{n}", c.len());
    }
    if ldc < n || (m > 0 && c.len() < (m - 1) * ldc + n) {
        bail!("gemm: {} elements do not hold {m} rows of {n}, {ldc} apart", c.len());
    }
    Ok(())
}

/// That `a` and `b` multiply and that each view lies inside its slice.
fn check_operands(a: MatRef, b: MatRef) -> Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k {
        bail!("gemm: {m}×{k} · {}×{n} do not multiply", b.rows);
    }
    a.check("left")?;
    b.check("right")
}

/// The threads large products are split over: the pool's, or 1 in serial mode
/// (`parallel::threads`).
pub fn threads() -> usize {
    crate::parallel::threads()
}

/// A block of the output: `rows × cols` from `ptr`, rows `row_stride` apart, columns
/// adjacent. Made only from an exclusive borrow of the output (`whole`, `rows_apart`:
/// every element of the block lies inside it) and by splitting a block into two
/// disjoint ones, so no two blocks ever overlap.
struct Out {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    row_stride: usize,
}

// SAFETY: an `Out` is exclusive access to its elements (blocks are disjoint, and the
// `&mut [f32]` they came from stays borrowed until `sgemm` returns, after every
// `rayon::join` has), so handing one to another thread hands over that access alone.
unsafe impl Send for Out {}

impl Out {
    fn whole(c: &mut [f32], cols: usize) -> Out {
        Out { ptr: c.as_mut_ptr(), rows: c.len().checked_div(cols).unwrap_or(0), cols, row_stride: cols }
    }

    /// `rows` rows of `cols` from the start of `c`, `row_stride ≥ cols` apart; the
    /// caller checked that `c` holds them (`(rows − 1)·row_stride + cols` elements).
    fn rows_apart(c: &mut [f32], rows: usize, cols: usize, row_stride: usize) -> Out {
        debug_assert!(row_stride >= cols && (rows == 0 || c.len() >= (rows - 1) * row_stride + cols));
        Out { ptr: c.as_mut_ptr(), rows, cols, row_stride }
    }

    fn split_rows(self, top: usize) -> (Out, Out) {
        let bottom = Out { ptr: self.ptr.wrapping_add(top * self.row_stride), rows: self.rows - top, ..self };
        (Out { rows: top, ..self }, bottom)
    }

    fn split_cols(self, left: usize) -> (Out, Out) {
        let right = Out { ptr: self.ptr.wrapping_add(left), cols: self.cols - left, ..self };
        (Out { cols: left, ..self }, right)
    }
}

/// Halves the output until each part is small or has one thread, then multiplies.
/// The own kernel splits by columns whenever both halves keep whole 32-column panels:
/// each thread then packs only its own columns of `b` and reads `a` in place, so
/// nothing is packed twice. `matrixmultiply` packs both operands, so it splits so
/// that each half re-packs the smaller one.
fn split(a: MatRef, b: MatRef, c: Out, task: Task, threads: usize) {
    let (m, n) = (a.rows, b.cols);
    if threads < 2 || m * n * a.cols < PARALLEL_MIN_WORK || (m < 16 && n < 32) {
        sgemm_one(a, b, c, task, None);
        return;
    }
    let (t1, t2) = (threads / 2, threads - threads / 2);
    let by_columns = match task.kernel {
        Kernel::Avx512 | Kernel::Avx2 | Kernel::Portable => n >= 64,
        Kernel::Matrixmultiply => n > m && n >= 32,
    };
    if by_columns {
        let left = (n / 2).div_ceil(32) * 32;
        let (c_left, c_right) = c.split_cols(left);
        let b_left = MatRef { cols: left, ..b };
        let b_right = MatRef { data: &b.data[left * b.col_stride..], cols: n - left, ..b };
        let right = Task { col0: task.col0 + left, ..task };
        rayon::join(|| split(a, b_left, c_left, task, t1), || split(a, b_right, c_right, right, t2));
    } else {
        let top = m / 2;
        let (c_top, c_bottom) = c.split_rows(top);
        let a_top = MatRef { rows: top, ..a };
        let a_bottom = MatRef { data: &a.data[top * a.row_stride..], rows: m - top, ..a };
        let bottom = Task { row0: task.row0 + top, ..task };
        rayon::join(|| split(a_top, b, c_top, task, t1), || split(a_bottom, b, c_bottom, bottom, t2));
    }
}

/// The micro-kernels a product can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// `matrixmultiply`'s (AVX-512 16×16, AVX2, or portable, its own dispatch).
    Matrixmultiply,
    /// The runtime's own GEMM (`sgemm.rs`) with its AVX-512 8×32 micro-kernel.
    Avx512,
    /// The runtime's own GEMM with its AVX2+FMA 6×16 micro-kernel.
    Avx2,
    /// The runtime's own GEMM with its portable 4×8 micro-kernel.
    Portable,
}

impl Kernel {
    /// Every kernel, in `FORCED`'s numbering.
    const ALL: [Kernel; 4] = [Kernel::Matrixmultiply, Kernel::Avx512, Kernel::Avx2, Kernel::Portable];

    /// Whether this CPU can run the kernel.
    pub fn available(self) -> bool {
        match self {
            Kernel::Matrixmultiply | Kernel::Portable => true,
            Kernel::Avx512 => crate::microkernel::has_avx512(),
            Kernel::Avx2 => crate::microkernel::has_avx2(),
        }
    }

    /// The kernels this CPU can run (for tests and benchmarks).
    pub fn all_available() -> Vec<Kernel> {
        Kernel::ALL.into_iter().filter(|k| k.available()).collect()
    }
}

/// 0: choose; 1 + index in `Kernel::ALL`: forced (benchmarks and tests).
static FORCED: AtomicU8 = AtomicU8::new(0);

/// Forces one kernel for every product, process-wide (`None`: the default choice). A
/// kernel the CPU cannot run is never used: the default is used instead.
pub fn force_kernel(kernel: Option<Kernel>) {
    FORCED.store(kernel.map_or(0, |k| k as u8 + 1), Ordering::Relaxed);
}

/// The kernel products run on when nothing is forced and no shape rule applies: the own
/// AVX-512 one wherever the CPU has AVX-512 (ahead of `matrixmultiply` on most workload
/// shapes, within this machine's noise on the rest: `gemm_bench`, BENCHMARKS.md), else
/// `matrixmultiply`'s AVX2+FMA or portable kernels (which measured faster than the own
/// AVX2 and portable ones). A forced kernel replaces it.
pub fn kernel() -> Kernel {
    forced().unwrap_or_else(default_kernel)
}

/// The kernel `force_kernel` set, if the CPU can run it.
fn forced() -> Option<Kernel> {
    let forced = FORCED.load(Ordering::Relaxed) as usize;
    forced.checked_sub(1).and_then(|i| Kernel::ALL.get(i)).copied().filter(|k| k.available())
}

fn default_kernel() -> Kernel {
    if Kernel::Avx512.available() { Kernel::Avx512 } else { Kernel::Matrixmultiply }
}

/// The kernel for one product: a forced kernel if any, else `default_kernel()`, except
/// that an unstructured product whose left operand steps through `k` a multiple of 4 KiB
/// apart (`hᵀ·dY` with 1024, 2048 or 3072 columns in `h`) goes to `matrixmultiply`,
/// which packs `a`. Read in place, such a strip of `a` falls in one set of L1, so the
/// own kernel re-reads it from L2 for every panel of `b`; `gemm_bench` measured
/// `matrixmultiply` 7–40% ahead on exactly those rows, and the own kernel ahead on the
/// 1 KiB stride of `xᵀ·dY` in every run (BENCHMARKS.md). Since the own kernel copies
/// such strips (`sgemm::a_packed`) it is level with `matrixmultiply` on them on the Xeon;
/// the rule stays, as measured. Structured (causal) products keep the own kernel, which
/// alone skips their masked half.
fn kernel_for(a: MatRef, structure: Structure) -> Kernel {
    let aliases_in_l1 = a.col_stride >= 1024 && a.col_stride.is_multiple_of(1024);
    forced().unwrap_or_else(|| match default_kernel() {
        Kernel::Avx512 if aliases_in_l1 && structure == Structure::default() => Kernel::Matrixmultiply,
        default => default,
    })
}

/// `c = a·b` on this thread, calling `on_strip(i0, rows, c_rows)` as each block of rows
/// is finished, in row order (`c_rows`: the elements of rows `i0..i0 + rows`, `b.cols`
/// apart): a product's fused epilogue reads them while they are in cache. `c` is this
/// function's own: where the own kernels finish rows a block at a time it is never
/// held whole (`sgemm::sgemm_row_blocks`), else it is a pooled buffer. With
/// `matrixmultiply`'s kernel the whole product is one block.
pub(crate) fn sgemm_strips(
    a: MatRef,
    b: MatRef,
    on_strip: &mut dyn FnMut(usize, usize, &[f32]),
) -> Result<()> {
    check_operands(a, b)?;
    let (m, n) = (a.rows, b.cols);
    if m == 0 {
        return Ok(());
    }
    let structure = Structure::default();
    let task = Task { accumulate: false, structure, row0: 0, col0: 0, kernel: kernel_for(a, structure) };
    let started = gemm_times::start();
    if a.cols > 0 && n > 0 && task.kernel != Kernel::Matrixmultiply {
        use crate::microkernel::{Avx2, Avx512, Portable};
        use crate::sgemm::sgemm_row_blocks as own;
        // SAFETY: `kernel_for` picks a kernel only when `Kernel::available` says the CPU
        // has its instruction set.
        let done = unsafe {
            match task.kernel {
                Kernel::Avx512 => own::<Avx512>(a, b, task, &mut *on_strip),
                Kernel::Avx2 => own::<Avx2>(a, b, task, &mut *on_strip),
                _ => own::<Portable>(a, b, task, &mut *on_strip),
            }
        };
        if done {
            gemm_times::finish(started, a, b, task.kernel, true, 1);
            return Ok(());
        }
    }
    let mut c = crate::pool::take(m * n);
    if a.cols == 0 || n == 0 {
        c.fill(0.0);
        on_strip(0, m, &c);
    } else if task.kernel == Kernel::Matrixmultiply {
        sgemm_one(a, b, Out::whole(&mut c, n), task, None);
        on_strip(0, m, &c);
    } else {
        sgemm_one(a, b, Out::whole(&mut c, n), task, Some(on_strip));
    }
    crate::pool::give(c);
    gemm_times::finish(started, a, b, task.kernel, true, 1);
    Ok(())
}

/// One product on this thread; the views are already checked and `k > 0`. The own
/// kernels report finished rows to `on_strip`; `matrixmultiply` never does.
fn sgemm_one(a: MatRef, b: MatRef, c: Out, task: Task, on_strip: Option<crate::sgemm::OnStrip>) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    debug_assert!(c.rows == m && c.cols == n);
    if task.kernel != Kernel::Matrixmultiply {
        use crate::microkernel::{Avx2, Avx512, Portable};
        use crate::sgemm::sgemm as own;
        // SAFETY: `kernel_for` picks a kernel only when `Kernel::available` says the CPU
        // has its instruction set; `c` is exclusive access to this m×n block with row
        // stride `c.row_stride` (see `Out`).
        unsafe {
            match task.kernel {
                Kernel::Avx512 => own::<Avx512>(a, b, c.ptr, c.row_stride, task, on_strip),
                Kernel::Avx2 => own::<Avx2>(a, b, c.ptr, c.row_stride, task, on_strip),
                _ => own::<Portable>(a, b, c.ptr, c.row_stride, task, on_strip),
            }
        }
        return;
    }
    // SAFETY: `check` (in `product`, on the whole views; a row or column block of a
    // checked view is inside it) proved that every element the two views address lies
    // inside their slices and that the strides fit `isize`; `c` is exclusive access to
    // an m×n block of the output slice (row stride `c.row_stride` ≥ its width, column
    // stride 1; see `Out`), which cannot alias `a` or `b` (shared borrows). With
    // beta = 0, `c` is only written; with beta = 1 it is read and written. The
    // structure is not used: the full product equals it wherever it is read.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.data.as_ptr(),
            a.row_stride as isize,
            a.col_stride as isize,
            b.data.as_ptr(),
            b.row_stride as isize,
            b.col_stride as isize,
            if task.accumulate { 1.0 } else { 0.0 },
            c.ptr,
            c.row_stride as isize,
            1,
        );
    }
}

/// The same product through the `gemm` crate with `threads` threads (a benchmark
/// candidate; see `gemm_bench`).
#[cfg(feature = "gemm-candidates")]
pub fn gemm_crate(a: MatRef, b: MatRef, c: &mut [f32], threads: usize) -> Result<()> {
    check_product(a, b, c, b.cols)?;
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 || k == 0 {
        c.fill(0.0);
        return Ok(());
    }
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: as in `sgemm`: both views are checked against their slices, `c` is an
    // exclusive, non-aliased m×n row-major buffer (column stride 1, row stride n), and
    // with `read_dst` false it is only written.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn naive(a: MatRef, b: MatRef) -> Vec<f32> {
        let mut c = vec![0f32; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                let mut s = 0f64;
                for p in 0..a.cols {
                    s += f64::from(a.data[i * a.row_stride + p * a.col_stride])
                        * f64::from(b.data[p * b.row_stride + j * b.col_stride]);
                }
                c[i * b.cols + j] = s as f32;
            }
        }
        c
    }

    fn data(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| (((i + seed) * 7919) % 997) as f32 / 997.0 - 0.5).collect()
    }

    #[test]
    fn odd_sizes_and_transposed_views_match_the_naive_product() {
        let _serial = KERNEL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        on_every_path(odd_sizes_on_one_kernel);
    }

    #[test]
    fn per_shape_choice_sends_4_kib_strided_left_operands_to_matrixmultiply() {
        let _serial = KERNEL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        force_kernel(None);
        let h = data(64 * 1024, 1);
        let h_t = MatRef::row_major(&h, 64, 1024).t(); // steps of k 1024 floats apart
        let x = data(64 * 768, 2);
        let x_t = MatRef::row_major(&x, 64, 768).t();
        let causal = Structure { a: Tri::ZeroAbove, ..Structure::default() };
        if Kernel::Avx512.available() {
            assert_eq!(kernel_for(h_t, Structure::default()), Kernel::Matrixmultiply);
            assert_eq!(kernel_for(x_t, Structure::default()), Kernel::Avx512);
            assert_eq!(kernel_for(h_t, causal), Kernel::Avx512, "structured products keep the own kernel");
            force_kernel(Some(Kernel::Avx512));
            assert_eq!(
                kernel_for(h_t, Structure::default()),
                Kernel::Avx512,
                "a forced kernel is used for every shape"
            );
            force_kernel(None);
        } else {
            assert_eq!(kernel_for(h_t, Structure::default()), kernel());
        }
        // And the product chosen this way is right.
        let dy = data(64 * 40, 3);
        let dy = MatRef::row_major(&dy, 64, 40);
        let mut c = vec![0f32; 1024 * 40];
        sgemm(h_t, dy, &mut c).unwrap();
        for (got, want) in c.iter().zip(naive(h_t, dy)) {
            assert!((got - want).abs() <= 1e-4 * want.abs().max(1.0), "{got} vs {want}");
        }
    }

    /// The kernels this CPU can run.
    fn kernels() -> Vec<Kernel> {
        Kernel::all_available()
    }

    /// Runs `f` on every dispatch path this CPU has: each kernel forced, and on the own
    /// kernels `b` both packed and read in place (wherever it is row-major), each with
    /// every transposed `a`'s strips packed and with none; then restores the default
    /// choice. Hold `KERNEL_LOCK` around it.
    pub(crate) fn on_every_path(mut f: impl FnMut()) {
        for kernel in kernels() {
            force_kernel(Some(kernel));
            let packings: &[(Option<bool>, Option<bool>)] = if kernel == Kernel::Matrixmultiply {
                &[(None, None)]
            } else {
                &[
                    (Some(true), Some(true)),
                    (Some(true), Some(false)),
                    (Some(false), Some(true)),
                    (Some(false), Some(false)),
                ]
            };
            for &(pack_b, pack_a) in packings {
                force_b_packing(pack_b);
                force_a_packing(pack_a);
                f();
            }
        }
        force_b_packing(None);
        force_a_packing(None);
        force_kernel(None);
    }

    /// Products force a kernel process-wide: tests that force one run one at a time.
    pub(crate) static KERNEL_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn odd_sizes_on_one_kernel() {
        // Edge tiles in every direction (the own kernels' tiles are 8×32, 6×16 and
        // 4×8), and more than one block of their `KC` (256) and `NC` (512).
        for &(m, k, n) in &[
            (1, 1, 1),
            (1, 7, 1),
            (3, 5, 2),
            (17, 13, 31),
            (33, 64, 9),
            (65, 17, 129),
            (2, 300, 3),
            (257, 300, 70),
            (13, 520, 2100),
        ] {
            let (a, b) = (data(m * k, 1), data(k * n, 2));
            let (av, bv) = (MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n));
            // Transposed storage read through transposed views: the same matrices.
            let at: Vec<f32> = (0..k * m).map(|x| a[(x % m) * k + x / m]).collect();
            let bt: Vec<f32> = (0..n * k).map(|x| b[(x % k) * n + x / k]).collect();
            let (atv, btv) = (MatRef::row_major(&at, k, m).t(), MatRef::row_major(&bt, n, k).t());
            let want = naive(av, bv);
            for (x, y) in [(av, bv), (atv, bv), (av, btv), (atv, btv)] {
                let mut c = vec![f32::NAN; m * n];
                sgemm(x, y, &mut c).unwrap();
                for (p, q) in c.iter().zip(&want) {
                    let kernel = super::kernel();
                    assert!((p - q).abs() <= 1e-4 * (1.0 + q.abs()), "{kernel:?} {m}×{k}×{n}: {p} vs {q}");
                }
                // Accumulating onto what the output holds.
                let mut acc: Vec<f32> = (0..m * n).map(|i| (i % 5) as f32).collect();
                sgemm_acc(x, y, &mut acc).unwrap();
                for (i, (p, q)) in acc.iter().zip(&want).enumerate() {
                    let q = q + (i % 5) as f32;
                    assert!((p - q).abs() <= 1e-4 * (1.0 + q.abs()), "acc {m}×{k}×{n}: {p} vs {q}");
                }
                #[cfg(feature = "gemm-candidates")]
                for threads in [1, 2] {
                    let mut c = vec![f32::NAN; m * n];
                    gemm_crate(x, y, &mut c, threads).unwrap();
                    for (p, q) in c.iter().zip(&want) {
                        assert!(
                            (p - q).abs() <= 1e-4 * (1.0 + q.abs()),
                            "gemm crate {m}×{k}×{n}: {p} vs {q}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn strided_and_unaligned_views_match_the_naive_product() {
        let _serial = KERNEL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        on_every_path(|| {
            let kernel = super::kernel();
            // Neither stride 1 (every other column of a wider matrix), starting one float
            // into the buffer, so nothing is aligned; output rows start unaligned too.
            for &(m, k, n) in &[(9, 33, 45), (70, 257, 65), (1, 5, 1)] {
                let a = data(1 + m * 2 * k, 5);
                let b = data(1 + k * 3 * n, 6);
                let av = MatRef { data: &a[1..], rows: m, cols: k, row_stride: 2 * k, col_stride: 2 };
                let bv = MatRef { data: &b[1..], rows: k, cols: n, row_stride: 3 * n, col_stride: 3 };
                let bt = MatRef { data: &b[1..], rows: k, cols: n, row_stride: 3, col_stride: 3 * k };
                for y in [bv, bt] {
                    let want = naive(av, y);
                    let mut c = vec![f32::NAN; 1 + m * n];
                    sgemm(av, y, &mut c[1..]).unwrap();
                    for (p, q) in c[1..].iter().zip(&want) {
                        assert!(
                            (p - q).abs() <= 1e-4 * (1.0 + q.abs()),
                            "{kernel:?} {m}×{k}×{n}: {p} vs {q}"
                        );
                    }
                }
            }
        });
    }

    /// `x` with the zeros `tri` promises written in.
    fn triangular(mut x: Vec<f32>, n: usize, tri: Tri) -> Vec<f32> {
        for i in 0..n {
            for j in 0..n {
                let zero = match tri {
                    Tri::Full => false,
                    Tri::ZeroAbove => j > i,
                    Tri::ZeroBelow => j < i,
                };
                if zero {
                    x[i * n + j] = 0.0;
                }
            }
        }
        x
    }

    /// `structured` equals the naive product wherever the structure says `c` is read.
    fn check_structured(m: usize, k: usize, n: usize, structure: Structure, ta: bool) {
        let a = triangular(data(m * k, 7), m, if m == k { structure.a } else { Tri::Full });
        let b = triangular(data(k * n, 8), k, if k == n { structure.b } else { Tri::Full });
        let at: Vec<f32> = (0..k * m).map(|x| a[(x % m) * k + x / m]).collect();
        let av = if ta { MatRef::row_major(&at, k, m).t() } else { MatRef::row_major(&a, m, k) };
        let bv = MatRef::row_major(&b, k, n);
        let want = naive(av, bv);
        let mut c = vec![f32::NAN; m * n];
        sgemm_structured(av, bv, &mut c, structure).unwrap();
        for i in 0..m {
            for j in 0..n {
                if structure.lower_only && j > i {
                    continue;
                }
                let (p, q) = (c[i * n + j], want[i * n + j]);
                let kernel = super::kernel();
                assert!(
                    (p - q).abs() <= 1e-4 * (1.0 + q.abs()),
                    "{kernel:?} {structure:?} {m}×{k}×{n} at ({i}, {j}): {p} vs {q}"
                );
            }
        }
    }

    #[test]
    fn structured_products_match_the_full_product_where_it_is_read() {
        let _serial = KERNEL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let tris = [Tri::Full, Tri::ZeroAbove, Tri::ZeroBelow];
        on_every_path(|| {
            // Square: every combination, across tile edges and more than one `KC` block.
            for t in [1, 7, 8, 9, 33, 64, 300] {
                for a in tris {
                    for b in tris {
                        for lower_only in [false, true] {
                            check_structured(t, t, t, Structure { a, b, lower_only }, false);
                        }
                    }
                }
                for a in tris {
                    // A triangular left operand times a non-square one, plain and
                    // read through a transposed view (`Aᵀ·dO`).
                    for ta in [false, true] {
                        check_structured(t, t, 33, Structure { a, ..Default::default() }, ta);
                    }
                }
                // Scores before the mask: only the lower triangle is computed.
                check_structured(t, 40, t, Structure { lower_only: true, ..Default::default() }, false);
            }
            // Above the parallel threshold: split by rows (narrow) and by columns (the
            // diagonal is in whole-product coordinates in both halves).
            check_structured(1100, 1100, 33, Structure { a: Tri::ZeroAbove, ..Default::default() }, false);
            check_structured(1100, 1100, 33, Structure { a: Tri::ZeroBelow, ..Default::default() }, true);
            check_structured(640, 64, 640, Structure { lower_only: true, ..Default::default() }, false);
            check_structured(640, 640, 640, Structure { b: Tri::ZeroAbove, ..Default::default() }, false);
        });
        let a = [0f32; 6];
        let not_square = Structure { a: Tri::ZeroAbove, ..Default::default() };
        let e = sgemm_structured(
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&a, 3, 2),
            &mut [0.0; 4],
            not_square,
        );
        assert!(e.unwrap_err().message.contains("square"));
    }

    #[test]
    fn threaded_products_equal_single_threaded_ones_bit_for_bit() {
        let _serial = KERNEL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        on_every_path(threaded_equals_single_on_one_kernel);
    }

    fn threaded_equals_single_on_one_kernel() {
        // Above the parallel threshold, odd everywhere; tall and wide (split by rows
        // or columns, depending on the kernel), and tall and narrow (always split by
        // rows), with plain and transposed left operands.
        for (m, k, n) in [(1031, 129, 131), (131, 129, 1031), (4099, 131, 33)] {
            let (a, b) = (data(m * k, 3), data(k * n, 4));
            let at: Vec<f32> = (0..k * m).map(|x| a[(x % m) * k + x / m]).collect();
            for left in [MatRef::row_major(&a, m, k), MatRef::row_major(&at, k, m).t()] {
                let right = MatRef::row_major(&b, k, n);
                let mut one = vec![0f32; m * n];
                let task = Task {
                    accumulate: false,
                    structure: Structure::default(),
                    row0: 0,
                    col0: 0,
                    kernel: super::kernel(),
                };
                sgemm_one(left, right, Out::whole(&mut one, n), task, None);
                let want = naive(left, right);
                assert!(one.iter().zip(&want).all(|(x, y)| (x - y).abs() < 1e-3), "{m}×{k}×{n}");
                for threads in [2, 3, 4] {
                    let mut many = vec![f32::NAN; m * n];
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                    pool.install(|| sgemm(left, right, &mut many)).unwrap();
                    let same = one.iter().zip(&many).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{m}×{k}×{n} on {threads} threads");
                }
            }
        }
    }

    #[test]
    fn empty_products_and_bad_views() {
        let z: [f32; 0] = [];
        let mut c = vec![f32::NAN; 6];
        sgemm(MatRef::row_major(&z, 2, 0), MatRef::row_major(&z, 0, 3), &mut c).unwrap();
        assert!(c.iter().all(|&v| v == 0.0), "k = 0 gives zeros");
        let a = [1f32; 4];
        let too_short = MatRef { data: &a, rows: 2, cols: 3, row_stride: 3, col_stride: 1 };
        let e = sgemm(too_short, MatRef::row_major(&[1.0; 3], 3, 1), &mut [0.0; 2]).unwrap_err();
        assert!(e.message.contains("does not fit"), "{e}");
        let huge = MatRef { data: &a, rows: 2, cols: 2, row_stride: usize::MAX, col_stride: 1 };
        assert!(sgemm(huge, MatRef::row_major(&a, 2, 2), &mut [0.0; 4]).is_err());
        assert!(sgemm(MatRef::row_major(&a, 2, 2), MatRef::row_major(&a, 1, 4), &mut [0.0; 8]).is_err());
        assert!(sgemm(MatRef::row_major(&a, 2, 2), MatRef::row_major(&a, 2, 2), &mut [0.0; 3]).is_err());
    }
}
