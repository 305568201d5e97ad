//! Errors of model loading and building.

use std::path::PathBuf;

use thiserror::Error;

#[non_exhaustive]
#[derive(Debug, Error)]
pub enum ModelError {
    /// Occurs when the model file cannot be read.
    #[error("cannot read model file {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// Occurs when a safetensors file is truncated or not safetensors at all.
    #[error("{path} is not a valid safetensors file ({why}); was it fully written? Re-export it with safetensors.torch.save_file")]
    Corrupt { path: PathBuf, why: String },
    /// Occurs when the file carries no architecture and none was given.
    #[error("{path} does not say which architecture it holds (no '{key}' metadata); pass --arch, e.g. --arch resnet-cifar:depth=20,in_channels=1,input_size=8")]
    NoArch { path: PathBuf, key: &'static str },
    /// Occurs when an architecture description cannot be understood.
    #[error("invalid architecture '{spec}': {why}")]
    Arch { spec: String, why: String },
    /// Occurs when a tensor the architecture needs is not in the file.
    #[error("{path} lacks tensor '{name}' (shape {shape:?}) that {arch} needs; is --arch right?")]
    MissingTensor {
        path: PathBuf,
        name: String,
        shape: Vec<usize>,
        arch: String,
    },
    /// Occurs when the file has a tensor the architecture does not know.
    #[error("{path} has tensor '{name}' that {arch} does not have; is --arch right?")]
    ExtraTensor {
        path: PathBuf,
        name: String,
        arch: String,
    },
    /// Occurs when a tensor has another shape than the architecture needs.
    #[error("{path}: tensor '{name}' has shape {got:?}, but {arch} needs {expected:?}; is --arch right?")]
    ShapeMismatch {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
        arch: String,
    },
    /// Occurs when a tensor has a dtype that cannot hold weights.
    #[error("{path}: tensor '{name}' has dtype {dtype}; expected F32, F64, F16 or BF16")]
    Dtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    /// Occurs when weights are NaN or infinite.
    #[error("{path}: tensor '{name}' holds NaN or infinite values; the model diverged or the file is damaged")]
    NonFinite { path: PathBuf, name: String },
    /// Occurs when the model format is not known.
    #[error("{path}: unknown model format (expected a .safetensors or .onnx file)")]
    Format { path: PathBuf },
    /// Occurs when an ONNX file cannot be read: not protobuf, truncated, tensor sizes that
    /// the bytes (inline or in the external data file) do not back, a dynamic input shape.
    #[error("{path}: {why}")]
    Onnx { path: PathBuf, why: String },
    /// Occurs when an ONNX node cannot be imported: an unsupported op or attribute.
    #[error("{path}: node '{node}' ({op}): {why}")]
    OnnxNode {
        path: PathBuf,
        node: String,
        op: String,
        why: String,
    },
    /// Occurs when writing a model fails.
    #[error("cannot write model file {path}: {why}")]
    Write { path: PathBuf, why: String },
}
