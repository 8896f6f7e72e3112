//! `gpt bench`: the training-step benchmark of `shared/peers/WORKLOAD.md`, printing the
//! same report lines as `workload.py`'s `report()` so the two compare line by line,
//! plus this process's SGEMM rate measured in the same run, between the steps.
//!
//! A step is forward, backward and an SGD update (lr 1e-3), on the config's sizes. The
//! initialisation is adjoint's seeded one (the distributions of `workload.py`, not
//! numpy's numbers); `--params`/`--batch` take `make_case.py`'s files instead, for
//! identical starting points.

use std::time::Instant;

use adjoint::init::Rng;
use adjoint::ndarray::ArrayD;
use adjoint::optim::{Method, Optimizer};
use adjoint::tensorfile::TensorFile;

use crate::gpt;

type Res<T> = Result<T, String>;

const LR: f32 = 1e-3;

/// `gpt bench`'s options (the command line's, through clap).
#[derive(clap::Args, Debug)]
pub struct Options {
    /// tiny, small or gpt2
    #[arg(long, default_value = "tiny")]
    pub config: String,
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Parameters from make_case.py (else adjoint's seeded initialisation)
    #[arg(long)]
    pub params: Option<String>,
    /// tokens/targets from make_case.py (else a seeded random batch)
    #[arg(long)]
    pub batch: Option<String>,
    /// The GEMM kernel: auto (the runtime's choice), avx512, avx2, portable (the
    /// runtime's own micro-kernels) or matrixmultiply
    #[arg(long, default_value = "auto")]
    pub gemm: String,
    /// Batch split: auto (two half-batches side by side when the extra gradient
    /// set is at most 64 MiB, the default), always, or off (the whole batch at once)
    #[arg(long, default_value = "auto")]
    pub split: String,
    /// Also write each timed step's milliseconds to this file, one a line, in order
    /// (to tell a slow phase of the machine from a slow run)
    #[arg(long)]
    pub step_times: Option<String>,
    /// An A/B in one process: SETTING=A,B (gemm, split; pack-a, pack-b or row-blocks:
    /// auto, on, off), set before alternate steps (A before the first); prints each side's
    /// median and the median of the ratios B/A of adjacent steps, which the machine's
    /// slow phases touch far less than separate runs
    #[arg(long)]
    pub alternate: Option<String>,
    /// Also print each shape of matrix product in the timed steps: calls and
    /// milliseconds per step, and GFLOP/s, on the thread that ran it
    #[arg(long)]
    pub products: bool,
}

/// A runtime setting `gpt bench` can choose, process-wide.
enum Setting {
    Gemm(Option<adjoint::gemm::Kernel>),
    Split(adjoint::parallel::BatchSplit),
    PackA(Option<bool>),
    PackB(Option<bool>),
    RowBlocks(Option<bool>),
}

impl Setting {
    fn parse(key: &str, value: &str) -> Res<Setting> {
        use adjoint::gemm::Kernel;
        use adjoint::parallel::BatchSplit;
        let packing = |v: &str| match v {
            "auto" => Ok(None),
            "on" => Ok(Some(true)),
            "off" => Ok(Some(false)),
            other => Err(format!("unknown {key} `{other}`; one of auto, on, off")),
        };
        Ok(match key {
            "gemm" => {
                let kernel = match value {
                    "auto" => None,
                    "avx512" => Some(Kernel::Avx512),
                    "avx2" => Some(Kernel::Avx2),
                    "portable" => Some(Kernel::Portable),
                    "matrixmultiply" => Some(Kernel::Matrixmultiply),
                    other => {
                        return Err(format!(
                            "unknown gemm `{other}`; one of auto, avx512, avx2, portable, matrixmultiply"
                        ));
                    }
                };
                if let Some(k) = kernel.filter(|k| !k.available()) {
                    return Err(format!("gemm {value}: this CPU cannot run the {k:?} kernel"));
                }
                Setting::Gemm(kernel)
            }
            "split" => Setting::Split(match value {
                "auto" => BatchSplit::Auto,
                "always" => BatchSplit::Always,
                "off" => BatchSplit::Off,
                other => return Err(format!("unknown split `{other}`; one of auto, always, off")),
            }),
            "pack-a" => Setting::PackA(packing(value)?),
            "pack-b" => Setting::PackB(packing(value)?),
            "row-blocks" => Setting::RowBlocks(packing(value)?),
            other => {
                return Err(format!(
                    "unknown setting `{other}`; one of gemm, split, pack-a, pack-b, row-blocks"
                ));
            }
        })
    }

    fn apply(&self) {
        match *self {
            Setting::Gemm(kernel) => adjoint::gemm::force_kernel(kernel),
            Setting::Split(split) => adjoint::parallel::set_batch_split(split),
            Setting::PackA(pack) => adjoint::gemm::force_a_packing(pack),
            Setting::PackB(pack) => adjoint::gemm::force_b_packing(pack),
            Setting::RowBlocks(allow) => adjoint::gemm::force_row_blocks(allow),
        }
    }
}

/// `--alternate SETTING=A,B`: the setting's name, its two values and their settings.
fn alternate(spec: &str) -> Res<(String, [String; 2], [Setting; 2])> {
    let bad = || format!("--alternate `{spec}`: SETTING=A,B, say pack-a=auto,off");
    let (key, values) = spec.split_once('=').ok_or_else(bad)?;
    let (a, b) = values.split_once(',').ok_or_else(bad)?;
    Ok((key.into(), [a.into(), b.into()], [Setting::parse(key, a)?, Setting::parse(key, b)?]))
}

pub fn run(o: &Options) -> Res<()> {
    let Some(&(name, [b, t, d, h, f, l, v])) = adjoint_examples::GPT_CONFIGS.iter().find(|c| c.0 == o.config)
    else {
        let names: Vec<&str> = adjoint_examples::GPT_CONFIGS.iter().map(|c| c.0).collect();
        return Err(format!("unknown config `{}`; one of {}", o.config, names.join(", ")));
    };
    if o.steps == 0 {
        return Err("--steps must be at least 1".into());
    }
    Setting::parse("gemm", &o.gemm)?.apply();
    Setting::parse("split", &o.split)?.apply();
    let alternate = o.alternate.as_deref().map(alternate).transpose()?;
    let sizes = gpt::Sizes { T: t, D: d, H: h, F: f, V: v, L: l };
    let mut params = match &o.params {
        Some(path) => {
            let mut file = TensorFile::read(path).map_err(|e| e.to_string())?;
            let want = gpt::Params::shapes(&sizes).map_err(|e| e.to_string())?;
            let tensors = file.take(&want, true).map_err(|e| format!("{path}: {e}"))?;
            gpt::Params::from_named(tensors, &sizes).map_err(|e| e.to_string())?
        }
        None => gpt::Params::init(&sizes, o.seed).map_err(|e| e.to_string())?,
    };
    let (tokens, targets) = match &o.batch {
        Some(path) => {
            let mut file = TensorFile::read(path).map_err(|e| e.to_string())?;
            let get = |f: &mut TensorFile, k: &str| f.ints.remove(k).ok_or(format!("{path}: no `{k}`"));
            (get(&mut file, "tokens")?, get(&mut file, "targets")?)
        }
        None => {
            // Next tokens of one random stream, as `make_batch` draws them.
            let mut rng = Rng::new(o.seed + 1_000_003);
            let stream: Vec<i32> = (0..b * (t + 1)).map(|_| (rng.next_u64() % v as u64) as i32).collect();
            let at = |shift: usize| {
                ArrayD::from_shape_fn(vec![b, t], |ix| stream[ix[0] * (t + 1) + ix[1] + shift])
            };
            (at(0), at(1))
        }
    };
    let inputs = gpt::Inputs { tokens: tokens.view(), targets: targets.view() };
    let mut grads = gpt::Params::zeros(&sizes).map_err(|e| e.to_string())?;
    let mut sgd = Optimizer::new(Method::Sgd);
    // Created before the steps run, so a path that cannot be written fails at once.
    let mut step_times = match &o.step_times {
        Some(path) => Some(std::fs::File::create(path).map_err(|e| format!("{path}: {e}"))?),
        None => None,
    };
    let (mut times, mut losses) = (Vec::new(), Vec::new());
    let split_before = adjoint::parallel::split_steps();
    // The SGEMM ceiling is measured between the timed steps, about once per
    // `CEILING_EVERY_S` of steps, so that it sees the same phases of a noisy machine as
    // the steps do: measured once, before or after, it read anywhere from 170 to 290
    // GFLOP/s on the 2-core Xeon, and the step's share of it swung with it.
    let mut ceiling = Ceiling::new();
    let mut since_ceiling = 0.0;
    for i in 0..o.warmup + o.steps {
        if let Some((_, _, settings)) = &alternate {
            settings[i % 2].apply();
        }
        adjoint::gemm::record_products(o.products && i >= o.warmup);
        let started = Instant::now();
        let loss =
            gpt::train_step(&mut params, &inputs, &mut grads, &mut sgd, LR).map_err(|e| e.to_string())?;
        let elapsed = started.elapsed().as_secs_f64();
        adjoint::gemm::record_products(false);
        if i >= o.warmup {
            times.push(elapsed);
            losses.push(loss);
            since_ceiling += elapsed;
            if since_ceiling >= CEILING_EVERY_S {
                ceiling.measure()?;
                since_ceiling = 0.0;
            }
        }
    }
    while ceiling.rates.len() < CEILING_MIN_RUNS {
        ceiling.measure()?;
    }
    if let Some(file) = &mut step_times {
        use std::io::Write;
        let text: String = times.iter().map(|t| format!("{:.4}\n", t * 1e3)).collect();
        file.write_all(text.as_bytes()).map_err(|e| format!("--step-times: {e}"))?;
    }
    let flops = train_flops(b, t, d, f, l, v);
    let step_median = median(&times);
    let step_min = times.iter().copied().fold(f64::INFINITY, f64::min);
    let step_gflops = flops / step_median / 1e9;
    // `workload.py`'s report(), field for field.
    let threads = adjoint::gemm::threads();
    let kernel = adjoint::gemm::kernel();
    adjoint_examples::say!(
        "impl=adjoint config={name} threads={threads} steps={} B={b} T={t} gemm={kernel:?} split={}:{}",
        times.len(),
        o.split,
        if adjoint::parallel::split_steps() > split_before { "halves" } else { "whole" }
    );
    adjoint_examples::say!(
        "median_ms={:.3} min_ms={:.3} tokens_per_s={:.1} gflops={:.2} peak_rss_mib={:.1} loss_first={:.5} loss_last={:.5}",
        step_median * 1e3,
        step_min * 1e3,
        (b * t) as f64 / step_median,
        step_gflops,
        ceiling.step_peak_rss_mib(),
        losses[0],
        losses[losses.len() - 1]
    );
    if let Some((key, values, _)) = &alternate {
        // Step `i` ran with setting `i % 2`; the timed ones start at `warmup`.
        let side = |s: usize| -> Vec<f64> {
            times.iter().enumerate().filter(|(j, _)| (o.warmup + j) % 2 == s).map(|(_, &t)| t).collect()
        };
        let sides = [side(0), side(1)];
        let pairs = sides[0].len().min(sides[1].len());
        if pairs == 0 {
            return Err("--alternate needs at least two timed steps".into());
        }
        let ratios: Vec<f64> = (0..pairs).map(|k| sides[1][k] / sides[0][k]).collect();
        adjoint_examples::say!(
            "alternate {key}: A={} median_ms={:.3} B={} median_ms={:.3} pair_ratio_b_over_a={:.3} pairs={pairs}",
            values[0],
            median(&sides[0]) * 1e3,
            values[1],
            median(&sides[1]) * 1e3,
            median(&ratios)
        );
    }
    if o.products {
        report_products(times.len(), step_median);
    }
    let (sgemm, sgemm_best, runs) = ceiling.summary();
    adjoint_examples::say!(
        "sgemm_gflops={sgemm:.2} (adjoint::gemm::sgemm, 1024x1024x1024, {threads} threads, median of {runs} between the steps, best {sgemm_best:.2}) step_pct_of_sgemm={:.1}",
        100.0 * step_gflops / sgemm
    );
    Ok(())
}

/// `--products`: one line per shape of product in the `steps` timed steps, the longest
/// first, then their total beside the step's median. A product's time is on the thread
/// that ran it: the halves of a split step run theirs side by side, so the total can
/// pass the step's time.
fn report_products(steps: usize, step_median: f64) {
    let products = adjoint::gemm::take_product_times();
    let per_step = |x: f64| x / steps as f64;
    let yes_no = |b: bool| if b { "T" } else { "N" };
    for p in &products {
        adjoint_examples::say!(
            "product {}x{}x{} a={} b={} epilogue={} kernel={:?} threads={} calls_per_step={:.1} ms_per_step={:.3} gflops={:.1}",
            p.m,
            p.k,
            p.n,
            yes_no(p.a_transposed),
            yes_no(p.b_transposed),
            if p.epilogue { "yes" } else { "no" },
            p.kernel,
            p.threads,
            per_step(p.calls as f64),
            per_step(p.seconds) * 1e3,
            p.gflops()
        );
    }
    let seconds: f64 = products.iter().map(|p| p.seconds).sum();
    let flops: f64 = products.iter().map(|p| p.flops() * p.calls as f64).sum();
    adjoint_examples::say!(
        "products ms_per_step={:.3} (thread time) gflops={:.1} step_median_ms={:.3}",
        per_step(seconds) * 1e3,
        flops / seconds / 1e9,
        step_median * 1e3
    );
}

/// `workload.py`'s train_flops: B·T·(6·N_mm + 12·L·T·d).
fn train_flops(b: usize, t: usize, d: usize, f: usize, l: usize, v: usize) -> f64 {
    let n_mm = l * (4 * d * d + 2 * d * f) + v * d;
    (b * t) as f64 * (6.0 * n_mm as f64 + 12.0 * (l * t * d) as f64)
}

/// Seconds of timed steps between two measurements of the ceiling.
const CEILING_EVERY_S: f64 = 0.05;
/// The fewest measurements of the ceiling (taken after the steps if they were too few).
const CEILING_MIN_RUNS: usize = 5;

/// The SGEMM ceiling: 1024³ products through the runtime's GEMM (the product alone,
/// into an output already written), in GFLOP/s, one rate per measurement.
///
/// Its 12 MiB of operands are allocated and written before the first step and stay
/// resident to the end, so the process's peak resident set is the step's plus exactly
/// those bytes, which `peak_rss_mib` takes off: the report is the step's alone, as
/// PyTorch's is (but for the pool threads' packing buffers, which the ceiling's
/// products grow to about 0.5 MiB each). Allocated for each measurement and freed after,
/// they stayed resident anyway (glibc keeps freed blocks of that size in its heap once
/// one has been freed).
struct Ceiling {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    rates: Vec<f64>,
}

impl Ceiling {
    const N: usize = 1024;

    fn new() -> Ceiling {
        let n = Self::N;
        let operand = |seed: usize| -> Vec<f32> {
            (0..n * n).map(|i| ((i * 7919 + seed) % 1000) as f32 / 1000.0 - 0.5).collect()
        };
        Ceiling { a: operand(1), b: operand(2), c: vec![1.0; n * n], rates: Vec::new() }
    }

    fn measure(&mut self) -> Res<()> {
        use adjoint::gemm::MatRef;
        let n = Self::N;
        let (a, b, c) = (MatRef::row_major(&self.a, n, n), MatRef::row_major(&self.b, n, n), &mut self.c);
        let started = Instant::now();
        adjoint::parallel::on_pool(|| adjoint::gemm::sgemm(a, b, c)).map_err(|e| e.to_string())?;
        self.rates.push(2.0 * (n * n * n) as f64 / started.elapsed().as_secs_f64() / 1e9);
        Ok(())
    }

    /// The median rate, the best, and how many measurements.
    fn summary(&self) -> (f64, f64, usize) {
        let best = self.rates.iter().copied().fold(0.0, f64::max);
        (median(&self.rates), best, self.rates.len())
    }

    /// The process's peak resident set less the ceiling's operands, in MiB.
    fn step_peak_rss_mib(&self) -> f64 {
        let bytes = (self.a.len() + self.b.len() + self.c.len()) * std::mem::size_of::<f32>();
        peak_rss_mib() - bytes as f64 / (1 << 20) as f64
    }
}

/// The median of non-empty values.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
}

/// The process's peak resident set (VmHWM), as `ru_maxrss` reports it, in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}
