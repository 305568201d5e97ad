//! Argument groups shared by the command line and by analysis specs: where a model and
//! its data come from, and how the work is run. Plain structs (clap derives only add
//! parsing), so library code such as the analysis runner builds them directly.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use crate::data::{self, DataOptions, Dataset, Normalize, Split};
use crate::engine::Mode;
use crate::model::{Arch, Model};

/// Where the network comes from.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// Model file: .safetensors (architecture in its metadata) or .onnx (torch.onnx.export).
    #[arg(long, short = 'm', value_name = "FILE")]
    pub model: PathBuf,
    /// Architecture, overriding the file's metadata: JSON or NAME:key=value,...
    /// e.g. `resnet-cifar:depth=20,shortcut=none,in_channels=1,input_size=8`.
    #[arg(long, value_name = "SPEC")]
    pub arch: Option<Arch>,
}

impl ModelArgs {
    pub fn load(&self) -> Result<Model> {
        Model::load(&self.model, self.arch.as_ref())
            .with_context(|| format!("loading model {}", self.model.display()))
    }
}

/// Where the samples come from and how they are batched.
#[derive(Debug, Args, Clone)]
pub struct DataArgs {
    /// Dataset: `digits`, `mnist1d` (bundled), or a path (.npz, .npy, MNIST idx, CIFAR-10 binary folder).
    #[arg(long, short = 'd', value_name = "DATA")]
    pub data: String,
    /// Which split(s) to use: `train`, `test`, or both as `train,test`.
    #[arg(long, default_value = "train", value_parser = parse_split, value_delimiter = ',')]
    pub split: Vec<Split>,
    /// Use a deterministic subset of N samples (seeded permutation, file order kept).
    #[arg(long, value_name = "N")]
    pub samples: Option<usize>,
    /// Per-channel standardization MEAN/STD, e.g. `0.4914,0.4822,0.4465/0.247,0.243,0.261`.
    #[arg(long, value_name = "MEAN/STD")]
    pub normalize: Option<Normalize>,
    /// Samples per mini-batch. In eval mode it affects only speed and memory.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: u64,
    /// Batch norm statistics: running (eval, as loss-landscape and PyHessian) or per batch (train).
    #[arg(long, value_enum, default_value_t = BnMode::Eval)]
    pub bn_mode: BnMode,
}

fn parse_split(s: &str) -> Result<Split, String> {
    s.parse().map_err(|e: data::DataError| e.to_string())
}

impl DataArgs {
    /// Loads each requested split, in the order given (duplicates removed).
    pub fn load(&self) -> Result<Vec<Dataset>> {
        let mut splits = self.split.clone();
        splits.dedup();
        splits
            .iter()
            .map(|&split| {
                let opts = DataOptions {
                    split,
                    samples: self.samples,
                    normalize: self.normalize.clone(),
                };
                data::load(&self.data, &opts)
                    .with_context(|| format!("loading data '{}' ({split} split)", self.data))
            })
            .collect()
    }

    pub fn objective_config(&self) -> crate::objective::ObjectiveConfig {
        crate::objective::ObjectiveConfig {
            batch_size: self.batch_size as usize,
            mode: match self.bn_mode {
                BnMode::Eval => Mode::Eval,
                BnMode::Train => Mode::Train,
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BnMode {
    Eval,
    Train,
}

/// Floating-point precision of the computation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Precision {
    /// Single precision (as models are trained), f64 accumulation of sums.
    F32,
    /// Double precision end to end (reference checks).
    F64,
}

/// Runs `f` on a rayon pool of `threads` threads (all cores when None).
pub fn with_threads<R: Send>(threads: Option<usize>, f: impl FnOnce() -> R + Send) -> Result<R> {
    match threads {
        None => Ok(f()),
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        Some(n) => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .context("starting the thread pool")?;
            Ok(pool.install(f))
        }
    }
}
