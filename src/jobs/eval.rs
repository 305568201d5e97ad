//! Evaluation and probes: per-sample mean loss and accuracy over a dataset, and the
//! gradient-flow and activation probes ([`crate::probe`]) of trained weights and of a
//! fresh He initialization. Used by `losscape eval`, `losscape probe` and the analysis
//! runner's eval and probe steps.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use super::error::JobResult;
use super::inputs::{with_threads, BnMode, DataConfig, ModelSource, Precision};
use crate::choice::Choice;
use crate::data::Dataset;
use crate::model::Model;
use crate::objective::{Evaluation, Objective};
use crate::probe::{probe, ProbeReport};
use crate::progress::Reporter;

/// Loss and accuracy of `model` over `obj`'s data, in `precision`.
pub fn evaluate(
    obj: &Objective<'_>,
    model: &Model,
    precision: Precision,
    threads: Option<usize>,
) -> JobResult<Evaluation> {
    evaluate_reporting(obj, model, precision, threads, &|_| {})
}

/// [`evaluate`], calling `done(n)` as each batch of n samples is counted.
pub fn evaluate_reporting(
    obj: &Objective<'_>,
    model: &Model,
    precision: Precision,
    threads: Option<usize>,
    done: &(dyn Fn(usize) + Sync),
) -> JobResult<Evaluation> {
    with_threads(threads, || match precision {
        Precision::F32 => obj.evaluate_reporting(model.theta.data.view(), done),
        Precision::F64 => obj.evaluate_reporting(model.theta.cast::<f64>().data.view(), done),
    })
}

/// A validated evaluation.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    pub model: ModelSource,
    /// Each split is evaluated in turn.
    pub data: DataConfig,
    pub precision: Precision,
    pub threads: Option<usize>,
}

/// The evaluation of one split, as printed.
#[derive(Serialize)]
pub struct EvalReport {
    pub model: String,
    pub data: String,
    #[serde(flatten)]
    pub eval: Evaluation,
    pub precision: &'static str,
    pub bn_mode: &'static str,
    pub seconds: f64,
}

/// Evaluates the model on every requested split, a bar per split on `reporter`.
pub fn run_eval(c: &EvalConfig, reporter: &Reporter) -> JobResult<Vec<EvalReport>> {
    let mut model = c.model.load()?;
    let mut reports = Vec::new();
    let datasets = c.data.load()?;
    if let Some(ds) = datasets.first() {
        model.fit_input(ds.sample_shape());
    }
    for ds in datasets {
        let obj = c
            .data
            .objective(&model, &c.model, &ds)?
            .distributed(crate::dist::world());
        let start = Instant::now();
        let bar = reporter.bar(ds.len() as u64, "samples", format!("eval {}", ds.name));
        let eval =
            evaluate_reporting(&obj, &model, c.precision, c.threads, &|n| bar.inc(n as u64))?;
        bar.finish();
        reports.push(EvalReport {
            model: c.model.path.display().to_string(),
            data: ds.name.clone(),
            eval,
            precision: c.precision.name(),
            bn_mode: c.data.bn_mode.name(),
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    Ok(reports)
}

/// Probes of the trained weights (in `data`'s batch-norm mode) and of a fresh He
/// initialization seeded by `init_seed`. The fresh copy runs with batch statistics: at
/// initialization the running statistics are 0 and 1, so eval-mode BN would be the
/// identity; the network in training sees batch statistics, so those are probed.
pub fn probe_model(
    model: &Model,
    source: &ModelSource,
    data: &DataConfig,
    ds: &Dataset,
    init_seed: u64,
    threads: Option<usize>,
) -> JobResult<(ProbeReport, ProbeReport)> {
    let fresh = model.fresh(init_seed, true);
    let obj = data
        .objective(model, source, ds)?
        .distributed(crate::dist::world());
    let fresh_data = DataConfig {
        bn_mode: BnMode::Train,
        ..data.clone()
    };
    let fresh_obj = fresh_data
        .objective(&fresh, source, ds)?
        .distributed(crate::dist::world());
    with_threads(threads, || {
        (
            probe(&obj, model.theta.data.view()),
            probe(&fresh_obj, fresh.theta.data.view()),
        )
    })
}

/// A validated probe job.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub model: ModelSource,
    /// The first split is probed.
    pub data: DataConfig,
    pub init_seed: u64,
    pub threads: Option<usize>,
    /// Also write the JSON report here.
    pub out: Option<PathBuf>,
}

/// What `losscape probe` prints.
#[derive(Serialize)]
pub struct ProbeOutput {
    pub model: String,
    pub data: String,
    pub residual: bool,
    pub trained: ProbeReport,
    pub init: ProbeReport,
    pub init_seed: u64,
}

/// Probes a model (trained and re-initialized) on the first requested split, and writes
/// the report to `out` when given; a spinner on `reporter` while it works.
pub fn run_probe(c: &ProbeConfig, reporter: &Reporter) -> JobResult<ProbeOutput> {
    crate::util::check_threads(c.threads)?;
    // only the process that writes (rank 0 under MPI) locks the output
    let _lock = match &c.out {
        Some(p) if super::is_root() => Some(super::prepare_out("out", p)?),
        _ => None,
    };
    let mut model = c.model.load()?;
    let ds = c.data.load_first()?;
    model.fit_input(ds.sample_shape());
    let spinner = reporter.spinner(
        "passes",
        format!("probe {}: trained and He-initialized weights", ds.name),
    );
    let probed = probe_model(&model, &c.model, &c.data, &ds, c.init_seed, c.threads);
    spinner.finish();
    let (trained, init) = probed?;
    let out = ProbeOutput {
        model: c.model.path.display().to_string(),
        data: ds.name.clone(),
        residual: model.arch.is_residual(),
        trained,
        init,
        init_seed: c.init_seed,
    };
    if let (Some(p), true) = (&c.out, super::is_root()) {
        super::write_json(p, "writing `out`", &out)?;
    }
    Ok(out)
}
