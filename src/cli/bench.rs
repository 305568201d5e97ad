//! `losscape bench`: speed of the engine on the networks users care about; see
//! [`crate::jobs::bench`].
//!
//! ResNet-cifar 20 and 56 (width 16, projection shortcuts) on a batch of random 3×32×32
//! inputs (CIFAR-10's shape), for each thread count: eval-mode forward time, images/s and
//! GFLOP/s (2 × multiply-adds of convolutions and linear layers), one gradient and one
//! exact H·v, and the H·v / gradient ratio; also H·v with its θ-only half kept (what the
//! Hessian operator's products cost after the first; [`crate::objective::PreparedCurvature`]).
//! Medians over `--reps` runs after a warm-up; the gradient and H·v runs alternate.
//! Compare with `python fixtures/generate/bench_torch.py` on the same machine and threads,
//! and engine settings with `--conv im2col`, `--gemm matrixmultiply`, `--simd avx2`.
//! `--kernels` times the direct convolution kernels alone instead (best of `--reps`).

use anyhow::Result;
use clap::Args;

use super::engine_args::EngineArgs;
use crate::engine::ops::conv2d::{kernel_rates, KernelRate};
use crate::jobs::bench::{run_bench, BenchConfig, BenchRow};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// ResNet-cifar depths to measure [default: 20,56, or none when --model is given].
    #[arg(long, value_delimiter = ',', value_parser = super::numbers::count::<usize>)]
    pub depths: Option<Vec<usize>>,
    /// Model files measured too (`.onnx` or `.safetensors`), on random inputs of their
    /// input shape: e.g. the ViT-tiny that `python fixtures/generate/bench_torch.py --vit
    /// --export outputs/bench/vit-tiny.onnx` writes and times in PyTorch.
    #[arg(long = "model", value_name = "FILE")]
    pub models: Vec<std::path::PathBuf>,
    /// Thread counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2", value_parser = crate::cli::args::parse_threads)]
    pub threads: Vec<usize>,
    /// Images per measured batch.
    #[arg(long, default_value_t = 128, value_parser = super::numbers::count::<usize>)]
    pub batch: usize,
    /// Mini-batch size inside the engine (the unit of parallel work).
    #[arg(long, default_value_t = 32, value_parser = super::numbers::count::<usize>)]
    pub chunk: usize,
    /// Timed repetitions per measurement (median reported).
    #[arg(long, default_value_t = 5, value_parser = super::numbers::count::<usize>)]
    pub reps: usize,
    /// Skip the gradient and H·v measurements.
    #[arg(long)]
    pub forward_only: bool,
    /// Time the convolution kernels alone instead of whole passes: the direct tile kernel
    /// (forward, dx, R-forward) and weight-gradient kernel, each with its padded copies,
    /// and Winograd F(2×2)'s and F(4×4)'s forward and weight gradient with their transforms
    /// (rated in direct convolution's FLOPs), on ResNet-cifar's three 3×3 stride-1 shapes
    /// (16, 32, 64 channels on 32×32, 16×16, 8×8 images), and the direct kernels on its two
    /// stride-2 shapes (16 → 32 channels on 32×32, 32 → 64 on 16×16); 32 images, one
    /// thread, best of --reps runs, as GFLOP/s and share of one core's FMA peak. Only
    /// --simd, --reps and --json apply.
    #[arg(long, conflicts_with_all = ["depths", "models", "threads", "batch", "chunk", "forward_only", "conv", "gemm"])]
    pub kernels: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let options = args.engine.options();
    if !options.is_default() {
        eprintln!("bench: engine {options}");
    }
    if args.kernels {
        let rates = kernel_rates(options.simd, args.reps);
        if args.json {
            return super::print_json(&rates);
        }
        for r in &rates {
            print_rate(r)?;
        }
        return Ok(());
    }
    let config = BenchConfig {
        depths: args.depths.clone().unwrap_or_else(|| {
            if args.models.is_empty() {
                vec![20, 56]
            } else {
                vec![]
            }
        }),
        models: args.models.clone(),
        threads: args.threads.clone(),
        batch: args.batch,
        chunk: args.chunk,
        reps: args.reps,
        forward_only: args.forward_only,
        engine: options,
    };
    // a failed print (closed pipe, full disk) stops the output; it is reported at the end
    let mut printed = Ok(());
    let rows = run_bench(&config, &mut |row| {
        if !args.json && printed.is_ok() {
            printed = print_row(row);
        }
    })?;
    printed?;
    if args.json {
        super::print_json(&rows)?;
    }
    Ok(())
}

fn print_row(row: &BenchRow) -> Result<(), super::StdoutError> {
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
    let ratio = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
    crate::outln!(
            "{:<16} threads {}  forward {:>8.1} ms  {:>7.0} img/s  {:>6.1} GFLOP/s ({} of FMA peak {} GFLOP/s)  gradient {:>8} ms  H·v {:>8} ms  H·v/grad {}  kept-state H·v {:>8} ms  /grad {}  (CPU ms: forward {:.1}, gradient {}, H·v {}, ratio {}, kept-state ratio {})",
            row.model,
            row.threads,
            row.forward_ms,
            row.images_per_s,
            row.gflops,
            row.forward_of_peak.map(|f| format!("{:.0}%", 100.0 * f)).unwrap_or_else(|| "-".into()),
            opt(row.fma_peak_gflops),
            opt(row.gradient_ms),
            opt(row.hvp_ms),
            ratio(row.hvp_over_gradient),
            opt(row.hvp_kept_ms),
            ratio(row.hvp_kept_over_gradient),
            row.forward_cpu_ms,
            opt(row.gradient_cpu_ms),
            opt(row.hvp_cpu_ms),
            ratio(row.hvp_over_gradient_cpu),
            ratio(row.hvp_kept_over_gradient_cpu),
        )
}

fn print_rate(r: &KernelRate) -> Result<(), super::StdoutError> {
    let pct = |v: Option<f64>| v.map(|v| format!("{:.0}%", 100.0 * v));
    crate::outln!(
        "kernel {:<20} {:<6}  {:<8} {:>2}×{:<2} × {} images  best {:>7.2} ms  {:>6.1} GFLOP/s ({} of FMA peak {} GFLOP/s)",
        r.pass,
        r.kernel,
        match r.stride {
            1 => format!("C=O={}", r.channels),
            _ => format!("C={}→{}", r.channels, r.out_channels),
        },
        r.size,
        r.size,
        r.images,
        r.best_ms,
        r.gflops,
        pct(r.of_peak).unwrap_or_else(|| "-".into()),
        r.fma_peak_gflops.map(|p| format!("{p:.1}")).unwrap_or_else(|| "-".into()),
    )
}
