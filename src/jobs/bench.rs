//! The speed benchmark of the engine (`losscape bench`): ResNet-cifar 20 and 56 (width 16,
//! projection shortcuts) on a batch of random 3×32×32 inputs (CIFAR-10's shape), for each
//! thread count: eval-mode forward time, images/s and GFLOP/s (2 × multiply-adds of
//! convolutions and linear layers), one gradient and one exact H·v, and the H·v / gradient
//! ratio; also H·v with its θ-only half kept (what the Hessian operator's products cost
//! after the first; [`crate::objective::PreparedCurvature`]). Medians over `reps` runs after a
//! warm-up; the gradient and H·v runs alternate. The forward's GFLOP/s is also stated as a
//! share of the cores' FMA peak, measured by the same run
//! ([`crate::engine::ops::conv2d::fma_peak`]).

use std::time::Instant;

use ndarray::{ArrayD, IxDyn};
use serde::Serialize;

use super::error::{JobError, JobResult};
use super::inputs::with_threads;
use crate::engine::{EngineOptions, Op};
use crate::model::{Arch, Model};
use crate::objective::{Objective, ObjectiveConfig};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// ResNet-cifar depths.
    pub depths: Vec<usize>,
    /// Model files (`.onnx`, `.safetensors`) measured as well, on random inputs of their
    /// input shape; e.g. the ViT-tiny `bench_torch.py --export` writes.
    pub models: Vec<std::path::PathBuf>,
    /// Thread counts.
    pub threads: Vec<usize>,
    /// Images per measured batch.
    pub batch: usize,
    /// Mini-batch size inside the engine (the unit of parallel work).
    pub chunk: usize,
    /// Timed repetitions per measurement (median reported).
    pub reps: usize,
    /// Skip the gradient and H·v measurements.
    pub forward_only: bool,
    pub engine: EngineOptions,
}

/// The measurements of one network at one thread count (ms; CPU ms are process CPU time,
/// all threads summed).
#[derive(Serialize)]
pub struct BenchRow {
    pub model: String,
    pub threads: usize,
    pub batch: usize,
    pub forward_ms: f64,
    pub images_per_s: f64,
    pub gflops: f64,
    pub gradient_ms: Option<f64>,
    pub hvp_ms: Option<f64>,
    pub hvp_over_gradient: Option<f64>,
    /// The same three measurements in process CPU time (all threads summed).
    pub forward_cpu_ms: f64,
    pub gradient_cpu_ms: Option<f64>,
    pub hvp_cpu_ms: Option<f64>,
    pub hvp_over_gradient_cpu: Option<f64>,
    /// H·v with the θ-only half kept (the Hessian operator's products after the first).
    pub hvp_kept_ms: Option<f64>,
    pub hvp_kept_over_gradient: Option<f64>,
    pub hvp_kept_cpu_ms: Option<f64>,
    pub hvp_kept_over_gradient_cpu: Option<f64>,
    /// The FMA peak of `threads` cores at the direct kernels' vector width (GFLOP/s,
    /// measured by a loop of independent FMAs on every thread at once), and the forward
    /// pass's share of it: how far the engine is from the machine's roof.
    pub fma_peak_gflops: Option<f64>,
    pub forward_of_peak: Option<f64>,
}

/// Multiply-adds × 2 of convolutions and linear layers for one sample.
pub fn flops_per_sample(graph: &crate::engine::Graph) -> JobResult<f64> {
    let shapes = graph
        .infer_shapes(&graph.input_shape, 1)
        .map_err(|e| JobError::invalid("depths", e.to_string()))?;
    Ok(graph
        .nodes
        .iter()
        .zip(&shapes)
        .map(|(n, s)| match &n.op {
            Op::Conv2d(c) => {
                2.0 * (c.in_channels * c.kernel * c.kernel) as f64
                    * s.iter().product::<usize>() as f64
            }
            // a linear layer on [N, T, F] applies to each of the T rows
            Op::Linear(l) => {
                2.0 * (l.in_features * l.out_features) as f64
                    * (s[..s.len() - 1].iter().product::<usize>() as f64)
            }
            // a batched product [.., m, k] × [.., k, n]: m·k·n multiply-adds per matrix
            Op::MatMul => {
                let k = shapes[n.inputs[0]].last().copied().unwrap_or(0);
                2.0 * k as f64 * s.iter().product::<usize>() as f64
            }
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

/// Measures every depth at every thread count; `on_row` sees each row as it is measured.
pub fn run_bench(c: &BenchConfig, on_row: &mut dyn FnMut(&BenchRow)) -> JobResult<Vec<BenchRow>> {
    let mut rows = Vec::new();
    let mut models = vec![];
    for &depth in &c.depths {
        let arch: Arch = format!("resnet-cifar:depth={depth},in_channels=3,input_size=32")
            .parse()
            .map_err(|e: crate::model::ModelError| JobError::invalid("depths", e.to_string()))?;
        models.push((format!("resnet-cifar-{depth}"), Model::init(arch, 0, false)));
    }
    for path in &c.models {
        let m = Model::load(path, None).map_err(|source| JobError::Model {
            path: path.clone(),
            source: Box::new(source),
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        models.push((name, m));
    }
    for (name, mut model) in models {
        model.graph.options = c.engine;
        let flops = flops_per_sample(&model.graph)? * c.batch as f64;
        let mut shape = vec![c.batch];
        shape.extend(&model.graph.input_shape);
        // the same inputs as bench_torch.py's: a fixed pattern in [-1, 1]
        let x = ArrayD::from_shape_fn(IxDyn(&shape), |i| {
            let k: usize = (0..shape.len())
                .map(|a| i[a] * [31, 5, 7, 3, 11][a.min(4)])
                .sum();
            (k % 17) as f32 / 8.0 - 1.0
        });
        let classes = model.graph.num_classes.max(1);
        let y: Vec<usize> = (0..c.batch).map(|i| i % classes).collect();
        let cfg = ObjectiveConfig {
            batch_size: c.chunk,
            ..Default::default()
        };
        let obj = Objective::new(&model.graph, x.view(), &y, cfg)
            .map_err(|e| JobError::invalid("depths", e.to_string()))?;
        let theta = model.theta.data.view();
        for &threads in &c.threads {
            let simd = c.engine.simd;
            let peak = with_threads(Some(threads), || {
                rayon::broadcast(|_| crate::engine::ops::conv2d::fma_peak(simd))
                    .into_iter()
                    .sum::<Option<f64>>()
                    .map(|f| f / 1e9)
            })?;
            let row = with_threads(Some(threads), || {
                let fwd = median_ms(c.reps, || {
                    obj.evaluate(theta);
                });
                let (grad, hvp, kept) = if c.forward_only {
                    (None, None, None)
                } else {
                    // what the Hessian operator does by default: θ-only half kept across
                    // products, within the same memory budget (batches past it run cold)
                    let budget = crate::hessian::objective_op::DEFAULT_HVP_CACHE_BYTES;
                    let prep = obj.prepare_hvp(theta, budget);
                    let m = medians_interleaved(
                        c.reps,
                        &mut [
                            &mut || {
                                obj.gradient(theta);
                            },
                            &mut || {
                                obj.hvp(theta, theta);
                            },
                            &mut || {
                                prep.product(theta);
                            },
                        ],
                    );
                    (Some(m[0]), Some(m[1]), Some(m[2]))
                };
                let (fwd, fwd_cpu) = fwd;
                let (grad, grad_cpu) = (grad.map(|g| g.0), grad.map(|g| g.1));
                let (hvp, hvp_cpu) = (hvp.map(|h| h.0), hvp.map(|h| h.1));
                let (kept, kept_cpu) = (kept.map(|h| h.0), kept.map(|h| h.1));
                BenchRow {
                    model: name.clone(),
                    threads,
                    batch: c.batch,
                    forward_ms: fwd,
                    images_per_s: c.batch as f64 / (fwd / 1e3),
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
                    fma_peak_gflops: peak,
                    forward_of_peak: peak.map(|p| flops / (fwd / 1e3) / 1e9 / p),
                }
            })?;
            on_row(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}
