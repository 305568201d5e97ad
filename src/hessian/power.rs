//! Top eigenvalues by power iteration with deflation, as in PyHessian's
//! `hessian.eigenvalues(maxIter=100, tol=1e-3, top_n=1)` (Yao et al. 2020,
//! arXiv:1912.07145, Algorithm 1).
//!
//! ```text
//! for i = 1 … top_n:
//!     v ~ N(0, I), v ← v/‖v‖                     (seeded)
//!     repeat up to max_iter times:
//!         v ← v − Σⱼ<ᵢ (vᵀuⱼ) uⱼ,  v ← v/‖v‖     (deflate found eigenvectors)
//!         w = A v,   λ = vᵀ w,   v ← w/‖w‖
//!         stop if |λ − λ_prev| / (|λ_prev| + 1e-6) < tol
//!     uᵢ = v
//! ```
//!
//! Cost: one product per iteration, plus one per eigenpair for the reported Rayleigh
//! quotient and true residual. Power iteration converges like `(|λᵢ₊₁|/|λᵢ|)^t`, so
//! it is slow when the top eigenvalues are close; [`super::lanczos`] needs far fewer
//! products for the same accuracy (see the test `lanczos_needs_far_fewer_applies`).
//!
//! Differences from PyHessian, none of which changes when it stops: after the loop the
//! returned vector is deflated once more (so the vectors are orthonormal), and the
//! reported value is that vector's Rayleigh quotient, computed together with its true
//! residual (PyHessian reports the estimate of the previous iterate; the two differ by
//! about `tol` relative or less). `converged[i]` records whether PyHessian's rule fired.

use ndarray::Array1;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::error::{check_at_least, check_positive, HessianError};
use super::lanczos::{columns, relative_denominator, safe_ratio, EigenReport};
use super::operator::{apply_new, gaussian, norm, LinearOperator};

/// PyHessian's stopping rule divides by `|λ_prev| + 1e-6` so that an eigenvalue near 0
/// does not make the relative change blow up.
pub const PYHESSIAN_STOP_EPS: f64 = 1e-6;

/// PyHessian's default `maxIter`.
pub const DEFAULT_MAX_ITER: usize = 100;

/// PyHessian's default `tol`.
pub const DEFAULT_TOL: f64 = 1e-3;

/// Options of [`power_iteration`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerParams {
    /// Number of eigenvalues (`--top-k`), `1 ≤ top_n ≤ n`.
    pub top_n: usize,
    /// Iterations per eigenvalue (`--max-iter`), at least 1.
    pub max_iter: usize,
    /// Relative change of the estimate that stops an eigenvalue (`--tol`).
    pub tol: f64,
    /// Seed of the start vectors (each eigenvalue draws the next ones).
    pub seed: u64,
    /// Return the eigenvectors.
    pub keep_vectors: bool,
}

impl Default for PowerParams {
    fn default() -> Self {
        PowerParams {
            top_n: 1,
            max_iter: DEFAULT_MAX_ITER,
            tol: DEFAULT_TOL,
            seed: 0,
            keep_vectors: true,
        }
    }
}

impl PowerParams {
    /// Validate against an operator of dimension `dim`.
    pub fn check(&self, dim: usize) -> Result<(), HessianError> {
        if dim == 0 {
            return Err(HessianError::EmptyOperator);
        }
        if self.top_n == 0 || self.top_n > dim {
            return Err(HessianError::TopK { k: self.top_n, dim });
        }
        check_at_least("max_iter", self.max_iter, 1)?;
        check_positive("tol", self.tol)
    }
}

/// Remove the components along the orthonormal `found` once (PyHessian's `orthnormal`),
/// then normalize. A vector entirely inside their span is left unnormalized (zero).
fn deflate(v: &mut Array1<f64>, found: &[Array1<f64>]) {
    for u in found {
        let c = u.dot(v);
        v.scaled_add(-c, u);
    }
    let nv = norm(v.view());
    if nv > 0.0 {
        *v /= nv;
    }
}

/// The `top_n` largest-magnitude eigenpairs by PyHessian's deflated power iteration,
/// in discovery order (largest |λ| first when the iteration converged).
pub fn power_iteration<O: LinearOperator + ?Sized>(
    op: &O,
    params: &PowerParams,
) -> Result<EigenReport, HessianError> {
    let n = op.dim();
    params.check(n)?;
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let mut found: Vec<Array1<f64>> = Vec::with_capacity(params.top_n);
    let mut values = Vec::with_capacity(params.top_n);
    let mut converged = Vec::with_capacity(params.top_n);
    let mut residuals = Vec::with_capacity(params.top_n);
    let mut iterations = 0;
    let mut applies = 0;
    let mut scale = 0.0_f64;

    for _ in 0..params.top_n {
        let mut v = gaussian(&mut rng, n);
        let nv = norm(v.view());
        v /= nv;
        let mut estimate: Option<f64> = None;
        let mut done = false;
        for _ in 0..params.max_iter {
            deflate(&mut v, &found);
            let w = apply_new(op, v.view());
            applies += 1;
            iterations += 1;
            let lambda = v.dot(&w);
            let nw = norm(w.view());
            if nw == 0.0 {
                // v is in the null space: an exact eigenvector for 0.
                done = true;
                break;
            }
            v = w / nw;
            if let Some(prev) = estimate {
                if (prev - lambda).abs() / (prev.abs() + PYHESSIAN_STOP_EPS) < params.tol {
                    done = true;
                    break;
                }
            }
            estimate = Some(lambda);
        }
        deflate(&mut v, &found);
        let mut r = apply_new(op, v.view());
        applies += 1;
        let theta = v.dot(&r);
        r.scaled_add(-theta, &v);
        scale = scale.max(theta.abs());
        residuals.push(safe_ratio(
            norm(r.view()),
            relative_denominator(theta, scale),
        ));
        values.push(theta);
        converged.push(done);
        found.push(v);
    }

    let vectors = params.keep_vectors.then(|| columns(&found, n));
    Ok(EigenReport {
        values,
        vectors,
        residuals,
        converged,
        iterations,
        applies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hessian::lanczos::{top_eigenpairs, LanczosParams};
    use crate::hessian::operator::Counting;
    use crate::hessian::test_util::{assert_rel, dense_with_spectrum};

    #[test]
    fn top3_of_gapped_spectrum() {
        let mut lams: Vec<f64> = (0..120).map(|i| -0.5 + 0.0125 * i as f64).collect();
        lams[3] = 10.0;
        lams[50] = -5.0;
        lams[77] = 2.5;
        let op = dense_with_spectrum(&lams, 21);
        let counting = Counting::new(&op);
        let r = power_iteration(
            &counting,
            &PowerParams {
                top_n: 3,
                max_iter: 1000,
                tol: 1e-6,
                seed: 5,
                keep_vectors: true,
            },
        )
        .unwrap();
        assert!(r.all_converged(), "{r:?}");
        assert_rel(r.values[0], 10.0, 1e-4);
        assert_rel(r.values[1], -5.0, 1e-4);
        assert_rel(r.values[2], 2.5, 1e-4);
        assert_eq!(r.applies, counting.count());
        assert_eq!(r.applies, r.iterations + 3);
        let v = r.vectors.unwrap();
        let gram = v.t().dot(&v);
        for i in 0..3 {
            for j in 0..3 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((gram[[i, j]] - want).abs() < 1e-10);
            }
        }
    }

    #[test]
    fn pyhessian_defaults_stop_early() {
        let lams: Vec<f64> = (0..50).map(|i| 1.0 + i as f64).collect();
        let op = dense_with_spectrum(&lams, 2);
        let r = power_iteration(&op, &PowerParams::default()).unwrap();
        assert_eq!(r.values.len(), 1);
        // close top eigenvalues (50 vs 49): the change rule fires long before the
        // residual is small — this is PyHessian's behaviour, reported honestly.
        assert!(r.converged[0]);
        assert!(r.iterations < DEFAULT_MAX_ITER);
        assert!(r.values[0] > 45.0 && r.values[0] <= 50.0 + 1e-9);
    }

    /// Hessian-like spectrum: five outliers with modest gaps over a bulk near 0.
    fn hessian_like() -> Vec<f64> {
        let mut lams: Vec<f64> = (0..200).map(|i| -0.2 + 0.006 * i as f64).collect();
        for (slot, v) in [20.0, 16.0, 12.5, 10.0, 8.0].into_iter().enumerate() {
            lams[slot * 37 + 1] = v;
        }
        lams
    }

    #[test]
    fn lanczos_needs_far_fewer_applies() {
        let op = dense_with_spectrum(&hessian_like(), 9);
        let target = 1e-3;
        let lz = top_eigenpairs(
            &op,
            &LanczosParams {
                k: 5,
                max_iter: 200,
                tol: target,
                seed: 1,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(lz.all_converged());
        assert!(lz.residuals.iter().all(|&r| r <= target));

        // Power iteration: tighten PyHessian's change rule until every true residual
        // reaches the same target, and count what that costs.
        let mut power_applies = None;
        for tol in [1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10] {
            let pw = power_iteration(
                &op,
                &PowerParams {
                    top_n: 5,
                    max_iter: 2000,
                    tol,
                    seed: 1,
                    keep_vectors: false,
                },
            )
            .unwrap();
            if pw.residuals.iter().all(|&r| r <= target) {
                eprintln!("power iteration reached residual {target:e} with tol {tol:e}");
                power_applies = Some(pw.applies);
                break;
            }
        }
        let power_applies = power_applies.expect("power iteration never reached 1e-3");
        eprintln!("lanczos applies {} vs power {}", lz.applies, power_applies);
        assert!(
            3 * lz.applies <= power_applies,
            "lanczos {} vs power {}",
            lz.applies,
            power_applies
        );
    }

    #[test]
    fn invalid_params_are_errors() {
        let op = dense_with_spectrum(&[1.0, 2.0], 0);
        let e = power_iteration(
            &op,
            &PowerParams {
                top_n: 3,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(e, HessianError::TopK { k: 3, dim: 2 });
        let e = power_iteration(
            &op,
            &PowerParams {
                max_iter: 0,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("`max_iter`"));
        let e = power_iteration(
            &op,
            &PowerParams {
                tol: f64::NAN,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("`tol`"));
    }
}
