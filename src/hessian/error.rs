//! Errors of the Hessian analyses: invalid parameters (named after the config field that
//! sets them, see [`crate::error`]) and failures of the dense linear algebra underneath.
//! Non-convergence is *not* an error; it is reported in the result structs.

use thiserror::Error;

/// Why a Hessian analysis could not run.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum HessianError {
    /// Occurs when the operator has no rows (a model without parameters).
    #[error("the operator has dimension 0: there are no parameters to analyse")]
    EmptyOperator,

    /// Occurs when the number of wanted eigenpairs is 0 or larger than the dimension.
    #[error("`top_k` must be between 1 and the number of parameters ({dim}), got {k}")]
    TopK {
        /// Requested number of eigenpairs.
        k: usize,
        /// Dimension of the operator.
        dim: usize,
    },

    /// Occurs when a count (iterations, probes, runs, steps, grid points) is out of range.
    #[error("`{field}` must be between {min} and {max}, got {value}")]
    Count {
        /// Config field that sets the value.
        field: &'static str,
        /// The rejected value.
        value: usize,
        /// Smallest accepted value.
        min: usize,
        /// Largest accepted value.
        max: usize,
    },

    /// Occurs when a count is below the smallest value that makes sense with the other options.
    #[error("`{field}` must be at least {min}, got {value}")]
    TooSmall {
        /// Config field that sets the value.
        field: &'static str,
        /// The rejected value.
        value: usize,
        /// Smallest accepted value.
        min: usize,
    },

    /// Occurs when a tolerance or width is not a positive finite number.
    #[error("`{field}` must be a positive finite number, got {value}")]
    NotPositive {
        /// Config field that sets the value.
        field: &'static str,
        /// The rejected value.
        value: f64,
    },

    /// Occurs when the density's overhead (the margin added to both ends of the spectrum)
    /// is negative or not finite.
    #[error("the density overhead must be a finite number ≥ 0, got {value}")]
    Overhead {
        /// The rejected value.
        value: f64,
    },

    /// Occurs when an SLQ report without quadrature nodes is smoothed into a density.
    #[error("the SLQ report holds no quadrature nodes")]
    NoNodes,

    /// Occurs when every quadrature node has the same value and no overhead widens the
    /// density grid.
    #[error("the density grid is empty: all nodes equal {value} and the overhead is 0")]
    EmptyGrid {
        /// The common value of the nodes.
        value: f64,
    },

    /// Occurs when the density grid is too coarse to resolve the Gaussian kernels: the
    /// smoothed density sums to zero (or overflows).
    #[error(
        "`grid_points` ({grid_points}) is too coarse to resolve kernels of variance {variance:e} \
         over [{lambda_min}, {lambda_max}]; use more points or a larger `sigma_squared`"
    )]
    TooCoarse {
        /// Points of the density grid.
        grid_points: usize,
        /// Variance of each kernel.
        variance: f64,
        /// Ends of the grid.
        lambda_min: f64,
        lambda_max: f64,
    },

    /// Occurs when LAPACK fails on a small dense problem (tridiagonal eigensolve, QR).
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
pub(crate) fn check_positive(field: &'static str, value: f64) -> Result<(), HessianError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(HessianError::NotPositive { field, value })
    }
}

/// `Ok` when `min <= value <= max`, otherwise [`HessianError::Count`].
pub(crate) fn check_count(
    field: &'static str,
    value: usize,
    min: usize,
    max: usize,
) -> Result<(), HessianError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(HessianError::Count {
            field,
            value,
            min,
            max,
        })
    }
}

/// `Ok` when `value >= min`, otherwise [`HessianError::TooSmall`].
pub(crate) fn check_at_least(
    field: &'static str,
    value: usize,
    min: usize,
) -> Result<(), HessianError> {
    if value >= min {
        Ok(())
    } else {
        Err(HessianError::TooSmall { field, value, min })
    }
}
