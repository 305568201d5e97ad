//! One file per op. Each states its forward pass, its backward (vector–Jacobian) pass and
//! the two passes of Pearlmutter's R-operator (R-forward, R-backward) side by side, so
//! that an exact Hessian-vector product costs about two gradients.

pub mod add;
pub mod affine;
pub mod avg_pool;
pub mod batchnorm;
pub mod concat;
pub mod conv2d;
pub mod flatten;
pub mod global_avg_pool;
pub mod linear;
pub mod loss;
pub mod max_pool;
pub mod pad;
pub mod relu;
pub mod slice;

pub use add::Add;
pub use affine::Affine;
pub use avg_pool::{AvgPool, Pool2d};
pub use batchnorm::{BatchNorm, Mode};
pub use concat::Concat;
pub use conv2d::Conv2d;
pub use flatten::Flatten;
pub use global_avg_pool::GlobalAvgPool;
pub use linear::Linear;
pub use loss::{Loss, LossValue};
pub use max_pool::MaxPool;
pub use pad::Pad;
pub use relu::Relu;
pub use slice::SliceAxis;
