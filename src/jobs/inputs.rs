//! What every job starts from: a model file, a dataset, and how the work runs (threads,
//! precision, batch-norm mode). Plain, validated values: the CLI builds them from flags,
//! the analysis runner from a spec.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::error::{JobError, JobResult};
use crate::choice::choice;
use crate::data::{self, DataFormat, DataOptions, Dataset, Normalize, Split};
use crate::engine::{EngineOptions, Mode};
use crate::io::surface::Attr;
use crate::model::{Arch, Model};
use crate::objective::{Objective, ObjectiveConfig};

/// Where the network comes from.
#[derive(Debug, Clone)]
pub struct ModelSource {
    /// `.safetensors` (architecture in its metadata) or `.onnx`.
    pub path: PathBuf,
    /// Architecture overriding the file's metadata.
    pub arch: Option<Arch>,
    /// How the engine computes (the defaults unless comparing; changes the last bits).
    pub engine: EngineOptions,
}

impl ModelSource {
    /// A model file with the architecture its metadata names.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            arch: None,
            engine: EngineOptions::default(),
        }
    }

    /// Records the model in file attributes: its path as given (`model`), its SHA-256
    /// (`model_sha256`), its architecture as JSON (under `arch_key`) and the engine
    /// options (`engine`, e.g. `conv=auto,gemm=blas,simd=native`).
    pub fn describe_in(
        &self,
        model: &Model,
        arch_key: &str,
        attrs: &mut BTreeMap<String, Attr>,
    ) -> JobResult<()> {
        attrs.insert("model".into(), self.path.display().to_string().into());
        attrs.insert(
            "model_sha256".into(),
            model.sha256.clone().unwrap_or_default().into(),
        );
        let arch = serde_json::to_string(&model.arch).map_err(|source| JobError::Json {
            what: "the architecture",
            source,
        })?;
        attrs.insert(arch_key.into(), arch.into());
        attrs.insert("engine".into(), self.engine.describe().into());
        Ok(())
    }

    /// Loads the model, its graph computing with [`Self::engine`].
    pub fn load(&self) -> JobResult<Model> {
        let mut model =
            Model::load(&self.path, self.arch.as_ref()).map_err(|source| JobError::Model {
                path: self.path.clone(),
                source: Box::new(source),
            })?;
        model.graph = model.graph.with_options(self.engine);
        Ok(model)
    }
}

choice! {
    /// Batch-norm statistics of a pass.
    #[derive(Default)]
    pub enum BnMode {
        #[default]
        Eval = "eval": "Running statistics (as loss-landscape and PyHessian).",
        Train = "train": "Statistics of each mini-batch.",
    }
}

impl From<BnMode> for Mode {
    fn from(m: BnMode) -> Mode {
        match m {
            BnMode::Eval => Mode::Eval,
            BnMode::Train => Mode::Train,
        }
    }
}

choice! {
    /// Floating-point precision of the computation.
    #[derive(Default)]
    pub enum Precision {
        #[default]
        F32 = "f32": "Single precision (as models are trained), f64 accumulation of sums.",
        F64 = "f64": "Double precision end to end (reference checks).",
    }
}

/// Where the samples come from and how they are batched.
#[derive(Debug, Clone)]
pub struct DataConfig {
    /// A bundled name (`digits`, `mnist1d`) or a path.
    pub data: String,
    /// The splits, in order (duplicates in a row are dropped).
    pub splits: Vec<Split>,
    /// A deterministic subset of this many samples.
    pub samples: Option<usize>,
    /// Per-channel standardization.
    pub normalize: Option<Normalize>,
    /// Samples per mini-batch (≥ 1). Results are bit-identical for any thread count at one
    /// batch size; another batch size changes them by rounding (the f32 products group the
    /// batch's samples), and in train BN mode by the batch statistics.
    pub batch_size: usize,
    pub bn_mode: BnMode,
    /// Image layout and HDF5 dataset names, where the files do not make them evident.
    pub format: DataFormat,
}

impl DataConfig {
    /// The training split of `data`, whole, batches of 32, eval mode.
    pub fn train(data: impl Into<String>) -> Self {
        Self {
            data: data.into(),
            splits: vec![Split::Train],
            samples: None,
            normalize: None,
            batch_size: 32,
            bn_mode: BnMode::Eval,
            format: DataFormat::default(),
        }
    }

    /// Loads each requested split, in the order given (duplicates removed).
    pub fn load(&self) -> JobResult<Vec<Dataset>> {
        let mut splits = self.splits.clone();
        splits.dedup();
        splits
            .iter()
            .map(|&split| {
                let opts = DataOptions {
                    split,
                    samples: self.samples,
                    normalize: self.normalize.clone(),
                };
                data::load_with(&self.data, &opts, &self.format).map_err(|source| JobError::Data {
                    data: self.data.clone(),
                    split,
                    source: Box::new(source),
                })
            })
            .collect()
    }

    /// Records the data in file attributes: `data` (as given) and `normalize` (the preset
    /// and its values, or `none`).
    pub fn describe_in(&self, attrs: &mut BTreeMap<String, Attr>) {
        attrs.insert("data".into(), self.data.clone().into());
        attrs.insert(
            "normalize".into(),
            self.normalize
                .as_ref()
                .map_or_else(|| "none".to_string(), Normalize::describe)
                .into(),
        );
    }

    /// Loads the first requested split.
    pub fn load_first(&self) -> JobResult<Dataset> {
        Ok(self.load()?.remove(0))
    }

    /// How the objective batches the samples.
    pub fn objective_config(&self) -> ObjectiveConfig {
        ObjectiveConfig {
            batch_size: self.batch_size,
            mode: self.bn_mode.into(),
        }
    }

    /// The objective of `model` on `ds`, or an error naming both when they do not fit.
    pub fn objective<'a>(
        &self,
        model: &'a Model,
        source: &ModelSource,
        ds: &'a Dataset,
    ) -> JobResult<Objective<'a>> {
        Objective::new(&model.graph, ds.x.view(), &ds.y, self.objective_config()).map_err(
            |mut e| {
                if let (crate::engine::EngineError::InputShape { hint, .. }, Some(note)) =
                    (&mut e, model.input_note())
                {
                    *hint = note;
                }
                JobError::Mismatch {
                    data: self.data.clone(),
                    model: source.path.clone(),
                    source: Box::new(e),
                }
            },
        )
    }
}

/// Runs `f` on a rayon pool of `threads` threads (all cores when None).
pub fn with_threads<R: Send>(threads: Option<usize>, f: impl FnOnce() -> R + Send) -> JobResult<R> {
    Ok(crate::util::with_threads(threads, f)?)
}
