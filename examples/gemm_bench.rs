//! SGEMM candidates on the workload's shapes (`shared/peers/RESULTS.md` table (a)): the
//! runtime's `adjoint::gemm::sgemm` (split over the pool) with `matrixmultiply`'s kernel
//! and with each of the runtime's own micro-kernels (AVX-512, AVX2+FMA, portable), and
//! the own AVX-512 kernel with `b` forced packed and forced in place (`-` where `b` is
//! transposed or the CPU lacks AVX-512), and the `gemm` crate with one and two threads; `C = A·B` in f32, GFLOP/s median (best).
//! Built with `MMTEST_FEATURE=avx2,fma` (read by `matrixmultiply` at compile time),
//! `matrixmultiply`'s column uses its AVX2 kernel even on an AVX-512 CPU: that is how
//! its AVX2 path is compared with the own one.
//!
//! ```text
//! cargo run --release --example gemm_bench [-- --quick]
//! ```
//!
//! `--quick` leaves out the `gemm` crate (for A/B runs of the runtime's own kernels);
//! `--only TEXT` keeps the shapes whose description contains `TEXT`; `--serial` runs
//! the runtime's products on one thread, as each half of a split batch does (the
//! `half` rows are those halves' products on the small config); `--pack-a on|off`
//! copies every transposed `a`'s strips on the own kernels, or none (default: by
//! stride and width, as products do).

use std::time::{Duration, Instant};

use adjoint::gemm::{Kernel, MatRef, force_a_packing, force_b_packing, force_kernel, gemm_crate, sgemm};

/// `(m, k, n, what, a transposed, b transposed)`: the last rows read an operand through
/// a transposed view, as the weight gradients `xᵀ·dY`, the input gradients `dY·Wᵀ` and
/// the tied unembedding `h·Eᵀ` do.
const SHAPES: &[(usize, usize, usize, &str, bool, bool)] = &[
    (1024, 1024, 1024, "square", false, false),
    (128, 64, 64, "tiny qkvo", false, false),
    (128, 64, 256, "tiny w1", false, false),
    (128, 256, 64, "tiny w2", false, false),
    (64, 64, 64, "tiny half qkvo", false, false),
    (64, 64, 256, "tiny half w1", false, false),
    (64, 256, 64, "tiny half w2", false, false),
    (32, 32, 32, "tiny head P·V", false, false),
    (64, 64, 256, "tiny half dH = dY·W2ᵀ", false, true),
    (64, 256, 64, "tiny half dX = dH·W1ᵀ", false, true),
    (64, 64, 256, "tiny half logits = h·Eᵀ", false, true),
    (32, 32, 32, "tiny head dA = dO·Vᵀ", false, true),
    (64, 64, 64, "tiny half dW_qkvo = xᵀ·dY", true, false),
    (64, 64, 256, "tiny half dW1 = xᵀ·dY", true, false),
    (256, 64, 64, "tiny half dW2 = hᵀ·dY", true, false),
    (256, 64, 64, "tiny half dE = dZᵀ·h", true, false),
    (512, 256, 768, "small half qkv", false, false),
    (512, 256, 256, "small half o", false, false),
    (512, 256, 1024, "small half w1", false, false),
    (512, 1024, 256, "small half w2", false, false),
    (512, 256, 2048, "small half logits = h·Eᵀ", false, true),
    (512, 256, 1024, "small half dH = dY·W2ᵀ", false, true),
    (512, 1024, 256, "small half dX = dH·W1ᵀ", false, true),
    (512, 768, 256, "small half dX = dQKV·Wᵀ", false, false),
    (512, 2048, 256, "small half dh = dZ·E", false, false),
    (256, 512, 768, "small half dW_qkv = xᵀ·dY", true, false),
    (256, 512, 1024, "small half dW1 = xᵀ·dY", true, false),
    (1024, 512, 256, "small half dW2 = hᵀ·dY", true, false),
    (2048, 512, 256, "small half dE = dZᵀ·h", true, false),
    (128, 128, 64, "small head P·V", false, false),
    (1024, 256, 256, "small qkvo", false, false),
    (1024, 256, 1024, "small w1", false, false),
    (1024, 1024, 256, "small w2", false, false),
    (1024, 256, 2048, "small logits", false, false),
    (256, 1024, 1024, "small dW1 shape", false, false),
    (256, 768, 768, "gpt2 qkvo", false, false),
    (256, 768, 3072, "gpt2 w1", false, false),
    (256, 3072, 768, "gpt2 w2", false, false),
    (768, 256, 3072, "gpt2 dW1 shape", false, false),
    (256, 1024, 1024, "small dW1 = xᵀ·dY", true, false),
    (256, 1024, 768, "small dW_qkv = xᵀ·dY", true, false),
    (1024, 1024, 256, "small dW2 = hᵀ·dY", true, false),
    (768, 256, 3072, "gpt2 dW1 = xᵀ·dY", true, false),
    (2048, 1024, 256, "small dE = dZᵀ·h", true, false),
    (3072, 256, 768, "gpt2 dW2 = hᵀ·dY", true, false),
    (50257, 256, 768, "gpt2 dE = dZᵀ·h", true, false),
    (1024, 1024, 256, "small dX = dY·W2ᵀ", false, true),
    (1024, 256, 2048, "small logits = h·Eᵀ", false, true),
    (256, 3072, 768, "gpt2 dX = dY·W2ᵀ", false, true),
    (256, 768, 50257, "gpt2 logits = h·Eᵀ", false, true),
];

/// Median and best GFLOP/s of `f`, run for at least 0.3 s after two warm-up calls.
fn measure(flops: f64, mut f: impl FnMut() -> adjoint::Result<()>) -> adjoint::Result<(f64, f64)> {
    f()?;
    f()?;
    let mut times = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(300) || times.len() < 5 {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok((flops / times[times.len() / 2] / 1e9, flops / times[0] / 1e9))
}

fn main() -> adjoint::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--pack-a").and_then(|i| args.get(i + 1)).map(String::as_str) {
        Some("on") => force_a_packing(Some(true)),
        Some("off") => force_a_packing(Some(false)),
        None => {}
        Some(other) => return Err(adjoint::Error::new(format!("--pack-a {other}: on or off"))),
    }
    if args.iter().any(|a| a == "--serial") {
        return adjoint::parallel::serial(|| table(&args));
    }
    table(&args)
}

fn table(args: &[String]) -> adjoint::Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned();
    let kernels = [Kernel::Matrixmultiply, Kernel::Avx512, Kernel::Avx2, Kernel::Portable];
    println!(
        "| M x K x N | shape | adjoint::gemm::sgemm, matrixmultiply kernel | same, own AVX-512 8×32 | own AVX2 6×16 | own portable 4×8 | own AVX-512, `b` packed | own AVX-512, `b` in place | gemm crate 1t | gemm crate 2t |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &(m, k, n, what, ta, tb) in SHAPES {
        if only.as_ref().is_some_and(|o| !what.contains(o.as_str())) {
            continue;
        }
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 104_729) % 1000) as f32 / 1000.0 - 0.5).collect();
        let av = if ta { MatRef::row_major(&a, k, m).t() } else { MatRef::row_major(&a, m, k) };
        let bv = if tb { MatRef::row_major(&b, n, k).t() } else { MatRef::row_major(&b, k, n) };
        let mut c = vec![0f32; m * n];
        let flops = 2.0 * (m * k * n) as f64;
        let mut rates = Vec::new();
        for kernel in kernels {
            rates.push(if kernel.available() {
                force_kernel(Some(kernel));
                Some(measure(flops, || sgemm(av, bv, &mut c))?)
            } else {
                None
            });
        }
        // The own kernel's two ways with a row-major `b`, forced (the columns before
        // choose by size).
        for pack in [true, false] {
            rates.push(if Kernel::Avx512.available() && !tb {
                force_kernel(Some(Kernel::Avx512));
                force_b_packing(Some(pack));
                Some(measure(flops, || sgemm(av, bv, &mut c))?)
            } else {
                None
            });
        }
        force_b_packing(None);
        force_kernel(None);
        let cell = |(med, best): (f64, f64)| format!("{med:.1} ({best:.1})");
        let own: Vec<String> = rates.iter().map(|r| r.map_or("-".to_string(), cell)).collect();
        let crate_cells = if quick {
            "- | -".to_string()
        } else {
            let g1 = measure(flops, || gemm_crate(av, bv, &mut c, 1))?;
            let g2 = measure(flops, || gemm_crate(av, bv, &mut c, 2))?;
            format!("{} | {}", cell(g1), cell(g2))
        };
        println!("| {m}x{k}x{n} | {what} | {} | {crate_cells} |", own.join(" | "));
    }
    Ok(())
}
