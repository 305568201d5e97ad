//! Errors of the engine.

use thiserror::Error;

#[non_exhaustive]
#[derive(Debug, Error)]
pub enum EngineError {
    /// Occurs when an input batch does not have the shape the network expects.
    #[error("input has per-sample shape {got:?} but the network expects {expected:?}{hint}")]
    InputShape {
        expected: Vec<usize>,
        got: Vec<usize>,
        hint: String,
    },
    /// Occurs when an op cannot accept the shape its input has (e.g. a kernel larger than the image).
    #[error("layer '{node}' ({op}) cannot take an input of shape {shape:?}: {why}")]
    OpShape {
        node: String,
        op: String,
        shape: Vec<usize>,
        why: ShapeError,
    },
    /// Occurs when a label is not below the number of network outputs.
    #[error("label {label} is out of range: the network has {classes} outputs")]
    Label { label: usize, classes: usize },
    /// Occurs when a value an embedding reads as a token id is not one of its rows.
    #[error("layer '{node}' (embedding) got token id {value}, outside 0..{vocab}")]
    TokenId {
        node: String,
        value: f64,
        vocab: usize,
    },
}

/// Why an op cannot take the shapes of its inputs (internal layout); the graph names the
/// node in [`EngineError::OpShape`].
#[non_exhaustive]
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ShapeError {
    /// Occurs when an image input is not `[C, N, H, W]` with the op's channel count.
    #[error("expected [{channels}, N, H, W]")]
    Image { channels: usize },
    /// Occurs when a vector input is not `[N, F]` with the op's feature count.
    #[error("expected [N, {features}]")]
    Features { features: usize },
    /// Occurs when the channel count (axis 0 of images, 1 of vectors) is not the op's.
    #[error("expected {channels} channels")]
    Channels { channels: usize },
    /// Occurs when the input has the wrong number of axes.
    #[error("expected a {rank}-D input")]
    Rank { rank: usize },
    /// Occurs when a convolution kernel does not fit the padded image.
    #[error("kernel larger than the padded image")]
    Kernel,
    /// Occurs when a pooling window does not fit the padded image.
    #[error("window larger than the padded image")]
    Window,
    /// Occurs when the two summands of a residual sum differ in shape.
    #[error("the two summands differ: {a:?} vs {b:?}")]
    Summands { a: Box<[usize]>, b: Box<[usize]> },
    /// Occurs when per-channel constants are neither one value nor one per channel.
    #[error("constants do not fit {channels} channels")]
    Constants { channels: usize },
    /// Occurs when a slice lies outside its axis.
    #[error("slice {start}..{end} of axis {axis} out of range")]
    Slice {
        start: usize,
        end: usize,
        axis: usize,
    },
    /// Occurs when inputs differ along an axis other than the concatenation axis.
    #[error("cannot concatenate {a:?} and {b:?} along axis {axis}")]
    Concat {
        a: Box<[usize]>,
        b: Box<[usize]>,
        axis: usize,
    },
    /// Occurs when a transpose's permutation is not one of the input's axes.
    #[error("{perm:?} is not a permutation of the axes of a {rank}-D input")]
    Permutation { perm: Box<[usize]>, rank: usize },
    /// Occurs when a reshape's target holds a different number of values per sample.
    #[error("cannot reshape {from:?} to per-sample shape {to:?}")]
    Reshape {
        from: Box<[usize]>,
        to: Box<[usize]>,
    },
    /// Occurs when an axis is not one of the input's non-batch axes.
    #[error("axis {axis} is not a non-batch axis of a {rank}-D input")]
    Axis { axis: usize, rank: usize },
    /// Occurs when a gather index lies outside its axis.
    #[error("index {index} out of range for axis {axis} of length {len}")]
    Index {
        index: usize,
        axis: usize,
        len: usize,
    },
    /// Occurs when an input cannot be broadcast to an expand's target shape.
    #[error("cannot expand {from:?} to {to:?}")]
    Expand {
        from: Box<[usize]>,
        to: Box<[usize]>,
    },
    /// Occurs when two matrix-product operands do not fit (inner sizes, batch axes).
    #[error("cannot multiply {a:?} by {b:?}")]
    MatMul { a: Box<[usize]>, b: Box<[usize]> },
    /// Occurs when a constant's values do not fill its shape.
    #[error("{len} values do not fill shape {shape:?}")]
    ConstantSize { len: usize, shape: Box<[usize]> },
    /// Occurs when a grouped convolution's channels are not divisible by its groups.
    #[error("{in_channels} input and {out_channels} output channels in {groups} groups")]
    Groups {
        groups: usize,
        in_channels: usize,
        out_channels: usize,
    },
    /// Occurs when two shapes do not broadcast (numpy rules: trailing axes aligned, each
    /// pair equal or one of them 1).
    #[error("cannot broadcast {a:?} and {b:?}")]
    Broadcast { a: Box<[usize]>, b: Box<[usize]> },
    /// Occurs when an op's axis does not exist in its input.
    #[error("axis {axis} out of range for a {rank}-D input")]
    AxisRange { axis: usize, rank: usize },
    /// Occurs when the channels of a group norm do not split into its groups.
    #[error("{channels} channels do not split into {groups} groups")]
    NormGroups { channels: usize, groups: usize },
}
