//! Matrix-free curvature analyses: eigenpairs, traces and spectral densities of a
//! symmetric operator known only through products `v ↦ A·v` (for a network, the exact
//! Hessian–vector product).
//!
//! ```text
//! algorithm          file         estimates                  cost in H·v products
//! Lanczos            lanczos.rs   k extreme eigenpairs       m Krylov steps + k residual checks
//! power iteration    power.rs     top_n |λ| (PyHessian)      Σ_i iterations_i + top_n checks
//! Hutchinson         trace.rs     tr(A)                      one per probe
//! Hutch++            trace.rs     tr(A)                      the budget m
//! SLQ                slq.rs       spectral density φ(t)      runs × steps
//! ```
//!
//! Everything is in `f64`, seeded and deterministic. Invalid parameters are errors
//! ([`HessianError`]); failing to converge is not: it is recorded in the report
//! (`converged`, `residuals`) so a caller can decide what to do with it.
//!
//! References: PyHessian (Yao, Gholami, Keutzer, Mahoney 2020, arXiv:1912.07145),
//! Ghorbani, Krishnan, Xiao 2019 (arXiv:1901.10159), Golub & Van Loan, *Matrix
//! Computations* §10.1, Hutchinson 1990, Meyer, Musco, Musco, Woodruff 2021 (Hutch++).

mod error;
pub mod lanczos;
pub mod objective_op;
mod operator;
pub mod operator_model;
pub mod power;
pub mod slq;
pub mod trace;

pub use error::HessianError;
pub use lanczos::{top_eigenpairs, EigenReport, LanczosParams, Which};
pub use objective_op::ObjectiveHessian;
pub use operator::{Counting, DenseOperator, LinearOperator};
pub use operator_model::{block_of, blocks, HessianOperator, HessianOptions, ParamSubset};
pub use power::{power_iteration, PowerParams};
pub use slq::{density_on_grid, slq, DensityParams, SlqParams, SlqReport};
pub use trace::{hutchinson, hutchpp, HutchppParams, TraceParams, TraceReport};

#[cfg(test)]
pub(crate) mod test_util;
