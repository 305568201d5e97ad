//! The Hessian job: top (and bottom) eigenvalues with residuals, trace and spectral density
//! of the Hessian of the per-sample mean loss at the given weights, from exact H·v products
//! (PyHessian's quantities, Yao et al. 2020, arXiv:1912.07145), over the whole parameter
//! subset and optionally per top-level block. Used by `losscape hessian` and by the
//! analysis runner's Hessian step.
//!
//! The same analyses run on the Gauss–Newton-type matrices of the same loss
//! ([`CurvatureOperator`]: GGN, Fisher, empirical Fisher), which are symmetric PSD and
//! share the operator interface, so every method applies unchanged.
//!
//! Every setting is validated before the first H·v ([`HessianPlan::new`]; the analyses can
//! take minutes), and again against each operator's dimension. The HDF5 layout is
//! documented in [`crate::io::hessian`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use ndarray::{ArrayView1, ArrayViewMut1};
use serde::Serialize;

use super::error::{JobError, JobResult};
use super::inputs::{with_threads, DataConfig, ModelSource, Precision};
use crate::choice::choice;
use crate::engine::{ParamVec, TensorSpec};
use crate::hessian::{
    block_of, blocks, density_on_grid, hutchinson, hutchpp, objective_op::DEFAULT_HVP_CACHE_BYTES,
    power_iteration, slq, top_eigenpairs, Counting, DensityParams, EigenReport, HessianOperator,
    HessianOptions, HutchppParams, LanczosParams, LinearOperator, ParamSubset, PowerParams,
    SlqParams, TraceParams, Which,
};
use crate::io::hessian::{write_hessian, DensityData, EigenData, HessianGroup, TraceData};
use crate::io::surface::Attr;
use crate::objective::{Curvature, Objective};
use crate::progress::{Progress, Reporter};

/// How H·v over a dataset is normalized; written to every output.
pub const HVP_NORMALIZATION: &str =
    "per-sample mean (PyHessian convention; loss-landscape sums per-batch means)";

/// Default iteration cap: PyHessian's `maxIter=100`, raised to 3k so that Lanczos has
/// room for k wanted pairs beyond the k-step minimum.
pub const DEFAULT_MAX_ITER: usize = 100;

/// SLQ nodes and weights go into the JSON only up to this many entries (runs × steps);
/// larger arrays are in the HDF5 file only.
const JSON_DENSITY_MAX: usize = 1000;

choice! {
    /// The curvature matrix the analyses run on (all of the per-sample mean loss).
    #[derive(Default, Serialize, serde::Deserialize)]
    #[serde(rename_all = "kebab-case")]
    pub enum CurvatureOperator {
        #[default]
        Hessian = "hessian": "The Hessian, by exact H·v (Pearlmutter's R-operator); may be indefinite.",
        Ggn = "ggn": "Generalized Gauss–Newton JᵀH_ℓJ: the Hessian without the network's own second derivatives; PSD.",
        Fisher = "fisher": "Fisher information, labels drawn from the model's softmax (seeded by --seed, --fisher-samples per sample); PSD.",
        EmpiricalFisher = "empirical-fisher": "Empirical Fisher: mean outer product of per-sample gradients at the data's own labels; PSD.",
    }
}

impl CurvatureOperator {
    /// The objective's curvature for this operator (the Fisher's labels drawn with `seed`,
    /// `samples` per data point).
    pub fn curvature(self, seed: u64, samples: usize) -> Curvature {
        match self {
            CurvatureOperator::Hessian => Curvature::Hessian,
            CurvatureOperator::Ggn => Curvature::Ggn,
            CurvatureOperator::Fisher => Curvature::Fisher { seed, samples },
            CurvatureOperator::EmpiricalFisher => Curvature::EmpiricalFisher,
        }
    }

    /// How one product is written in progress lines and summaries.
    pub fn product_symbol(self) -> &'static str {
        match self {
            CurvatureOperator::Hessian => "H·v",
            CurvatureOperator::Ggn => "G·v",
            CurvatureOperator::Fisher => "F·v",
            CurvatureOperator::EmpiricalFisher => "F_emp·v",
        }
    }

    /// The matrix in symbols, for files and reports.
    pub fn definition(self) -> &'static str {
        match self {
            CurvatureOperator::Hessian => "H = ∇²L, L = (1/N) Σₙ ℓₙ",
            CurvatureOperator::Ggn => "G = (1/N) Σₙ Jₙᵀ ∇²_z ℓₙ Jₙ, Jₙ = ∂zₙ/∂θ (logits z)",
            CurvatureOperator::Fisher => {
                "F = (1/N) Σₙ (1/m) Σₛ gₙₛ gₙₛᵀ, gₙₛ = ∇θ ℓ(zₙ, ŷₙₛ), ŷₙₛ ∼ softmax(zₙ)"
            }
            CurvatureOperator::EmpiricalFisher => "F_emp = (1/N) Σₙ gₙ gₙᵀ, gₙ = ∇θ ℓ(zₙ, yₙ)",
        }
    }
}

choice! {
    /// Eigenvalue algorithm for the largest eigenvalues.
    #[derive(Default)]
    pub enum EigenMethod {
        #[default]
        Lanczos = "lanczos": "Lanczos with full reorthogonalization (fewer H·v products).",
        Power = "power": "Power iteration with deflation (PyHessian's method).",
    }
}

choice! {
    /// Trace estimator.
    #[derive(Default)]
    pub enum TraceMethod {
        #[default]
        Hutchinson = "hutchinson": "Rademacher probes (Hutchinson 1990).",
        Hutchpp = "hutchpp": "Low-rank sketch plus probes (Meyer, Musco, Musco, Woodruff 2021).",
    }
}

choice! {
    /// Which tensors the Hessian is taken over.
    #[derive(Default, Serialize, serde::Deserialize)]
    #[serde(rename_all = "kebab-case")]
    pub enum ParamSet {
        #[default]
        Trainable = "trainable": "Every trainable tensor, biases and BN γ/β included (PyHessian).",
        Weights = "weights": "Tensors with more than one dimension (loss-landscape's eigenvalue maps).",
    }
}

/// What to compute, as set by the user (flags or a spec section); [`HessianPlan::new`]
/// validates it. `Default` gives the command line's defaults.
#[derive(Debug, Clone)]
pub struct HessianSettings {
    pub top_k: usize,
    pub bottom: bool,
    pub method: EigenMethod,
    /// Lanczos steps or power iterations per eigenvalue (None: max(100, 3·top_k)).
    pub max_iter: Option<usize>,
    pub tol: f64,
    pub trace: bool,
    pub trace_method: TraceMethod,
    /// Probes (Hutchinson) or total H·v budget (Hutch++).
    pub probes: usize,
    pub trace_tol: Option<f64>,
    pub min_probes: usize,
    pub density: bool,
    pub slq_runs: usize,
    pub slq_steps: usize,
    pub grid_points: usize,
    pub sigma_squared: f64,
    pub seed: u64,
    pub params: ParamSet,
    /// Trainable tensors whose name matches (overrides `params`).
    pub params_regex: Option<regex::Regex>,
    pub weight_decay: f64,
    pub per_block: bool,
    pub save_vectors: bool,
    pub precision: Precision,
    pub hvp_cache_mb: usize,
    /// The matrix the analyses run on.
    pub operator: CurvatureOperator,
    /// Labels drawn per data point for the Fisher (≥ 1).
    pub fisher_samples: usize,
}

impl Default for HessianSettings {
    fn default() -> Self {
        let trace = TraceParams::default();
        let slq = SlqParams::default();
        let density = DensityParams::default();
        Self {
            top_k: 1,
            bottom: false,
            method: EigenMethod::Lanczos,
            max_iter: None,
            tol: 1e-3,
            trace: false,
            trace_method: TraceMethod::Hutchinson,
            probes: trace.probes,
            trace_tol: trace.tol,
            min_probes: trace.min_probes,
            density: false,
            slq_runs: slq.runs,
            slq_steps: slq.steps,
            grid_points: density.grid_points,
            sigma_squared: density.sigma_squared,
            seed: 0,
            params: ParamSet::Trainable,
            params_regex: None,
            weight_decay: 0.0,
            per_block: false,
            save_vectors: false,
            precision: Precision::F32,
            hvp_cache_mb: DEFAULT_HVP_CACHE_BYTES >> 20,
            operator: CurvatureOperator::Hessian,
            fisher_samples: 1,
        }
    }
}

/// The validated analyses to run (everything but the operator's dimension is checked).
#[derive(Debug, Clone)]
pub struct HessianPlan {
    pub operator: CurvatureOperator,
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
    /// Validates the settings, rejecting what is invalid whatever the model.
    pub fn new(s: &HessianSettings) -> JobResult<Self> {
        if s.top_k == 0 {
            return Err(JobError::invalid("top_k", "must be at least 1"));
        }
        if s.fisher_samples == 0 {
            return Err(JobError::invalid(
                "fisher_samples",
                "must be at least 1 (labels drawn per data point for the Fisher)",
            ));
        }
        if !(s.weight_decay.is_finite() && s.weight_decay >= 0.0) {
            return Err(JobError::invalid(
                "weight_decay",
                format!("must be a finite number ≥ 0, got {}", s.weight_decay),
            ));
        }
        let subset = match &s.params_regex {
            Some(re) => ParamSubset::Regex(re.clone()),
            None => match s.params {
                ParamSet::Trainable => ParamSubset::Trainable,
                ParamSet::Weights => ParamSubset::Weights,
            },
        };
        let plan = HessianPlan {
            operator: s.operator,
            subset,
            options: HessianOptions {
                double_precision: s.precision == Precision::F64,
                weight_decay: s.weight_decay,
                hvp_cache_bytes: s.hvp_cache_mb.saturating_mul(1 << 20),
                curvature: s.operator.curvature(s.seed, s.fisher_samples),
            },
            method: s.method,
            top: LanczosParams {
                k: s.top_k,
                max_iter: s.max_iter.unwrap_or(DEFAULT_MAX_ITER.max(3 * s.top_k)),
                tol: s.tol,
                seed: s.seed,
                which: Which::Largest,
                keep_vectors: s.save_vectors,
            },
            bottom: s.bottom,
            trace: s.trace.then_some(s.trace_method),
            trace_params: TraceParams {
                probes: s.probes,
                min_probes: s.min_probes,
                tol: s.trace_tol,
                seed: s.seed,
            },
            hutchpp: HutchppParams {
                budget: s.probes,
                seed: s.seed,
            },
            density: s.density.then(|| {
                (
                    SlqParams {
                        runs: s.slq_runs,
                        steps: s.slq_steps,
                        seed: s.seed,
                    },
                    DensityParams {
                        grid_points: s.grid_points,
                        sigma_squared: s.sigma_squared,
                        ..Default::default()
                    },
                )
            }),
            per_block: s.per_block,
        };
        // Check against an unbounded dimension: catches zero counts and bad tolerances now.
        plan.check(usize::MAX)?;
        Ok(plan)
    }

    /// The plan for an operator of dimension `dim` (SLQ steps capped at `dim`), validated.
    pub fn for_dim(&self, dim: usize) -> JobResult<Self> {
        let mut p = self.clone();
        if let Some((s, _)) = &mut p.density {
            s.steps = s.steps.min(dim);
        }
        p.check(dim)?;
        Ok(p)
    }

    fn check(&self, dim: usize) -> JobResult<()> {
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

/// Counts products on a progress spinner.
struct Ticking<'a, O: ?Sized> {
    inner: &'a O,
    progress: &'a Progress,
}

impl<O: LinearOperator + ?Sized> LinearOperator for Ticking<'_, O> {
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn apply(&self, v: ArrayView1<f64>, out: ArrayViewMut1<f64>) {
        self.inner.apply(v, out);
        self.progress.inc(1);
    }
}

/// Runs `f` with a spinner counting products (`unit`: `H·v`, `G·v`, …), then prints one
/// line (unless quiet).
fn stage<R>(
    report: &Reporter,
    (label, unit): (String, &'static str),
    op: &dyn LinearOperator,
    f: impl FnOnce(&dyn LinearOperator) -> JobResult<R>,
) -> JobResult<R> {
    let progress = report.spinner(unit, label.clone());
    let ticking = Ticking {
        inner: op,
        progress: &progress,
    };
    let r = f(&ticking);
    if r.is_ok() {
        progress.finish_line(&format!("hessian: {label}"));
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

/// Runs the plan on `op` (already validated for its dimension).
pub fn analyse(
    name: &str,
    plan: &HessianPlan,
    op: &HessianOperator<'_, '_>,
    report: &Reporter,
) -> JobResult<HessianGroup> {
    let t0 = Instant::now();
    let counted = Counting::new(op);
    let dim = counted.dim();
    let unit = plan.operator.product_symbol();
    let tag = |what: &str| {
        let what = match plan.operator {
            CurvatureOperator::Hessian => what.to_string(),
            other => format!("{other} {what}"),
        };
        let label = if name.is_empty() {
            what
        } else {
            format!("{name}: {what}")
        };
        (label, unit)
    };
    let k = plan.top.k;
    let top = match plan.method {
        EigenMethod::Lanczos => stage(report, tag(&format!("top-{k} (lanczos)")), &counted, |o| {
            Ok(top_eigenpairs(o, &plan.top)?)
        })?,
        EigenMethod::Power => stage(report, tag(&format!("top-{k} (power)")), &counted, |o| {
            Ok(power_iteration(o, &plan.power())?)
        })?,
    };
    let bottom = if plan.bottom {
        let p = LanczosParams {
            which: Which::Smallest,
            ..plan.top.clone()
        };
        Some(stage(
            report,
            tag(&format!("bottom-{k} (lanczos)")),
            &counted,
            |o| Ok(top_eigenpairs(o, &p)?),
        )?)
    } else {
        None
    };
    let trace = match plan.trace {
        None => None,
        Some(m) => {
            let method = m.to_string();
            let r = stage(report, tag(&format!("trace ({method})")), &counted, |o| {
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
            let r = stage(report, tag("density (slq)"), &counted, |o| Ok(slq(o, sp)?))?;
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

/// The results of a plan on one objective: the whole subset, then each block.
pub struct HessianResults {
    pub whole: HessianGroup,
    pub blocks: Vec<(String, HessianGroup)>,
    /// (batches kept, batches, bytes) of the kept θ-only state of the products, totals over
    /// the ranks when distributed.
    pub kept_state: (usize, usize, usize),
}

/// Builds and validates every operator of `plan` on `obj` at `theta` (before the first
/// H·v), then runs the plan on each. `model_path` names the model in messages.
pub fn hessian_of(
    obj: &Objective<'_>,
    theta: &ParamVec<f32>,
    plan: &HessianPlan,
    threads: Option<usize>,
    model_path: &std::path::Path,
    report: &Reporter,
) -> JobResult<HessianResults> {
    let layout = &theta.layout;
    let whole_op = HessianOperator::new(obj, theta, &plan.subset, plan.options);
    if whole_op.dim() == 0 {
        return Err(JobError::invalid(
            "params",
            format!(
                "{}: no trainable tensor selected (see `losscape info -m {}` for the names)",
                plan.subset.describe(),
                model_path.display()
            ),
        ));
    }
    let whole_plan = plan.for_dim(whole_op.dim())?;
    let mut block_ops = Vec::new();
    if plan.per_block {
        for b in blocks(layout, &plan.subset) {
            let keep = |t: &TensorSpec| plan.subset.contains(t) && block_of(&t.name) == b;
            let op = HessianOperator::restricted(obj, theta, keep, plan.options)
                .sharing_cache_with(&whole_op);
            let dim = op.dim();
            let mut p = plan.clone();
            if p.top.k > dim {
                report.warn(&format!(
                    "hessian: block {b} has {dim} parameters: computing {dim} eigenvalues, not `top_k` {}",
                    p.top.k
                ));
                p.top.k = dim;
                p.top.max_iter = p.top.max_iter.max(dim);
            }
            let p = p
                .for_dim(dim)
                .map_err(|e| e.in_step(format!("block {b} ({dim} parameters)")))?;
            block_ops.push((b, op, p));
        }
    }
    let (whole, blocks) = with_threads(threads, || -> JobResult<_> {
        let whole = analyse("", &whole_plan, &whole_op, report)?;
        let mut out = Vec::new();
        for (b, op, p) in &block_ops {
            out.push((b.clone(), analyse(b, p, op, report)?));
        }
        Ok((whole, out))
    })??;
    Ok(HessianResults {
        whole,
        blocks,
        kept_state: kept_over_ranks(obj, whole_op.kept_state().unwrap_or((0, 0, 0))),
    })
}

/// This process's (kept batches, batches, bytes) summed over the ranks that share `obj`'s
/// batches (each keeps the states of its own batches): the job's totals (collective).
fn kept_over_ranks(
    obj: &Objective<'_>,
    (kept, batches, bytes): (usize, usize, usize),
) -> (usize, usize, usize) {
    use crate::dist::Wire;
    let Some(comm) = obj.comm() else {
        return (kept, batches, bytes);
    };
    let mut mine = Vec::new();
    (kept, bytes).encode(&mut mine);
    let (mut k, mut b) = (0, 0);
    for theirs in comm.all_gather(&mine) {
        let (rk, rb) = <(usize, usize)>::decode(&mut &theirs[..])
            .unwrap_or_else(|e| panic!("a rank's kept H·v state counts: {e}"));
        k += rk;
        b += rb;
    }
    (k, batches, b)
}

/// A validated Hessian job.
#[derive(Debug, Clone)]
pub struct HessianConfig {
    pub model: ModelSource,
    pub data: DataConfig,
    pub settings: HessianSettings,
    pub plan: HessianPlan,
    pub threads: Option<usize>,
    /// The HDF5 file.
    pub out: PathBuf,
}

/// One eigenpair in the JSON output.
#[derive(Serialize)]
pub struct Pair {
    pub value: f64,
    pub residual: f64,
    pub converged: bool,
}

#[derive(Serialize)]
pub struct TraceOut {
    pub estimate: f64,
    pub stderr: f64,
    pub probes: usize,
    pub method: String,
}

#[derive(Serialize)]
pub struct DensityOut {
    pub runs: usize,
    pub steps: usize,
    /// Ritz values per run; omitted when larger than `JSON_DENSITY_MAX`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<Vec<f64>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<Vec<Vec<f64>>>,
}

/// The results over one set of tensors (the whole subset or a block), as printed.
#[derive(Serialize)]
pub struct Summary {
    pub name: String,
    pub params_dim: usize,
    pub eigenvalues: Vec<Pair>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bottom: Vec<Pair>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub density: Option<DensityOut>,
    pub hvps: usize,
    pub seconds: f64,
}

/// What `losscape hessian` prints (`--json`) and returns.
#[derive(Serialize)]
pub struct HessianOutput {
    pub model: String,
    pub data: String,
    pub samples: usize,
    /// The matrix analysed: `hessian`, `ggn`, `fisher` or `empirical-fisher`.
    pub operator: String,
    /// Its definition in symbols.
    pub operator_definition: &'static str,
    /// Labels drawn per data point (Fisher only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fisher_samples: Option<usize>,
    pub params: String,
    pub precision: &'static str,
    pub method: String,
    pub weight_decay: f64,
    pub hvp_normalization: &'static str,
    #[serde(flatten)]
    pub whole: Summary,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<Summary>,
    pub hvp_cache: HvpCacheOut,
    pub out: String,
}

/// The θ-only half of the products kept across them (`hvp_cache_mb`).
#[derive(Serialize)]
pub struct HvpCacheOut {
    pub budget_mb: usize,
    /// Mini-batches whose state was kept, of all (under MPI: summed over the ranks, each
    /// keeping its own batches' states within the budget); the others ran whole products.
    pub kept_batches: usize,
    pub batches: usize,
    pub mb: f64,
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

/// Runs the job: loads the model and data, runs the plan, writes the HDF5 file.
pub fn run_hessian(c: &HessianConfig, report: &Reporter) -> JobResult<HessianOutput> {
    crate::util::check_threads(c.threads)?;
    // only the process that writes (rank 0 under MPI) locks the output
    let _out_lock = if super::is_root() {
        Some(super::prepare_out("out", &c.out)?)
    } else {
        None
    };
    let mut model = c.model.load()?;
    if let Some(w) = model.parameterization_warning() {
        report.warn(&w);
    }
    let ds = c.data.load_first()?;
    model.fit_input(ds.sample_shape());
    let cfg = c.data.objective_config();
    let obj = c
        .data
        .objective(&model, &c.model, &ds)?
        .distributed(crate::dist::world());
    let r = hessian_of(
        &obj,
        &model.theta,
        &c.plan,
        c.threads,
        &c.model.path,
        report,
    )?;

    let (kept, batches, bytes) = r.kept_state;
    let hvps = r.whole.hvps + r.blocks.iter().map(|(_, g)| g.hvps).sum::<usize>();
    let seconds = r.whole.seconds + r.blocks.iter().map(|(_, g)| g.seconds).sum::<f64>();
    let precision = if c.plan.options.double_precision {
        "f64"
    } else {
        "f32"
    };
    let s = &c.settings;
    let method = s.method.to_string();
    let mut attrs: BTreeMap<String, Attr> = BTreeMap::new();
    c.model
        .describe_in(&model, crate::model::zoo::ARCH_METADATA_KEY, &mut attrs)?;
    c.data.describe_in(&mut attrs);
    attrs.insert("data".into(), ds.name.clone().into());
    attrs.insert("samples".into(), ds.len().into());
    attrs.insert("seed".into(), (s.seed as i64).into());
    attrs.insert("operator".into(), c.plan.operator.to_string().into());
    attrs.insert(
        "operator_definition".into(),
        c.plan.operator.definition().into(),
    );
    if c.plan.operator == CurvatureOperator::Fisher {
        attrs.insert("fisher_samples".into(), s.fisher_samples.into());
    }
    attrs.insert("method".into(), method.clone().into());
    attrs.insert("tol".into(), s.tol.into());
    attrs.insert("max_iter".into(), c.plan.top.max_iter.into());
    attrs.insert("top_k".into(), s.top_k.into());
    attrs.insert("params".into(), c.plan.subset.describe().into());
    attrs.insert("weight_decay".into(), s.weight_decay.into());
    attrs.insert(
        "bn_mode".into(),
        format!("{:?}", cfg.mode).to_lowercase().into(),
    );
    attrs.insert("batch_size".into(), cfg.batch_size.into());
    attrs.insert("precision".into(), precision.into());
    attrs.insert("hvp_normalization".into(), HVP_NORMALIZATION.into());
    attrs.insert("hvps_total".into(), hvps.into());
    attrs.insert("hvp_cache_budget_mb".into(), s.hvp_cache_mb.into());
    attrs.insert("hvp_cache_kept_batches".into(), kept.into());
    attrs.insert("hvp_cache_batches".into(), batches.into());
    attrs.insert("seconds_total".into(), seconds.into());
    attrs.insert("losscape_version".into(), env!("CARGO_PKG_VERSION").into());
    if super::is_root() {
        write_hessian(&c.out, &r.whole, &r.blocks, &attrs).map_err(|source| {
            JobError::HessianFile {
                path: c.out.clone(),
                source: Box::new(source),
            }
        })?;
    }

    Ok(HessianOutput {
        model: c.model.path.display().to_string(),
        data: ds.name.clone(),
        samples: ds.len(),
        operator: c.plan.operator.to_string(),
        operator_definition: c.plan.operator.definition(),
        fisher_samples: (c.plan.operator == CurvatureOperator::Fisher).then_some(s.fisher_samples),
        params: c.plan.subset.describe(),
        precision,
        method,
        weight_decay: s.weight_decay,
        hvp_normalization: HVP_NORMALIZATION,
        whole: summary("all", &r.whole),
        blocks: r.blocks.iter().map(|(n, g)| summary(n, g)).collect(),
        hvp_cache: HvpCacheOut {
            budget_mb: s.hvp_cache_mb,
            kept_batches: kept,
            batches,
            mb: bytes as f64 / (1 << 20) as f64,
        },
        out: c.out.display().to_string(),
    })
}
