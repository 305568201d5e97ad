//! One file (or folder) per op. Each op is a type implementing [`EngineOp`]: its shape
//! rule, forward pass, backward (vector–Jacobian) pass and the two passes of Pearlmutter's
//! R-operator (R-forward, R-backward; Pearlmutter 1994) side by side, so that an exact
//! Hessian-vector product costs about two gradients. The graph only routes values
//! between nodes ([`super::graph`]).
//!
//! Adding an op: its file, implementing [`EngineOp`] (or [`FixedMap`] for a fixed affine
//! map of one input), and one line in the `ops!` list below, which makes it a variant of
//! [`Op`] and routes every pass to it (the macro is in `dispatch.rs`).

#[macro_use]
mod dispatch;
pub mod add;
pub mod affine;
pub mod avg_pool;
pub mod batchnorm;
pub mod concat;
pub mod conv2d;
pub mod flatten;
pub mod global_avg_pool;
pub mod input;
pub mod linear;
pub mod loss;
pub mod max_pool;
mod op;
pub mod pad;
pub mod relu;
pub mod slice;
// issue #15, group A (elementwise, broadcasting, reductions, normalizations)
pub mod binary;
pub mod group_norm;
mod lanes;
pub mod layer_norm;
pub mod pointwise;
pub mod reduce;
pub mod softmax;
#[cfg(test)]
pub(crate) mod testing;
mod vmath;

pub mod constant;
pub mod embedding;
pub mod expand;
pub mod gather;
pub mod matmul;
#[cfg(test)]
mod oracle;
pub mod param;
pub mod reshape;
pub mod transpose;

use ndarray::{ArrayD, ArrayViewD};

pub(crate) use add::add_assign;
pub use add::{add_relu_in_place, Add};
pub use affine::Affine;
pub use avg_pool::{AvgPool, Pool2d};
pub use batchnorm::{BatchNorm, BatchStats, Mode};
pub use concat::Concat;
pub use conv2d::Conv2d;
pub use flatten::Flatten;
pub use global_avg_pool::GlobalAvgPool;
pub use input::Input;
pub use linear::Linear;
pub use loss::{Loss, LossValue};
pub use max_pool::MaxPool;
pub use op::{
    Activation, ChannelAffine, ChannelMap, EngineOp, Epilogue, FixedMap, Fwd, Grads, Taped,
    TapedEpilogue, TapedMap,
};
pub use pad::Pad;
pub use relu::Relu;
pub use slice::SliceAxis;
// issue #15, group A
pub use binary::BinaryKind;
pub use group_norm::GroupNorm;
pub use layer_norm::LayerNorm;
pub use pointwise::PointwiseFn;
pub use reduce::{Reduce, ReduceKind};
pub use softmax::Softmax;

pub use constant::Constant;
pub use embedding::Embedding;
pub use expand::Expand;
pub use gather::Gather;
pub use matmul::MatMul;
pub use param::Param;
pub use reshape::Reshape;
pub use transpose::Transpose;

use super::error::ShapeError;
use super::Scalar;
pub(crate) use dispatch::Erased;
use dispatch::{cache, cache_bytes_erased, forward_erased, kind_of, r_cache, r_forward_erased};

ops! {
    /// The input batch, given in PyTorch layout `[N, C, H, W]` or `[N, F]`.
    Input => Input,
    /// params: [weight, bias?]
    Conv2d(Conv2d),
    /// params: [weight, bias?]
    Linear(Linear),
    /// params: [γ, β, running_mean, running_var]
    BatchNorm(BatchNorm),
    Relu => Relu,
    /// Residual sum of two inputs.
    Add => Add,
    GlobalAvgPool => GlobalAvgPool,
    AvgPool(Pool2d) => AvgPool,
    MaxPool(Pool2d) => MaxPool,
    Flatten => Flatten,
    /// Constant per-channel a·x + b (input normalization of imported networks).
    Affine(Affine),
    /// Zero padding (internal-layout axes).
    Pad(Pad),
    /// Strided slice along one internal-layout axis.
    Slice(SliceAxis),
    /// Concatenation of all inputs along one internal-layout axis.
    Concat(Concat),
    /// Permutation of axes (any rank, the batch axis included).
    Transpose(Transpose),
    /// Row-major reshape; one axis (the batch) inferred (torch layout).
    Reshape(Reshape),
    /// Constant indices along one non-batch axis (torch layout).
    Gather(Gather),
    /// Broadcast to a shape; input 1 (optional) gives the batch size.
    Expand(Expand),
    /// Batched matrix product of two inputs (numpy `matmul`).
    MatMul => MatMul,
    /// params: [weight [vocab, dim]]; input: token ids.
    Embedding(Embedding),
    /// A parameter tensor as a value (no inputs). params: `[tensor]`
    Param(Param),
    /// A fixed tensor (no inputs).
    Constant(Constant),
    // issue #15, group A: torch-layout ops (pointwise ones are layout-agnostic)
    /// Elementwise function (tanh, GELU, sqrt, pow, clip, …), any layout.
    Pointwise(PointwiseFn),
    /// Add/Sub/Mul/Div of two inputs with numpy broadcasting.
    Binary(BinaryKind),
    /// Sum or mean over torch-layout axes.
    Reduce(Reduce),
    /// Softmax or log-softmax along one torch-layout axis.
    Softmax(Softmax),
    /// params: [weight, bias?] (with `affine`)
    LayerNorm(LayerNorm),
    /// params: `[weight [C], bias [C]]` (with `affine`)
    GroupNorm(GroupNorm),
}
