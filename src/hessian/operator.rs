//! The matrix-free interface shared by every analysis, plus the small vector kernels
//! (seeded random probes, Gram–Schmidt) they use.
//!
//! ```text
//! A : ℝⁿ → ℝⁿ symmetric, known only through  v ↦ A·v   (for a network: exact H·v)
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};

use ndarray::{linalg::general_mat_vec_mul, Array1, Array2, ArrayView1, ArrayViewMut1};
use rand::Rng;
use rand_distr::StandardNormal;

/// A symmetric linear operator known only through products (e.g. the Hessian via exact H·v).
pub trait LinearOperator: Sync {
    /// Number of rows (= columns).
    fn dim(&self) -> usize;
    /// Write `A·v` into `out` (`v.len() == out.len() == self.dim()`).
    fn apply(&self, v: ArrayView1<f64>, out: ArrayViewMut1<f64>);
}

impl<O: LinearOperator + ?Sized> LinearOperator for &O {
    fn dim(&self) -> usize {
        (**self).dim()
    }
    fn apply(&self, v: ArrayView1<f64>, out: ArrayViewMut1<f64>) {
        (**self).apply(v, out)
    }
}

/// A dense symmetric matrix as an operator; for tests and small problems.
/// Symmetry is the caller's responsibility (only `A·v` is used).
#[derive(Debug, Clone)]
pub struct DenseOperator(pub Array2<f64>);

impl LinearOperator for DenseOperator {
    fn dim(&self) -> usize {
        self.0.nrows()
    }
    fn apply(&self, v: ArrayView1<f64>, mut out: ArrayViewMut1<f64>) {
        general_mat_vec_mul(1.0, &self.0, &v, 0.0, &mut out);
    }
}

/// Wraps an operator and counts its applications ("H·v products used").
#[derive(Debug)]
pub struct Counting<'a, O: ?Sized> {
    inner: &'a O,
    count: AtomicUsize,
}

impl<'a, O: LinearOperator + ?Sized> Counting<'a, O> {
    /// Start counting at zero.
    pub fn new(inner: &'a O) -> Self {
        Counting {
            inner,
            count: AtomicUsize::new(0),
        }
    }
    /// Applications so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
    /// Set the counter back to zero.
    pub fn reset(&self) {
        self.count.store(0, Ordering::Relaxed);
    }
}

impl<O: LinearOperator + ?Sized> LinearOperator for Counting<'_, O> {
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn apply(&self, v: ArrayView1<f64>, out: ArrayViewMut1<f64>) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.inner.apply(v, out)
    }
}

/// `A·v` into a fresh vector.
pub(crate) fn apply_new<O: LinearOperator + ?Sized>(op: &O, v: ArrayView1<f64>) -> Array1<f64> {
    let mut out = Array1::zeros(op.dim());
    op.apply(v, out.view_mut());
    out
}

/// Entries ±1 with equal probability.
pub(crate) fn rademacher<R: Rng>(rng: &mut R, n: usize) -> Array1<f64> {
    Array1::from_shape_fn(n, |_| if rng.random::<bool>() { 1.0 } else { -1.0 })
}

/// Standard normal entries.
pub(crate) fn gaussian<R: Rng>(rng: &mut R, n: usize) -> Array1<f64> {
    Array1::from_shape_fn(n, |_| rng.sample::<f64, _>(StandardNormal))
}

/// Euclidean norm.
pub(crate) fn norm(v: ArrayView1<f64>) -> f64 {
    v.dot(&v).sqrt()
}

/// Remove from `w` its components along the orthonormal `basis`, twice
/// (classical Gram–Schmidt with one reorthogonalization: "twice is enough",
/// Giraud et al. 2005), which keeps `w ⟂ basis` to working precision.
pub(crate) fn orthogonalize(w: &mut Array1<f64>, basis: &[Array1<f64>]) {
    for _pass in 0..2 {
        let coeffs: Vec<f64> = basis.iter().map(|q| q.dot(w)).collect();
        for (q, c) in basis.iter().zip(coeffs) {
            w.scaled_add(-c, q);
        }
    }
}
