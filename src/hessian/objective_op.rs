//! The Hessian of a dataset loss as a [`LinearOperator`]: exact H·v from the objective
//! (Pearlmutter's R-operator, per-sample mean as PyHessian), restricted to a set of
//! parameter tensors.

use ndarray::{Array1, ArrayView1, ArrayViewMut1};

use super::LinearOperator;
use crate::engine::{ParamVec, TensorSpec};
use crate::objective::Objective;

/// H restricted to the selected tensors, evaluated in f32 at θ (f64 in and out).
pub struct ObjectiveHessian<'a> {
    objective: &'a Objective<'a>,
    theta: &'a ParamVec<f32>,
    /// Flat indices of the selected scalars.
    index: Vec<usize>,
}

impl<'a> ObjectiveHessian<'a> {
    /// H over the tensors for which `keep` holds (e.g. all trainable ones, PyHessian's choice).
    pub fn new(
        objective: &'a Objective<'a>,
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
            index,
        }
    }
}

impl LinearOperator for ObjectiveHessian<'_> {
    fn dim(&self) -> usize {
        self.index.len()
    }

    fn apply(&self, v: ArrayView1<f64>, mut out: ArrayViewMut1<f64>) {
        let mut full = Array1::<f32>::zeros(self.theta.data.len());
        for (&i, &x) in self.index.iter().zip(v.iter()) {
            full[i] = x as f32;
        }
        let hv = self.objective.hvp(self.theta.data.view(), full.view());
        for (o, &i) in out.iter_mut().zip(&self.index) {
            *o = hv[i] as f64;
        }
    }
}
