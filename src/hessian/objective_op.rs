//! The Hessian of a dataset loss as a [`LinearOperator`]: exact H·v from the objective
//! (Pearlmutter's R-operator, per-sample mean as PyHessian), restricted to a set of
//! parameter tensors, optionally shifted by a weight-decay term.
//!
//! ```text
//! apply(v) = P (H + λI) Pᵀ v      P selects the chosen scalars; λ = weight decay
//! ```
//! One `apply` costs one H·v over the dataset (about 2.5 gradients).

use ndarray::{Array1, ArrayView1, ArrayViewMut1};

use super::LinearOperator;
use crate::engine::{ParamVec, TensorSpec};
use crate::objective::Objective;

/// H restricted to the selected tensors at θ (f64 in and out; f32 compute by default).
pub struct ObjectiveHessian<'a, 'd> {
    objective: &'a Objective<'d>,
    theta: &'a ParamVec<f32>,
    /// θ in f64, when products are computed in double precision.
    theta64: Option<Array1<f64>>,
    /// Flat indices of the selected scalars.
    index: Vec<usize>,
    /// λ of the H + λI shift (the curvature of an L2 penalty λ/2‖θ‖²).
    shift: f64,
}

impl<'a, 'd> ObjectiveHessian<'a, 'd> {
    /// H over the tensors for which `keep` holds (e.g. all trainable ones, PyHessian's choice).
    pub fn new(
        objective: &'a Objective<'d>,
        theta: &'a ParamVec<f32>,
        keep: impl Fn(&TensorSpec) -> bool,
    ) -> Self {
        let index = theta
            .layout
            .tensors()
            .iter()
            .filter(|t| keep(t))
            .flat_map(|t| t.range())
            .collect();
        Self {
            objective,
            theta,
            theta64: None,
            index,
            shift: 0.0,
        }
    }

    /// Adds λI (weight decay λ).
    pub fn with_shift(mut self, lambda: f64) -> Self {
        self.shift = lambda;
        self
    }

    /// Computes products in f64 end to end.
    pub fn with_f64(mut self, yes: bool) -> Self {
        self.theta64 = yes.then(|| self.theta.data.mapv(|v| v as f64));
        self
    }
}

impl LinearOperator for ObjectiveHessian<'_, '_> {
    fn dim(&self) -> usize {
        self.index.len()
    }

    fn apply(&self, v: ArrayView1<f64>, mut out: ArrayViewMut1<f64>) {
        let n = self.theta.data.len();
        let hv: Vec<f64> = match &self.theta64 {
            Some(t64) => {
                let mut full = Array1::<f64>::zeros(n);
                for (&i, &x) in self.index.iter().zip(v.iter()) {
                    full[i] = x;
                }
                let hv = self.objective.hvp(t64.view(), full.view());
                self.index.iter().map(|&i| hv[i]).collect()
            }
            None => {
                let mut full = Array1::<f32>::zeros(n);
                for (&i, &x) in self.index.iter().zip(v.iter()) {
                    full[i] = x as f32;
                }
                let hv = self.objective.hvp(self.theta.data.view(), full.view());
                self.index.iter().map(|&i| hv[i] as f64).collect()
            }
        };
        for ((o, h), &x) in out.iter_mut().zip(hv).zip(v.iter()) {
            *o = h + self.shift * x;
        }
    }
}
