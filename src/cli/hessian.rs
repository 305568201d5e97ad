//! `losscape hessian`: top (and bottom) eigenvalues with residuals, trace and spectral
//! density of the Hessian of the per-sample mean loss at the trained weights, from exact
//! H·v products (PyHessian's quantities, Yao et al. 2020, arXiv:1912.07145).
//!
//! HDF5 output (root, and `/blocks/<name>/` per block with `--per-block`):
//! `eigenvalues`, `residuals`, `converged` (u8), optional `eigenvectors` (dim × k, f32,
//! subset order) and `bottom_eigenvalues`/`bottom_residuals`/`bottom_converged`;
//! `trace_samples`; `slq_nodes`, `slq_weights` (runs × steps), `density_grid`, `density`;
//! attributes for every option, the trace estimate and stderr, H·v count and seconds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use ndarray::{Array1, Array2};
use serde::Serialize;

use super::{DataArgs, ModelArgs, Precision};
use crate::engine::TensorSpec;
use crate::hessian::{
    density_on_grid, hutchinson, hutchpp, power_iteration, slq, top_eigenpairs, Counting,
    DensityParams, EigenReport, HutchppParams, LanczosParams, ObjectiveHessian, PowerParams,
    SlqParams, TraceParams, Which,
};
use crate::io::surface::{write_attr, Attr};
use crate::objective::Objective;

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
    /// Eigenvalue algorithm.
    #[arg(long, value_enum, default_value_t = EigenMethod::Lanczos)]
    pub method: EigenMethod,
    /// Estimate the trace.
    #[arg(long)]
    pub trace: bool,
    #[arg(long, value_enum, default_value_t = TraceMethod::Hutchinson)]
    pub trace_method: TraceMethod,
    /// Probes (Hutchinson) or total H·v budget (Hutch++).
    #[arg(long, default_value_t = 100)]
    pub probes: usize,
    /// Spectral density by stochastic Lanczos quadrature.
    #[arg(long)]
    pub density: bool,
    #[arg(long, default_value_t = 1)]
    pub slq_runs: usize,
    #[arg(long, default_value_t = 100)]
    pub slq_steps: usize,
    /// Points of the density grid.
    #[arg(long, default_value_t = 10_000)]
    pub grid_points: usize,
    /// Gaussian kernel variance of the density (PyHessian: 1e-5).
    #[arg(long, default_value_t = 1e-5)]
    pub sigma_squared: f64,
    /// Maximum iterations (Lanczos steps, or power iterations per eigenvalue).
    #[arg(long, default_value_t = 100)]
    pub max_iter: usize,
    /// Relative residual (Lanczos) or relative change (power) that counts as converged.
    #[arg(long, default_value_t = 1e-3)]
    pub tol: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Which tensors the Hessian is taken over.
    #[arg(long, value_enum, default_value_t = ParamSet::Trainable)]
    pub params: ParamSet,
    /// Only tensors whose state_dict name matches this regex (overrides --params).
    #[arg(long, value_name = "REGEX")]
    pub params_regex: Option<regex::Regex>,
    /// Add λ·I (the curvature of an L2 penalty λ/2‖θ‖²).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Repeat the analyses for each top-level block (conv1, bn1, layer1, …, linear).
    #[arg(long)]
    pub per_block: bool,
    /// Store the eigenvectors in the HDF5 file.
    #[arg(long)]
    pub save_vectors: bool,
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Output HDF5 file.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

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

/// SLQ nodes and weights (runs × steps), and the smoothed density on its grid.
type Density = (Array2<f64>, Array2<f64>, Vec<f64>, Vec<f64>);

#[derive(Serialize)]
struct Analysis {
    name: String,
    params_dim: usize,
    eigenvalues: Vec<Pair>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    bottom: Vec<Pair>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace: Option<TraceOut>,
    hvps: usize,
    seconds: f64,
    #[serde(skip)]
    top_report: Option<EigenReport>,
    #[serde(skip)]
    bottom_report: Option<EigenReport>,
    #[serde(skip)]
    trace_samples: Vec<f64>,
    #[serde(skip)]
    slq: Option<Density>,
}

#[derive(Serialize)]
struct Output {
    model: String,
    data: String,
    samples: usize,
    hvp_normalization: &'static str,
    #[serde(flatten)]
    whole: Analysis,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    blocks: Vec<Analysis>,
    out: String,
}

fn pairs(r: &EigenReport) -> Vec<Pair> {
    r.values
        .iter()
        .zip(&r.residuals)
        .zip(&r.converged)
        .map(|((&value, &residual), &converged)| Pair {
            value,
            residual,
            converged,
        })
        .collect()
}

fn analyse(args: &HessianArgs, name: &str, op: &ObjectiveHessian<'_>) -> Result<Analysis> {
    let t0 = Instant::now();
    let counted = Counting::new(op);
    let dim = crate::hessian::LinearOperator::dim(op);
    if dim == 0 {
        bail!("{name}: no parameters selected (check --params / --params-regex)");
    }
    let top = match args.method {
        EigenMethod::Lanczos => top_eigenpairs(
            &counted,
            &LanczosParams {
                k: args.top_k,
                max_iter: args.max_iter,
                tol: args.tol,
                seed: args.seed,
                which: Which::Largest,
                keep_vectors: args.save_vectors,
            },
        )?,
        EigenMethod::Power => power_iteration(
            &counted,
            &PowerParams {
                top_n: args.top_k,
                max_iter: args.max_iter,
                tol: args.tol,
                seed: args.seed,
                keep_vectors: args.save_vectors,
            },
        )?,
    };
    let bottom = if args.bottom {
        Some(top_eigenpairs(
            &counted,
            &LanczosParams {
                k: args.top_k,
                max_iter: args.max_iter,
                tol: args.tol,
                seed: args.seed,
                which: Which::Smallest,
                keep_vectors: args.save_vectors,
            },
        )?)
    } else {
        None
    };
    let trace = if args.trace {
        Some(match args.trace_method {
            TraceMethod::Hutchinson => hutchinson(
                &counted,
                &TraceParams {
                    probes: args.probes,
                    seed: args.seed,
                    ..Default::default()
                },
            )?,
            TraceMethod::Hutchpp => hutchpp(
                &counted,
                &HutchppParams {
                    budget: args.probes,
                    seed: args.seed,
                },
            )?,
        })
    } else {
        None
    };
    let density = if args.density {
        let r = slq(
            &counted,
            &SlqParams {
                runs: args.slq_runs,
                steps: args.slq_steps.min(dim),
                seed: args.seed,
            },
        )?;
        let (grid, dens) = density_on_grid(
            &r,
            &DensityParams {
                grid_points: args.grid_points,
                sigma_squared: args.sigma_squared,
                ..Default::default()
            },
        )?;
        Some((r.nodes, r.weights, grid, dens))
    } else {
        None
    };
    Ok(Analysis {
        name: name.to_string(),
        params_dim: dim,
        eigenvalues: pairs(&top),
        bottom: bottom.as_ref().map(pairs).unwrap_or_default(),
        trace: trace.as_ref().map(|t| TraceOut {
            estimate: t.estimate,
            stderr: t.stderr,
            probes: t.probes,
            method: format!("{:?}", args.trace_method).to_lowercase(),
        }),
        hvps: counted.count(),
        seconds: t0.elapsed().as_secs_f64(),
        top_report: Some(top),
        bottom_report: bottom,
        trace_samples: trace.map(|t| t.samples).unwrap_or_default(),
        slq: density,
    })
}

fn write_group(g: &hdf5::Group, a: &Analysis, names: &[String]) -> hdf5::Result<()> {
    let write_report = |prefix: &str, r: &EigenReport| -> hdf5::Result<()> {
        g.new_dataset_builder()
            .with_data(&Array1::from(r.values.clone()))
            .create(format!("{prefix}eigenvalues").as_str())?;
        g.new_dataset_builder()
            .with_data(&Array1::from(r.residuals.clone()))
            .create(format!("{prefix}residuals").as_str())?;
        let conv: Array1<u8> = r.converged.iter().map(|&c| c as u8).collect();
        g.new_dataset_builder()
            .with_data(&conv)
            .create(format!("{prefix}converged").as_str())?;
        if let Some(v) = &r.vectors {
            let ds = g
                .new_dataset_builder()
                .with_data(&v.mapv(|x| x as f32))
                .create(format!("{prefix}eigenvectors").as_str())?;
            write_attr(&ds, "tensors", &names.join(",").into())?;
        }
        Ok(())
    };
    if let Some(r) = &a.top_report {
        write_report("", r)?;
    }
    if let Some(r) = &a.bottom_report {
        write_report("bottom_", r)?;
    }
    if let Some(t) = &a.trace {
        g.new_dataset_builder()
            .with_data(&Array1::from(a.trace_samples.clone()))
            .create("trace_samples")?;
        write_attr(g, "trace", &t.estimate.into())?;
        write_attr(g, "trace_stderr", &t.stderr.into())?;
        write_attr(g, "trace_probes", &t.probes.into())?;
        write_attr(g, "trace_method", &t.method.as_str().into())?;
    }
    if let Some((nodes, weights, grid, dens)) = &a.slq {
        g.new_dataset_builder()
            .with_data(nodes)
            .create("slq_nodes")?;
        g.new_dataset_builder()
            .with_data(weights)
            .create("slq_weights")?;
        g.new_dataset_builder()
            .with_data(&Array1::from(grid.clone()))
            .create("density_grid")?;
        g.new_dataset_builder()
            .with_data(&Array1::from(dens.clone()))
            .create("density")?;
    }
    write_attr(g, "params_dim", &a.params_dim.into())?;
    write_attr(g, "hvps", &a.hvps.into())?;
    write_attr(g, "seconds", &a.seconds.into())?;
    Ok(())
}

fn write_file(
    path: &Path,
    out: &Output,
    attrs: &BTreeMap<String, Attr>,
    names: &[String],
    block_names: &[Vec<String>],
) -> Result<()> {
    let e = |x: hdf5::Error| anyhow::anyhow!("{}: {x}", path.display());
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let f = hdf5::File::create(&tmp)
        .with_context(|| format!("--out {}: cannot write there", path.display()))?;
    write_group(&f, &out.whole, names).map_err(e)?;
    if !out.blocks.is_empty() {
        let b = f.create_group("blocks").map_err(e)?;
        for (a, n) in out.blocks.iter().zip(block_names) {
            write_group(&b.create_group(&a.name).map_err(e)?, a, n).map_err(e)?;
        }
    }
    for (k, v) in attrs {
        write_attr(&f, k, v).map_err(e)?;
    }
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub fn run(args: &HessianArgs) -> Result<()> {
    if args.top_k == 0 {
        bail!("--top-k must be at least 1");
    }
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
    let select = |t: &TensorSpec| -> bool {
        t.role.is_trainable()
            && match &args.params_regex {
                Some(re) => re.is_match(&t.name),
                None => args.params == ParamSet::Trainable || t.shape.len() > 1,
            }
    };
    let names_of = |keep: &dyn Fn(&TensorSpec) -> bool| -> Vec<String> {
        model
            .graph
            .layout
            .tensors()
            .iter()
            .filter(|t| keep(t))
            .map(|t| t.name.clone())
            .collect()
    };
    let precision64 = args.precision == Precision::F64;
    let build = |keep: &dyn Fn(&TensorSpec) -> bool| {
        ObjectiveHessian::new(&obj, &model.theta, |t| keep(t))
            .with_shift(args.weight_decay)
            .with_f64(precision64)
    };
    let whole_names = names_of(&select);
    let whole = crate::args::with_threads(args.threads, || analyse(args, "all", &build(&select)))??;
    let mut blocks = Vec::new();
    let mut block_names = Vec::new();
    if args.per_block {
        let mut prefixes: Vec<String> = Vec::new();
        for t in model.graph.layout.tensors().iter().filter(|t| select(t)) {
            let p = t.name.split('.').next().unwrap_or("").to_string();
            if !prefixes.contains(&p) {
                prefixes.push(p);
            }
        }
        for p in prefixes {
            let keep = |t: &TensorSpec| select(t) && t.name.split('.').next() == Some(p.as_str());
            block_names.push(names_of(&keep));
            blocks.push(crate::args::with_threads(args.threads, || {
                analyse(args, &p, &build(&keep))
            })??);
        }
    }
    let out = Output {
        model: args.model.model.display().to_string(),
        data: ds.name.clone(),
        samples: ds.len(),
        hvp_normalization:
            "per-sample mean (PyHessian convention; loss-landscape sums per-batch means)",
        whole,
        blocks,
        out: args.out.display().to_string(),
    };
    let mut attrs: BTreeMap<String, Attr> = BTreeMap::new();
    attrs.insert("model".into(), out.model.clone().into());
    attrs.insert(
        "model_sha256".into(),
        model.sha256.clone().unwrap_or_default().into(),
    );
    attrs.insert("data".into(), out.data.clone().into());
    attrs.insert("samples".into(), out.samples.into());
    attrs.insert("seed".into(), (args.seed as i64).into());
    attrs.insert(
        "method".into(),
        format!("{:?}", args.method).to_lowercase().into(),
    );
    attrs.insert("tol".into(), args.tol.into());
    attrs.insert("max_iter".into(), args.max_iter.into());
    attrs.insert(
        "params".into(),
        match &args.params_regex {
            Some(r) => format!("regex:{r}"),
            None => format!("{:?}", args.params).to_lowercase(),
        }
        .into(),
    );
    attrs.insert("weight_decay".into(), args.weight_decay.into());
    attrs.insert(
        "bn_mode".into(),
        format!("{:?}", cfg.mode).to_lowercase().into(),
    );
    attrs.insert(
        "precision".into(),
        if precision64 { "f64" } else { "f32" }.into(),
    );
    attrs.insert("hvp_normalization".into(), out.hvp_normalization.into());
    attrs.insert("losscape_version".into(), env!("CARGO_PKG_VERSION").into());
    write_file(&args.out, &out, &attrs, &whole_names, &block_names)?;
    if args.json {
        return super::print_json(&out);
    }
    let show = |a: &Analysis| {
        println!(
            "{} ({} parameters, {} H·v, {:.1} s)",
            a.name, a.params_dim, a.hvps, a.seconds
        );
        for (i, p) in a.eigenvalues.iter().enumerate() {
            println!(
                "  λ{} = {:>14.6e}   residual {:.1e}{}",
                i + 1,
                p.value,
                p.residual,
                if p.converged { "" } else { "  (not converged)" }
            );
        }
        for (i, p) in a.bottom.iter().enumerate() {
            println!(
                "  λmin{} = {:>12.6e}   residual {:.1e}{}",
                i + 1,
                p.value,
                p.residual,
                if p.converged { "" } else { "  (not converged)" }
            );
        }
        if let Some(t) = &a.trace {
            println!(
                "  trace = {:.6e} ± {:.2e} ({} probes, {})",
                t.estimate, t.stderr, t.probes, t.method
            );
        }
    };
    println!(
        "{} on {} ({} samples) → {}",
        out.model, out.data, out.samples, out.out
    );
    show(&out.whole);
    for b in &out.blocks {
        show(b);
    }
    Ok(())
}
