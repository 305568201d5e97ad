//! Errors of model loading and building.

use std::path::PathBuf;

use thiserror::Error;

/// Why a model could not be loaded, built or written.
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
    /// Occurs when a tensor's byte range disagrees with its dtype and shape (a malformed
    /// or hand-edited header, e.g. F32 data labelled F16).
    #[error("{path}: tensor '{name}' ({dtype}, shape {shape:?}) holds {got} bytes, its dtype and shape need {expected}; the header is malformed: re-export the file with safetensors.torch.save_file")]
    TensorLength {
        path: PathBuf,
        name: String,
        dtype: String,
        shape: Vec<usize>,
        expected: u64,
        got: u64,
    },
    /// Occurs when the file carries no architecture, none was given, and its tensor names
    /// match no family of the zoo.
    #[error("{path} does not say which architecture it holds (no '{key}' metadata, and the tensor names match no zoo family); pass `arch`, e.g. `arch` resnet-cifar:depth=20,in_channels=1,input_size=8")]
    NoArch { path: PathBuf, key: &'static str },
    /// Occurs when an architecture description cannot be understood.
    #[error("invalid architecture '{spec}': {why}")]
    Arch { spec: String, why: ArchError },
    /// Occurs when a tensor the architecture needs is not in the file.
    #[error("{path} lacks tensor '{name}' (shape {shape:?}) that {arch} needs; is `arch` right?")]
    MissingTensor {
        path: PathBuf,
        name: String,
        shape: Vec<usize>,
        arch: String,
    },
    /// Occurs when the file has a tensor the architecture does not know.
    #[error("{path} has tensor '{name}' that {arch} does not have; is `arch` right?")]
    ExtraTensor {
        path: PathBuf,
        name: String,
        arch: String,
    },
    /// Occurs when the architecture needs far more tensors or scalars than the file holds
    /// (checked before the network is built, so a corrupt size cannot exhaust memory).
    #[error("{path}: {arch} needs at least {needs_tensors} tensors with {needs_scalars} values, but the file holds {has_tensors} tensors with {has_scalars}; is `arch` (or the file's `losscape_arch` metadata) right?")]
    ArchExceedsFile {
        path: PathBuf,
        arch: String,
        needs_tensors: u64,
        needs_scalars: u64,
        has_tensors: u64,
        has_scalars: u64,
    },
    /// Occurs when a tensor has another shape than the architecture needs.
    #[error("{path}: tensor '{name}' has shape {got:?}, but {arch} needs {expected:?}; is `arch` right?")]
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
    #[error("{path}: unknown model format (expected a .safetensors, .onnx, or torch.save .pt/.pth/.t7 file)")]
    Format { path: PathBuf },
    /// Occurs when a torch.save checkpoint cannot be read.
    #[error("{path}: {why}")]
    Torch {
        path: PathBuf,
        why: super::torch_pickle::TorchError,
    },
    /// Occurs when the architecture of a checkpoint cannot be inferred from its tensors.
    #[error("{path}: cannot infer the architecture: {why}")]
    Infer {
        path: PathBuf,
        why: super::infer::InferError,
    },
    /// Occurs when an ONNX file cannot be read: not protobuf, truncated, tensor sizes that
    /// the bytes (inline or in the external data file) do not back, a dynamic input shape.
    #[error("{path}: {why}")]
    Onnx { path: PathBuf, why: OnnxError },
    /// Occurs when an ONNX node cannot be imported: an unsupported op or attribute.
    #[error("{path}: node '{node}' ({op}): {why}")]
    OnnxNode {
        path: PathBuf,
        node: String,
        op: String,
        why: Box<OnnxNodeError>,
    },
    /// Occurs when writing a model fails.
    #[error("cannot write model file {path}: {why}")]
    Write { path: PathBuf, why: String },
}

/// Why an architecture description is not a network the zoo can build.
#[non_exhaustive]
#[derive(Debug, Error)]
pub enum ArchError {
    /// Occurs when a `NAME:key=value,…` item has no `=`.
    #[error("'{item}' is not key=value")]
    KeyValue { item: String },
    /// Occurs when the description does not parse as an architecture (unknown name or key,
    /// a value of the wrong type); `why` is serde_json's message.
    #[error("{why}")]
    Parse { why: String },
    /// Occurs when a ResNet depth is not 6n+2.
    #[error("depth must be 6n+2 with n ≥ 1 (8, 14, 20, 32, 44, 56, 110), got {depth}")]
    ResnetDepth { depth: usize },
    /// Occurs when a ResNet's width, input channels or classes are 0.
    #[error("width, in_channels and num_classes must be positive")]
    ResnetZero,
    /// Occurs when a ResNet's input is smaller than its two stride-2 stages allow, or
    /// larger than [`super::zoo::MAX_INPUT_SIZE`].
    #[error(
        "input_size must be between 4 (two stride-2 stages) and {}, got {input_size}",
        super::zoo::MAX_INPUT_SIZE
    )]
    ResnetInputSize { input_size: usize },
    /// Occurs when option-A shortcuts (channel padding by planes/4 on each side) are asked
    /// of an odd width, where the padded input cannot match the block's output.
    #[error("shortcut option-a pads planes/4 channels on each side, which needs an even width, got {width}")]
    OptionAWidth { width: usize },
    /// Occurs when an MLP's input features, width or classes are 0.
    #[error("in_features, width and num_classes must be positive")]
    MlpZero,
    /// Occurs when a ViT size is 0.
    #[error("vit: `{field}` must be positive")]
    VitZero { field: &'static str },
    /// Occurs when a ViT's patch does not tile its input.
    #[error("vit: patch {patch} must divide input_size {input_size}")]
    VitPatch { input_size: usize, patch: usize },
    /// Occurs when a ViT's heads do not split its width evenly.
    #[error("vit: heads {heads} must divide width {width}")]
    VitHeads { width: usize, heads: usize },
    /// Occurs when a sequence ViT is given several input channels.
    #[error(
        "vit: input=seq reads 1-D samples [input_size]; in_channels must be 1, got {in_channels}"
    )]
    VitSeqChannels { in_channels: usize },
    /// Occurs when an imported ONNX network is described instead of loaded from its file.
    #[error("an ONNX network is read from its .onnx file, not built from a description; pass the .onnx file as the model")]
    Onnx,
}

/// Why an ONNX file as a whole cannot be imported (its nodes fail with [`OnnxNodeError`]).
#[non_exhaustive]
#[derive(Debug, Error)]
pub enum OnnxError {
    /// Occurs when a zoo architecture is given for an ONNX file, whose graph is in the file.
    #[error("`arch` does not apply to an ONNX file (the graph is in the file); drop `arch`")]
    ArchGiven,
    /// Occurs when the bytes are not an ONNX protobuf message (truncated, another format).
    #[error("not a valid ONNX protobuf ({why}); is the file truncated? Re-export it with torch.onnx.export")]
    Protobuf { why: String },
    /// Occurs when the model holds no graph.
    #[error("the file has no graph (ModelProto.graph is empty); is it an ONNX model?")]
    NoGraph,
    /// Occurs when every graph input is an initializer.
    #[error("the graph has no input (GraphProto.input lists only initializers)")]
    NoInput,
    /// Occurs when the graph input declares no shape.
    #[error("graph input '{name}' has no shape; export with a concrete example input")]
    InputShapeless { name: String },
    /// Occurs when the graph input is neither `[N, F]` nor `[N, C, H, W]`.
    #[error("graph input '{name}' has {rank} dimensions; only [N, F] and [N, C, H, W] inputs are supported")]
    InputRank { name: String, rank: usize },
    /// Occurs when a non-batch dimension of the graph input is symbolic.
    #[error("graph input '{name}': dimension {axis} is dynamic ('{param}'); only the batch dimension may be; re-export with a fixed input size (dynamic_axes/dynamic_shapes on axis 0 only)")]
    DynamicDim {
        name: String,
        axis: usize,
        param: String,
    },
    /// Occurs when the graph declares no output.
    #[error("the graph has no output (GraphProto.output is empty)")]
    NoOutput,
    /// Occurs when the graph output is a constant.
    #[error("graph output '{name}' is a constant")]
    OutputConstant { name: String },
    /// Occurs when no node computes the graph output.
    #[error("graph output '{name}' is computed by no node")]
    OutputMissing { name: String },
    /// Occurs when the graph output is not logits `[N, classes]`.
    #[error(
        "graph output '{name}' has shape {shape:?} (batch first); expected logits [N, classes]"
    )]
    OutputShape { name: String, shape: Vec<usize> },
    /// Occurs when the imported graph fails the engine's shape check; `why` is its message.
    #[error("the imported graph does not check: {why}")]
    Check { why: String },
    /// Occurs when the graph uses ops (or attribute values of ops) the importer does not
    /// support; every one is listed with the nodes that use it.
    #[error("{}", unsupported_list(list))]
    Unsupported { list: Vec<UnsupportedUse> },
    /// Occurs when an initializer's data cannot be decoded.
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

/// One unsupported op (or use of an op) of an ONNX graph and the nodes that have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedUse {
    pub op: String,
    pub why: String,
    pub nodes: Vec<String>,
}

fn unsupported_list(list: &[UnsupportedUse]) -> String {
    let total: usize = list.iter().map(|u| u.nodes.len()).sum();
    let mut s = format!("{total} node(s) cannot be imported:");
    for u in list {
        let shown: Vec<&str> = u.nodes.iter().take(3).map(String::as_str).collect();
        let more = if u.nodes.len() > 3 {
            format!(", … {} more", u.nodes.len() - 3)
        } else {
            String::new()
        };
        s.push_str(&format!(
            "\n  {} ×{} ({}{}): {}",
            u.op,
            u.nodes.len(),
            shown.join(", "),
            more,
            u.why
        ));
    }
    s.push_str("\nthe README lists the supported ops and the export settings that work");
    s
}

/// Why an ONNX tensor's data cannot be decoded: sizes the bytes (inline or in an external
/// data file) do not back, an unsupported data type.
#[non_exhaustive]
#[derive(Debug, Error)]
pub enum TensorError {
    /// Occurs when a dimension is negative.
    #[error("tensor '{name}': negative dimension {dim} in dims")]
    NegativeDim { name: String, dim: i64 },
    /// Occurs when the element or byte count of the dimensions overflows.
    #[error("tensor '{name}': dims {dims:?} overflow")]
    Overflow { name: String, dims: Vec<i64> },
    /// Occurs when the element type is not float32, float64, int32 or int64.
    #[error("tensor '{name}': data_type {data_type} is not supported (float32, float64, int32, int64 are); export in float32")]
    DataType { name: String, data_type: i32 },
    /// Occurs when external data has no `location` entry.
    #[error("tensor '{name}': external data without a 'location' entry")]
    NoLocation { name: String },
    /// Occurs when an external-data `offset` or `length` is not a number.
    #[error("tensor '{name}': external_data {key} '{value}' is not a number")]
    NotNumber {
        name: String,
        key: String,
        value: String,
    },
    /// Occurs when an external-data `length` disagrees with the dimensions.
    #[error("tensor '{name}': external_data length {length} but dims {dims:?} need {bytes} bytes")]
    Length {
        name: String,
        length: usize,
        dims: Vec<usize>,
        bytes: usize,
    },
    /// Occurs when the external data file cannot be used.
    #[error("tensor '{name}': {why}")]
    External {
        name: String,
        why: ExternalDataError,
    },
    /// Occurs when the tensor's bytes lie beyond the end of its external data file.
    #[error("tensor '{name}': bytes {offset}..{end} lie beyond the end of external data file '{location}' ({len} bytes); is it truncated?")]
    BeyondEnd {
        name: String,
        offset: usize,
        end: usize,
        location: String,
        len: usize,
    },
    /// Occurs when `raw_data` holds another number of bytes than the dimensions need.
    #[error("tensor '{name}': raw_data has {got} bytes but dims {dims:?} need {bytes}")]
    RawData {
        name: String,
        got: usize,
        dims: Vec<usize>,
        bytes: usize,
    },
    /// Occurs when the typed value list holds another number of values than the dimensions need.
    #[error("tensor '{name}': holds {got} values but dims {dims:?} need {numel}")]
    Values {
        name: String,
        got: usize,
        dims: Vec<usize>,
        numel: usize,
    },
}

/// Why an external data file of an ONNX model cannot be used.
#[non_exhaustive]
#[derive(Debug, Error)]
pub enum ExternalDataError {
    /// Occurs when the location is absolute or leaves the model's folder.
    #[error(
        "external data location '{location}' must be a relative path inside the model's folder"
    )]
    Location { location: String },
    /// Occurs when the file cannot be read.
    #[error("cannot read external data file {} ({cause}); keep it next to the .onnx file, as the exporter wrote it", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// Why one ONNX node cannot be imported (the file-level errors are [`OnnxError`]).
#[non_exhaustive]
#[derive(Debug, Error)]
pub enum OnnxNodeError {
    /// Occurs when the node uses an op, an attribute value or a layout the importer does
    /// not support; `what` says which, and how to export instead where there is a way.
    #[error("{what}")]
    Unsupported { what: String },
    /// Occurs when a required input of the node is absent or empty.
    #[error("input {index} is missing")]
    MissingInput { index: usize },
    /// Occurs when the node has no output.
    #[error("the node has no output")]
    NoOutput,
    /// Occurs when an input names a value that no earlier node (or initializer) produces.
    #[error("input '{name}' is produced by no earlier node")]
    NoProducer { name: String },
    /// Occurs when a constant is given where a computed value is expected.
    #[error("input '{name}' is a constant where a computed value was expected")]
    ConstantInput { name: String },
    /// Occurs when a computed value is given where a constant (a weight) is expected.
    #[error("input '{name}' is computed, but only constant {name} are supported here (weights must be initializers)")]
    ComputedInput { name: String },
    /// Occurs when a Reshape's target shape is not a constant.
    #[error("{why}; the target shape must be constant")]
    ReshapeTarget { why: Box<OnnxNodeError> },
    /// Occurs when a computed input has another rank or layout than the op takes.
    #[error("input of shape {shape:?}; expected {expected}")]
    InputShape {
        shape: Vec<usize>,
        expected: &'static str,
    },
    /// Occurs when a weight has another shape than the op and its input need.
    #[error("weight '{name}' has shape {dims:?}; expected {expected}")]
    WeightShape {
        name: String,
        dims: Vec<usize>,
        expected: String,
    },
    /// Occurs when a linear weight does not take the input's features.
    #[error("weight '{name}' of shape {dims:?} does not take {features} features")]
    WeightFeatures {
        name: String,
        dims: Vec<usize>,
        features: usize,
    },
    /// Occurs when a bias has another length than the layer's outputs.
    #[error("bias '{name}' has shape {dims:?}; expected [{expected}]")]
    BiasShape {
        name: String,
        dims: Vec<usize>,
        expected: usize,
    },
    /// Occurs when a batch-norm parameter or statistic has another length than the channels.
    #[error("'{name}' has shape {dims:?}; expected [{channels}]")]
    ChannelShape {
        name: String,
        dims: Vec<usize>,
        channels: usize,
    },
    /// Occurs when a Conv's `kernel_shape` disagrees with its weight.
    #[error("kernel_shape disagrees with weight shape {dims:?}")]
    KernelShape { dims: Vec<usize> },
    /// Occurs when a Conv or pool has no `kernel_shape` and no weight to take it from.
    #[error("kernel_shape is missing")]
    NoKernelShape,
    /// Occurs when a Pad has neither a pads input nor a `pads` attribute.
    #[error("pads are missing")]
    NoPads,
    /// Occurs when a convolution kernel is larger than its padded input.
    #[error("kernel larger than the padded input")]
    KernelTooLarge,
    /// Occurs when a pooling window is larger than its padded input.
    #[error("window larger than the padded input")]
    WindowTooLarge,
    /// Occurs when two computed summands have different shapes.
    #[error("summands of shapes {a:?} and {b:?} (no broadcasting between computed values)")]
    Summands { a: Vec<usize>, b: Vec<usize> },
    /// Occurs when a constant operand is neither a scalar nor one value per channel.
    #[error("constant of shape {dims:?} is neither a scalar nor per-channel for a value of shape {shape:?}")]
    ChannelConstant { dims: Vec<usize>, shape: Vec<usize> },
    /// Occurs when a divisor constant holds a zero.
    #[error("division by a zero constant")]
    ZeroDivisor,
    /// Occurs when an axis lies outside the value's rank.
    #[error("axis {axis} out of range for rank {rank}")]
    Axis { axis: i64, rank: usize },
    /// Occurs when a slice selects nothing.
    #[error("slice {start}..{end} of axis {axis} (size {size}) is empty")]
    EmptySlice {
        start: i64,
        end: i64,
        axis: usize,
        size: usize,
    },
    /// Occurs when one initializer serves two roles (e.g. a weight and a bias).
    #[error("initializer '{name}' is used both as {first:?} and as {second:?}")]
    Roles {
        name: String,
        first: crate::engine::Role,
        second: crate::engine::Role,
    },
    /// Occurs when an initializer used as a parameter holds NaN or infinite values.
    #[error("initializer '{name}' holds NaN or infinite values")]
    NonFinite { name: String },
    /// Occurs when a constant's data cannot be decoded.
    #[error(transparent)]
    Tensor(#[from] TensorError),
}
