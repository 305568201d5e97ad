//! `losscape hessian`: top (and bottom) eigenvalues with residuals, trace and spectral
//! density of the Hessian of the per-sample mean loss at the given weights, from exact H·v
//! products (PyHessian's quantities, Yao et al. 2020, arXiv:1912.07145).
//!
//! Every option is validated before the first H·v (the analyses can take minutes), and
//! again against each block's dimension with `--per-block`. The HDF5 layout is documented
//! in [`crate::io::hessian`]; stdout gets text, or JSON with `--json`; stderr gets a spinner
//! while a stage runs (only on a terminal) and one line per finished stage.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ndarray::{ArrayView1, ArrayViewMut1};
use serde::Serialize;

use super::{DataArgs, ModelArgs, Precision};
use crate::engine::TensorSpec;
use crate::hessian::{
    block_of, blocks, density_on_grid, hutchinson, hutchpp, objective_op::DEFAULT_HVP_CACHE_BYTES,
    power_iteration, slq, top_eigenpairs, Counting, DensityParams, EigenReport, HessianOperator,
    HessianOptions, HutchppParams, LanczosParams, LinearOperator, ParamSubset, PowerParams,
    SlqParams, TraceParams, Which,
};
use crate::io::hessian::{write_hessian, DensityData, EigenData, HessianGroup, TraceData};
use crate::io::surface::Attr;
use crate::objective::Objective;

/// How H·v over a dataset is normalized; written to every output.
pub const HVP_NORMALIZATION: &str =
    "per-sample mean (PyHessian convention; loss-landscape sums per-batch means)";

/// Default iteration cap: PyHessian's `maxIter=100`, raised to 3k so that Lanczos has
/// room for k wanted pairs beyond the k-step minimum.
const DEFAULT_MAX_ITER: usize = 100;

/// SLQ nodes and weights go into the JSON only up to this many entries (runs × steps);
/// larger arrays are in the HDF5 file only.
const JSON_DENSITY_MAX: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EigenMethod {
    /// Lanczos with full reorthogonalization (fewer H·v products).
    Lanczos,
    /// Power iteration with deflation (PyHessian's method).
    Power,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TraceMethod {
    /// Rademacher probes (Hutchinson 1990).
    Hutchinson,
    /// Low-rank sketch plus probes (Meyer, Musco, Musco, Woodruff 2021).
    Hutchpp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ParamSet {
    /// Every trainable tensor, biases and BN γ/β included (PyHessian).
    Trainable,
    /// Tensors with more than one dimension (loss-landscape's eigenvalue maps).
    Weights,
}

#[derive(Debug, Args)]
pub struct HessianArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Number of largest eigenvalues.
    #[arg(long, default_value_t = 1)]
    pub top_k: usize,
    /// Also the most negative eigenvalue(s) (as many as --top-k), by Lanczos.
    #[arg(long)]
    pub bottom: bool,
    /// Eigenvalue algorithm for the largest eigenvalues.
    #[arg(long, value_enum, default_value_t = EigenMethod::Lanczos)]
    pub method: EigenMethod,
    /// Maximum iterations: Lanczos steps, or power iterations per eigenvalue
    /// [default: the larger of 100 and 3 × --top-k].
    #[arg(long)]
    pub max_iter: Option<usize>,
    /// Relative residual ‖Hv − λv‖/|λ| (Lanczos) or relative change of λ (power) that
    /// counts as converged.
    #[arg(long, default_value_t = 1e-3)]
    pub tol: f64,
    /// Estimate the trace.
    #[arg(long)]
    pub trace: bool,
    #[arg(long, value_enum, default_value_t = TraceMethod::Hutchinson)]
    pub trace_method: TraceMethod,
    /// Probes (Hutchinson) or total H·v budget (Hutch++).
    #[arg(long, default_value_t = 100)]
    pub probes: usize,
    /// Hutchinson: stop early once stderr/|trace| < this (after --min-probes probes).
    #[arg(long, value_name = "TOL")]
    pub trace_tol: Option<f64>,
    /// Hutchinson: probes before --trace-tol may stop the estimate.
    #[arg(long, default_value_t = 10)]
    pub min_probes: usize,
    /// Spectral density by stochastic Lanczos quadrature.
    #[arg(long)]
    pub density: bool,
    /// SLQ runs (independent start vectors).
    #[arg(long, default_value_t = 1)]
    pub slq_runs: usize,
    /// Lanczos steps per SLQ run (capped at the number of parameters).
    #[arg(long, default_value_t = 100)]
    pub slq_steps: usize,
    /// Points of the density grid.
    #[arg(long, default_value_t = 10_000)]
    pub grid_points: usize,
    /// Gaussian kernel variance of the density, per unit of spectral range (PyHessian: 1e-5).
    #[arg(long, default_value_t = 1e-5)]
    pub sigma_squared: f64,
    /// Seed of every random vector (start vectors, probes); written to the output.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Which tensors the Hessian is taken over.
    #[arg(long, value_enum, default_value_t = ParamSet::Trainable)]
    pub params: ParamSet,
    /// Only trainable tensors whose state_dict name matches this regex (overrides --params).
    #[arg(long, value_name = "REGEX")]
    pub params_regex: Option<regex::Regex>,
    /// Add λ·I to H (the curvature of an L2 penalty λ/2‖θ‖²).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Repeat the analyses for each top-level block: stem, layer1…3, linear (ResNet);
    /// fc_in, blocks.i, fc_out (MLP). Blocks come from the tensor names (first component).
    #[arg(long)]
    pub per_block: bool,
    /// Store the eigenvectors in the HDF5 file (f32, dim × k).
    #[arg(long)]
    pub save_vectors: bool,
    /// Precision of the H·v products (the analyses run in f64 either way).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// Memory (MiB) for the θ-only half of the H·v products (forward pass, loss, plain
    /// backward pass), kept across products so that each runs only the R-passes: about a
    /// third faster, same bits. Batches past the budget are recomputed; 0 keeps none.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_HVP_CACHE_BYTES >> 20)]
    pub hvp_cache_mb: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Output HDF5 file.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: PathBuf,
    /// Print JSON on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The validated analyses to run (everything but the operator's dimension is checked).
#[derive(Debug, Clone)]
pub struct HessianPlan {
    pub subset: ParamSubset,
    pub options: HessianOptions,
    pub method: EigenMethod,
    pub top: LanczosParams,
    pub bottom: bool,
    pub trace: Option<TraceMethod>,
    pub trace_params: TraceParams,
    pub hutchpp: HutchppParams,
    pub density: Option<(SlqParams, DensityParams)>,
    pub per_block: bool,
}

impl HessianPlan {
    /// Builds the plan from the command line, rejecting what is invalid whatever the model.
    pub fn from_args(args: &HessianArgs) -> Result<Self> {
        if args.top_k == 0 {
            bail!("--top-k must be at least 1");
        }
        if !(args.weight_decay.is_finite() && args.weight_decay >= 0.0) {
            bail!(
                "--weight-decay must be a finite number ≥ 0, got {}",
                args.weight_decay
            );
        }
        let subset = match &args.params_regex {
            Some(re) => ParamSubset::Regex(re.clone()),
            None => match args.params {
                ParamSet::Trainable => ParamSubset::Trainable,
                ParamSet::Weights => ParamSubset::Weights,
            },
        };
        let plan = HessianPlan {
            subset,
            options: HessianOptions {
                double_precision: args.precision == Precision::F64,
                weight_decay: args.weight_decay,
                hvp_cache_bytes: args.hvp_cache_mb.saturating_mul(1 << 20),
            },
            method: args.method,
            top: LanczosParams {
                k: args.top_k,
                max_iter: args
                    .max_iter
                    .unwrap_or(DEFAULT_MAX_ITER.max(3 * args.top_k)),
                tol: args.tol,
                seed: args.seed,
                which: Which::Largest,
                keep_vectors: args.save_vectors,
            },
            bottom: args.bottom,
            trace: args.trace.then_some(args.trace_method),
            trace_params: TraceParams {
                probes: args.probes,
                min_probes: args.min_probes,
                tol: args.trace_tol,
                seed: args.seed,
            },
            hutchpp: HutchppParams {
                budget: args.probes,
                seed: args.seed,
            },
            density: args.density.then(|| {
                (
                    SlqParams {
                        runs: args.slq_runs,
                        steps: args.slq_steps,
                        seed: args.seed,
                    },
                    DensityParams {
                        grid_points: args.grid_points,
                        sigma_squared: args.sigma_squared,
                        ..Default::default()
                    },
                )
            }),
            per_block: args.per_block,
        };
        // Check against an unbounded dimension: catches zero counts and bad tolerances now.
        plan.check(usize::MAX)?;
        Ok(plan)
    }

    /// The plan for an operator of dimension `dim` (SLQ steps capped at `dim`), validated.
    pub fn for_dim(&self, dim: usize) -> Result<Self> {
        let mut p = self.clone();
        if let Some((s, _)) = &mut p.density {
            s.steps = s.steps.min(dim);
        }
        p.check(dim)?;
        Ok(p)
    }

    fn check(&self, dim: usize) -> Result<()> {
        self.top.check(dim)?;
        if self.method == EigenMethod::Power {
            self.power().check(dim)?;
        }
        match self.trace {
            Some(TraceMethod::Hutchinson) => self.trace_params.check(dim)?,
            Some(TraceMethod::Hutchpp) => self.hutchpp.check(dim)?,
            None => {}
        }
        if let Some((s, d)) = &self.density {
            s.check(dim)?;
            d.check()?;
        }
        Ok(())
    }

    fn power(&self) -> PowerParams {
        PowerParams {
            top_n: self.top.k,
            max_iter: self.top.max_iter,
            tol: self.top.tol,
            seed: self.top.seed,
            keep_vectors: self.top.keep_vectors,
        }
    }
}

/// One eigenpair in the JSON output.
#[derive(Serialize)]
struct Pair {
    value: f64,
    residual: f64,
    converged: bool,
}

#[derive(Serialize)]
struct TraceOut {
    estimate: f64,
    stderr: f64,
    probes: usize,
    method: String,
}

#[derive(Serialize)]
struct DensityOut {
    runs: usize,
    steps: usize,
    /// Ritz values per run; omitted when larger than [`JSON_DENSITY_MAX`].
    #[serde(skip_serializing_if = "Option::is_none")]
    nodes: Option<Vec<Vec<f64>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    weights: Option<Vec<Vec<f64>>>,
}

/// The results over one set of tensors (the whole subset or a block), as printed.
#[derive(Serialize)]
struct Summary {
    name: String,
    params_dim: usize,
    eigenvalues: Vec<Pair>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    bottom: Vec<Pair>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace: Option<TraceOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    density: Option<DensityOut>,
    hvps: usize,
    seconds: f64,
}

#[derive(Serialize)]
struct Output {
    model: String,
    data: String,
    samples: usize,
    params: String,
    precision: &'static str,
    method: String,
    weight_decay: f64,
    hvp_normalization: &'static str,
    #[serde(flatten)]
    whole: Summary,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    blocks: Vec<Summary>,
    hvp_cache: HvpCacheOut,
    out: String,
}

/// The θ-only half of the products kept across them (`--hvp-cache-mb`).
#[derive(Serialize)]
struct HvpCacheOut {
    budget_mb: usize,
    /// Mini-batches whose state was kept, of all; the others ran whole products.
    kept_batches: usize,
    batches: usize,
    mb: f64,
}

/// Counts products and ticks the spinner on each.
struct Ticking<'a, O: ?Sized> {
    inner: &'a O,
    bar: &'a ProgressBar,
}

impl<O: LinearOperator + ?Sized> LinearOperator for Ticking<'_, O> {
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn apply(&self, v: ArrayView1<f64>, out: ArrayViewMut1<f64>) {
        self.inner.apply(v, out);
        self.bar.inc(1);
    }
}

/// Runs `f` with a spinner on stderr (drawn only on a terminal), then prints one line.
fn stage<R>(
    label: &str,
    op: &dyn LinearOperator,
    f: impl FnOnce(&dyn LinearOperator) -> Result<R>,
) -> Result<R> {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg}: {pos} H·v  {elapsed}")
            .expect("valid template"),
    );
    bar.set_message(label.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    let t0 = Instant::now();
    let ticking = Ticking {
        inner: op,
        bar: &bar,
    };
    let r = f(&ticking);
    let n = bar.position();
    bar.finish_and_clear();
    if r.is_ok() {
        eprintln!(
            "hessian: {label}: {n} H·v, {:.1} s",
            t0.elapsed().as_secs_f64()
        );
    }
    r
}

fn eigen_data(r: &EigenReport) -> EigenData {
    EigenData {
        values: r.values.clone(),
        residuals: r.residuals.clone(),
        converged: r.converged.clone(),
        vectors: r.vectors.clone(),
    }
}

fn pairs(e: &EigenData) -> Vec<Pair> {
    e.values
        .iter()
        .zip(&e.residuals)
        .zip(&e.converged)
        .map(|((&value, &residual), &converged)| Pair {
            value,
            residual,
            converged,
        })
        .collect()
}

/// Runs the plan on `op` (already validated for its dimension).
fn analyse(name: &str, plan: &HessianPlan, op: &HessianOperator<'_, '_>) -> Result<HessianGroup> {
    let t0 = Instant::now();
    let counted = Counting::new(op);
    let dim = counted.dim();
    let tag = |what: &str| {
        if name.is_empty() {
            what.to_string()
        } else {
            format!("{name}: {what}")
        }
    };
    let k = plan.top.k;
    let top = match plan.method {
        EigenMethod::Lanczos => stage(&tag(&format!("top-{k} (lanczos)")), &counted, |o| {
            Ok(top_eigenpairs(o, &plan.top)?)
        })?,
        EigenMethod::Power => stage(&tag(&format!("top-{k} (power)")), &counted, |o| {
            Ok(power_iteration(o, &plan.power())?)
        })?,
    };
    let bottom = if plan.bottom {
        let p = LanczosParams {
            which: Which::Smallest,
            ..plan.top.clone()
        };
        Some(stage(
            &tag(&format!("bottom-{k} (lanczos)")),
            &counted,
            |o| Ok(top_eigenpairs(o, &p)?),
        )?)
    } else {
        None
    };
    let trace = match plan.trace {
        None => None,
        Some(m) => {
            let method = format!("{m:?}").to_lowercase();
            let r = stage(&tag(&format!("trace ({method})")), &counted, |o| {
                Ok(match m {
                    TraceMethod::Hutchinson => hutchinson(o, &plan.trace_params)?,
                    TraceMethod::Hutchpp => hutchpp(o, &plan.hutchpp)?,
                })
            })?;
            Some(TraceData {
                estimate: r.estimate,
                stderr: r.stderr,
                probes: r.probes,
                method,
                samples: r.samples,
            })
        }
    };
    let density = match &plan.density {
        None => None,
        Some((sp, dp)) => {
            let r = stage(&tag("density (slq)"), &counted, |o| Ok(slq(o, sp)?))?;
            let (grid, density) = density_on_grid(&r, dp)?;
            Some(DensityData {
                nodes: r.nodes,
                weights: r.weights,
                grid,
                density,
            })
        }
    };
    Ok(HessianGroup {
        params_dim: dim,
        tensors: op
            .tensors()
            .iter()
            .cloned()
            .zip(op.tensor_lengths().iter().copied())
            .collect(),
        top: Some(eigen_data(&top)),
        bottom: bottom.as_ref().map(eigen_data),
        trace,
        density,
        hvps: counted.count(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

fn summary(name: &str, g: &HessianGroup) -> Summary {
    Summary {
        name: name.to_string(),
        params_dim: g.params_dim,
        eigenvalues: g.top.as_ref().map(pairs).unwrap_or_default(),
        bottom: g.bottom.as_ref().map(pairs).unwrap_or_default(),
        trace: g.trace.as_ref().map(|t| TraceOut {
            estimate: t.estimate,
            stderr: t.stderr,
            probes: t.probes,
            method: t.method.clone(),
        }),
        density: g.density.as_ref().map(|d| {
            let small = d.nodes.len() <= JSON_DENSITY_MAX;
            let rows =
                |a: &ndarray::Array2<f64>| a.rows().into_iter().map(|r| r.to_vec()).collect();
            DensityOut {
                runs: d.nodes.nrows(),
                steps: d.nodes.ncols(),
                nodes: small.then(|| rows(&d.nodes)),
                weights: small.then(|| rows(&d.weights)),
            }
        }),
        hvps: g.hvps,
        seconds: g.seconds,
    }
}

pub fn run(args: &HessianArgs) -> Result<()> {
    let plan = HessianPlan::from_args(args)?;
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            bail!(
                "--out {}: folder {} does not exist",
                args.out.display(),
                parent.display()
            );
        }
    }
    let model = args.model.load()?;
    let ds = args.data.load()?.remove(0);
    let cfg = args.data.objective_config();
    let obj = Objective::new(&model.graph, ds.x.view(), &ds.y, cfg).with_context(|| {
        format!(
            "data '{}' does not fit model {}",
            args.data.data,
            args.model.model.display()
        )
    })?;
    let layout = &model.graph.layout;

    // Build and validate every operator before the first H·v.
    let whole_op = HessianOperator::new(&obj, &model.theta, &plan.subset, plan.options);
    if whole_op.dim() == 0 {
        bail!(
            "--params {}: no trainable tensor selected (see `losscape info -m {}` for the names)",
            plan.subset.describe(),
            args.model.model.display()
        );
    }
    let whole_plan = plan.for_dim(whole_op.dim())?;
    let mut block_ops = Vec::new();
    if plan.per_block {
        for b in blocks(layout, &plan.subset) {
            let keep = |t: &TensorSpec| plan.subset.contains(t) && block_of(&t.name) == b;
            let op = HessianOperator::restricted(&obj, &model.theta, keep, plan.options)
                .sharing_cache_with(&whole_op);
            let dim = op.dim();
            let mut p = plan.clone();
            if p.top.k > dim {
                eprintln!(
                    "hessian: block {b} has {dim} parameters: computing {dim} eigenvalues, not --top-k {}",
                    p.top.k
                );
                p.top.k = dim;
                p.top.max_iter = p.top.max_iter.max(dim);
            }
            let p = p
                .for_dim(dim)
                .with_context(|| format!("block {b} ({dim} parameters)"))?;
            block_ops.push((b, op, p));
        }
    }

    let (whole, block_results) = crate::args::with_threads(args.threads, || -> Result<_> {
        let whole = analyse("", &whole_plan, &whole_op)?;
        let mut out = Vec::new();
        for (b, op, p) in &block_ops {
            out.push((b.clone(), analyse(b, p, op)?));
        }
        Ok((whole, out))
    })??;

    let (kept, batches, bytes) = whole_op.kept_state().unwrap_or((0, 0, 0));
    let hvp_cache = HvpCacheOut {
        budget_mb: args.hvp_cache_mb,
        kept_batches: kept,
        batches,
        mb: bytes as f64 / (1 << 20) as f64,
    };
    let hvps = whole.hvps + block_results.iter().map(|(_, g)| g.hvps).sum::<usize>();
    let seconds = whole.seconds + block_results.iter().map(|(_, g)| g.seconds).sum::<f64>();
    let precision = if plan.options.double_precision {
        "f64"
    } else {
        "f32"
    };
    let method = format!("{:?}", args.method).to_lowercase();
    let mut attrs: BTreeMap<String, Attr> = BTreeMap::new();
    attrs.insert(
        "model".into(),
        args.model.model.display().to_string().into(),
    );
    attrs.insert(
        "model_sha256".into(),
        model.sha256.clone().unwrap_or_default().into(),
    );
    attrs.insert(
        crate::model::zoo::ARCH_METADATA_KEY.into(),
        serde_json::to_string(&model.arch)?.into(),
    );
    attrs.insert("data".into(), ds.name.clone().into());
    attrs.insert("samples".into(), ds.len().into());
    attrs.insert("seed".into(), (args.seed as i64).into());
    attrs.insert("method".into(), method.clone().into());
    attrs.insert("tol".into(), args.tol.into());
    attrs.insert("max_iter".into(), plan.top.max_iter.into());
    attrs.insert("top_k".into(), args.top_k.into());
    attrs.insert("params".into(), plan.subset.describe().into());
    attrs.insert("weight_decay".into(), args.weight_decay.into());
    attrs.insert(
        "bn_mode".into(),
        format!("{:?}", cfg.mode).to_lowercase().into(),
    );
    attrs.insert("batch_size".into(), cfg.batch_size.into());
    attrs.insert("precision".into(), precision.into());
    attrs.insert("hvp_normalization".into(), HVP_NORMALIZATION.into());
    attrs.insert("hvps_total".into(), hvps.into());
    attrs.insert("hvp_cache_budget_mb".into(), args.hvp_cache_mb.into());
    attrs.insert("hvp_cache_kept_batches".into(), kept.into());
    attrs.insert("hvp_cache_batches".into(), batches.into());
    attrs.insert("seconds_total".into(), seconds.into());
    attrs.insert("losscape_version".into(), env!("CARGO_PKG_VERSION").into());
    write_hessian(&args.out, &whole, &block_results, &attrs)
        .with_context(|| format!("--out {}: writing the HDF5 file", args.out.display()))?;

    let out = Output {
        model: args.model.model.display().to_string(),
        data: ds.name.clone(),
        samples: ds.len(),
        params: plan.subset.describe(),
        precision,
        method,
        weight_decay: args.weight_decay,
        hvp_normalization: HVP_NORMALIZATION,
        whole: summary("all", &whole),
        blocks: block_results.iter().map(|(n, g)| summary(n, g)).collect(),
        hvp_cache,
        out: args.out.display().to_string(),
    };
    if args.json {
        return super::print_json(&out);
    }
    println!(
        "{} on {} ({} samples, {} parameters, {}) → {}",
        out.model, out.data, out.samples, out.params, out.precision, out.out
    );
    print_summary(&out.whole);
    for b in &out.blocks {
        print_summary(b);
    }
    Ok(())
}

fn print_summary(a: &Summary) {
    println!(
        "{} ({} parameters, {} H·v, {:.1} s)",
        a.name, a.params_dim, a.hvps, a.seconds
    );
    let flag = |p: &Pair| if p.converged { "" } else { "  (not converged)" };
    for (i, p) in a.eigenvalues.iter().enumerate() {
        println!(
            "  λ{:<3} = {:>14.6e}   residual {:.1e}{}",
            i + 1,
            p.value,
            p.residual,
            flag(p)
        );
    }
    for (i, p) in a.bottom.iter().enumerate() {
        println!(
            "  λmin{:<2}= {:>14.6e}   residual {:.1e}{}",
            i + 1,
            p.value,
            p.residual,
            flag(p)
        );
    }
    if let Some(t) = &a.trace {
        println!(
            "  trace  = {:>14.6e} ± {:.2e} ({} probes, {})",
            t.estimate, t.stderr, t.probes, t.method
        );
    }
    if let Some(d) = &a.density {
        println!(
            "  density: {} SLQ run(s) × {} steps (in the HDF5 file)",
            d.runs, d.steps
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(extra: &[&str]) -> HessianArgs {
        let mut a = vec!["losscape", "hessian", "-m", "m.safetensors", "-d", "digits"];
        a.extend(["--out", "h.h5"]);
        a.extend(extra);
        match Cli::try_parse_from(a).unwrap().command {
            Command::Hessian(h) => h,
            _ => unreachable!(),
        }
    }

    fn plan_err(extra: &[&str]) -> String {
        format!("{:#}", HessianPlan::from_args(&parse(extra)).unwrap_err())
    }

    #[test]
    fn plan_rejects_bad_options_by_flag() {
        assert!(plan_err(&["--top-k", "0"]).contains("--top-k"));
        assert!(plan_err(&["--tol", "0"]).contains("--tol"));
        assert!(plan_err(&["--top-k", "5", "--max-iter", "3"]).contains("--max-iter"));
        assert!(plan_err(&["--trace", "--probes", "0"]).contains("--probes"));
        assert!(
            plan_err(&["--trace", "--trace-method", "hutchpp", "--probes", "2"])
                .contains("--probes")
        );
        assert!(
            plan_err(&["--trace", "--trace-tol", "1e-2", "--min-probes", "1"])
                .contains("--min-probes")
        );
        assert!(plan_err(&["--density", "--slq-steps", "0"]).contains("--slq-steps"));
        assert!(plan_err(&["--density", "--slq-runs", "0"]).contains("--slq-runs"));
        assert!(plan_err(&["--density", "--grid-points", "1"]).contains("--grid-points"));
        assert!(plan_err(&["--density", "--sigma-squared=-1"]).contains("--sigma-squared"));
        assert!(plan_err(&["--weight-decay=-1"]).contains("--weight-decay"));
        // valid: SLQ steps are capped at the dimension, not rejected
        let p = HessianPlan::from_args(&parse(&["--density", "--slq-steps", "500"])).unwrap();
        let p = p.for_dim(20).unwrap();
        assert_eq!(p.density.unwrap().0.steps, 20);
        assert!(format!(
            "{:#}",
            HessianPlan::from_args(&parse(&["--top-k", "30"]))
                .unwrap()
                .for_dim(20)
                .unwrap_err()
        )
        .contains("--top-k"));
    }

    #[test]
    fn params_flags() {
        let p = HessianPlan::from_args(&parse(&["--params", "weights"])).unwrap();
        assert_eq!(p.subset.describe(), "weights");
        let p = HessianPlan::from_args(&parse(&["--params-regex", "^layer3\\."])).unwrap();
        assert_eq!(p.subset.describe(), "regex:^layer3\\.");
        assert!(Cli::try_parse_from([
            "losscape",
            "hessian",
            "-m",
            "m",
            "-d",
            "d",
            "--out",
            "o",
            "--params-regex",
            "("
        ])
        .is_err());
        assert!(Cli::try_parse_from([
            "losscape", "hessian", "-m", "m", "-d", "d", "--out", "o", "--params", "biases"
        ])
        .is_err());
    }
}
