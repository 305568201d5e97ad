//! Analysis specs: a TOML file naming models, data, grid, directions, Hessian options,
//! metrics and probes. Unknown keys are errors (with the line), so a typo never silently
//! falls back to a default.
//!
//! ```toml
//! name = "residual-vs-plain"            # results go to outputs/<name>/ (default: file stem)
//! description = "…"
//! [data]
//! name = "digits"                       # bundled name or path
//! samples = 512                         # subset used for surfaces, Hessians and probes
//! [grid]
//! x = "-1:1:21"
//! y = "-1:1:21"                         # omit for 1-D surfaces
//! [directions]
//! norm = "filter"
//! seed = 0
//! kind = "random"                      # or "eigen" (top eigenvectors), "both"
//! [hessian]
//! operator = "hessian"                  # or "ggn", "fisher", "empirical-fisher"
//! top_k = 1
//! trace_probes = 16
//! samples = 256
//! per_block = false                     # true: spectra per block, drawn in the report
//! [sharpness]                           # optional: ε-sharpness and β-smoothness
//! samples = 256
//! iters = 10
//! [[models]]
//! file = "fixtures/models/resnet20-digits.safetensors"
//! label = "ResNet-20"
//! ```
//! With a `[train]` table, a model may instead be given by `arch` alone (no `file`): it is
//! trained with that recipe on the full training split into `outputs/<name>/<label>.safetensors`
//! (checkpoints in `<label>.ckpt/`), skipped when that file holds the same arch and recipe,
//! and resumed from its checkpoint after an interruption.
//!
//! ```toml
//! [train]
//! epochs = 20
//! batch_size = 128
//! lr = 0.1
//! schedule = "cosine"          # or "step:10,15", "constant"
//! [[models]]
//! arch = "resnet-cifar:depth=20,shortcut=none"   # input shape and classes from the data
//! label = "plain-20"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::jobs::hessian::{CurvatureOperator, HessianPlan, HessianSettings, ParamSet};
use crate::jobs::sharpness::SharpnessPlan;
use crate::jobs::surface::EigenSettings;
use crate::jobs::{JobError, Precision};
use crate::landscape::directions::{DirType, DirectionNorm};
use crate::landscape::grid::{GridAxis, GridAxisError};
use crate::sharpness::{EpsParams, PerturbedParams};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisSpec {
    pub name: Option<String>,
    #[serde(default)]
    pub description: String,
    pub data: DataSpec,
    pub grid: GridSpec,
    #[serde(default)]
    pub directions: DirectionSpec,
    #[serde(default)]
    pub hessian: HessianSpec,
    #[serde(default)]
    pub metrics: MetricsSpec,
    #[serde(default)]
    pub probe: ProbeSpec,
    /// ε-sharpness and β-smoothness; off unless the section is present.
    pub sharpness: Option<SharpnessSpec>,
    #[serde(default)]
    pub run: RunSpec,
    /// Recipe for models given by `arch` without `file`.
    #[serde(default)]
    pub train: Option<TrainSpec>,
    pub models: Vec<ModelSpec>,
}

/// `[train]`: the recipe of [`crate::train::TrainConfig`] (same defaults as `losscape train`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    #[serde(default = "default_train_batch")]
    pub batch_size: usize,
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// `sgd` or `adamw`.
    #[serde(default = "default_optimizer")]
    pub optimizer: String,
    /// AdamW's (β₁, β₂) (default 0.9, 0.999).
    #[serde(default)]
    pub betas: Option<(f64, f64)>,
    /// AdamW's ε (default 1e-8).
    #[serde(default)]
    pub eps: Option<f64>,
    /// SGD's momentum (default 0.9; none with AdamW).
    #[serde(default)]
    pub momentum: Option<f64>,
    #[serde(default)]
    pub nesterov: bool,
    #[serde(default = "default_wd")]
    pub weight_decay: f64,
    #[serde(default = "default_schedule")]
    pub schedule: String,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub crop_pad: usize,
    #[serde(default)]
    pub flip: bool,
    #[serde(default)]
    pub he_init: bool,
    /// Checkpoint every K epochs.
    #[serde(default = "one")]
    pub every: usize,
}

fn default_epochs() -> usize {
    10
}
fn default_train_batch() -> usize {
    128
}
fn default_lr() -> f64 {
    0.1
}
fn default_optimizer() -> String {
    "sgd".into()
}
fn default_wd() -> f64 {
    5e-4
}
fn default_schedule() -> String {
    "cosine".into()
}

impl TrainSpec {
    /// The recipe, with the schedule parsed.
    pub fn config(&self) -> Result<crate::train::TrainConfig, crate::train::TrainError> {
        let optimizer = crate::train::Optimizer::from_parts(&self.optimizer, self.betas, self.eps)?;
        Ok(crate::train::TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            momentum: self.momentum.unwrap_or(optimizer.default_momentum()),
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
            optimizer,
            schedule: self.schedule.parse()?,
            seed: self.seed,
            crop_pad: self.crop_pad,
            flip: self.flip,
        })
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    pub name: String,
    pub samples: Option<usize>,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
}

fn default_batch() -> usize {
    32
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridSpec {
    pub x: String,
    pub y: Option<String>,
}

crate::choice::choice! {
    /// Which directions the surfaces of an analysis follow.
    #[derive(Default, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum DirectionsKind {
        #[default]
        Random = "random": "Random directions normalized by `norm` (Li et al.).",
        Eigen = "eigen": "The top eigenvectors of `operator` at the trained weights.",
        Both = "both": "A surface along each: random, and eigenvectors (`<label>.eigen-surface.h5`).",
    }
}

/// `[directions]`: random directions (`norm`, `seed`, …) and/or eigenvector directions
/// (`kind`, `operator`, `eigen_norm`, `eigen_max_iter`, `eigen_tol`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectionSpec {
    #[serde(default)]
    pub norm: DirectionNorm,
    #[serde(default)]
    pub dir_type: DirType,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub perturb_biasbn: bool,
    #[serde(default)]
    pub kind: DirectionsKind,
    /// The operator whose top eigenvectors are the eigen directions.
    #[serde(default)]
    pub operator: CurvatureOperator,
    /// How eigenvectors are scaled (default none: the unit eigenvectors).
    #[serde(default = "unit_norm")]
    pub eigen_norm: DirectionNorm,
    #[serde(default = "default_eigen_iter")]
    pub eigen_max_iter: usize,
    #[serde(default = "default_eigen_tol")]
    pub eigen_tol: f64,
}

fn unit_norm() -> DirectionNorm {
    DirectionNorm::None
}
fn default_eigen_iter() -> usize {
    EigenSettings::default().max_iter
}
fn default_eigen_tol() -> f64 {
    EigenSettings::default().tol
}

impl Default for DirectionSpec {
    fn default() -> Self {
        Self {
            norm: DirectionNorm::Filter,
            dir_type: DirType::Weights,
            seed: 0,
            perturb_biasbn: false,
            kind: DirectionsKind::Random,
            operator: CurvatureOperator::Hessian,
            eigen_norm: DirectionNorm::None,
            eigen_max_iter: default_eigen_iter(),
            eigen_tol: default_eigen_tol(),
        }
    }
}

impl DirectionSpec {
    /// How the eigen directions are computed (seeded by `seed`).
    pub fn eigen_settings(&self) -> EigenSettings {
        EigenSettings {
            operator: self.operator,
            params: ParamSet::Trainable,
            max_iter: self.eigen_max_iter,
            tol: self.eigen_tol,
            seed: self.seed,
            ..Default::default()
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HessianSpec {
    /// Compute the Hessian step at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "one")]
    pub top_k: usize,
    /// Hutchinson probes for the trace (0 = no trace).
    #[serde(default = "default_probes")]
    pub trace_probes: usize,
    /// Samples for H·v (None = the data spec's samples).
    pub samples: Option<usize>,
    #[serde(default = "default_tol")]
    pub tol: f64,
    #[serde(default = "default_iter")]
    pub max_iter: usize,
    #[serde(default)]
    pub seed: u64,
    /// The curvature matrix: the Hessian, or a Gauss–Newton type.
    #[serde(default)]
    pub operator: CurvatureOperator,
    /// Labels drawn per data point for the Fisher.
    #[serde(default = "one")]
    pub fisher_samples: usize,
    /// Also each block's top eigenvalues (and density with `density`); the report then
    /// draws the spectra per block.
    #[serde(default)]
    pub per_block: bool,
    /// The spectral density by SLQ (whole network, and per block with `per_block`).
    #[serde(default)]
    pub density: bool,
}

fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn default_probes() -> usize {
    16
}
fn default_tol() -> f64 {
    1e-3
}
fn default_iter() -> usize {
    60
}

impl Default for HessianSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            top_k: 1,
            trace_probes: 16,
            samples: None,
            tol: 1e-3,
            max_iter: 60,
            seed: 0,
            operator: CurvatureOperator::Hessian,
            fisher_samples: 1,
            per_block: false,
            density: false,
        }
    }
}

impl HessianSpec {
    /// The settings of the Hessian step: top eigenvalues of `operator` by Lanczos and,
    /// with `trace_probes` > 0, the Hutchinson trace, per block with `per_block`, the SLQ
    /// density with `density`; everything else at the library's defaults.
    pub fn settings(&self) -> HessianSettings {
        HessianSettings {
            top_k: self.top_k,
            max_iter: Some(self.max_iter),
            tol: self.tol,
            seed: self.seed,
            trace: self.trace_probes > 0,
            probes: self.trace_probes,
            operator: self.operator,
            fisher_samples: self.fisher_samples,
            per_block: self.per_block,
            density: self.density,
            ..Default::default()
        }
    }

    /// Whether the step writes its HDF5 file (and the report a spectrum figure).
    pub fn writes_file(&self) -> bool {
        self.per_block || self.density
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSpec {
    /// Loss rise that bounds the basin (None = the metrics module's default).
    pub delta: Option<f64>,
    /// Radius of the disc for roughness and non-convexity (None = default).
    pub radius: Option<f64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSpec {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub init_seed: u64,
}

impl Default for ProbeSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            init_seed: 0,
        }
    }
}

/// `[sharpness]`: ε-sharpness (Keskar et al. 2017) and β-smoothness along the gradient
/// (Santurkar et al. 2018), see [`crate::sharpness`].
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharpnessSpec {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Samples (None = the data spec's samples).
    pub samples: Option<usize>,
    #[serde(default = "default_sharp_eps")]
    pub eps: f64,
    #[serde(default = "default_sharp_iters")]
    pub iters: usize,
    /// Step sizes η for β-smoothness (None = the sharpness module's default list).
    pub etas: Option<Vec<f64>>,
    #[serde(default)]
    pub seed: u64,
}

impl SharpnessSpec {
    /// The validated plan: both analyses, conv and linear weights perturbed, f32.
    pub fn plan(&self) -> Result<SharpnessPlan, JobError> {
        let eps = EpsParams {
            eps: self.eps,
            iters: self.iters,
            seed: self.seed,
            ..Default::default()
        };
        SharpnessPlan::new(
            eps,
            self.etas.clone(),
            false,
            false,
            PerturbedParams::Weights,
            Precision::F32,
        )
    }
}

fn default_sharp_eps() -> f64 {
    crate::sharpness::EpsParams::default().eps
}
fn default_sharp_iters() -> usize {
    crate::sharpness::EpsParams::default().iters
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Worker threads (None = all cores).
    pub threads: Option<usize>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The model file; empty (absent) for a model trained from `arch` with `[train]`.
    #[serde(default)]
    pub file: PathBuf,
    pub label: Option<String>,
    /// Architecture override (`--arch` syntax).
    pub arch: Option<String>,
}

/// Errors of spec files.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Occurs when the spec file cannot be read.
    #[error("cannot read analysis spec {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// Occurs when the TOML is malformed or has unknown or mistyped keys.
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// Occurs when a value is out of range; the message names the key and its line.
    #[error("{message}")]
    Value { message: String },
    /// Occurs when a value is invalid (grid, model file, labels).
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// How spec keys set the library's config fields: (section, key in the spec, field).
/// Library messages name fields (see [`crate::error`]); [`Analysis::render`] names the key
/// and its line instead. A field set by several sections maps to the first listed whose
/// key the spec sets.
const FIELDS: &[(&str, &str, &str)] = &[
    ("grid", "x", "x"),
    ("grid", "y", "y"),
    ("data", "samples", "samples"),
    ("data", "batch_size", "batch_size"),
    ("hessian", "top_k", "top_k"),
    ("hessian", "max_iter", "max_iter"),
    ("hessian", "tol", "tol"),
    ("hessian", "trace_probes", "probes"),
    ("hessian", "samples", "samples"),
    ("hessian", "seed", "seed"),
    ("hessian", "operator", "operator"),
    ("hessian", "fisher_samples", "fisher_samples"),
    ("directions", "eigen_max_iter", "max_iter"),
    ("directions", "eigen_tol", "tol"),
    ("sharpness", "eps", "eps"),
    ("sharpness", "iters", "iters"),
    ("sharpness", "etas", "etas"),
    ("sharpness", "samples", "samples"),
    ("sharpness", "seed", "seed"),
    ("directions", "seed", "seed"),
    ("directions", "dir_type", "dir_type"),
    ("train", "epochs", "epochs"),
    ("train", "batch_size", "batch_size"),
    ("train", "lr", "lr"),
    ("train", "schedule", "schedule"),
    ("train", "every", "every"),
    ("train", "seed", "seed"),
    ("run", "threads", "threads"),
];

/// Whether `name` is safe as one path component inside the outputs folder: ASCII letters,
/// digits, `.`, `_`, `-`, not `.` or `..`, at most 128 bytes. Analysis names and labels
/// become folder and file names, so nothing else may escape `--outputs`.
fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The 1-based line where `[section]` sets `key`, if it does.
fn key_line(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[') {
            current = h
                .trim_start_matches('[')
                .trim_end_matches(']')
                .trim()
                .to_string();
            continue;
        }
        let set = t
            .split_once('=')
            .is_some_and(|(k, _)| k.trim() == key && current == section);
        if set {
            return Some(i + 1);
        }
    }
    None
}

/// A validated spec.
#[derive(Clone, Debug)]
pub struct Analysis {
    pub spec: AnalysisSpec,
    /// The spec's text (to name the lines of keys in messages).
    pub text: String,
    pub name: String,
    pub path: PathBuf,
    pub x: GridAxis,
    pub y: Option<GridAxis>,
    /// One unique label per model.
    pub labels: Vec<String>,
}

impl Analysis {
    /// `file.toml:12 hessian.top_k`: where the spec sets `field` (in `section`, or in the
    /// first section of `FIELDS` that sets it); `None` for a field no key sets.
    pub fn locate(&self, section: Option<&str>, field: &str) -> Option<String> {
        locate(&self.text, &self.path, section, field)
    }

    /// A library message with its fields named by spec keys and lines.
    pub fn render(&self, message: &str) -> String {
        crate::error::translate_fields(message, |f| self.locate(None, f))
    }
}

fn locate(text: &str, path: &Path, section: Option<&str>, field: &str) -> Option<String> {
    let candidates = FIELDS
        .iter()
        .filter(|(s, _, f)| *f == field && section.is_none_or(|want| want == *s));
    let mut fallback = None;
    for (s, key, _) in candidates {
        match key_line(text, s, key) {
            Some(line) => return Some(format!("{}:{line} {s}.{key}", path.display())),
            None => fallback = fallback.or(Some(format!("{} {s}.{key}", path.display()))),
        }
    }
    fallback
}

/// Reads and validates a spec; model paths are taken relative to the working directory.
pub fn load(path: &Path) -> Result<Analysis, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|cause| SpecError::Io {
        path: path.into(),
        cause,
    })?;
    parse(&text, path)
}

pub fn parse(text: &str, path: &Path) -> Result<Analysis, SpecError> {
    let spec: AnalysisSpec = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(0);
        SpecError::Parse {
            path: path.into(),
            line,
            message: e.message().to_string(),
        }
    })?;
    // a library error about `section`'s values, its fields named by key and line
    let value = |section: &str, message: String| SpecError::Value {
        message: crate::error::translate_fields(&message, |f| locate(text, path, Some(section), f)),
    };
    let axis = |key: &str, e: GridAxisError| SpecError::Value {
        message: format!(
            "{} expects MIN:MAX:NUM, e.g. -1:1:51; got '{}': {}",
            locate(text, path, Some("grid"), key).unwrap_or_else(|| format!("grid.{key}")),
            e.given,
            e.why
        ),
    };
    let invalid = |key: &str, message: String| SpecError::Invalid {
        path: path.into(),
        key: key.into(),
        message,
    };
    let x: GridAxis = spec
        .grid
        .x
        .parse()
        .map_err(|e: GridAxisError| axis("x", e))?;
    let y: Option<GridAxis> = spec
        .grid
        .y
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: GridAxisError| axis("y", e))?;
    if spec.models.is_empty() {
        return Err(invalid(
            "models",
            "at least one [[models]] entry is needed".into(),
        ));
    }
    let mut labels = Vec::new();
    for (i, m) in spec.models.iter().enumerate() {
        let trained = m.file.as_os_str().is_empty();
        if trained {
            if m.arch.is_none() {
                return Err(invalid(
                    &format!("models[{i}]"),
                    "give `file`, or `arch` (with a [train] table) to train it".into(),
                ));
            }
            if spec.train.is_none() {
                return Err(invalid(
                    &format!("models[{i}].arch"),
                    "a model without `file` is trained: add a [train] table with the recipe".into(),
                ));
            }
            if m.label.is_none() {
                return Err(invalid(
                    &format!("models[{i}].label"),
                    "a trained model needs a label (it names outputs/<name>/<label>.safetensors)"
                        .into(),
                ));
            }
        } else if !m.file.exists() {
            return Err(invalid(
                &format!("models[{i}].file"),
                format!("{} does not exist", m.file.display()),
            ));
        }
        if let Some(a) = m.arch.as_ref().filter(|_| !trained) {
            a.parse::<crate::model::Arch>()
                .map_err(|e| invalid(&format!("models[{i}].arch"), e.to_string()))?;
        }
        let label = m.label.clone().unwrap_or_else(|| {
            m.file
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        });
        if labels.contains(&label) {
            return Err(invalid(
                &format!("models[{i}].label"),
                format!("label '{label}' is used twice"),
            ));
        }
        if !is_safe_name(&label) {
            return Err(invalid(
                &format!("models[{i}].label"),
                format!("label '{label}' names files in <outputs>/<name>/: use letters, digits, '.', '_' and '-' only (no slashes, not '.' or '..'); set `label` when the file name has other characters"),
            ));
        }
        labels.push(label);
    }
    if spec.data.batch_size == 0 {
        return Err(invalid("data.batch_size", "must be at least 1".into()));
    }
    if spec.hessian.enabled {
        HessianPlan::new(&spec.hessian.settings()).map_err(|e| value("hessian", e.to_string()))?;
    }
    if spec.directions.kind != DirectionsKind::Random {
        let e = spec.directions.eigen_settings();
        let check = HessianSettings {
            top_k: 2,
            max_iter: Some(e.max_iter),
            tol: e.tol,
            operator: e.operator,
            ..Default::default()
        };
        HessianPlan::new(&check).map_err(|e| value("directions", e.to_string()))?;
    }
    if let Some(sh) = &spec.sharpness {
        sh.plan().map_err(|e| value("sharpness", e.to_string()))?;
    }
    let name = spec.name.clone().unwrap_or_else(|| {
        path.file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    });
    if !is_safe_name(&name) {
        return Err(invalid(
            "name",
            format!(
                "'{name}' names the output folder <outputs>/<name>/: use letters, digits, '.', '_' and '-' only (no slashes, not '.' or '..')"
            ),
        ));
    }
    if let Some(t) = &spec.train {
        t.config()
            .map_err(|e| invalid("train.schedule", e.to_string()))?;
        if t.epochs == 0 || t.batch_size == 0 || t.every == 0 {
            return Err(invalid(
                "train",
                "epochs, batch_size and every must be positive".into(),
            ));
        }
    }
    Ok(Analysis {
        spec,
        text: text.to_string(),
        name,
        path: path.into(),
        x,
        y,
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
[data]
name = "digits"
samples = 64
[grid]
x = "-1:1:5"
[[models]]
file = "Cargo.toml"
"#;

    #[test]
    fn parses_and_rejects_with_lines() {
        let a = parse(GOOD, Path::new("t.toml")).unwrap();
        assert_eq!(a.labels, vec!["Cargo"]);
        let bad = GOOD.replace("samples = 64", "samples = 64\nsampels = 3");
        let e = parse(&bad, Path::new("t.toml")).unwrap_err().to_string();
        assert!(e.contains("t.toml:6") && e.contains("sampels"), "{e}");
        let e = parse(&GOOD.replace("-1:1:5", "1:0:5"), Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("grid.x") && e.contains("MIN"), "{e}");
        let e = parse(
            &GOOD.replace("Cargo.toml", "nope.safetensors"),
            Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("models[0].file") && e.contains("nope.safetensors"),
            "{e}"
        );
    }

    #[test]
    fn library_fields_are_named_by_key_and_line() {
        let spec = format!("{GOOD}[hessian]\ntop_k = 0\n");
        let e = parse(&spec, Path::new("t.toml")).unwrap_err().to_string();
        assert_eq!(e, "t.toml:11 hessian.top_k must be at least 1");
        let spec = format!("{GOOD}[sharpness]\netas = [0.1, -1]\n");
        let e = parse(&spec, Path::new("t.toml")).unwrap_err().to_string();
        assert!(e.starts_with("t.toml:11 sharpness.etas: "), "{e}");
        let a = parse(GOOD, Path::new("t.toml")).unwrap();
        assert_eq!(
            a.render("`samples` 5000 is too many; `top_k` is fine; `nope` stays"),
            "t.toml:5 data.samples 5000 is too many; t.toml hessian.top_k is fine; `nope` stays"
        );
    }

    #[test]
    fn names_stay_inside_the_outputs_folder() {
        for bad in ["../../x", "/abs", "a/b", "..", ".", "", "a b"] {
            let spec = GOOD.replace("name = \"t\"", &format!("name = {bad:?}"));
            let e = parse(&spec, Path::new("t.toml")).unwrap_err().to_string();
            assert!(
                e.contains("name") && e.contains("letters, digits"),
                "{bad}: {e}"
            );
        }
        let ok = GOOD.replace("name = \"t\"", "name = \"run_2.b-c\"");
        assert_eq!(parse(&ok, Path::new("t.toml")).unwrap().name, "run_2.b-c");
    }
}
