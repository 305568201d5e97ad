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
    /// Dataset: `digits`, `mnist1d` (bundled), or a path (.npz, .npy, .h5, MNIST idx, CIFAR-10
    /// binary folder, torchvision's cifar-10-batches-py / cifar-100-python folder, or an
    /// ImageFolder: one subfolder per class of PNG/JPEG files).
    #[arg(long, short = 'd', value_name = "DATA")]
    pub data: String,
    /// Which split(s) to use: `train`, `test`, or both as `train,test`.
    #[arg(long, default_value = "train", value_parser = parse_split, value_delimiter = ',')]
    pub split: Vec<Split>,
    /// Use a deterministic subset of N samples (seeded permutation, file order kept).
    #[arg(long, value_name = "N", value_parser = super::numbers::count::<usize>)]
    pub samples: Option<usize>,
    /// Per-channel standardization: a preset (`cifar10` as loss-landscape, `cifar100`, `mnist`,
    /// `imagenet`) or MEAN/STD, e.g. `0.4914,0.4822,0.4465/0.247,0.243,0.261`.
    #[arg(long, value_name = "MEAN/STD")]
    pub normalize: Option<Normalize>,
    /// Samples per mini-batch. For one batch size, results are bit-identical for any
    /// --threads. Another batch size regroups the f32 arithmetic inside each batch (the
    /// matrix products that run the batch's samples together and sum the gradient and
    /// H·v over them), so loss, gradient and H·v change in the last bits (relative ~1e-7
    /// in f32, ~1e-15 with --precision f64); in eval mode nothing else changes. With
    /// --bn-mode train the batch statistics depend on it, so the results do. Batches are
    /// the unit of parallel work of a gradient, an H·v or a one-point evaluation, one core
    /// each (a surface runs its grid points in parallel instead): with fewer batches than
    /// --threads, cores idle (e.g. 128 samples in one batch of 128 use one core).
    #[arg(long, default_value_t = 32, value_parser = super::numbers::positive::<u64>)]
    pub batch_size: u64,
    /// Batch norm statistics: running (eval, as loss-landscape and PyHessian) or per batch (train).
    #[arg(long, value_enum, default_value_t = BnMode::Eval)]
    pub bn_mode: BnMode,
    /// Layout of 4-D image arrays: `nchw` or `nhwc` (detected when the shape is unambiguous;
    /// image folders are always decoded to NCHW).
    #[arg(long, value_name = "nchw|nhwc", value_parser = parse_layout)]
    pub layout: Option<data::ImageLayout>,
    /// Names of the inputs and labels datasets of an HDF5 file, `X,Y` (default `x,y`; for
    /// the test split `x_test,y_test`).
    #[arg(long, value_name = "X,Y", value_parser = parse_keys)]
    pub data_key: Option<(String, String)>,
    /// Resize every image of an image folder (one subfolder per class) to N×N with a
    /// bilinear filter, like transforms.Resize((N, N)) but not bit-identical to PIL's
    /// antialiased resize. Without it all images must have one size.
    #[arg(long, value_name = "N", value_parser = parse_resize)]
    pub resize: Option<u32>,
}

fn parse_resize(s: &str) -> Result<u32, String> {
    let n: u32 = super::numbers::count(s)?;
    let max = data::image_folder::MAX_RESIZE;
    if n == 0 || n > max {
        return Err(format!("{n} is not in 1..={max}"));
    }
    Ok(n)
}

fn parse_layout(s: &str) -> Result<data::ImageLayout, String> {
    s.parse()
}

fn parse_keys(s: &str) -> Result<(String, String), String> {
    match s.split_once(',') {
        Some((x, y)) if !x.trim().is_empty() && !y.trim().is_empty() => {
            Ok((x.trim().to_string(), y.trim().to_string()))
        }
        _ => Err(format!("`{s}` is not X,Y (two dataset names)")),
    }
}

/// `--threads N`: at least 1 and not far beyond the cores ([`crate::util::check_threads`]).
pub fn parse_threads(s: &str) -> Result<usize, String> {
    let n: usize = super::numbers::count(s)?;
    crate::util::check_threads(Some(n))
        .map(|()| n)
        .map_err(|e| e.to_string())
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
            format: data::DataFormat {
                layout: self.layout,
                keys: self.data_key.clone(),
                resize: self.resize,
            },
        }
    }
}
