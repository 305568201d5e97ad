//! The Hessian of a dataset loss as a [`LinearOperator`]: exact H·v from the objective
//! (Pearlmutter's R-operator, per-sample mean as PyHessian), restricted to a set of
//! parameter tensors, optionally shifted by a weight-decay term; or, with
//! [`ObjectiveHessian::with_curvature`], one of the Gauss–Newton-type matrices of the same
//! loss (GGN, Fisher, empirical Fisher; [`Curvature`]), which are symmetric PSD.
//!
//! ```text
//! apply(v) = P (C + λI) Pᵀ v      C = H (default), GGN, F or F_emp
//!                                 P selects the chosen scalars; λ = weight decay
//! ```
//! θ is fixed while v changes, so the θ-only half of every product (forward pass, loss,
//! plain reverse pass) is computed at the first `apply` and kept, within a memory budget
//! ([`PreparedCurvature`]); each later `apply` runs only the R-passes (about 1.7 gradients on
//! ResNet-20, against about 2.5 for a cold H·v), with the same bits.

use std::sync::{Arc, OnceLock};

use ndarray::{Array1, ArrayView1, ArrayViewMut1};

use super::LinearOperator;
use crate::engine::{ParamVec, TensorSpec};
use crate::objective::{Curvature, Objective, PreparedCurvature};

/// Default memory budget for the kept θ-only state of the products (2 GiB; ResNet-20 on
/// 32×32×3 inputs needs about 5 MB per sample, the bundled 8×8 digits about 1/16 of that).
pub const DEFAULT_HVP_CACHE_BYTES: usize = 2 << 30;

/// The kept state, built at the first product in the operator's precision.
#[derive(Default)]
struct Prepared<'a, 'd> {
    f32: OnceLock<PreparedCurvature<'a, 'd, f32>>,
    f64: OnceLock<PreparedCurvature<'a, 'd, f64>>,
}

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
    /// Which matrix the products multiply by.
    curvature: Curvature,
    /// Budget of the kept θ-only state, bytes (0: every product runs cold).
    cache_bytes: usize,
    /// Shared between operators on the same objective and θ (e.g. per-block operators).
    prepared: Arc<Prepared<'a, 'd>>,
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
            curvature: Curvature::Hessian,
            cache_bytes: DEFAULT_HVP_CACHE_BYTES,
            prepared: Arc::default(),
        }
    }

    /// Memory budget (bytes) for the θ-only state kept across products; 0 keeps none.
    pub fn with_cache_bytes(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// (batches kept, batches, bytes) of the kept θ-only state, once the first product has
    /// built it.
    pub fn kept_state(&self) -> Option<(usize, usize, usize)> {
        let a = self.prepared.f32.get().map(|p| (p.kept(), p.bytes()));
        let b = self.prepared.f64.get().map(|p| (p.kept(), p.bytes()));
        a.or(b).map(|((k, n), bytes)| (k, n, bytes))
    }

    /// Shares `other`'s kept state (built once, by whichever operator applies first):
    /// both must be on the same objective and θ.
    pub fn sharing_cache_with(mut self, other: &Self) -> Self {
        assert!(
            std::ptr::eq(self.objective, other.objective)
                && std::ptr::eq(self.theta, other.theta)
                && self.curvature == other.curvature,
            "a shared H·v cache needs the same objective, θ and curvature"
        );
        self.prepared = Arc::clone(&other.prepared);
        self
    }

    /// Products with `c` instead of the Hessian.
    pub fn with_curvature(mut self, c: Curvature) -> Self {
        self.curvature = c;
        self
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
                let prep = self.prepared.f64.get_or_init(|| {
                    self.objective
                        .prepare_curvature(t64.view(), self.curvature, self.cache_bytes)
                });
                let hv = prep.product(full.view());
                self.index.iter().map(|&i| hv[i]).collect()
            }
            None => {
                let mut full = Array1::<f32>::zeros(n);
                for (&i, &x) in self.index.iter().zip(v.iter()) {
                    full[i] = x as f32;
                }
                let prep = self.prepared.f32.get_or_init(|| {
                    self.objective.prepare_curvature(
                        self.theta.data.view(),
                        self.curvature,
                        self.cache_bytes,
                    )
                });
                let hv = prep.product(full.view());
                self.index.iter().map(|&i| hv[i] as f64).collect()
            }
        };
        for ((o, h), &x) in out.iter_mut().zip(hv).zip(v.iter()) {
            *o = h + self.shift * x;
        }
    }
}
