//! Stochastic trace estimation: Hutchinson (Hutchinson 1990; PyHessian's
//! `hessian.trace()`) and Hutch++ (Meyer, Musco, Musco, Woodruff 2021, "Hutch++:
//! Optimal Stochastic Trace Estimation", SOSA).
//!
//! ```text
//! Hutchinson:  z ∈ {±1}ⁿ uniform  ⇒  E[zᵀAz] = tr(A),  Var[zᵀAz] = 2(‖A‖_F² − Σᵢ Aᵢᵢ²)
//!              estimate = mean of p samples zⱼᵀAzⱼ,   stderr = sample std / √p
//!              optional early stop: stderr / |estimate| < tol once p ≥ min_probes
//!
//! Hutch++ (budget m):  k = ⌊m/3⌋ sketch columns, ℓ = m − 2k residual probes
//!              S ∈ {±1}ⁿˣᵏ,   Q = orth(A S)                     (k products, QR)
//!              t₁ = tr(QᵀAQ)                                   (k products)
//!              G ∈ {±1}ⁿˣˡ,   G' = (I − QQᵀ) G
//!              t₂ = (1/ℓ) Σⱼ g'ⱼᵀ A g'ⱼ                         (ℓ products)
//!              estimate = t₁ + t₂,   stderr = sample std of g'ⱼᵀAg'ⱼ / √ℓ
//! ```
//!
//! Cost: Hutchinson one product per probe; Hutch++ exactly `m` products. For ℓ = k
//! this is the paper's `tr(QᵀAQ) + (3/m)·tr(Gᵀ(I−QQᵀ)A(I−QQᵀ)G)`. Hutch++ removes the
//! top of the spectrum exactly, so its error is `O(1/m)` instead of `O(1/√m)` when the
//! spectrum decays (Hessians: a few outliers over a bulk).
//!
//! PyHessian stops its Hutchinson loop when the running mean changes by less than
//! `tol` relative; here the stop uses the standard error, which does not fire by chance
//! on two nearby samples.

use ndarray::{Array1, Array2};
use ndarray_linalg::QR;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::error::{check_at_least, check_count, check_positive, HessianError};
use super::operator::{apply_new, rademacher, LinearOperator};

/// PyHessian's default `maxIter` for the trace.
pub const DEFAULT_PROBES: usize = 100;

/// Probes before the early stop may fire: the sample standard deviation of fewer
/// Rademacher quadratic forms is too noisy to trust.
pub const DEFAULT_MIN_PROBES: usize = 10;

/// The smallest Hutch++ budget: one sketch column, one product for tr(QᵀAQ), one probe.
pub const HUTCHPP_MIN_BUDGET: usize = 3;

/// Options of [`hutchinson`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceParams {
    /// Maximum number of probes (`--probes`), at least 1.
    pub probes: usize,
    /// Probes before the early stop is considered (`--min-probes`), `2 ≤ min ≤ probes`
    /// when `tol` is set.
    pub min_probes: usize,
    /// Stop when `stderr/|estimate| < tol` (`--trace-tol`); `None` runs all probes.
    pub tol: Option<f64>,
    /// Seed of the probes.
    pub seed: u64,
}

impl Default for TraceParams {
    fn default() -> Self {
        TraceParams {
            probes: DEFAULT_PROBES,
            min_probes: DEFAULT_MIN_PROBES,
            tol: None,
            seed: 0,
        }
    }
}

impl TraceParams {
    /// Validate against an operator of dimension `dim`.
    pub fn check(&self, dim: usize) -> Result<(), HessianError> {
        if dim == 0 {
            return Err(HessianError::EmptyOperator);
        }
        check_at_least("probes", self.probes, 1)?;
        if let Some(tol) = self.tol {
            check_positive("trace_tol", tol)?;
            check_count("min_probes", self.min_probes, 2, self.probes)?;
        }
        Ok(())
    }
}

/// Options of [`hutchpp`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HutchppParams {
    /// Total products `m` (`--probes`), at least 3.
    pub budget: usize,
    /// Seed of the sketch and the probes.
    pub seed: u64,
}

impl Default for HutchppParams {
    fn default() -> Self {
        HutchppParams {
            budget: DEFAULT_PROBES,
            seed: 0,
        }
    }
}

impl HutchppParams {
    /// Validate against an operator of dimension `dim`.
    pub fn check(&self, dim: usize) -> Result<(), HessianError> {
        if dim == 0 {
            return Err(HessianError::EmptyOperator);
        }
        check_at_least("probes", self.budget, HUTCHPP_MIN_BUDGET)
    }
}

/// A trace estimate with its uncertainty.
#[derive(Debug, Clone, Serialize)]
pub struct TraceReport {
    /// Estimate of `tr(A)`.
    pub estimate: f64,
    /// Standard error of the stochastic part (NaN with a single probe).
    pub stderr: f64,
    /// Random probes whose quadratic forms were averaged.
    pub probes: usize,
    /// The quadratic forms (Hutchinson: `zᵀAz`; Hutch++: `g'ᵀAg'`).
    pub samples: Vec<f64>,
    /// Hutch++: the exactly computed `tr(QᵀAQ)`; 0 for Hutchinson.
    pub low_rank_trace: f64,
    /// Operator products used.
    pub applies: usize,
}

/// Mean and standard error of the mean (NaN for fewer than two samples).
fn mean_stderr(xs: &[f64]) -> (f64, f64) {
    let p = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / p;
    if xs.len() < 2 {
        return (mean, f64::NAN);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (p - 1.0);
    (mean, (var / p).sqrt())
}

/// Hutchinson's estimator with Rademacher probes.
pub fn hutchinson<O: LinearOperator + ?Sized>(
    op: &O,
    params: &TraceParams,
) -> Result<TraceReport, HessianError> {
    let n = op.dim();
    params.check(n)?;
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let mut samples = Vec::with_capacity(params.probes);
    for _ in 0..params.probes {
        let z = rademacher(&mut rng, n);
        let az = apply_new(op, z.view());
        samples.push(z.dot(&az));
        if let Some(tol) = params.tol {
            if samples.len() >= params.min_probes {
                let (mean, se) = mean_stderr(&samples);
                if se < tol * mean.abs() {
                    break;
                }
            }
        }
    }
    let (estimate, stderr) = mean_stderr(&samples);
    Ok(TraceReport {
        estimate,
        stderr,
        probes: samples.len(),
        applies: samples.len(),
        samples,
        low_rank_trace: 0.0,
    })
}

/// Hutch++ with exactly `budget` products.
pub fn hutchpp<O: LinearOperator + ?Sized>(
    op: &O,
    params: &HutchppParams,
) -> Result<TraceReport, HessianError> {
    let n = op.dim();
    params.check(n)?;
    let m = params.budget;
    let k = (m / 3).min(n);
    let l = m - 2 * k;
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);

    let mut y = Array2::zeros((n, k));
    for mut col in y.columns_mut() {
        let s = rademacher(&mut rng, n);
        op.apply(s.view(), col.view_mut());
    }
    let (q, _) = y
        .qr()
        .map_err(|e| HessianError::linalg("the Hutch++ sketch QR", e))?;
    let low_rank_trace: f64 = q
        .columns()
        .into_iter()
        .map(|qi| qi.dot(&apply_new(op, qi)))
        .sum();

    let mut samples = Vec::with_capacity(l);
    for _ in 0..l {
        let mut g: Array1<f64> = rademacher(&mut rng, n);
        let coeffs = q.t().dot(&g);
        g -= &q.dot(&coeffs);
        let ag = apply_new(op, g.view());
        samples.push(g.dot(&ag));
    }
    let (residual_mean, stderr) = mean_stderr(&samples);
    Ok(TraceReport {
        estimate: low_rank_trace + residual_mean,
        stderr,
        probes: l,
        samples,
        low_rank_trace,
        applies: 2 * k + l,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hessian::operator::Counting;
    use crate::hessian::test_util::{assert_rel, dense_with_spectrum};

    fn mean_var(xs: &[f64]) -> (f64, f64) {
        let p = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / p;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (p - 1.0);
        (mean, var)
    }

    #[test]
    fn hutchinson_is_unbiased() {
        let lams: Vec<f64> = (0..60)
            .map(|i| (i as f64 * 0.37).sin() * 3.0 + 0.5)
            .collect();
        let truth: f64 = lams.iter().sum();
        let op = dense_with_spectrum(&lams, 8);
        let estimates: Vec<f64> = (0..200)
            .map(|seed| {
                let r = hutchinson(
                    &op,
                    &TraceParams {
                        probes: 5,
                        seed,
                        ..Default::default()
                    },
                )
                .unwrap();
                assert_eq!(r.applies, 5);
                assert_eq!(r.samples.len(), 5);
                r.estimate
            })
            .collect();
        let (mean, var) = mean_var(&estimates);
        let se = (var / 200.0).sqrt();
        assert!(
            (mean - truth).abs() < 3.0 * se,
            "mean {mean} truth {truth} se {se}"
        );
    }

    #[test]
    fn hutchinson_early_stop_and_stderr() {
        let lams: Vec<f64> = (0..80).map(|i| 1.0 + 0.05 * i as f64).collect();
        let op = dense_with_spectrum(&lams, 1);
        let counting = Counting::new(&op);
        let r = hutchinson(
            &counting,
            &TraceParams {
                probes: 100_000,
                min_probes: 10,
                tol: Some(0.01),
                seed: 3,
            },
        )
        .unwrap();
        assert!(r.probes >= 10 && r.probes < 100_000);
        assert_eq!(counting.count(), r.probes);
        assert!(r.stderr < 0.01 * r.estimate.abs());
        let truth: f64 = lams.iter().sum();
        assert!((r.estimate - truth).abs() < 5.0 * r.stderr.max(1e-12));
    }

    #[test]
    fn hutchpp_beats_hutchinson_on_decaying_spectrum() {
        let n = 100;
        let lams: Vec<f64> = (1..=n).map(|i| 1.0 / (i as f64).powi(2)).collect();
        let truth: f64 = lams.iter().sum();
        let op = dense_with_spectrum(&lams, 13);
        let m = 30;
        let mut h = Vec::new();
        let mut hpp = Vec::new();
        for seed in 0..60 {
            let a = hutchinson(
                &op,
                &TraceParams {
                    probes: m,
                    seed,
                    ..Default::default()
                },
            )
            .unwrap();
            let counting = Counting::new(&op);
            let b = hutchpp(&counting, &HutchppParams { budget: m, seed }).unwrap();
            assert_eq!(a.applies, m);
            assert_eq!(b.applies, m);
            assert_eq!(counting.count(), m);
            h.push(a.estimate);
            hpp.push(b.estimate);
        }
        let (mh, vh) = mean_var(&h);
        let (mpp, vpp) = mean_var(&hpp);
        eprintln!("hutchinson var {vh:e}, hutch++ var {vpp:e}");
        assert!(100.0 * vpp < vh, "hutch++ var {vpp} vs hutchinson {vh}");
        assert!((mh - truth).abs() < 4.0 * (vh / 60.0).sqrt());
        assert!((mpp - truth).abs() < 4.0 * (vpp / 60.0).sqrt() + 1e-12);
    }

    #[test]
    fn hutchpp_is_exact_when_the_sketch_spans_everything() {
        let lams = [3.0, -1.0, 0.5, 2.0, 7.0];
        let op = dense_with_spectrum(&lams, 2);
        let r = hutchpp(
            &op,
            &HutchppParams {
                budget: 16,
                seed: 0,
            },
        )
        .unwrap();
        assert_rel(r.estimate, lams.iter().sum(), 1e-10);
        assert_eq!(r.applies, 16);
        assert_eq!(r.probes, 6);
    }

    #[test]
    fn invalid_params_are_errors() {
        let op = dense_with_spectrum(&[1.0, 2.0], 0);
        let e = hutchinson(
            &op,
            &TraceParams {
                probes: 0,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("`probes`"), "{e}");
        let e = hutchinson(
            &op,
            &TraceParams {
                tol: Some(-1.0),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("`trace_tol`"), "{e}");
        let e = hutchinson(
            &op,
            &TraceParams {
                probes: 5,
                min_probes: 6,
                tol: Some(0.1),
                seed: 0,
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("`min_probes`"), "{e}");
        let e = hutchpp(&op, &HutchppParams { budget: 2, seed: 0 }).unwrap_err();
        assert!(e.to_string().contains("at least 3"), "{e}");
    }
}
