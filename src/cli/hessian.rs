//! `losscape hessian`: top (and bottom) eigenvalues with residuals, trace and spectral
//! density of the Hessian (see [`crate::jobs::hessian`]). stdout gets text, or JSON with
//! `--json`; stderr gets a spinner while a stage runs (only on a terminal) and one line per
//! finished stage.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::{DataArgs, ModelArgs};
use crate::jobs::hessian::{
    run_hessian, CurvatureOperator, EigenMethod, HessianConfig, HessianPlan, HessianSettings, Pair,
    ParamSet, Summary, TraceMethod,
};
use crate::jobs::Precision;

/// The defaults of every setting (the library's).
static D: std::sync::LazyLock<HessianSettings> = std::sync::LazyLock::new(HessianSettings::default);

#[derive(Debug, Args)]
pub struct HessianArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// The curvature matrix every analysis runs on. The Gauss–Newton types (ggn, fisher,
    /// empirical-fisher) are PSD: the Hessian with the network's own second derivatives
    /// left out (GGN), or outer products of per-sample gradients (the Fisher with labels
    /// drawn from the model, which for cross-entropy equals the GGN in expectation; the
    /// empirical Fisher at the data's labels). Each product costs one R-forward and one
    /// backward pass, less than an H·v.
    #[arg(long, value_enum, default_value_t = D.operator)]
    pub operator: CurvatureOperator,
    /// --operator fisher: labels drawn per data point from the model's softmax (the Monte
    /// Carlo estimate of the Fisher averages over them; same cost per product).
    #[arg(long, value_name = "M", default_value_t = D.fisher_samples, value_parser = super::numbers::count::<usize>)]
    pub fisher_samples: usize,
    /// Number of largest eigenvalues.
    #[arg(long, default_value_t = D.top_k, value_parser = super::numbers::count::<usize>)]
    pub top_k: usize,
    /// Also the most negative eigenvalue(s) (as many as --top-k), by Lanczos.
    #[arg(long)]
    pub bottom: bool,
    /// Eigenvalue algorithm for the largest eigenvalues.
    #[arg(long, value_enum, default_value_t = D.method)]
    pub method: EigenMethod,
    /// Maximum iterations: Lanczos steps, or power iterations per eigenvalue
    /// [default: the larger of 100 and 3 × --top-k; `surface --hessian` runs 30 steps per
    /// grid point, see its --hessian-max-iter].
    #[arg(long, value_parser = super::numbers::count::<usize>)]
    pub max_iter: Option<usize>,
    /// Relative residual ‖Hv − λv‖/|λ| (Lanczos) or relative change of λ (power) that
    /// counts as converged.
    #[arg(long, default_value_t = D.tol)]
    pub tol: f64,
    /// Estimate the trace.
    #[arg(long)]
    pub trace: bool,
    #[arg(long, value_enum, default_value_t = D.trace_method)]
    pub trace_method: TraceMethod,
    /// Probes (Hutchinson) or total H·v budget (Hutch++).
    #[arg(long, default_value_t = D.probes, value_parser = super::numbers::count::<usize>)]
    pub probes: usize,
    /// Hutchinson: stop early once stderr/|trace| < this (after --min-probes probes).
    #[arg(long, value_name = "TOL")]
    pub trace_tol: Option<f64>,
    /// Hutchinson: probes before --trace-tol may stop the estimate.
    #[arg(long, default_value_t = D.min_probes, value_parser = super::numbers::count::<usize>)]
    pub min_probes: usize,
    /// Spectral density by stochastic Lanczos quadrature.
    #[arg(long)]
    pub density: bool,
    /// SLQ runs (independent start vectors).
    #[arg(long, default_value_t = D.slq_runs, value_parser = super::numbers::count::<usize>)]
    pub slq_runs: usize,
    /// Lanczos steps per SLQ run (capped at the number of parameters).
    #[arg(long, default_value_t = D.slq_steps, value_parser = super::numbers::count::<usize>)]
    pub slq_steps: usize,
    /// Points of the density grid.
    #[arg(long, default_value_t = D.grid_points, value_parser = super::numbers::count::<usize>)]
    pub grid_points: usize,
    /// Gaussian kernel variance of the density, per unit of spectral range (PyHessian: 1e-5).
    #[arg(long, default_value_t = D.sigma_squared)]
    pub sigma_squared: f64,
    /// Seed of every random vector (start vectors, probes) and of the Fisher's sampled
    /// labels; written to the output.
    #[arg(long, default_value_t = D.seed, value_parser = super::numbers::count::<u64>)]
    pub seed: u64,
    /// Which tensors the operator is taken over. The default here is PyHessian's (every
    /// trainable tensor); `surface --hessian` and `sharpness` (default --params weights)
    /// use the weights with more than one dimension, as loss-landscape's eigenvalue maps:
    /// pass `--params weights` to compare with them.
    #[arg(long, value_enum, default_value_t = D.params)]
    pub params: ParamSet,
    /// Only trainable tensors whose state_dict name matches this regex (overrides --params).
    #[arg(long, value_name = "REGEX")]
    pub params_regex: Option<regex::Regex>,
    /// Add λ·I to H (the curvature of an L2 penalty λ/2‖θ‖²).
    #[arg(long, default_value_t = D.weight_decay)]
    pub weight_decay: f64,
    /// Repeat the analyses for each top-level block: stem, layer1…3, linear (ResNet);
    /// fc_in, blocks.i, fc_out (MLP). Blocks come from the tensor names (first component).
    #[arg(long)]
    pub per_block: bool,
    /// Store the eigenvectors in the HDF5 file (f32, dim × k). `losscape surface
    /// --directions FILE` takes such a file: the top-1 and top-2 eigenvectors become the
    /// x and y directions.
    #[arg(long)]
    pub save_vectors: bool,
    /// Precision of the H·v products (the analyses run in f64 either way).
    #[arg(long, value_enum, default_value_t = D.precision)]
    pub precision: Precision,
    /// Memory (MiB) for the θ-only half of the H·v products (forward pass, loss, plain
    /// backward pass), kept across products so that each runs only the R-passes: about a
    /// third faster, same bits. Batches past the budget are recomputed; 0 keeps none.
    #[arg(long, value_name = "MIB", default_value_t = D.hvp_cache_mb, value_parser = super::numbers::count::<usize>)]
    pub hvp_cache_mb: usize,
    /// Worker threads (default: all cores).
    #[arg(long, value_parser = crate::cli::args::parse_threads)]
    pub threads: Option<usize>,
    /// Output HDF5 file.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: PathBuf,
    /// No progress output on stderr (warnings still print).
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Print JSON on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

impl HessianArgs {
    /// The settings as given.
    pub fn settings(&self) -> HessianSettings {
        HessianSettings {
            top_k: self.top_k,
            bottom: self.bottom,
            method: self.method,
            max_iter: self.max_iter,
            tol: self.tol,
            trace: self.trace,
            trace_method: self.trace_method,
            probes: self.probes,
            trace_tol: self.trace_tol,
            min_probes: self.min_probes,
            density: self.density,
            slq_runs: self.slq_runs,
            slq_steps: self.slq_steps,
            grid_points: self.grid_points,
            sigma_squared: self.sigma_squared,
            seed: self.seed,
            params: self.params,
            params_regex: self.params_regex.clone(),
            weight_decay: self.weight_decay,
            per_block: self.per_block,
            save_vectors: self.save_vectors,
            precision: self.precision,
            hvp_cache_mb: self.hvp_cache_mb,
            operator: self.operator,
            fisher_samples: self.fisher_samples,
        }
    }

    /// The validated job.
    pub fn config(&self) -> crate::jobs::JobResult<HessianConfig> {
        let settings = self.settings();
        Ok(HessianConfig {
            model: self.model.source(),
            data: self.data.config(),
            plan: HessianPlan::new(&settings)?,
            settings,
            threads: self.threads,
            out: self.out.clone(),
        })
    }
}

pub fn run(args: &HessianArgs) -> Result<()> {
    let out = run_hessian(&args.config()?, &super::reporter(args.quiet))?;
    if args.json {
        return super::print_json(&out);
    }
    crate::outln!(
        "{} of {} on {} ({} samples, {} parameters, {}) → {}",
        out.operator,
        out.model,
        out.data,
        out.samples,
        out.params,
        out.precision,
        out.out
    )?;
    let unit = args.operator.product_symbol();
    print_summary(&out.whole, unit)?;
    for b in &out.blocks {
        print_summary(b, unit)?;
    }
    Ok(())
}

fn print_summary(a: &Summary, unit: &str) -> Result<(), super::StdoutError> {
    crate::outln!(
        "{} ({} parameters, {} {}, {:.1} s)",
        a.name,
        a.params_dim,
        a.hvps,
        unit,
        a.seconds
    )?;
    let flag = |p: &Pair| if p.converged { "" } else { "  (not converged)" };
    for (i, p) in a.eigenvalues.iter().enumerate() {
        crate::outln!(
            "  λ{:<3} = {:>14.6e}   residual {:.1e}{}",
            i + 1,
            p.value,
            p.residual,
            flag(p)
        )?;
    }
    for (i, p) in a.bottom.iter().enumerate() {
        crate::outln!(
            "  λmin{:<2}= {:>14.6e}   residual {:.1e}{}",
            i + 1,
            p.value,
            p.residual,
            flag(p)
        )?;
    }
    if let Some(t) = &a.trace {
        crate::outln!(
            "  trace  = {:>14.6e} ± {:.2e} ({} probes, {})",
            t.estimate,
            t.stderr,
            t.probes,
            t.method
        )?;
    }
    if let Some(d) = &a.density {
        crate::outln!(
            "  density: {} SLQ run(s) × {} steps (in the HDF5 file)",
            d.runs,
            d.steps
        )?;
    }
    Ok(())
}
