//! SGEMM candidates on the workload's shapes (`shared/peers/RESULTS.md` table (a)): the
//! runtime's `adjoint::gemm::sgemm` (`matrixmultiply`'s kernels) and the `gemm` crate
//! with one and two threads; `C = A·B` in f32, row-major, GFLOP/s median (best).
//!
//! ```text
//! cargo run --release --example gemm_bench
//! ```

use std::time::{Duration, Instant};

use adjoint::gemm::{MatRef, gemm_crate, sgemm};

const SHAPES: &[(usize, usize, usize, &str)] = &[
    (1024, 1024, 1024, "square"),
    (128, 64, 64, "tiny qkvo"),
    (128, 64, 256, "tiny w1"),
    (128, 256, 64, "tiny w2"),
    (1024, 256, 256, "small qkvo"),
    (1024, 256, 1024, "small w1"),
    (1024, 1024, 256, "small w2"),
    (1024, 256, 2048, "small logits"),
    (256, 1024, 1024, "small dW1 shape"),
    (256, 768, 768, "gpt2 qkvo"),
    (256, 768, 3072, "gpt2 w1"),
    (256, 3072, 768, "gpt2 w2"),
    (768, 256, 3072, "gpt2 dW1 shape"),
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
    println!(
        "| M x K x N | shape | adjoint::gemm::sgemm (matrixmultiply kernels, split over the pool) | gemm crate 1t | gemm crate 2t |"
    );
    println!("|---|---|---|---|---|");
    for &(m, k, n, what) in SHAPES {
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 104_729) % 1000) as f32 / 1000.0 - 0.5).collect();
        let (av, bv) = (MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n));
        let mut c = vec![0f32; m * n];
        let flops = 2.0 * (m * k * n) as f64;
        let ours = measure(flops, || sgemm(av, bv, &mut c))?;
        let g1 = measure(flops, || gemm_crate(av, bv, &mut c, 1))?;
        let g2 = measure(flops, || gemm_crate(av, bv, &mut c, 2))?;
        let cell = |(med, best): (f64, f64)| format!("{med:.1} ({best:.1})");
        println!("| {m}x{k}x{n} | {what} | {} | {} | {} |", cell(ours), cell(g1), cell(g2));
    }
    Ok(())
}
