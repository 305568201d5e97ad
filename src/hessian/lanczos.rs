//! Extreme eigenpairs by the Lanczos method with full reorthogonalization
//! (Golub & Van Loan, *Matrix Computations*, 4th ed., §10.1 and §10.3.1; the
//! matrix-free use on Hessians follows PyHessian, Yao et al. 2020, arXiv:1912.07145,
//! and pytorch-hessian-eigenthings).
//!
//! ```text
//! q₁ = g/‖g‖, g ~ N(0, I) (seeded),  β₀ q₀ = 0
//! for j = 1, 2, …
//!     w  = A qⱼ
//!     αⱼ = qⱼᵀ w
//!     w ← w − αⱼ qⱼ − βⱼ₋₁ qⱼ₋₁
//!     w ← w − Qⱼ (Qⱼᵀ w)      twice (full reorthogonalization, Q = [q₁ … qⱼ])
//!     βⱼ = ‖w‖,  qⱼ₊₁ = w / βⱼ
//!
//! A Qₘ = Qₘ Tₘ + βₘ qₘ₊₁ eₘᵀ,   Tₘ = tridiag(β, α, β) = S Θ Sᵀ   (symmetric eigensolver)
//! Ritz pair (θᵢ, yᵢ = Qₘ sᵢ):   ‖A yᵢ − θᵢ yᵢ‖ = |βₘ · S[m, i]|
//!
//! stop when the k wanted pairs have |βₘ S[m,i]| / |θᵢ| ≤ tol, confirmed by the true
//! residual ‖A yᵢ − θᵢ yᵢ‖ / |θᵢ| (one extra product per pair), or when m = max_iter.
//!
//! βₘ ≈ 0 (invariant subspace): if m < n, restart with a fresh random vector
//! orthogonal to Qₘ (T becomes block diagonal) and keep going; if m = n, stop.
//! ```
//!
//! Cost: `m` products for `m` Krylov steps (`m ≤ max_iter ≤ n`) plus `k` products per
//! residual confirmation; memory `n·(m+1)` floats for the basis. The dense work per
//! step (an `m×m` symmetric eigensolve and `O(n·m)` reorthogonalization) is negligible
//! next to an H·v product for any real network.
//!
//! A single-vector Krylov method cannot see an eigenvalue's multiplicity beyond the
//! component of its start vector; after an invariant-subspace restart, convergence
//! is only accepted if it is observed again one step later, which recovers repeated
//! eigenvalues in the common cases (but not in every one — ARPACK shares the limit).

use ndarray::{Array1, Array2};
use ndarray_linalg::{Eigh, UPLO};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::error::{check_at_least, check_positive, HessianError};
use super::operator::{apply_new, gaussian, norm, orthogonalize, LinearOperator};

/// A new Lanczos vector whose norm after orthogonalization is at most this fraction of
/// the operator scale (the largest `‖A qⱼ‖` seen) is treated as zero: the Krylov space is
/// invariant. Dropping a coupling this small moves Ritz values by at most `1e-10·‖A‖`,
/// far below any tolerance worth asking for, while staying well above the `~1e-15·‖A‖`
/// rounding left after full reorthogonalization.
pub(crate) const BREAKDOWN_RTOL: f64 = 1e-10;

/// Relative residuals divide by `max(|θ|, RELATIVE_FLOOR · max|Ritz value|)`. Hessians
/// have many (near-)zero eigenvalues, for which `|θ|` alone would make a relative
/// residual meaningless; below the floor the residual is measured against `1e-8·‖A‖`.
pub const RELATIVE_FLOOR: f64 = 1e-8;

/// After a confirmation with true residuals fails, the residual *estimate* must shrink
/// by this factor before the next confirmation, so that a pair whose estimate and true
/// residual disagree does not cost `k` products at every step.
const CONFIRM_TIGHTEN: f64 = 0.1;

/// Fresh random vectors drawn when restarting after an invariant subspace before giving
/// up; one suffices unless the basis already spans almost all of ℝⁿ.
const RESTART_ATTEMPTS: usize = 8;

/// A random vector keeps a fraction `~√((n−m)/n)` of its norm when made orthogonal to
/// an `m`-dimensional basis; keeping less than this means the basis (nearly) spans ℝⁿ
/// and what is left is rounding noise, not a new direction.
const RESTART_MIN_FRACTION: f64 = 1e-8;

/// Default iteration cap: PyHessian's `maxIter` (100), here counting Krylov steps.
pub const DEFAULT_MAX_ITER: usize = 100;

/// Default relative residual: PyHessian's default `tol` (1e-3).
pub const DEFAULT_TOL: f64 = 1e-3;

/// Which end of the spectrum to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Which {
    /// Largest algebraic values, reported in decreasing order.
    #[default]
    Largest,
    /// Smallest algebraic values (most negative curvature), increasing order.
    Smallest,
    /// Largest |λ| (what power iteration finds), decreasing |λ|.
    LargestMagnitude,
}

/// Options of [`top_eigenpairs`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LanczosParams {
    /// Number of eigenpairs wanted (`--top-k`), `1 ≤ k ≤ n`.
    pub k: usize,
    /// Maximum Krylov steps (`--max-iter`), at least `k`; capped at `n`.
    pub max_iter: usize,
    /// Relative residual `‖Av − θv‖/|θ|` accepted (`--tol`).
    pub tol: f64,
    /// Seed of the random start vector.
    pub seed: u64,
    /// End of the spectrum.
    pub which: Which,
    /// Return the eigenvectors (they are computed either way, for the residuals).
    pub keep_vectors: bool,
}

impl Default for LanczosParams {
    fn default() -> Self {
        LanczosParams {
            k: 1,
            max_iter: DEFAULT_MAX_ITER,
            tol: DEFAULT_TOL,
            seed: 0,
            which: Which::Largest,
            keep_vectors: true,
        }
    }
}

impl LanczosParams {
    /// Validate against an operator of dimension `dim`.
    pub fn check(&self, dim: usize) -> Result<(), HessianError> {
        if dim == 0 {
            return Err(HessianError::EmptyOperator);
        }
        if self.k == 0 || self.k > dim {
            return Err(HessianError::TopK { k: self.k, dim });
        }
        check_at_least("max_iter", self.max_iter, self.k)?;
        check_positive("tol", self.tol)
    }
}

/// Eigenpairs with their quality; shared by Lanczos and power iteration.
#[derive(Debug, Clone, Serialize)]
pub struct EigenReport {
    /// Eigenvalue estimates, in the order documented by the method.
    pub values: Vec<f64>,
    /// Unit eigenvectors as columns (`n × values.len()`), if requested.
    pub vectors: Option<Array2<f64>>,
    /// True relative residuals `‖Av − λv‖ / max(|λ|, RELATIVE_FLOOR·scale)`.
    pub residuals: Vec<f64>,
    /// Whether each pair met the tolerance (by its true residual for Lanczos; by
    /// PyHessian's eigenvalue-change rule for power iteration).
    pub converged: Vec<bool>,
    /// Lanczos: Krylov steps; power iteration: iterations summed over eigenpairs.
    pub iterations: usize,
    /// Operator products used, residual checks included.
    pub applies: usize,
}

impl EigenReport {
    /// Whether every pair converged.
    pub fn all_converged(&self) -> bool {
        self.converged.iter().all(|&c| c)
    }
}

/// The Lanczos recurrence with full reorthogonalization; shared with SLQ.
pub(crate) struct Krylov {
    /// Orthonormal basis `q₁ … q_m` (plus `q_{m+1}` when the last step did not break down).
    pub(crate) basis: Vec<Array1<f64>>,
    /// Diagonal of T.
    pub(crate) alpha: Vec<f64>,
    /// `beta[j]` couples `basis[j]` and `basis[j+1]`; 0 at a breakdown.
    pub(crate) beta: Vec<f64>,
    /// Largest `‖A qⱼ‖` seen: a lower bound on `‖A‖`, the breakdown scale.
    scale: f64,
}

impl Krylov {
    /// Start from a unit vector.
    pub(crate) fn new(q1: Array1<f64>) -> Self {
        Krylov {
            basis: vec![q1],
            alpha: Vec::new(),
            beta: Vec::new(),
            scale: 0.0,
        }
    }

    /// Steps taken (= size of T).
    pub(crate) fn steps(&self) -> usize {
        self.alpha.len()
    }

    /// Expand the newest basis vector (one product). Returns `true` at a breakdown
    /// (invariant subspace), in which case no new basis vector was added.
    pub(crate) fn step<O: LinearOperator + ?Sized>(&mut self, op: &O) -> bool {
        let j = self.alpha.len();
        debug_assert_eq!(self.basis.len(), j + 1);
        let mut w = apply_new(op, self.basis[j].view());
        self.scale = self.scale.max(norm(w.view()));
        let a = self.basis[j].dot(&w);
        w.scaled_add(-a, &self.basis[j]);
        if j > 0 {
            w.scaled_add(-self.beta[j - 1], &self.basis[j - 1]);
        }
        orthogonalize(&mut w, &self.basis);
        let b = norm(w.view());
        self.alpha.push(a);
        if b <= BREAKDOWN_RTOL * self.scale || b == 0.0 {
            self.beta.push(0.0);
            true
        } else {
            w /= b;
            self.beta.push(b);
            self.basis.push(w);
            false
        }
    }

    /// After a breakdown, continue from `v` made orthogonal to the basis.
    /// Returns `false` if `v` lies (numerically) in the span of the basis.
    pub(crate) fn restart(&mut self, mut v: Array1<f64>) -> bool {
        debug_assert_eq!(self.basis.len(), self.alpha.len());
        let before = norm(v.view());
        orthogonalize(&mut v, &self.basis);
        let after = norm(v.view());
        if after.is_nan() || after <= RESTART_MIN_FRACTION * before {
            return false;
        }
        v /= after;
        self.basis.push(v);
        true
    }

    /// The symmetric tridiagonal `T` (`steps × steps`).
    pub(crate) fn tridiagonal(&self) -> Array2<f64> {
        let m = self.alpha.len();
        let mut t = Array2::zeros((m, m));
        for j in 0..m {
            t[[j, j]] = self.alpha[j];
            if j + 1 < m {
                t[[j, j + 1]] = self.beta[j];
                t[[j + 1, j]] = self.beta[j];
            }
        }
        t
    }

    /// Ritz values (ascending) and the eigenvectors of `T` as columns.
    pub(crate) fn ritz(&self) -> Result<(Array1<f64>, Array2<f64>), HessianError> {
        self.tridiagonal()
            .eigh(UPLO::Lower)
            .map_err(|e| HessianError::linalg("the Lanczos tridiagonal eigensolve", e))
    }

    /// Ritz vector `Q_m s` for a column `s` of T's eigenvectors.
    fn ritz_vector(&self, s: ndarray::ArrayView1<f64>) -> Array1<f64> {
        let n = self.basis[0].len();
        let mut y = Array1::zeros(n);
        for (q, &c) in self.basis.iter().zip(s.iter()) {
            y.scaled_add(c, q);
        }
        let ny = norm(y.view());
        if ny > 0.0 {
            y /= ny;
        }
        y
    }
}

/// Denominator of a relative residual (see [`RELATIVE_FLOOR`]).
pub(crate) fn relative_denominator(theta: f64, scale: f64) -> f64 {
    theta.abs().max(RELATIVE_FLOOR * scale)
}

/// `num / den`, with `0/0 = 0` (an exact pair of the zero operator) and `x/0 = ∞`.
pub(crate) fn safe_ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 {
        num / den
    } else if num == 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

/// True relative residual of `(theta, y)` with one product.
pub(crate) fn true_residual<O: LinearOperator + ?Sized>(
    op: &O,
    theta: f64,
    y: &Array1<f64>,
    scale: f64,
) -> f64 {
    let mut r = apply_new(op, y.view());
    r.scaled_add(-theta, y);
    safe_ratio(norm(r.view()), relative_denominator(theta, scale))
}

/// Indices (into the ascending Ritz values) of the `k` wanted ones, in report order.
fn select(theta: &Array1<f64>, which: Which, k: usize) -> Vec<usize> {
    let m = theta.len();
    match which {
        Which::Largest => (m - k..m).rev().collect(),
        Which::Smallest => (0..k).collect(),
        Which::LargestMagnitude => {
            let mut idx: Vec<usize> = (0..m).collect();
            idx.sort_by(|&a, &b| theta[b].abs().total_cmp(&theta[a].abs()));
            idx.truncate(k);
            idx
        }
    }
}

/// Ritz pairs with confirmed (true) residuals.
struct Confirmed {
    values: Vec<f64>,
    vectors: Vec<Array1<f64>>,
    residuals: Vec<f64>,
}

/// The `k` wanted eigenpairs of `op` by Lanczos with full reorthogonalization.
///
/// Values come in the order of [`Which`]; `converged[i]` is `residuals[i] ≤ tol`.
/// Returns an error only for invalid parameters or a LAPACK failure.
pub fn top_eigenpairs<O: LinearOperator + ?Sized>(
    op: &O,
    params: &LanczosParams,
) -> Result<EigenReport, HessianError> {
    let n = op.dim();
    params.check(n)?;
    let k = params.k;
    let max_iter = params.max_iter.min(n);
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);

    let mut start = gaussian(&mut rng, n);
    let start_norm = norm(start.view());
    start /= start_norm;
    let mut kry = Krylov::new(start);

    let mut applies = 0;
    let mut estimate_target = params.tol;
    let mut pending_confirmation = false;
    let mut last: Option<Confirmed>;

    loop {
        let breakdown = kry.step(op);
        applies += 1;
        let m = kry.steps();
        let exhausted = m >= max_iter;
        last = None;

        if m >= k {
            let (theta, s) = kry.ritz()?;
            let scale = theta.iter().fold(0.0_f64, |acc, t| acc.max(t.abs()));
            let wanted = select(&theta, params.which, k);
            let beta_m = kry.beta[m - 1];
            let estimates_ok = wanted.iter().all(|&i| {
                let est = (beta_m * s[[m - 1, i]]).abs();
                safe_ratio(est, relative_denominator(theta[i], scale)) <= estimate_target
            });

            if estimates_ok && breakdown && !pending_confirmation && !exhausted && m < n {
                // Converged on an invariant subspace: make sure a fresh direction does
                // not reveal a hidden (e.g. repeated) wanted eigenvalue.
                pending_confirmation = true;
            } else if estimates_ok || exhausted || m == n {
                pending_confirmation = false;
                let mut conf = Confirmed {
                    values: Vec::with_capacity(k),
                    vectors: Vec::with_capacity(k),
                    residuals: Vec::with_capacity(k),
                };
                for &i in &wanted {
                    let y = kry.ritz_vector(s.column(i));
                    conf.residuals.push(true_residual(op, theta[i], &y, scale));
                    applies += 1;
                    conf.values.push(theta[i]);
                    conf.vectors.push(y);
                }
                let ok = conf.residuals.iter().all(|&r| r <= params.tol);
                last = Some(conf);
                if ok || exhausted || m == n {
                    break;
                }
                estimate_target *= CONFIRM_TIGHTEN;
            } else {
                pending_confirmation = false;
            }
        }

        if exhausted || m == n {
            break;
        }
        if breakdown {
            let restarted = (0..RESTART_ATTEMPTS).any(|_| kry.restart(gaussian(&mut rng, n)));
            if !restarted {
                break;
            }
        }
    }

    let m = kry.steps();
    let conf = match last {
        Some(c) => c,
        // Only reachable if restarting failed before k Ritz pairs existed, or m ≥ k but
        // the final step was a pending confirmation cut short; recompute the pairs.
        None => {
            let (theta, s) = kry.ritz()?;
            let scale = theta.iter().fold(0.0_f64, |acc, t| acc.max(t.abs()));
            let wanted = select(&theta, params.which, k.min(m));
            let mut conf = Confirmed {
                values: Vec::new(),
                vectors: Vec::new(),
                residuals: Vec::new(),
            };
            for &i in &wanted {
                let y = kry.ritz_vector(s.column(i));
                conf.residuals.push(true_residual(op, theta[i], &y, scale));
                applies += 1;
                conf.values.push(theta[i]);
                conf.vectors.push(y);
            }
            conf
        }
    };

    let converged = conf.residuals.iter().map(|&r| r <= params.tol).collect();
    let vectors = params.keep_vectors.then(|| columns(&conf.vectors, n));
    Ok(EigenReport {
        values: conf.values,
        vectors,
        residuals: conf.residuals,
        converged,
        iterations: m,
        applies,
    })
}

/// Stack vectors as the columns of an `n × len` matrix.
pub(crate) fn columns(vs: &[Array1<f64>], n: usize) -> Array2<f64> {
    let mut out = Array2::zeros((n, vs.len()));
    for (mut col, v) in out.columns_mut().into_iter().zip(vs) {
        col.assign(v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hessian::operator::Counting;
    use crate::hessian::test_util::{assert_rel, dense_with_spectrum, sorted_desc};

    fn spectrum_200() -> Vec<f64> {
        // distinct, well spread, both signs
        (0..200)
            .map(|i| {
                let x = i as f64;
                if i % 7 == 0 {
                    -0.5 - 0.03 * x
                } else {
                    1.0 + 0.1 * x
                }
            })
            .collect()
    }

    #[test]
    fn top5_and_bottom2_match_eigh() {
        let lams = spectrum_200();
        let op = dense_with_spectrum(&lams, 11);
        let (exact, _) = op.0.eigh(UPLO::Lower).unwrap();
        let exact: Vec<f64> = exact.to_vec();
        let tol = 1e-9;

        let top = top_eigenpairs(
            &op,
            &LanczosParams {
                k: 5,
                max_iter: 200,
                tol,
                seed: 1,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(top.all_converged(), "{top:?}");
        for (i, v) in top.values.iter().enumerate() {
            assert_rel(*v, exact[199 - i], 1e-8);
            assert!(top.residuals[i] <= tol);
        }
        assert_eq!(top.applies, top.iterations + 5);

        let bottom = top_eigenpairs(
            &op,
            &LanczosParams {
                k: 2,
                max_iter: 200,
                tol,
                seed: 2,
                which: Which::Smallest,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(bottom.all_converged());
        assert_rel(bottom.values[0], exact[0], 1e-8);
        assert_rel(bottom.values[1], exact[1], 1e-8);

        // eigenvectors: A v ≈ λ v and unit norm
        let vecs = top.vectors.unwrap();
        for (i, col) in vecs.columns().into_iter().enumerate() {
            let av = op.0.dot(&col);
            let r = &av - &(&col * top.values[i]);
            assert!(norm(r.view()) <= 1e-6 * top.values[i].abs());
            assert_rel(norm(col), 1.0, 1e-12);
        }
    }

    #[test]
    fn largest_magnitude_picks_negative_outlier() {
        let mut lams: Vec<f64> = (0..60).map(|i| 0.01 * i as f64).collect();
        lams[0] = -9.0;
        lams[1] = 7.0;
        let op = dense_with_spectrum(&lams, 3);
        let r = top_eigenpairs(
            &op,
            &LanczosParams {
                k: 2,
                tol: 1e-10,
                which: Which::LargestMagnitude,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(r.all_converged());
        assert_rel(r.values[0], -9.0, 1e-9);
        assert_rel(r.values[1], 7.0, 1e-9);
    }

    #[test]
    fn full_dimension_and_invariant_subspaces() {
        // diag(5, 5, 1, …, 1): the start vector's Krylov space is 2-dimensional; the
        // restart must recover the second 5.
        let mut lams = vec![1.0; 30];
        lams[0] = 5.0;
        lams[1] = 5.0;
        let op = dense_with_spectrum(&lams, 4);
        let r = top_eigenpairs(
            &op,
            &LanczosParams {
                k: 2,
                tol: 1e-10,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(r.all_converged(), "{r:?}");
        assert_rel(r.values[0], 5.0, 1e-10);
        assert_rel(r.values[1], 5.0, 1e-10);

        // the zero operator: everything is an invariant subspace
        let zero = DenseOperatorZero(10);
        let r = top_eigenpairs(
            &zero,
            &LanczosParams {
                k: 3,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(r.values, vec![0.0; 3]);
        assert!(r.all_converged());

        // k = n on a small matrix: the whole spectrum, exactly
        let lams: Vec<f64> = (1..=8).map(|i| i as f64).collect();
        let op = dense_with_spectrum(&lams, 5);
        let r = top_eigenpairs(
            &op,
            &LanczosParams {
                k: 8,
                tol: 1e-9,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(r.iterations, 8);
        let want = sorted_desc(&lams);
        for (v, w) in r.values.iter().zip(want) {
            assert_rel(*v, w, 1e-10);
        }
    }

    struct DenseOperatorZero(usize);
    impl LinearOperator for DenseOperatorZero {
        fn dim(&self) -> usize {
            self.0
        }
        fn apply(&self, _v: ndarray::ArrayView1<f64>, mut out: ndarray::ArrayViewMut1<f64>) {
            out.fill(0.0);
        }
    }

    #[test]
    fn non_convergence_is_reported_not_an_error() {
        let lams: Vec<f64> = (0..150).map(|i| 1.0 + 0.001 * i as f64).collect();
        let op = dense_with_spectrum(&lams, 6);
        let counting = Counting::new(&op);
        let r = top_eigenpairs(
            &counting,
            &LanczosParams {
                k: 3,
                max_iter: 4,
                tol: 1e-12,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(r.iterations, 4);
        assert_eq!(r.values.len(), 3);
        assert!(!r.all_converged());
        assert_eq!(r.applies, counting.count());
        assert_eq!(r.applies, 4 + 3);
    }

    #[test]
    fn invalid_params_are_errors() {
        let op = dense_with_spectrum(&[1.0, 2.0, 3.0], 0);
        let bad = |p: LanczosParams| top_eigenpairs(&op, &p).unwrap_err();
        assert_eq!(
            bad(LanczosParams {
                k: 0,
                ..Default::default()
            }),
            HessianError::TopK { k: 0, dim: 3 }
        );
        let e = bad(LanczosParams {
            k: 4,
            ..Default::default()
        });
        assert!(e.to_string().contains("`top_k`"), "{e}");
        assert!(e.to_string().contains("(3)"), "{e}");
        let e = bad(LanczosParams {
            tol: 0.0,
            ..Default::default()
        });
        assert!(e.to_string().contains("`tol`"));
        let e = bad(LanczosParams {
            k: 2,
            max_iter: 1,
            ..Default::default()
        });
        assert!(e.to_string().contains("`max_iter`"));
        let empty = crate::hessian::DenseOperator(Array2::zeros((0, 0)));
        assert_eq!(
            top_eigenpairs(&empty, &LanczosParams::default()).unwrap_err(),
            HessianError::EmptyOperator
        );
    }
}
