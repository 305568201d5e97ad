//! The per-model steps of an analysis, each one call into [`crate::jobs`] with a config
//! built from the spec, its result cached in `outputs/<name>/<label>.<step>.json` (or its
//! HDF5 file) and reused while that file is newer than the spec and the model.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::error::{AnalysisError, AnalysisResult};
use super::runner::{
    cached, up_to_date, BlockCurvature, Evals, HessianResult, MetricsResult, ModelResult,
    ProbeSummary, SharpnessSummary,
};
use super::spec::{Analysis, AnalysisSpec, DirectionsKind};
use crate::data::{self, DataOptions, Dataset, Split};
use crate::dist::{Comm, Wire};
use crate::hessian::Which;
use crate::io::surface::SurfaceFile;
use crate::jobs::eval::{evaluate, probe_model};
use crate::jobs::hessian::{hessian_of, HessianPlan};
use crate::jobs::sharpness::sharpness_of;
use crate::jobs::surface::{run_surface, DirectionSource, EigenNorm, SurfaceConfig};
use crate::jobs::{DataConfig, JobResult, ModelSource, Precision};
use crate::landscape::surface::{nearest_zero, Shard};
use crate::model::{Arch, Model};
use crate::progress::Reporter;

/// What a run shares across its models: the spec, the output folder and the datasets.
pub(super) struct Run<'a> {
    pub a: &'a Analysis,
    pub out_dir: PathBuf,
    /// The spec's data (train split, its `samples`, batches, eval mode).
    pub data: DataConfig,
    pub train_full: Dataset,
    pub test_full: Option<Dataset>,
    /// The subset for surfaces, metrics and probes.
    pub subset: Dataset,
    pub hess_data: Dataset,
    pub sharp_data: Option<Dataset>,
    /// Bars of long steps (the surface) unless quiet.
    pub report: Reporter,
    /// The steps' own stage lines stay off: the run prints one line per step.
    pub inner: Reporter,
    /// The lock on the analysis folder, held while the run lasts (rank 0 only under MPI).
    _lock: Option<crate::io::output::OutputLock>,
    /// The ranks of the run (one process: rank 0 of 1).
    pub world: &'static dyn Comm,
}

impl<'a> Run<'a> {
    pub fn new(a: &'a Analysis, outputs_root: &Path, quiet: bool) -> AnalysisResult<Self> {
        let spec = &a.spec;
        let world = crate::dist::world();
        // confined to the outputs folder, and one run at a time; rank 0 alone writes there
        let (out_dir, lock) = if world.rank() == 0 {
            let dir = crate::io::output::confined_folder(outputs_root, &a.name)?;
            let lock = crate::io::output::OutputLock::acquire_folder(&dir)?;
            (dir, Some(lock))
        } else {
            (outputs_root.join(&a.name), None)
        };
        let load = |split: Split, samples: Option<usize>| {
            data::load(
                &spec.data.name,
                &DataOptions {
                    split,
                    samples,
                    normalize: None,
                },
            )
            .map_err(|e| AnalysisError::Data {
                spec: a.path.clone(),
                name: spec.data.name.clone(),
                source: Box::new(e),
            })
        };
        let sharp = spec.sharpness.as_ref().filter(|s| s.enabled);
        Ok(Self {
            _lock: lock,
            a,
            data: DataConfig {
                samples: spec.data.samples,
                batch_size: spec.data.batch_size,
                ..DataConfig::train(spec.data.name.clone())
            },
            train_full: load(Split::Train, None)?,
            test_full: load(Split::Test, None).ok(),
            subset: load(Split::Train, spec.data.samples)?,
            hess_data: load(Split::Train, spec.hessian.samples.or(spec.data.samples))?,
            sharp_data: sharp
                .map(|sh| load(Split::Train, sh.samples.or(spec.data.samples)))
                .transpose()?,
            out_dir,
            report: Reporter::new(quiet || world.rank() > 0, None),
            inner: Reporter::quiet(),
            world,
        })
    }

    /// Whether this process writes the files (rank 0, or the only process).
    pub fn root(&self) -> bool {
        self.world.rank() == 0
    }

    /// Whether model `i` is trained by the run (given by `arch` alone).
    pub fn is_trained(&self, i: usize) -> bool {
        self.a.spec.models[i].file.as_os_str().is_empty()
    }

    /// How many models the run trains.
    pub fn trained(&self) -> usize {
        (0..self.a.spec.models.len())
            .filter(|&i| self.is_trained(i))
            .count()
    }
}

/// One model being measured.
pub(super) struct Subject {
    pub label: String,
    pub file: PathBuf,
    pub source: ModelSource,
    pub model: Model,
    /// `outputs/<name>/<label>`: the stem of its files.
    pub base: PathBuf,
    spec_path: PathBuf,
}

impl Subject {
    pub fn load(run: &Run, i: usize, file: &Path) -> AnalysisResult<Self> {
        let a = run.a;
        let arch = if run.is_trained(i) {
            None
        } else {
            a.spec.models[i]
                .arch
                .as_deref()
                .map(str::parse::<Arch>)
                .transpose()
                .map_err(|e| AnalysisError::Arch(Box::new(e)))?
        };
        let source = ModelSource {
            arch,
            ..ModelSource::file(file)
        };
        let mut model =
            Model::load(file, source.arch.as_ref()).map_err(|e| AnalysisError::Model {
                spec: a.path.clone(),
                file: file.to_path_buf(),
                source: Box::new(e),
            })?;
        model.fit_input(run.train_full.sample_shape());
        Ok(Self {
            label: a.labels[i].clone(),
            file: file.to_path_buf(),
            source,
            model,
            base: run.out_dir.join(&a.labels[i]),
            spec_path: a.path.clone(),
        })
    }

    /// `<base>.<ext>`.
    pub fn with_ext(&self, ext: &str) -> PathBuf {
        PathBuf::from(format!("{}.{ext}", self.base.display()))
    }

    /// What every cached step depends on: the spec and the model file.
    fn deps(&self) -> [&Path; 2] {
        [&self.spec_path, &self.file]
    }
}

/// The results of a model's steps so far.
#[derive(Default)]
pub(super) struct Measured {
    eval: Option<Evals>,
    surface: Option<(PathBuf, SurfaceFile)>,
    eigen_surface: Option<PathBuf>,
    center_loss: f64,
    metrics: Option<MetricsResult>,
    hessian: Option<HessianResult>,
    probe: Option<ProbeSummary>,
    sharpness: Option<SharpnessSummary>,
}

impl Measured {
    pub fn into_result(self, s: &Subject) -> AnalysisResult<ModelResult> {
        let (surface, _) = self
            .surface
            .ok_or(AnalysisError::StepNotRun { step: "surface" })?;
        let model = &s.model;
        Ok(ModelResult {
            label: s.label.clone(),
            file: s.file.display().to_string(),
            description: model.arch.to_string(),
            depth: depth_of(&model.arch),
            residual: model.arch.is_residual(),
            family: family_of(&model.arch).into(),
            classes: model.arch.num_classes(),
            params: model.graph.layout.trainable_len(),
            eval: self
                .eval
                .ok_or(AnalysisError::StepNotRun { step: "eval" })?,
            surface_file: surface
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            eigen_surface_file: self.eigen_surface.map(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            }),
            center_loss: self.center_loss,
            metrics: self.metrics,
            hessian: self.hessian,
            probe: self.probe,
            sharpness: self.sharpness,
        })
    }
}

fn depth_of(arch: &Arch) -> usize {
    match arch {
        Arch::ResnetCifar(r) => r.depth,
        Arch::Mlp(m) => m.depth + 2,
        Arch::Vit(v) => v.depth,
        Arch::Onnx(o) => o.depth,
    }
}

/// The family a model is compared within (residual vs plain at equal depth): the LayerNorm
/// placement splits transformers, since pre- and post-LN stacks differ beyond the skips.
pub(super) fn family_of(arch: &Arch) -> &'static str {
    use crate::model::zoo::VitNorm;
    match arch {
        Arch::ResnetCifar(_) => "ResNet",
        Arch::Mlp(_) => "MLP",
        Arch::Vit(v) if v.norm == VitNorm::Pre => "ViT (pre-LN)",
        Arch::Vit(_) => "ViT (post-LN)",
        Arch::Onnx(_) => "ONNX",
    }
}

/// A step run on every model, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Loss and accuracy on the full train and test splits.
    Eval,
    /// The surface (resumable on its own; recomputed when the spec or model changed).
    Surface,
    /// A second surface along the top eigenvectors (`[directions] kind = "both"`).
    EigenSurface,
    /// Smoothness metrics, with the exact dᵀHd along the surface's directions.
    Metrics,
    /// Top eigenvalues (Lanczos, full reorthogonalization) and the Hutchinson trace.
    Hessian,
    /// Gradient flow and activations, trained and at a fresh He initialization.
    Probe,
    /// ε-sharpness and β-smoothness along the gradient.
    Sharpness,
}

impl Step {
    /// The steps `spec` asks for.
    pub fn list(spec: &AnalysisSpec) -> Vec<Step> {
        let mut steps = vec![Step::Eval, Step::Surface];
        if spec.directions.kind == DirectionsKind::Both {
            steps.push(Step::EigenSurface);
        }
        steps.push(Step::Metrics);
        if spec.hessian.enabled {
            steps.push(Step::Hessian);
        }
        if spec.probe.enabled {
            steps.push(Step::Probe);
        }
        if spec.sharpness.as_ref().is_some_and(|s| s.enabled) {
            steps.push(Step::Sharpness);
        }
        steps
    }

    /// How the step is named in the progress lines.
    pub fn title(self, a: &Analysis) -> String {
        match self {
            Step::Eval => "eval".into(),
            Step::Surface if a.spec.directions.kind == DirectionsKind::Eigen => {
                format!(
                    "surface {} ({} eigenvectors)",
                    a.x, a.spec.directions.operator
                )
            }
            Step::Surface => format!("surface {}", a.x),
            Step::EigenSurface => {
                format!(
                    "surface {} ({} eigenvectors)",
                    a.x, a.spec.directions.operator
                )
            }
            Step::Metrics => "surface metrics".into(),
            Step::Hessian => match a.spec.hessian.operator {
                crate::jobs::hessian::CurvatureOperator::Hessian => "Hessian (λmax, trace)".into(),
                op => format!("curvature: {op} (λmax, trace)"),
            },
            Step::Probe => "probes".into(),
            Step::Sharpness => "sharpness".into(),
        }
    }

    /// Runs the step on `s`, adding its result to `m`; returns whether it was up to date.
    pub fn run(self, run: &Run, s: &Subject, m: &mut Measured) -> AnalysisResult<bool> {
        match self {
            Step::Eval => eval(run, s, m),
            Step::Surface => surface(run, s, m),
            Step::EigenSurface => eigen_surface(run, s, m),
            Step::Metrics => metrics(run, s, m),
            Step::Hessian => hessian(run, s, m),
            Step::Probe => probe(run, s, m),
            Step::Sharpness => sharpness(run, s, m),
        }
    }
}

fn eval(run: &Run, s: &Subject, m: &mut Measured) -> AnalysisResult<bool> {
    let threads = run.a.spec.run.threads;
    let (evals, hit) = cached(&s.with_ext("eval.json"), &s.deps(), || {
        let ev = |ds: &Dataset| -> JobResult<_> {
            let o = run
                .data
                .objective(&s.model, &s.source, ds)?
                .distributed(run.world);
            evaluate(&o, &s.model, Precision::F32, threads)
        };
        Ok(Some(Evals {
            train: ev(&run.train_full)?,
            test: run.test_full.as_ref().map(ev).transpose()?,
        }))
    })?;
    m.eval = evals;
    Ok(hit)
}

/// The eigenvector directions of the spec.
fn eigen_source(spec: &AnalysisSpec) -> DirectionSource {
    let d = &spec.directions;
    DirectionSource::Eigen {
        settings: d.eigen_settings(),
        norm: EigenNorm {
            norm: d.eigen_norm,
            perturb_biasbn: d.perturb_biasbn,
        },
    }
}

/// Runs the surface job into `<base>.<stem>.h5` (directions in `<base>.<dirs>.h5`) unless
/// that file is up to date; returns it, read (on rank 0 only under MPI: the job is
/// collective, the file rank 0's), and whether it was.
fn surface_into(
    run: &Run,
    s: &Subject,
    (stem, dirs): (&str, &str),
    directions: DirectionSource,
) -> AnalysisResult<(PathBuf, Option<SurfaceFile>, bool)> {
    let spec = &run.a.spec;
    let out = s.with_ext(&format!("{stem}.h5"));
    let dir_file = s.with_ext(&format!("{dirs}.h5"));
    if run.root() && out.exists() && !up_to_date(&out, &s.deps()) {
        let _ = std::fs::remove_file(&out);
        let _ = std::fs::remove_file(&dir_file);
    }
    let hit = run.root() && out.exists();
    let config = SurfaceConfig {
        model: s.source.clone(),
        data: run.data.clone(),
        x: run.a.x.clone(),
        y: run.a.y.clone(),
        directions,
        dir_type: spec.directions.dir_type,
        orthogonalize: false,
        curvature: None,
        shard: Shard::WHOLE,
        resume: false,
        dir_file: Some(dir_file),
        out: out.clone(),
        threads: spec.run.threads,
        large_grid: false,
    };
    run_surface(&config, &run.report).map_err(|e| AnalysisError::Step {
        step: "surface",
        label: s.label.clone(),
        source: Box::new(e),
    })?;
    let surf = if run.root() {
        Some(crate::io::surface::read_surface(&out)?)
    } else {
        None
    };
    Ok((out, surf, hit))
}

fn surface(run: &Run, s: &Subject, m: &mut Measured) -> AnalysisResult<bool> {
    let spec = &run.a.spec;
    let directions = match spec.directions.kind {
        DirectionsKind::Eigen => eigen_source(spec),
        DirectionsKind::Random | DirectionsKind::Both => DirectionSource::Generate {
            norm: spec.directions.norm,
            perturb_biasbn: spec.directions.perturb_biasbn,
            seed: spec.directions.seed,
            model2: None,
            model3: None,
        },
    };
    let (out, surf, hit) = surface_into(run, s, ("surface", "directions"), directions)?;
    if let Some(surf) = surf {
        let k = match &surf.y {
            Some(y) => nearest_zero(y) * surf.x.len() + nearest_zero(&surf.x),
            None => nearest_zero(&surf.x),
        };
        m.center_loss = surf.values.arrays[0].as_slice().expect("standard")[k];
        m.surface = Some((out, surf));
    }
    Ok(hit)
}

fn eigen_surface(run: &Run, s: &Subject, m: &mut Measured) -> AnalysisResult<bool> {
    let source = eigen_source(&run.a.spec);
    let (out, _, hit) = surface_into(run, s, ("eigen-surface", "eigen-directions"), source)?;
    m.eigen_surface = Some(out);
    Ok(hit)
}

fn metrics(run: &Run, s: &Subject, m: &mut Measured) -> AnalysisResult<bool> {
    let spec = &run.a.spec;
    // the surface file is read on rank 0 only; its path is the same on every rank
    let surface = s.with_ext("surface.h5");
    if run.root() && m.surface.is_none() {
        return Err(AnalysisError::StepNotRun { step: "surface" });
    }
    let threads = spec.run.threads;
    let (r, hit) = cached(
        &s.with_ext("metrics.json"),
        &[&s.spec_path, &s.file, &surface],
        || {
            // rank 0: the surface's smoothness and the directions from their file, which
            // it sends to the other ranks for the distributed dᵀHd
            let mut bytes = Vec::new();
            let mut smooth = None;
            if let Some((_, surf)) = m.surface.as_ref().filter(|_| run.root()) {
                let p = crate::metrics::MetricParams {
                    delta: spec.metrics.delta,
                    radius: spec.metrics.radius,
                    rays: None,
                };
                smooth = Some(
                    crate::metrics::file_metrics(surf, "train_loss", &p)
                        .ok_or(AnalysisError::NoTrainLoss)?,
                );
                let dirs = crate::io::directions::read_directions(
                    &s.with_ext("directions.h5"),
                    &s.model.theta,
                    spec.directions.dir_type,
                )?;
                let along: Vec<ndarray::Array1<f32>> = std::iter::once(&dirs.x)
                    .chain(dirs.y.as_ref())
                    .map(|d| d.data.clone())
                    .collect();
                along.encode(&mut bytes);
            }
            run.world.broadcast(0, &mut bytes);
            let along = Vec::<ndarray::Array1<f32>>::decode(&mut &bytes[..])?;
            let o = run
                .data
                .objective(&s.model, &s.source, &run.subset)?
                .distributed(run.world);
            let dhd = |d: &ndarray::Array1<f32>| -> JobResult<f64> {
                let hv = crate::jobs::with_threads(threads, || {
                    o.hvp(s.model.theta.data.view(), d.view())
                })?;
                Ok(d.iter()
                    .zip(hv.iter())
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum())
            };
            let curvature = along.iter().map(dhd).collect::<JobResult<Vec<f64>>>()?;
            Ok(smooth.map(|sm| MetricsResult {
                surface: sm,
                exact_curvature_x: curvature[0],
                exact_curvature_y: curvature.get(1).copied(),
            }))
        },
    )?;
    m.metrics = r;
    Ok(hit)
}

fn hessian(run: &Run, s: &Subject, m: &mut Measured) -> AnalysisResult<bool> {
    let h = &run.a.spec.hessian;
    let (r, hit) = cached(&s.with_ext("hessian.json"), &s.deps(), || {
        let t0 = Instant::now();
        let plan = HessianPlan::new(&h.settings())?;
        debug_assert_eq!(plan.top.which, Which::Largest);
        let o = run
            .data
            .objective(&s.model, &s.source, &run.hess_data)?
            .distributed(run.world);
        let threads = run.a.spec.run.threads;
        let r = hessian_of(&o, &s.model.theta, &plan, threads, &s.file, &run.inner)?;
        let top = r.whole.top.as_ref().ok_or(AnalysisError::NoEigenvalues)?;
        let trace = r.whole.trace.as_ref();
        let file = if h.writes_file() && run.root() {
            let path = s.with_ext("hessian.h5");
            let mut attrs = std::collections::BTreeMap::new();
            s.source
                .describe_in(&s.model, crate::model::zoo::ARCH_METADATA_KEY, &mut attrs)?;
            attrs.insert("data".into(), run.hess_data.name.clone().into());
            attrs.insert("samples".into(), run.hess_data.len().into());
            attrs.insert("seed".into(), (h.seed as i64).into());
            attrs.insert("operator".into(), h.operator.to_string().into());
            attrs.insert("operator_definition".into(), h.operator.definition().into());
            attrs.insert("params".into(), plan.subset.describe().into());
            attrs.insert(
                "hvp_normalization".into(),
                crate::jobs::hessian::HVP_NORMALIZATION.into(),
            );
            crate::io::hessian::write_hessian(&path, &r.whole, &r.blocks, &attrs).map_err(
                |source| crate::jobs::JobError::HessianFile {
                    path: path.clone(),
                    source: Box::new(source),
                },
            )?;
            Some(
                path.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            )
        } else {
            None
        };
        Ok(Some(HessianResult {
            operator: h.operator.to_string(),
            blocks: r
                .blocks
                .iter()
                .map(|(name, g)| BlockCurvature {
                    name: name.clone(),
                    params: g.params_dim,
                    eigenvalues: g.top.as_ref().map(|t| t.values.clone()).unwrap_or_default(),
                    trace: g.trace.as_ref().map(|t| t.estimate),
                })
                .collect(),
            file,
            eigenvalues: top.values.to_vec(),
            residuals: top.residuals.to_vec(),
            converged: top.converged.to_vec(),
            trace: trace.map(|t| t.estimate),
            trace_stderr: trace.map(|t| t.stderr),
            samples: run.hess_data.len(),
            hvps: r.whole.hvps,
            seconds: t0.elapsed().as_secs_f64(),
        }))
    })?;
    m.hessian = r;
    Ok(hit)
}

fn probe(run: &Run, s: &Subject, m: &mut Measured) -> AnalysisResult<bool> {
    let spec = &run.a.spec;
    let (p, hit) = cached(&s.with_ext("probe-summary.json"), &s.deps(), || {
        let (tr, init) = probe_model(
            &s.model,
            &s.source,
            &run.data,
            &run.subset,
            spec.probe.init_seed,
            spec.run.threads,
        )?;
        if run.root() {
            crate::jobs::write_json(
                &s.with_ext("probe.json"),
                "writing",
                &serde_json::json!({"trained": tr, "init": init}),
            )?;
        }
        Ok(Some(ProbeSummary {
            grad_ratio_trained: tr.first_to_last_gradient_ratio,
            grad_ratio_init: init.first_to_last_gradient_ratio,
            act_std_ratio_trained: tr.last_to_first_activation_std,
            act_std_ratio_init: init.last_to_first_activation_std,
            grad_norms_init: init.gradients.iter().map(|g| g.grad_norm).collect(),
            grad_norms_trained: tr.gradients.iter().map(|g| g.grad_norm).collect(),
            act_std_init: init.activations.iter().map(|a| a.std).collect(),
            act_std_trained: tr.activations.iter().map(|a| a.std).collect(),
            rank_residual_init: init
                .activations
                .iter()
                .filter_map(|a| a.rank_residual)
                .collect(),
            rank_residual_trained: tr
                .activations
                .iter()
                .filter_map(|a| a.rank_residual)
                .collect(),
            token_cosine_init: init
                .activations
                .iter()
                .filter_map(|a| a.token_cosine)
                .collect(),
            token_cosine_trained: tr
                .activations
                .iter()
                .filter_map(|a| a.token_cosine)
                .collect(),
            block_grad_init: init.blocks.iter().map(|b| b.grad_norm).collect(),
            block_grad_trained: tr.blocks.iter().map(|b| b.grad_norm).collect(),
        }))
    })?;
    m.probe = p;
    Ok(hit)
}

fn sharpness(run: &Run, s: &Subject, m: &mut Measured) -> AnalysisResult<bool> {
    let spec = &run.a.spec;
    let (Some(sh), Some(ds)) = (spec.sharpness.as_ref(), run.sharp_data.as_ref()) else {
        return Ok(true);
    };
    let (r, hit) = cached(&s.with_ext("sharpness-summary.json"), &s.deps(), || {
        let t0 = Instant::now();
        let plan = sh.plan()?;
        let o = run
            .data
            .objective(&s.model, &s.source, ds)?
            .distributed(run.world);
        let threads = spec.run.threads;
        let r = sharpness_of(&o, &s.model.theta, &plan, threads, &s.file, &run.inner)?;
        let (eps, beta) = (
            r.eps
                .ok_or(AnalysisError::NotRun {
                    what: "ε-sharpness",
                })?
                .0,
            r.beta
                .ok_or(AnalysisError::NotRun {
                    what: "β-smoothness",
                })?
                .0,
        );
        if run.root() {
            crate::jobs::write_json(
                &s.with_ext("sharpness.json"),
                "writing",
                &serde_json::json!({"eps_sharpness": eps, "beta_smoothness": beta}),
            )?;
        }
        Ok(Some(SharpnessSummary {
            eps_sharpness: eps.sharpness,
            eps: sh.eps,
            beta_max: beta.beta_max,
            beta_max_eta: beta.beta_max_eta,
            loss_range: beta.loss_range,
            samples: ds.len(),
            seconds: t0.elapsed().as_secs_f64(),
        }))
    })?;
    m.sharpness = r;
    Ok(hit)
}

/// Prints one line per finished step on stderr unless quiet, and counts the steps that
/// were up to date.
pub(super) struct StepLog {
    total: usize,
    pub done: usize,
    pub reused: usize,
    quiet: bool,
    start: Instant,
}

impl StepLog {
    pub fn new(total: usize, quiet: bool) -> Self {
        Self {
            total,
            done: 0,
            reused: 0,
            quiet,
            start: Instant::now(),
        }
    }

    pub fn next(&mut self, what: &str, cached: bool) {
        self.done += 1;
        self.reused += usize::from(cached);
        if !self.quiet {
            eprintln!(
                "[{:>2}/{}] {:<48} {}  ({:.0} s)",
                self.done,
                self.total,
                what,
                if cached { "up to date" } else { "done" },
                self.start.elapsed().as_secs_f64()
            );
        }
    }
}
