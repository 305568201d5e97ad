//! Flag groups shared by several commands: where the model and the data come from. Each
//! turns into the library's plain config ([`ModelSource`], [`DataConfig`]).

use std::path::PathBuf;

use clap::Args;

use super::engine_args::EngineArgs;
use crate::data::{self, Normalize, Split};
use crate::jobs::{BnMode, DataConfig, ModelSource};
use crate::model::Arch;

/// Where the network comes from.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// Model file: .safetensors (architecture in its metadata), .onnx (torch.onnx.export)
    /// or a PyTorch checkpoint (.pt, .pth) holding a state_dict.
    #[arg(long, short = 'm', value_name = "FILE")]
    pub model: PathBuf,
    /// Architecture, overriding the file's metadata: JSON or NAME:key=value,...
    /// e.g. `resnet-cifar:depth=20,shortcut=none,in_channels=1,input_size=8`.
    #[arg(long, value_name = "SPEC")]
    pub arch: Option<Arch>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

impl ModelArgs {
    pub fn source(&self) -> ModelSource {
        ModelSource {
            path: self.model.clone(),
            arch: self.arch.clone(),
            engine: self.engine.options(),
        }
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
    #[arg(long, value_name = "N", value_parser = super::numbers::count::<usize>)]
    pub samples: Option<usize>,
    /// Per-channel standardization MEAN/STD, e.g. `0.4914,0.4822,0.4465/0.247,0.243,0.261`.
    #[arg(long, value_name = "MEAN/STD")]
    pub normalize: Option<Normalize>,
    /// Samples per mini-batch. In eval mode it affects only speed and memory.
    #[arg(long, default_value_t = 32, value_parser = super::numbers::positive::<u64>)]
    pub batch_size: u64,
    /// Batch norm statistics: running (eval, as loss-landscape and PyHessian) or per batch (train).
    #[arg(long, value_enum, default_value_t = BnMode::Eval)]
    pub bn_mode: BnMode,
}

fn parse_split(s: &str) -> Result<Split, data::DataError> {
    s.parse()
}

impl DataArgs {
    pub fn config(&self) -> DataConfig {
        DataConfig {
            data: self.data.clone(),
            splits: self.split.clone(),
            samples: self.samples,
            normalize: self.normalize.clone(),
            batch_size: self.batch_size as usize,
            bn_mode: self.bn_mode,
        }
    }
}
