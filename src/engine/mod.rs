//! The differentiable core: parameters, a graph of ops, and four passes per op
//! (forward, backward, and Pearlmutter's R-operator forward and backward), so that the
//! loss, its gradient and exact Hessian-vector products come from one engine.
//!
//! The engine knows nothing of files, plots or the command line, and reads no environment:
//! where a choice changes result bits, the graph's [`EngineOptions`] say.
//!
//! Internal activation layout: image tensors are stored channel-major, `[C, N, H, W]`
//! (PyTorch uses `[N, C, H, W]`). A convolution then is one GEMM per mini-batch,
//! `W[O, C·k·k] × cols[C·k·k, N·H·W] → out[O, N·H·W]`, whose result already *is* the next
//! layer's input, with no transpose, and batch norm touches one contiguous row per channel.
//! Vectors (inputs of linear layers) are `[N, F]` as in PyTorch.

pub mod curvature;
pub mod error;
pub mod gemm;
pub mod graph;
pub mod ops;
pub mod options;
pub mod params;

pub use curvature::GnKind;
pub use error::{EngineError, ShapeError};
pub use graph::{BatchStats, GnState, Graph, HvpState, Loss, Mode, Node, Op};
pub use options::{ConvAlgorithm, EngineOptions, GemmBackend, Simd, TapeLayout};
pub use params::{Layout, ParamVec, Role, TensorSpec};

/// Floating-point type the engine computes in: `f32` (default, as trained models are)
/// or `f64` (reference tests and on request).
pub trait Scalar:
    ndarray::NdFloat + num_traits::FromPrimitive + std::iter::Sum + Default + 'static
{
    /// Name used in messages and files (`"f32"` / `"f64"`).
    const NAME: &'static str;
    fn from_f(x: f64) -> Self;
    fn as_f64(self) -> f64;
}

impl Scalar for f32 {
    const NAME: &'static str = "f32";
    fn from_f(x: f64) -> Self {
        x as f32
    }
    fn as_f64(self) -> f64 {
        self as f64
    }
}

impl Scalar for f64 {
    const NAME: &'static str = "f64";
    fn from_f(x: f64) -> Self {
        x
    }
    fn as_f64(self) -> f64 {
        self
    }
}
