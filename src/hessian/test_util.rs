//! Test matrices with known spectra: `A = Q·diag(λ)·Qᵀ`, `Q` from the QR of a seeded
//! Gaussian matrix.

use ndarray::{Array1, Array2};
use ndarray_linalg::QR;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::operator::{gaussian, DenseOperator};

/// Symmetric matrix with eigenvalues `lams` and seeded random eigenvectors.
pub(crate) fn dense_with_spectrum(lams: &[f64], seed: u64) -> DenseOperator {
    let n = lams.len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let g = gaussian(&mut rng, n * n)
        .into_shape_with_order((n, n))
        .unwrap();
    let (q, _) = g.qr().unwrap();
    let d = Array1::from(lams.to_vec());
    let qd = &q * &d; // scales column j by λⱼ
    let mut a: Array2<f64> = qd.dot(&q.t());
    // exact symmetry
    let at = a.t().to_owned();
    a = (&a + &at) * 0.5;
    DenseOperator(a)
}

/// Panics unless `|got − want| ≤ rel·max(|want|, 1e-300)`.
pub(crate) fn assert_rel(got: f64, want: f64, rel: f64) {
    let err = (got - want).abs();
    assert!(
        err <= rel * want.abs().max(1e-300),
        "got {got}, want {want}: relative error {:e} > {rel:e}",
        err / want.abs()
    );
}

/// Copy sorted in decreasing order.
pub(crate) fn sorted_desc(xs: &[f64]) -> Vec<f64> {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| b.total_cmp(a));
    v
}
