//! Errors of the Hessian analyses: invalid parameters (named after the command-line
//! option that sets them) and failures of the dense linear algebra underneath.
//! Non-convergence is *not* an error; it is reported in the result structs.

use thiserror::Error;

/// Why a Hessian analysis could not run.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum HessianError {
    /// The operator has no rows (a model without parameters).
    #[error("the operator has dimension 0: there are no parameters to analyse")]
    EmptyOperator,

    /// The number of wanted eigenpairs is 0 or larger than the dimension.
    #[error("--top-k must be between 1 and the number of parameters ({dim}), got {k}")]
    TopK {
        /// Requested number of eigenpairs.
        k: usize,
        /// Dimension of the operator.
        dim: usize,
    },

    /// A count (iterations, probes, runs, steps, grid points) is out of range.
    #[error("{option} must be between {min} and {max}, got {value}")]
    Count {
        /// Command-line option that sets the value.
        option: &'static str,
        /// The rejected value.
        value: usize,
        /// Smallest accepted value.
        min: usize,
        /// Largest accepted value.
        max: usize,
    },

    /// A count is below the smallest value that makes sense with the other options.
    #[error("{option} must be at least {min}, got {value}")]
    TooSmall {
        /// Command-line option that sets the value.
        option: &'static str,
        /// The rejected value.
        value: usize,
        /// Smallest accepted value.
        min: usize,
    },

    /// A tolerance or width is not a positive finite number.
    #[error("{option} must be a positive finite number, got {value}")]
    NotPositive {
        /// Command-line option that sets the value.
        option: &'static str,
        /// The rejected value.
        value: f64,
    },

    /// The inputs are valid one by one but give no meaningful result together
    /// (e.g. a density grid too coarse to resolve its kernels).
    #[error("{0}")]
    Degenerate(String),

    /// LAPACK failed on a small dense problem (tridiagonal eigensolve, QR).
    #[error("dense linear algebra failed in {context}: {message}")]
    Linalg {
        /// What was being computed.
        context: &'static str,
        /// The LAPACK wrapper's message.
        message: String,
    },
}

impl HessianError {
    /// Wrap an `ndarray-linalg` error with the step that raised it.
    pub(crate) fn linalg(context: &'static str, err: ndarray_linalg::error::LinalgError) -> Self {
        HessianError::Linalg {
            context,
            message: err.to_string(),
        }
    }
}

/// `Ok` when `value` is a positive finite number, otherwise [`HessianError::NotPositive`].
pub(crate) fn check_positive(option: &'static str, value: f64) -> Result<(), HessianError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(HessianError::NotPositive { option, value })
    }
}

/// `Ok` when `min <= value <= max`, otherwise [`HessianError::Count`].
pub(crate) fn check_count(
    option: &'static str,
    value: usize,
    min: usize,
    max: usize,
) -> Result<(), HessianError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(HessianError::Count {
            option,
            value,
            min,
            max,
        })
    }
}

/// `Ok` when `value >= min`, otherwise [`HessianError::TooSmall`].
pub(crate) fn check_at_least(
    option: &'static str,
    value: usize,
    min: usize,
) -> Result<(), HessianError> {
    if value >= min {
        Ok(())
    } else {
        Err(HessianError::TooSmall { option, value, min })
    }
}
