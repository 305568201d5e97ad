//! The sharpness job: ε-sharpness (Keskar et al. 2017, arXiv:1609.04836) by projected
//! sign-gradient ascent in the box |y_i| ≤ ε(|θ_i|+1), and effective β-smoothness along the
//! gradient (Santurkar et al. 2018, arXiv:1805.11604) over a list of step sizes. Used by
//! `losscape sharpness` and the analysis runner's `[sharpness]` step. The algorithms,
//! formulas and defaults are documented in [`crate::sharpness`].

use ndarray::{Array1, ArrayView1};
use serde::Serialize;

use super::error::{JobError, JobResult};
use super::inputs::{with_threads, DataConfig, ModelSource, Precision};
use crate::choice::Choice;
use crate::engine::ParamVec;
use crate::objective::Objective;
use crate::progress::{Progress, Reporter};
use crate::sharpness::{
    beta_smoothness, check_etas, eps_sharpness, BetaReport, EpsParams, EpsReport, LossGradient,
    ObjectiveOracle, PerturbedParams, DEFAULT_ETAS,
};

/// The validated analyses: the ascent (None: skipped), the η list (None: skipped), the
/// perturbed tensors and the precision of losses and gradients.
#[derive(Debug, Clone)]
pub struct SharpnessPlan {
    pub eps: Option<EpsParams>,
    pub etas: Option<Vec<f64>>,
    pub params: PerturbedParams,
    pub precision: Precision,
}

impl SharpnessPlan {
    /// Validates the settings (`etas` None: [`DEFAULT_ETAS`]); `skip_eps` / `skip_beta`
    /// leave one analysis out.
    pub fn new(
        eps: EpsParams,
        etas: Option<Vec<f64>>,
        skip_eps: bool,
        skip_beta: bool,
        params: PerturbedParams,
        precision: Precision,
    ) -> JobResult<Self> {
        eps.check()?;
        let etas = etas.unwrap_or_else(|| DEFAULT_ETAS.to_vec());
        check_etas(&etas)?;
        Ok(Self {
            eps: (!skip_eps).then_some(eps),
            etas: (!skip_beta).then_some(etas),
            params,
            precision,
        })
    }
}

/// Counts loss and gradient evaluations on a progress bar.
struct Ticking<'a> {
    inner: &'a dyn LossGradient,
    progress: &'a Progress,
}

impl LossGradient for Ticking<'_> {
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn loss(&self, theta: ArrayView1<f64>) -> f64 {
        let r = self.inner.loss(theta);
        self.progress.inc(1);
        r
    }
    fn loss_grad(&self, theta: ArrayView1<f64>) -> (f64, Array1<f64>) {
        let r = self.inner.loss_grad(theta);
        self.progress.inc(1);
        r
    }
}

fn stage<R>(
    report: &Reporter,
    label: &str,
    total: u64,
    f: &dyn LossGradient,
    run: impl FnOnce(&dyn LossGradient) -> JobResult<R>,
) -> JobResult<(R, f64)> {
    let progress = report.bar(total, "evaluations", label.to_string());
    let r = run(&Ticking {
        inner: f,
        progress: &progress,
    });
    let secs = progress.seconds();
    if r.is_ok() {
        progress.finish_line(&format!("sharpness: {label}"));
    }
    r.map(|r| (r, secs))
}

/// The reports with their seconds, and the number of perturbed scalars.
pub struct SharpnessResults {
    pub eps: Option<(EpsReport, f64)>,
    pub beta: Option<(BetaReport, f64)>,
    pub perturbed: usize,
}

/// Runs the plan on `obj` at `theta`. `model_path` names the model in messages.
pub fn sharpness_of(
    obj: &Objective<'_>,
    theta: &ParamVec<f32>,
    plan: &SharpnessPlan,
    threads: Option<usize>,
    model_path: &std::path::Path,
    report: &Reporter,
) -> JobResult<SharpnessResults> {
    let mask = plan.params.mask(&theta.layout);
    let perturbed = mask.iter().filter(|&&m| m != 0.0).count();
    if perturbed == 0 {
        return Err(JobError::invalid(
            "params",
            format!(
                "{:?}: the model has no such tensor (see `losscape info {}`)",
                plan.params,
                model_path.display()
            ),
        ));
    }
    let theta = theta.cast::<f64>().data;
    let oracle = ObjectiveOracle {
        objective: obj,
        double_precision: plan.precision == Precision::F64,
    };
    let (eps, beta) = with_threads(threads, || -> JobResult<_> {
        let eps = match &plan.eps {
            None => None,
            Some(p) => {
                let total = ((p.random_starts + 1) * (p.iters + 1)) as u64;
                Some(stage(report, "ε-sharpness", total, &oracle, |f| {
                    Ok(eps_sharpness(f, theta.view(), mask.view(), p)?)
                })?)
            }
        };
        let beta = match &plan.etas {
            None => None,
            Some(etas) => Some(stage(
                report,
                "β-smoothness",
                1 + etas.len() as u64,
                &oracle,
                |f| Ok(beta_smoothness(f, theta.view(), mask.view(), etas)?),
            )?),
        };
        Ok((eps, beta))
    })??;
    Ok(SharpnessResults {
        eps,
        beta,
        perturbed,
    })
}

/// A validated sharpness job.
#[derive(Debug, Clone)]
pub struct SharpnessConfig {
    pub model: ModelSource,
    /// One split.
    pub data: DataConfig,
    pub plan: SharpnessPlan,
    pub threads: Option<usize>,
}

impl SharpnessConfig {
    /// Checks what the plan cannot: the data names one split.
    pub fn check(&self) -> JobResult<()> {
        if self.data.splits.len() > 1 {
            return Err(JobError::invalid(
                "split",
                format!("sharpness takes one split, got {}", self.data.splits.len()),
            ));
        }
        Ok(())
    }
}

/// What `losscape sharpness` prints (`--json`).
#[derive(Serialize)]
pub struct SharpnessOutput {
    pub model: String,
    pub data: String,
    pub samples: usize,
    pub params: PerturbedParams,
    pub perturbed: usize,
    pub precision: &'static str,
    pub bn_mode: String,
    pub eps_sharpness: Option<EpsReport>,
    pub eps_seconds: Option<f64>,
    pub beta_smoothness: Option<BetaReport>,
    pub beta_seconds: Option<f64>,
    pub losscape_version: &'static str,
}

/// Runs the job.
pub fn run_sharpness(c: &SharpnessConfig, report: &Reporter) -> JobResult<SharpnessOutput> {
    c.check()?;
    let mut model = c.model.load()?;
    if let Some(w) = model.parameterization_warning() {
        report.warn(&w);
    }
    let ds = c.data.load_first()?;
    model.fit_input(ds.sample_shape());
    let obj = c
        .data
        .objective(&model, &c.model, &ds)?
        .distributed(crate::dist::world());
    let r = sharpness_of(
        &obj,
        &model.theta,
        &c.plan,
        c.threads,
        &c.model.path,
        report,
    )?;
    Ok(SharpnessOutput {
        model: c.model.path.display().to_string(),
        data: ds.name.clone(),
        samples: ds.len(),
        params: c.plan.params,
        perturbed: r.perturbed,
        precision: c.plan.precision.name(),
        bn_mode: format!("{:?}", c.data.objective_config().mode).to_lowercase(),
        eps_seconds: r.eps.as_ref().map(|e| e.1),
        eps_sharpness: r.eps.map(|e| e.0),
        beta_seconds: r.beta.as_ref().map(|b| b.1),
        beta_smoothness: r.beta.map(|b| b.0),
        losscape_version: env!("CARGO_PKG_VERSION"),
    })
}
