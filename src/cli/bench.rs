//! `losscape bench`: speed of the engine on the networks users care about.
//!
//! ResNet-cifar 20 and 56 (width 16, projection shortcuts) on a batch of random 3×32×32
//! inputs (CIFAR-10's shape), for each thread count: eval-mode forward time, images/s and
//! GFLOP/s (2 × multiply-adds of convolutions and linear layers), one gradient and one
//! exact H·v, and the H·v / gradient ratio; also H·v with its θ-only half kept (what the
//! Hessian operator's products cost after the first; [`crate::objective::PreparedHvp`]).
//! Medians over `--reps` runs after a warm-up; the gradient and H·v runs alternate.
//! Compare with `python fixtures/generate/bench_torch.py` on the same machine and threads,
//! and engine settings with `--conv im2col`, `--gemm matrixmultiply`, `--simd avx2`.

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use ndarray::{ArrayD, IxDyn};
use serde::Serialize;

use super::engine_args::EngineArgs;
use crate::engine::Op;
use crate::model::{Arch, Model};
use crate::objective::{Objective, ObjectiveConfig};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// ResNet-cifar depths to measure.
    #[arg(long, value_delimiter = ',', default_value = "20,56")]
    pub depths: Vec<usize>,
    /// Thread counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub threads: Vec<usize>,
    /// Images per measured batch.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Mini-batch size inside the engine (the unit of parallel work).
    #[arg(long, default_value_t = 32)]
    pub chunk: usize,
    /// Timed repetitions per measurement (median reported).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Skip the gradient and H·v measurements.
    #[arg(long)]
    pub forward_only: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Serialize)]
struct Row {
    model: String,
    threads: usize,
    batch: usize,
    forward_ms: f64,
    images_per_s: f64,
    gflops: f64,
    gradient_ms: Option<f64>,
    hvp_ms: Option<f64>,
    hvp_over_gradient: Option<f64>,
    /// The same three measurements in process CPU time (all threads summed).
    forward_cpu_ms: f64,
    gradient_cpu_ms: Option<f64>,
    hvp_cpu_ms: Option<f64>,
    hvp_over_gradient_cpu: Option<f64>,
    /// H·v with the θ-only half kept (the Hessian operator's products after the first).
    hvp_kept_ms: Option<f64>,
    hvp_kept_over_gradient: Option<f64>,
    hvp_kept_cpu_ms: Option<f64>,
    hvp_kept_over_gradient_cpu: Option<f64>,
}

/// Multiply-adds × 2 of convolutions and linear layers for one sample.
pub fn flops_per_sample(graph: &crate::engine::Graph) -> Result<f64> {
    let shapes = graph.infer_shapes(&graph.input_shape, 1)?;
    Ok(graph
        .nodes
        .iter()
        .zip(&shapes)
        .map(|(n, s)| match &n.op {
            Op::Conv2d(c) => {
                2.0 * (c.in_channels * c.kernel * c.kernel) as f64
                    * s.iter().product::<usize>() as f64
            }
            Op::Linear(l) => 2.0 * (l.in_features * l.out_features) as f64,
            _ => 0.0,
        })
        .sum())
}

/// CPU time of the whole process (all threads) in ms. On a busy machine wall time
/// includes waiting for a core; CPU time does not, so 1-thread CPU-time ratios stay
/// comparable when other jobs run.
fn process_cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into a valid, exclusively borrowed struct.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

/// Median wall time and median process CPU time (ms) of `reps` runs after one warm-up.
fn median_ms(reps: usize, f: impl FnMut()) -> (f64, f64) {
    medians_interleaved(reps, &mut [&mut { f }])[0]
}

/// [`median_ms`] of several measurements whose runs alternate (1, 2, 3, 1, 2, 3, …), so a
/// ratio between them sees the same machine load.
fn medians_interleaved(reps: usize, fs: &mut [&mut dyn FnMut()]) -> Vec<(f64, f64)> {
    fs.iter_mut().for_each(|f| f()); // warm-up
    let mut runs = vec![(Vec::new(), Vec::new()); fs.len()];
    for _ in 0..reps.max(1) {
        for (f, (wall, cpu)) in fs.iter_mut().zip(runs.iter_mut()) {
            let (s, c) = (Instant::now(), process_cpu_ms());
            f();
            wall.push(s.elapsed().as_secs_f64() * 1e3);
            cpu.push(process_cpu_ms() - c);
        }
    }
    runs.into_iter()
        .map(|(mut wall, mut cpu)| {
            wall.sort_by(|a, b| a.total_cmp(b));
            cpu.sort_by(|a, b| a.total_cmp(b));
            (wall[wall.len() / 2], cpu[cpu.len() / 2])
        })
        .collect()
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let options = args.engine.options();
    if !options.is_default() {
        eprintln!("bench: engine {options}");
    }
    let mut rows = Vec::new();
    for &depth in &args.depths {
        let arch: Arch =
            format!("resnet-cifar:depth={depth},in_channels=3,input_size=32").parse()?;
        let mut model = Model::init(arch, 0, false);
        model.graph.options = options;
        let flops = flops_per_sample(&model.graph)? * args.batch as f64;
        let x = ArrayD::from_shape_fn(IxDyn(&[args.batch, 3, 32, 32]), |i| {
            ((i[0] * 31 + i[1] * 5 + i[2] * 7 + i[3] * 3) % 17) as f32 / 8.0 - 1.0
        });
        let y: Vec<usize> = (0..args.batch).map(|i| i % 10).collect();
        let obj = Objective::new(
            &model.graph,
            x.view(),
            &y,
            ObjectiveConfig {
                batch_size: args.chunk,
                ..Default::default()
            },
        )?;
        let theta = model.theta.data.view();
        for &threads in &args.threads {
            let row = super::with_threads(Some(threads), || {
                let fwd = median_ms(args.reps, || {
                    obj.evaluate(theta);
                });
                let (grad, hvp, kept) = if args.forward_only {
                    (None, None, None)
                } else {
                    // what the Hessian operator does by default: θ-only half kept across
                    // products, within the same memory budget (batches past it run cold)
                    let budget = crate::hessian::objective_op::DEFAULT_HVP_CACHE_BYTES;
                    let prep = obj.prepare_hvp(theta, budget);
                    let m = medians_interleaved(
                        args.reps,
                        &mut [
                            &mut || {
                                obj.gradient(theta);
                            },
                            &mut || {
                                obj.hvp(theta, theta);
                            },
                            &mut || {
                                prep.hvp(theta);
                            },
                        ],
                    );
                    (Some(m[0]), Some(m[1]), Some(m[2]))
                };
                let (fwd, fwd_cpu) = fwd;
                let (grad, grad_cpu) = (grad.map(|g| g.0), grad.map(|g| g.1));
                let (hvp, hvp_cpu) = (hvp.map(|h| h.0), hvp.map(|h| h.1));
                let (kept, kept_cpu) = (kept.map(|h| h.0), kept.map(|h| h.1));
                Row {
                    model: format!("resnet-cifar-{depth}"),
                    threads,
                    batch: args.batch,
                    forward_ms: fwd,
                    images_per_s: args.batch as f64 / (fwd / 1e3),
                    gflops: flops / (fwd / 1e3) / 1e9,
                    gradient_ms: grad,
                    hvp_ms: hvp,
                    hvp_over_gradient: grad.zip(hvp).map(|(g, h)| h / g),
                    forward_cpu_ms: fwd_cpu,
                    gradient_cpu_ms: grad_cpu,
                    hvp_cpu_ms: hvp_cpu,
                    hvp_over_gradient_cpu: grad_cpu.zip(hvp_cpu).map(|(g, h)| h / g),
                    hvp_kept_ms: kept,
                    hvp_kept_over_gradient: grad.zip(kept).map(|(g, h)| h / g),
                    hvp_kept_cpu_ms: kept_cpu,
                    hvp_kept_over_gradient_cpu: grad_cpu.zip(kept_cpu).map(|(g, h)| h / g),
                }
            })?;
            if !args.json {
                let opt =
                    |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
                let ratio =
                    |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
                println!(
                    "{:<16} threads {}  forward {:>8.1} ms  {:>7.0} img/s  {:>6.1} GFLOP/s  gradient {:>8} ms  H·v {:>8} ms  H·v/grad {}  kept-state H·v {:>8} ms  /grad {}  (CPU ms: forward {:.1}, gradient {}, H·v {}, ratio {}, kept-state ratio {})",
                    row.model,
                    row.threads,
                    row.forward_ms,
                    row.images_per_s,
                    row.gflops,
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
                );
            }
            rows.push(row);
        }
    }
    if args.json {
        super::print_json(&rows)?;
    }
    Ok(())
}
