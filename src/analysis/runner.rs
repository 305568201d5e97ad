//! Runs an analysis spec step by step (see the module docs of [`super`]).

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::{AnalysisError, AnalysisResult};
use super::spec::Analysis;
use super::steps::{Measured, Run, Step, StepLog, Subject};
use crate::data;
use crate::model::{Arch, Model};
use crate::objective::Evaluation;

/// Smoothness of the surface, and the exact curvature dᵀHd along its directions (on the
/// surface's samples) to compare with the finite-difference curvature of the surface.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MetricsResult {
    pub surface: crate::metrics::SurfaceMetrics,
    pub exact_curvature_x: f64,
    pub exact_curvature_y: Option<f64>,
}

/// Curvature at the trained weights.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HessianResult {
    /// The matrix: `hessian`, `ggn`, `fisher` or `empirical-fisher`.
    #[serde(default = "hessian_name")]
    pub operator: String,
    pub eigenvalues: Vec<f64>,
    pub residuals: Vec<f64>,
    pub converged: Vec<bool>,
    pub trace: Option<f64>,
    pub trace_stderr: Option<f64>,
    pub samples: usize,
    pub hvps: usize,
    pub seconds: f64,
    /// Top eigenvalues per block (`per_block`), in the network's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<BlockCurvature>,
    /// The Hessian file (`per_block` or `density`), beside the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

fn hessian_name() -> String {
    "hessian".into()
}

/// One block's curvature.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlockCurvature {
    pub name: String,
    pub params: usize,
    pub eigenvalues: Vec<f64>,
    pub trace: Option<f64>,
}

/// ε-sharpness and β-smoothness of one model (full reports in `<label>.sharpness.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SharpnessSummary {
    /// Keskar et al.'s φ in percent.
    pub eps_sharpness: f64,
    pub eps: f64,
    pub beta_max: f64,
    pub beta_max_eta: f64,
    /// Range of L(θ − ηg) over the η list (Santurkar et al.'s loss variation).
    pub loss_range: f64,
    pub samples: usize,
    pub seconds: f64,
}

/// Probe numbers for the report (the full tables are in `<label>.probe.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProbeSummary {
    pub grad_ratio_trained: f64,
    pub grad_ratio_init: f64,
    pub act_std_ratio_trained: f64,
    pub act_std_ratio_init: f64,
    pub grad_norms_init: Vec<f64>,
    pub grad_norms_trained: Vec<f64>,
    pub act_std_init: Vec<f64>,
    pub act_std_trained: Vec<f64>,
    /// Transformers: per block output, ‖X − 1x̄ᵀ‖_F/‖X‖_F (Dong et al. 2021), sample mean
    /// (empty for networks without token outputs).
    #[serde(default)]
    pub rank_residual_init: Vec<f64>,
    #[serde(default)]
    pub rank_residual_trained: Vec<f64>,
    /// Transformers: per block output, the mean pairwise token cosine.
    #[serde(default)]
    pub token_cosine_init: Vec<f64>,
    #[serde(default)]
    pub token_cosine_trained: Vec<f64>,
    /// ‖∂L/∂θ‖ over all trainable tensors of each block with parameters (`layer2.0`,
    /// `blocks.3`), in depth order: the per-layer gradient scale of Xiong et al. 2020.
    #[serde(default)]
    pub block_grad_init: Vec<f64>,
    #[serde(default)]
    pub block_grad_trained: Vec<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Evals {
    pub train: Evaluation,
    pub test: Option<Evaluation>,
}

/// Everything measured for one model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelResult {
    pub label: String,
    pub file: String,
    pub description: String,
    pub depth: usize,
    pub residual: bool,
    /// The architecture family whose residual and plain members are compared at equal
    /// depth: `ResNet`, `MLP`, `ViT (pre-LN)`, `ViT (post-LN)`, `ONNX`.
    #[serde(default)]
    pub family: String,
    /// Output classes (chance accuracy is 100/classes %).
    #[serde(default)]
    pub classes: usize,
    pub params: usize,
    pub eval: Evals,
    pub surface_file: String,
    /// The surface along the top eigenvectors (`[directions] kind = "both"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eigen_surface_file: Option<String>,
    pub center_loss: f64,
    pub metrics: Option<MetricsResult>,
    pub hessian: Option<HessianResult>,
    pub probe: Option<ProbeSummary>,
    #[serde(default)]
    pub sharpness: Option<SharpnessSummary>,
}

/// The results of a whole analysis.
#[derive(Clone, Debug, Serialize)]
pub struct AnalysisOutcome {
    pub name: String,
    pub description: String,
    pub out_dir: PathBuf,
    pub data: String,
    pub samples: Option<usize>,
    pub grid: String,
    /// The surfaces' directions, in words.
    pub directions: String,
    pub results: Vec<ModelResult>,
    pub seconds: f64,
    /// Steps taken from earlier runs' cached outputs, of all steps.
    pub steps_reused: usize,
    pub steps_total: usize,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Whether `out` exists and is newer than every dependency.
pub(super) fn up_to_date(out: &Path, deps: &[&Path]) -> bool {
    match mtime(out) {
        Some(t) => deps.iter().all(|d| mtime(d).is_none_or(|dt| dt <= t)),
        None => false,
    }
}

/// Loads a cached step result, or computes and stores it (atomically).
///
/// Under MPI (collective): rank 0 alone reads and writes `out` and tells the other ranks
/// whether it holds the result; if not, every rank runs `compute` (whose distributed
/// parts need them all) and rank 0 stores what it returns. `compute` returns the result
/// on rank 0 and may return None on the others; the returned value is None exactly on
/// ranks other than 0 when the result was cached.
pub(super) fn cached<T: Serialize + DeserializeOwned>(
    out: &Path,
    deps: &[&Path],
    compute: impl FnOnce() -> AnalysisResult<Option<T>>,
) -> AnalysisResult<(Option<T>, bool)> {
    let world = crate::dist::world();
    let root = world.rank() == 0;
    let mut stored: Option<T> = None;
    if root && up_to_date(out, deps) {
        stored = std::fs::read(out)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
    }
    let mut word = vec![u8::from(stored.is_some())];
    world.broadcast(0, &mut word);
    if word.first() == Some(&1) {
        return Ok((stored, true));
    }
    let v = compute()?;
    if let (true, Some(v)) = (root, &v) {
        let bytes = serde_json::to_vec_pretty(v)?;
        crate::io::output::write_atomic(out, |f| std::io::Write::write_all(f, &bytes)).map_err(
            |source| AnalysisError::Write {
                path: out.to_path_buf(),
                source,
            },
        )?;
    }
    Ok((v, false))
}

/// The model file of spec entry `m`: its `file`, or `out_dir/<label>.safetensors` for a
/// model the run trains.
fn model_file(m: &super::spec::ModelSpec, label: &str, out_dir: &Path) -> PathBuf {
    if m.file.as_os_str().is_empty() {
        out_dir.join(format!("{label}.safetensors"))
    } else {
        m.file.clone()
    }
}

/// Runs every step of `a` into `outputs_root/<name>/`: trains the models given by `arch`,
/// then runs the spec's steps (see `Step`) on each model in turn.
///
/// Under MPI (`mpirun -n N losscape run`) every rank runs this with the same spec: rank 0
/// trains the models (alone), then each step is distributed as its standalone command is
/// (surfaces over the work queue, the rest over the data's batches) and rank 0 alone
/// writes files; the other ranks read the spec's data and model files, including the
/// models rank 0 trained (so `outputs` must be shared with them), and return an outcome
/// without results.
pub fn run_analysis(
    a: &Analysis,
    outputs_root: &Path,
    quiet: bool,
) -> AnalysisResult<AnalysisOutcome> {
    let start = Instant::now();
    // under MPI every rank runs the same steps in the same order; rank 0 alone writes
    let world = crate::dist::world();
    let root = world.rank() == 0;
    let run = Run::new(a, outputs_root, quiet)?;
    let steps = Step::list(&a.spec);
    let mut log = StepLog::new(
        a.spec.models.len() * steps.len() + run.trained(),
        quiet || !root,
    );
    let files = if root {
        train_models(
            a,
            &run.out_dir,
            &run.train_full,
            run.test_full.as_ref(),
            quiet,
        )?
    } else {
        // rank 0 trains (one process); the others then read its model files
        a.spec
            .models
            .iter()
            .zip(&a.labels)
            .map(|(m, label)| (model_file(m, label, &run.out_dir), true))
            .collect()
    };
    world.broadcast(0, &mut vec![1]);
    for (i, (_, hit)) in files.iter().enumerate() {
        if run.is_trained(i) {
            log.next(&format!("{}: train", a.labels[i]), *hit);
        }
    }
    let mut results = Vec::new();
    for (i, (file, _)) in files.iter().enumerate() {
        let subject = Subject::load(&run, i, file)?;
        let mut m = Measured::default();
        for step in &steps {
            let hit = step.run(&run, &subject, &mut m)?;
            log.next(&format!("{}: {}", subject.label, step.title(a)), hit);
        }
        if root {
            results.push(m.into_result(&subject)?);
        }
    }
    Ok(AnalysisOutcome {
        name: a.name.clone(),
        description: a.spec.description.clone(),
        out_dir: run.out_dir,
        data: a.spec.data.name.clone(),
        samples: a.spec.data.samples,
        grid: match &a.y {
            Some(y) => format!("{} × {}", a.x, y),
            None => a.x.to_string(),
        },
        directions: directions_in_words(&a.spec.directions),
        results,
        seconds: start.elapsed().as_secs_f64(),
        steps_reused: log.reused,
        steps_total: log.done,
    })
}

/// Trains the models given by `arch` (no `file`) with the spec's `[train]` recipe into
/// `out_dir/<label>.safetensors` (checkpoints in `<label>.ckpt/`), in parallel with one core
/// per run (batch norm in train mode needs the whole batch). A model file that already
/// holds this arch and recipe is kept; an interrupted run resumes from its checkpoint; a
/// checkpoint of another recipe is discarded. Returns every model's file and whether it
/// was up to date.
fn train_models(
    a: &Analysis,
    out_dir: &Path,
    train: &data::Dataset,
    test: Option<&data::Dataset>,
    quiet: bool,
) -> AnalysisResult<Vec<(PathBuf, bool)>> {
    use rayon::prelude::*;

    use crate::train::checkpoint;
    use crate::train::session::{train_model, RunOptions, RECIPE_METADATA_KEY};

    let spec = &a.spec;
    let mut jobs = Vec::new();
    let mut files = Vec::new();
    for (i, (m, label)) in spec.models.iter().zip(&a.labels).enumerate() {
        if !m.file.as_os_str().is_empty() {
            files.push((model_file(m, label, out_dir), true));
            continue;
        }
        let t = spec.train.as_ref().expect("checked by the spec");
        let key = |key: &'static str| {
            move |e| AnalysisError::Recipe {
                spec: a.path.clone(),
                index: i,
                key,
                source: Box::new(e),
            }
        };
        let arch = crate::train::resolve_arch(m.arch.as_deref().unwrap_or_default(), train)
            .map_err(key("arch"))?;
        let cfg = t.config().map_err(key("train"))?;
        let out = model_file(m, label, out_dir);
        let ck = out_dir.join(format!("{label}.ckpt"));
        let recipe = serde_json::to_string(&cfg)?;
        let done = Model::load(&out, None).is_ok_and(|old| {
            old.arch == arch && old.metadata.get(RECIPE_METADATA_KEY) == Some(&recipe)
        });
        if !done {
            let state = ck.join(checkpoint::STATE_FILE);
            if state.exists()
                && checkpoint::load_state(
                    &state,
                    &arch,
                    &cfg,
                    &crate::engine::ParamVec::zeros(arch.build().layout),
                )
                .is_err()
            {
                std::fs::remove_dir_all(&ck).map_err(|source| {
                    AnalysisError::RemoveCheckpoints {
                        dir: ck.clone(),
                        source,
                    }
                })?;
            }
            jobs.push((
                label.clone(),
                arch,
                cfg,
                out.clone(),
                ck,
                t.every,
                t.he_init,
            ));
        }
        files.push((out, done));
    }
    let run = |(label, arch, cfg, out, ck, every, he_init): &(
        String,
        Arch,
        crate::train::TrainConfig,
        PathBuf,
        PathBuf,
        usize,
        bool,
    )| {
        let opts = RunOptions {
            out: out.clone(),
            checkpoints: Some(ck.clone()),
            every: *every,
            resume: true,
            he_init: *he_init,
            threads: None,
            quiet,
            label: Some(label.clone()),
        };
        train_model(&opts, arch, cfg, train, test)
            .map_err(|e| AnalysisError::Train {
                label: label.clone(),
                arch: Box::new(arch.clone()),
                source: e.into(),
            })
            .map(|_| ())
    };
    crate::util::with_threads(spec.run.threads, || {
        jobs.par_iter()
            .with_max_len(1)
            .map(run)
            .collect::<AnalysisResult<Vec<()>>>()
    })??;
    Ok(files)
}

/// "filter-normalized random directions", "the top eigenvectors of the GGN", or both.
fn directions_in_words(d: &super::spec::DirectionSpec) -> String {
    use super::spec::DirectionsKind;
    let norm = |n: crate::landscape::directions::DirectionNorm| match n {
        crate::landscape::directions::DirectionNorm::None => "unnormalized".to_string(),
        n => format!("{n}-normalized"),
    };
    let random = format!("{} random directions", norm(d.norm));
    let eigen = format!(
        "the top-2 eigenvectors of the {} ({})",
        curvature_label(&d.operator.to_string()),
        match d.eigen_norm {
            crate::landscape::directions::DirectionNorm::None => "unit length".to_string(),
            n => norm(n),
        }
    );
    match d.kind {
        DirectionsKind::Random => random,
        DirectionsKind::Eigen => format!("directions: {eigen}"),
        DirectionsKind::Both => format!("{random}, and {eigen}"),
    }
}

/// `Hessian`, `GGN`, `Fisher` or `empirical Fisher` for an operator's name.
pub fn curvature_label(operator: &str) -> String {
    crate::plot::operator_label(Some(operator))
}

/// The operator whose eigenvectors a surface follows, for captions.
fn eigen_operator(s: &crate::io::surface::SurfaceFile) -> String {
    let op = s.attrs.get("eigen_operator").map(|a| a.to_string());
    curvature_label(op.as_deref().unwrap_or("hessian"))
}

/// Draws the report's figures into the output folder; returns (file name, caption) pairs.
pub fn plots(o: &AnalysisOutcome) -> AnalysisResult<Vec<(String, String)>> {
    let mut images = Vec::new();
    let surfaces: Vec<(String, crate::io::surface::SurfaceFile)> = o
        .results
        .iter()
        .map(|r| {
            Ok((
                r.label.clone(),
                crate::io::surface::read_surface(&o.out_dir.join(&r.surface_file))?,
            ))
        })
        .collect::<AnalysisResult<_>>()?;
    // more than one row: residual models on the first, plain ones below when they are as
    // many (each plain twin under its residual one); otherwise one depth per row
    let mut ordered: Vec<&ModelResult> = o.results.iter().collect();
    if ordered.len() > 4 {
        let residual = ordered.iter().filter(|r| r.residual).count();
        if 2 * residual == ordered.len() {
            ordered.sort_by_key(|r| (!r.residual, r.depth));
        } else {
            ordered.sort_by_key(|r| r.depth);
        }
    }
    let panel = |file: &str, inputs: Vec<PathBuf>| -> AnalysisResult<()> {
        let cfg = crate::plot::PlotConfig {
            inputs,
            kind: crate::plot::PlotKind::Panel,
            surf_name: "train_loss".into(),
            levels: crate::plot::LevelSpec {
                vmin: None,
                vmax: None,
                vlevel: None,
            },
            log: true,
            zmax: None,
            size: None,
            title: None,
            trajectory: None,
            out: o.out_dir.join(file),
        };
        crate::plot::plot(&cfg)?;
        Ok(())
    };
    if surfaces.iter().all(|(_, s)| s.y.is_some()) && !surfaces.is_empty() {
        let file = "surfaces.png";
        panel(
            file,
            ordered
                .iter()
                .map(|r| o.out_dir.join(&r.surface_file))
                .collect(),
        )?;
        let along = match surfaces[0]
            .1
            .attrs
            .get("direction_kind")
            .map(|a| a.to_string())
        {
            Some(k) if k == "eigen" => format!(
                "along the top-1 (α) and top-2 (β) eigenvectors of each model's {}",
                eigen_operator(&surfaces[0].1)
            ),
            _ => "along random filter-normalized directions".into(),
        };
        images.push((file.to_string(), format!("Training loss around each trained model ({}) {along}, one log colour scale and shared levels; × marks the trained weights.", o.grid)));
    }
    let eigen: Vec<PathBuf> = ordered
        .iter()
        .filter_map(|r| r.eigen_surface_file.as_ref().map(|f| o.out_dir.join(f)))
        .collect();
    if !eigen.is_empty() && eigen.len() == o.results.len() {
        let first = crate::io::surface::read_surface(&eigen[0])?;
        if first.y.is_some() {
            let file = "eigen-surfaces.png";
            panel(file, eigen)?;
            images.push((file.to_string(), format!("Training loss around each trained model ({}) along the top-1 (α) and top-2 (β) unit eigenvectors of its own {} (PyHessian's view: the steepest curvature directions), one log colour scale.", o.grid, eigen_operator(&first))));
        }
    }
    // per-block spectra (`[hessian] per_block` or `density`)
    for r in &o.results {
        let Some(h) = r.hessian.as_ref() else {
            continue;
        };
        let Some(f) = h
            .file
            .as_ref()
            .map(|f| o.out_dir.join(f))
            .filter(|f| f.exists())
        else {
            continue;
        };
        let file = format!("{}.spectrum.png", r.label);
        let cfg = crate::plot::PlotConfig {
            inputs: vec![f],
            kind: crate::plot::PlotKind::Spectrum,
            surf_name: String::new(),
            levels: crate::plot::LevelSpec {
                vmin: None,
                vmax: None,
                vlevel: None,
            },
            log: false,
            zmax: None,
            size: None,
            title: Some(format!(
                "{} spectrum per block · {}",
                curvature_label(&h.operator),
                r.label
            )),
            trajectory: None,
            out: o.out_dir.join(&file),
        };
        crate::plot::plot(&cfg)?;
        let what = if h.blocks.is_empty() {
            "eigenvalue density (SLQ) and top eigenvalues"
        } else {
            "per block (stem → output): eigenvalue densities where computed, and the top eigenvalues of each block against depth with the whole network's λmax"
        };
        images.push((
            file,
            format!(
                "{}: {} spectrum {what}.",
                r.label,
                curvature_label(&h.operator)
            ),
        ));
    }
    // training curves of the models this analysis trained
    let curves: Vec<super::figures::TrainingSeries> = o
        .results
        .iter()
        .filter_map(|r| {
            let csv = o.out_dir.join(format!("{}.history.csv", r.label));
            let h = crate::train::checkpoint::read_history_csv(&csv).ok()?;
            Some((
                r.label.clone(),
                r.residual,
                r.depth,
                h.iter().map(|e| (e.batch_loss, e.batch_acc)).collect(),
            ))
        })
        .collect();
    if !curves.is_empty() {
        let file = "training-curves.png";
        super::figures::training_curves(
            &o.out_dir.join(file),
            "Training loss and accuracy per epoch (mean over the epoch's mini-batches)",
            ("training loss (mini-batches)", "training accuracy (%)"),
            &curves,
        )?;
        images.push((file.into(), "Training curves of the models trained by this analysis (same recipe and seed): mean loss and accuracy of each epoch's mini-batches (BN in train mode), one colour per depth, dashed = no shortcuts. Final losses over the whole training split (BN in eval mode) are in the table and training.json.".into()));
        let summary: Vec<serde_json::Value> = curves
            .iter()
            .zip(
                o.results
                    .iter()
                    .filter(|r| o.out_dir.join(format!("{}.history.csv", r.label)).exists()),
            )
            .map(|((label, residual, _, h), r)| {
                let last = h.last().copied().unwrap_or((f64::NAN, f64::NAN));
                serde_json::json!({
                    "label": label, "depth": r.depth, "residual": residual,
                    "final_batch_loss": last.0, "final_batch_acc": last.1,
                    "final_train_loss": r.eval.train.loss, "final_train_acc": r.eval.train.accuracy,
                    "test_acc": r.eval.test.as_ref().map(|t| t.accuracy),
                    "epochs": h.len(),
                })
            })
            .collect();
        let bytes = serde_json::to_vec_pretty(&summary)?;
        crate::io::output::write_atomic(&o.out_dir.join("training.json"), |f| {
            std::io::Write::write_all(f, &bytes)
        })?;
    }
    let probes: Vec<(&ModelResult, &ProbeSummary)> = o
        .results
        .iter()
        .filter_map(|r| r.probe.as_ref().map(|p| (r, p)))
        .collect();
    if !probes.is_empty() {
        let series = |f: &dyn Fn(&ProbeSummary) -> &Vec<f64>| probe_series(&probes, f);
        super::figures::depth_panels(
            &o.out_dir.join("gradient-flow.png"),
            "Gradient norm per layer",
            "layer (input → output)",
            "‖∂L/∂W‖",
            &[
                ("fresh He initialization", series(&|p| &p.grad_norms_init)),
                ("trained", series(&|p| &p.grad_norms_trained)),
            ],
        )?;
        images.push(("gradient-flow.png".into(), "‖∂L/∂W‖ of every conv/linear weight, left at a fresh He initialization (batch statistics), right for the trained weights (running statistics); solid = residual, dashed = no shortcuts.".into()));
        super::figures::depth_panels(
            &o.out_dir.join("activations.png"),
            "Activation std per block output",
            "block output (stem → last block)",
            "std",
            &[
                ("fresh He initialization", series(&|p| &p.act_std_init)),
                ("trained", series(&|p| &p.act_std_trained)),
            ],
        )?;
        images.push(("activations.png".into(), "Standard deviation of each block's output, left at a fresh He initialization, right for the trained weights; solid = residual, dashed = no shortcuts.".into()));
        let tokens: Vec<(&ModelResult, &ProbeSummary)> = probes
            .iter()
            .filter(|(_, p)| !p.rank_residual_trained.is_empty())
            .copied()
            .collect();
        if !tokens.is_empty() {
            let series = |f: &dyn Fn(&ProbeSummary) -> &Vec<f64>| probe_series(&tokens, f);
            super::figures::depth_panels(
                &o.out_dir.join("rank-collapse.png"),
                "Token rank collapse per block output",
                "block output (embedding → last block)",
                "‖X − 1x̄ᵀ‖ / ‖X‖",
                &[
                    ("fresh initialization", series(&|p| &p.rank_residual_init)),
                    ("trained", series(&|p| &p.rank_residual_trained)),
                ],
            )?;
            images.push(("rank-collapse.png".into(), "Relative distance of the token matrix from rank one (all tokens equal), ‖X − 1x̄ᵀ‖_F/‖X‖_F averaged over samples (Dong et al. 2021): 0 = collapsed; left at a fresh initialization, right trained; solid = residual, dashed = no skips.".into()));
        }
    }
    // metrics against depth: one line per family and residual/plain, named by the family
    // when the analysis spans several; lines of a single depth are left out
    use super::figures::TrendPanel;
    let trend_of = |results: &[&ModelResult],
                    title: &str,
                    log: bool,
                    f: &dyn Fn(&ModelResult) -> Option<f64>| {
        let mut variants: Vec<(&str, bool)> = Vec::new();
        for r in results {
            for v in [(r.family.as_str(), true), (r.family.as_str(), false)] {
                if !variants.contains(&v) {
                    variants.push(v);
                }
            }
        }
        let many = variants.len() > 2;
        let lines = variants
            .iter()
            .map(|&(family, res)| {
                let mut pts: Vec<(f64, f64)> = results
                    .iter()
                    .filter(|r| r.residual == res && r.family == family)
                    .filter_map(|r| f(r).map(|v| (r.depth as f64, v)))
                    .collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                let name = match (many, res) {
                    (false, true) => "residual".to_string(),
                    (false, false) => "plain (no shortcuts)".to_string(),
                    (true, true) => format!("{family} residual"),
                    (true, false) => format!("{family} plain"),
                };
                (name, res, pts)
            })
            .filter(|l| l.2.len() >= 2)
            .collect();
        TrendPanel {
            title: title.into(),
            log,
            lines,
        }
    };
    let all: Vec<&ModelResult> = o.results.iter().collect();
    let trend = |title: &str, log: bool, f: &dyn Fn(&ModelResult) -> Option<f64>| {
        trend_of(&all, title, log, f)
    };
    // the most depths one line spans
    let span = trend("", false, &|_| Some(0.0))
        .lines
        .iter()
        .map(|l| l.2.len())
        .max()
        .unwrap_or(0);
    if span >= 3 {
        let panels = vec![
            trend("train loss", true, &|r| Some(r.eval.train.loss)),
            trend("test accuracy %", false, &|r| {
                r.eval.test.map(|t| t.accuracy)
            }),
            trend(
                &format!("λmax ({})", super::report::curvature(&o.results)),
                true,
                &|r| {
                    r.hessian
                        .as_ref()
                        .and_then(|h| h.eigenvalues.first().copied())
                },
            ),
            trend("roughness", false, &|r| {
                r.metrics.as_ref().and_then(|m| m.surface.roughness)
            }),
            trend("grad ratio first/last (init)", true, &|r| {
                r.probe.as_ref().map(|p| p.grad_ratio_init)
            }),
        ];
        let panels: Vec<TrendPanel> = panels.into_iter().filter(|p| !p.lines.is_empty()).collect();
        if !panels.is_empty() {
            super::figures::depth_trends(
                &o.out_dir.join("depth-trends.png"),
                "Metrics against depth",
                &panels,
            )?;
            images.push((
                "depth-trends.png".into(),
                "Each metric against network depth; solid = residual, dashed = no shortcuts."
                    .into(),
            ));
        }
    }
    // is the landscape chaotic? minima, non-convexity and roughness of 2-D surfaces
    let two_d = o
        .results
        .iter()
        .all(|r| r.metrics.as_ref().is_some_and(|m| m.surface.dims == 2));
    if span >= 2 && two_d {
        let panels = vec![
            trend("strict local minima (1 = one basin)", false, &|r| {
                r.metrics.as_ref().map(|m| m.surface.local_minima as f64)
            }),
            trend("non-convex fraction near the center", false, &|r| {
                r.metrics
                    .as_ref()
                    .and_then(|m| m.surface.non_convex_fraction)
            }),
            trend("roughness near the center", false, &|r| {
                r.metrics.as_ref().and_then(|m| m.surface.roughness)
            }),
        ];
        let file = "landscape-chaos.png";
        super::figures::depth_trends(
            &o.out_dir.join(file),
            &format!(
                "Does the landscape turn chaotic with depth? ({} surfaces)",
                o.grid
            ),
            &panels,
        )?;
        images.push((
            file.into(),
            format!("Chaos of each {} training-loss surface against depth: strict local minima on the whole grid (points below all 8 neighbours), the share of points near the center whose 2×2 finite-difference Hessian has a negative eigenvalue (non-convex fraction), and the RMS misfit of the best quadratic near the center over the loss range (roughness); solid = residual, dashed = no shortcuts.", o.grid),
        ));
    }
    // transformers: trainability, curvature, rank collapse and gradient flow against depth
    let vits: Vec<&ModelResult> = o
        .results
        .iter()
        .filter(|r| r.family.starts_with("ViT"))
        .collect();
    let vit_trend = |title: &str, log: bool, f: &dyn Fn(&ModelResult) -> Option<f64>| {
        trend_of(&vits, title, log, f)
    };
    let last = |v: &Vec<f64>| v.last().copied();
    let panels: Vec<TrendPanel> = vec![
        vit_trend("test accuracy %", false, &|r| {
            r.eval.test.map(|t| t.accuracy)
        }),
        vit_trend(
            &format!("λmax ({})", super::report::curvature(&o.results)),
            true,
            &|r| {
                r.hessian
                    .as_ref()
                    .and_then(|h| h.eigenvalues.first().copied())
            },
        ),
        vit_trend("ε-sharpness %", true, &|r| {
            r.sharpness.as_ref().map(|s| s.eps_sharpness)
        }),
        vit_trend("rank distance, last block (init)", true, &|r| {
            r.probe.as_ref().and_then(|p| last(&p.rank_residual_init))
        }),
        vit_trend("rank distance, last block (trained)", true, &|r| {
            r.probe
                .as_ref()
                .and_then(|p| last(&p.rank_residual_trained))
        }),
        vit_trend("grad ratio first/last (trained)", true, &|r| {
            r.probe.as_ref().map(|p| p.grad_ratio_trained)
        }),
    ]
    .into_iter()
    .filter(|p| !p.lines.is_empty())
    .collect();
    if !panels.is_empty() {
        let file = "transformer-depth.png";
        super::figures::depth_trends(
            &o.out_dir.join(file),
            "Transformers: residual connections and LayerNorm placement against depth",
            &panels,
        )?;
        images.push((
            file.into(),
            "ViT variants against depth: test accuracy, λmax, ε-sharpness, the last block's token distance from rank one ‖X − 1x̄ᵀ‖_F/‖X‖_F at a fresh initialization and trained (Dong et al. 2021: 0 = collapsed), and the trained first-to-last gradient-norm ratio; solid = residual, dashed = without residual connections.".into(),
        ));
    }
    Ok(images)
}

/// One line per model of a per-layer probe quantity: (label, residual, values).
fn probe_series(
    probes: &[(&ModelResult, &ProbeSummary)],
    f: &dyn Fn(&ProbeSummary) -> &Vec<f64>,
) -> Vec<(String, bool, Vec<f64>)> {
    probes
        .iter()
        .map(|(r, p)| (r.label.clone(), r.residual, f(p).clone()))
        .collect()
}
