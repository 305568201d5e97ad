//! Spectral density by stochastic Lanczos quadrature (Ghorbani, Krishnan, Xiao 2019,
//! arXiv:1901.10159; PyHessian's `hessian.density(iter=100, n_v=1)` and
//! `density_generate`, Yao et al. 2020, arXiv:1912.07145).
//!
//! ```text
//! spectral density   φ(t) = (1/n) Σᵢ δ(t − λᵢ)
//! for each run r:  q = z/‖z‖, z ∈ {±1}ⁿ          (so E[qᵀ f(A) q] = tr f(A) / n)
//!                  m Lanczos steps from q (full reorthogonalization) → T_m = S Θ Sᵀ
//!                  nodes θ_{r,j} = Θ_jj,  weights w_{r,j} = S[0, j]²   (Σⱼ w_{r,j} = 1)
//!                  qᵀ f(A) q ≈ Σⱼ w_{r,j} f(θ_{r,j})   (Gauss quadrature, exact for
//!                                                        polynomials of degree ≤ 2m−1)
//! density on a grid (PyHessian's density_generate):
//!     λ_max = mean_r max_j θ_{r,j} + overhead,   λ_min = mean_r min_j θ_{r,j} − overhead
//!     grid  = linspace(λ_min, λ_max, N)
//!     s²    = sigma_squared · max(1, λ_max − λ_min)      (kernel *variance*)
//!     φ(x)  = mean_r Σⱼ w_{r,j} · exp(−(x − θ_{r,j})² / 2s²) / √(2π s²)
//!     φ    ← φ / (Σ_grid φ · Δx)                          (sums to 1 on the grid)
//! ```
//!
//! Cost: `runs × steps` products (fewer if a run hits an invariant subspace); the grid
//! costs `N × runs × steps` kernel evaluations and no products.
//!
//! PyHessian's `overhead` is an absolute padding of 0.01 (not 1% of the range), and its
//! `sigma` is used as the Gaussian's variance; both are reproduced as is.

use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::error::{check_at_least, check_count, check_positive, HessianError};
use super::lanczos::Krylov;
use super::operator::{rademacher, LinearOperator};

/// PyHessian's default number of Lanczos steps (`iter=100`).
pub const DEFAULT_STEPS: usize = 100;

/// PyHessian's default number of random start vectors (`n_v=1`).
pub const DEFAULT_RUNS: usize = 1;

/// PyHessian's `density_generate(num_bins=10000)`.
pub const DEFAULT_GRID_POINTS: usize = 10_000;

/// PyHessian's `density_generate(sigma_squared=1e-5)`: kernel variance per unit of
/// spectral range (ranges below 1 count as 1).
pub const DEFAULT_SIGMA_SQUARED: f64 = 1e-5;

/// PyHessian's `density_generate(overhead=0.01)`: absolute padding of the grid.
pub const DEFAULT_OVERHEAD: f64 = 0.01;

/// Options of [`slq`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlqParams {
    /// Independent start vectors (`--slq-runs`), at least 1.
    pub runs: usize,
    /// Lanczos steps per run (`--slq-steps`), between 1 and n.
    pub steps: usize,
    /// Seed of the start vectors.
    pub seed: u64,
}

impl Default for SlqParams {
    fn default() -> Self {
        SlqParams {
            runs: DEFAULT_RUNS,
            steps: DEFAULT_STEPS,
            seed: 0,
        }
    }
}

impl SlqParams {
    /// Validate against an operator of dimension `dim`.
    pub fn check(&self, dim: usize) -> Result<(), HessianError> {
        if dim == 0 {
            return Err(HessianError::EmptyOperator);
        }
        check_at_least("slq_runs", self.runs, 1)?;
        check_count("slq_steps", self.steps, 1, dim)
    }
}

/// Quadrature nodes and weights of every run.
#[derive(Debug, Clone, Serialize)]
pub struct SlqReport {
    /// Ritz values, `runs × steps`, ascending within a run.
    pub nodes: Array2<f64>,
    /// Squared first components of T's eigenvectors, `runs × steps`; each row sums to 1.
    pub weights: Array2<f64>,
    /// Lanczos steps each run took: fewer than `steps` when its Krylov space became
    /// invariant (the quadrature is then exact); the missing columns hold the run's
    /// largest node with weight 0.
    pub steps_taken: Vec<usize>,
    /// Operator products used.
    pub applies: usize,
}

impl SlqReport {
    /// `Σⱼ w_{r,j} θ_{r,j}^p` averaged over runs: an estimate of `tr(Aᵖ)/n`.
    pub fn moment(&self, p: i32) -> f64 {
        let runs = self.nodes.nrows() as f64;
        let total: f64 = self
            .nodes
            .iter()
            .zip(self.weights.iter())
            .map(|(t, w)| w * t.powi(p))
            .sum();
        total / runs
    }
}

/// Stochastic Lanczos quadrature with Rademacher start vectors.
pub fn slq<O: LinearOperator + ?Sized>(
    op: &O,
    params: &SlqParams,
) -> Result<SlqReport, HessianError> {
    let n = op.dim();
    params.check(n)?;
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let mut nodes = Array2::zeros((params.runs, params.steps));
    let mut weights = Array2::zeros((params.runs, params.steps));
    let mut steps_taken = Vec::with_capacity(params.runs);
    let mut applies = 0;

    for r in 0..params.runs {
        let q = rademacher(&mut rng, n) / (n as f64).sqrt();
        let mut kry = Krylov::new(q);
        for _ in 0..params.steps {
            applies += 1;
            if kry.step(op) {
                break;
            }
        }
        let m = kry.steps();
        let (theta, s) = kry.ritz()?;
        for j in 0..params.steps {
            if j < m {
                nodes[[r, j]] = theta[j];
                weights[[r, j]] = s[[0, j]].powi(2);
            } else {
                nodes[[r, j]] = theta[m - 1];
            }
        }
        steps_taken.push(m);
    }

    Ok(SlqReport {
        nodes,
        weights,
        steps_taken,
        applies,
    })
}

/// Options of [`density_on_grid`]; the defaults are PyHessian's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DensityParams {
    /// Grid points (`--grid-points`), at least 2.
    pub grid_points: usize,
    /// Kernel variance per unit of range (`--sigma-squared`).
    pub sigma_squared: f64,
    /// Absolute padding on both ends of the grid.
    pub overhead: f64,
}

impl Default for DensityParams {
    fn default() -> Self {
        DensityParams {
            grid_points: DEFAULT_GRID_POINTS,
            sigma_squared: DEFAULT_SIGMA_SQUARED,
            overhead: DEFAULT_OVERHEAD,
        }
    }
}

impl DensityParams {
    /// Validate.
    pub fn check(&self) -> Result<(), HessianError> {
        check_at_least("grid_points", self.grid_points, 2)?;
        check_positive("sigma_squared", self.sigma_squared)?;
        if !(self.overhead.is_finite() && self.overhead >= 0.0) {
            return Err(HessianError::Overhead {
                value: self.overhead,
            });
        }
        Ok(())
    }
}

/// Gaussian-smoothed spectral density on a grid, as PyHessian's `density_generate`:
/// returns `(grid, density)` with `Σ density · Δx = 1`.
pub fn density_on_grid(
    report: &SlqReport,
    params: &DensityParams,
) -> Result<(Vec<f64>, Vec<f64>), HessianError> {
    params.check()?;
    let runs = report.nodes.nrows();
    if runs == 0 || report.nodes.ncols() == 0 {
        return Err(HessianError::NoNodes);
    }
    let row_max = |r: usize| {
        report
            .nodes
            .row(r)
            .iter()
            .fold(f64::NEG_INFINITY, |a, &b| a.max(b))
    };
    let row_min = |r: usize| {
        report
            .nodes
            .row(r)
            .iter()
            .fold(f64::INFINITY, |a, &b| a.min(b))
    };
    let lambda_max = (0..runs).map(row_max).sum::<f64>() / runs as f64 + params.overhead;
    let lambda_min = (0..runs).map(row_min).sum::<f64>() / runs as f64 - params.overhead;
    let range = lambda_max - lambda_min;
    if range.is_nan() || range <= 0.0 {
        return Err(HessianError::EmptyGrid { value: lambda_min });
    }
    let npts = params.grid_points;
    let dx = range / (npts - 1) as f64;
    let grid: Vec<f64> = (0..npts)
        .map(|j| {
            if j + 1 == npts {
                lambda_max
            } else {
                lambda_min + j as f64 * dx
            }
        })
        .collect();
    let var = params.sigma_squared * range.max(1.0);
    let norm_const = 1.0 / (2.0 * std::f64::consts::PI * var).sqrt();
    let pairs: Vec<(f64, f64)> = report
        .nodes
        .iter()
        .zip(report.weights.iter())
        .filter(|(_, &w)| w > 0.0)
        .map(|(&t, &w)| (t, w))
        .collect();
    let mut density: Vec<f64> = grid
        .par_iter()
        .map(|&x| {
            pairs
                .iter()
                .map(|&(t, w)| w * (-(x - t).powi(2) / (2.0 * var)).exp())
                .sum::<f64>()
                * norm_const
                / runs as f64
        })
        .collect();
    let total = density.iter().sum::<f64>() * dx;
    if !(total.is_finite() && total > 0.0) {
        return Err(HessianError::TooCoarse {
            grid_points: npts,
            variance: var,
            lambda_min,
            lambda_max,
        });
    }
    density.iter_mut().for_each(|d| *d /= total);
    Ok((grid, density))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hessian::operator::Counting;
    use crate::hessian::test_util::dense_with_spectrum;

    #[test]
    fn weights_sum_to_one_and_moments_match_traces() {
        let n = 150;
        let lams: Vec<f64> = (0..n)
            .map(|i| ((i as f64) * 0.61).cos() * 2.0 + 0.3)
            .collect();
        let op = dense_with_spectrum(&lams, 17);
        let runs = 40;
        let counting = Counting::new(&op);
        let rep = slq(
            &counting,
            &SlqParams {
                runs,
                steps: 20,
                seed: 4,
            },
        )
        .unwrap();
        assert_eq!(rep.applies, runs * 20);
        assert_eq!(counting.count(), rep.applies);
        assert_eq!(rep.nodes.dim(), (runs, 20));
        for row in rep.weights.rows() {
            assert!((row.sum() - 1.0).abs() < 1e-12);
        }
        for p in 0..=3 {
            let exact: f64 = lams.iter().map(|l| l.powi(p)).sum::<f64>() / n as f64;
            // ‖Aᵖ‖_F = √Σ λ^{2p}; Var[zᵀAᵖz] ≤ 2‖Aᵖ‖_F², and q = z/√n.
            let frob: f64 = lams.iter().map(|l| l.powi(2 * p)).sum::<f64>().sqrt();
            let bound = 4.0 * (2.0f64).sqrt() * frob / (n as f64 * (runs as f64).sqrt());
            let got = rep.moment(p);
            assert!(
                (got - exact).abs() <= bound + 1e-12,
                "p={p}: got {got}, exact {exact}, bound {bound}"
            );
        }
        assert!((rep.moment(0) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn invariant_subspace_gives_exact_quadrature() {
        // three distinct eigenvalues: the Krylov space has dimension 3
        let lams: Vec<f64> = (0..30).map(|i| [1.0, 4.0, -2.0][i % 3]).collect();
        let op = dense_with_spectrum(&lams, 5);
        let rep = slq(
            &op,
            &SlqParams {
                runs: 2,
                steps: 10,
                seed: 0,
            },
        )
        .unwrap();
        assert_eq!(rep.steps_taken, vec![3, 3]);
        assert!(rep.applies <= 2 * 4);
        for r in 0..2 {
            let row = rep.nodes.row(r);
            assert!((row[0] + 2.0).abs() < 1e-10);
            assert!((row[1] - 1.0).abs() < 1e-10);
            assert!((row[2] - 4.0).abs() < 1e-10);
            assert!(rep.weights.row(r).iter().skip(3).all(|&w| w == 0.0));
            assert!((rep.weights.row(r).sum() - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn density_integrates_to_one_and_finds_the_clusters() {
        let n = 120;
        let lams: Vec<f64> = (0..n)
            .map(|i| {
                if i % 2 == 0 {
                    0.01 * (i as f64 / n as f64)
                } else {
                    10.0
                }
            })
            .collect();
        let op = dense_with_spectrum(&lams, 7);
        let rep = slq(
            &op,
            &SlqParams {
                runs: 8,
                steps: 40,
                seed: 1,
            },
        )
        .unwrap();
        let (grid, density) = density_on_grid(&rep, &DensityParams::default()).unwrap();
        assert_eq!(grid.len(), DEFAULT_GRID_POINTS);
        let dx = grid[1] - grid[0];
        let riemann: f64 = density.iter().sum::<f64>() * dx;
        assert!((riemann - 1.0).abs() < 1e-12);
        // The trapezoid rule drops half of the end points; with PyHessian's padding of
        // 0.01 ≈ one kernel width the edge density is not negligible, hence 2%.
        let trapezoid: f64 = density.windows(2).map(|w| 0.5 * (w[0] + w[1]) * dx).sum();
        assert!((trapezoid - 1.0).abs() < 2e-2, "trapezoid {trapezoid}");
        assert!(density.iter().all(|d| d.is_finite() && *d >= 0.0));
        // PyHessian's grid: mean extreme nodes padded by 0.01
        assert!(grid[0] < 0.0 && grid[0] > -0.02);
        assert!((grid[grid.len() - 1] - 10.01).abs() < 1e-6);
        let mass = |lo: f64, hi: f64| -> f64 {
            grid.iter()
                .zip(&density)
                .filter(|(x, _)| **x >= lo && **x <= hi)
                .map(|(_, d)| d * dx)
                .sum()
        };
        let low = mass(-0.5, 0.5);
        let high = mass(9.5, 10.5);
        assert!((low - 0.5).abs() < 0.2, "low mass {low}");
        assert!((high - 0.5).abs() < 0.2, "high mass {high}");
        assert!((low + high - 1.0).abs() < 1e-6);
    }

    #[test]
    fn invalid_params_are_errors() {
        let op = dense_with_spectrum(&[1.0, 2.0, 3.0], 0);
        let e = slq(
            &op,
            &SlqParams {
                runs: 0,
                steps: 2,
                seed: 0,
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("`slq_runs`"), "{e}");
        let e = slq(
            &op,
            &SlqParams {
                runs: 1,
                steps: 0,
                seed: 0,
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("`slq_steps`"), "{e}");
        let e = slq(
            &op,
            &SlqParams {
                runs: 1,
                steps: 4,
                seed: 0,
            },
        )
        .unwrap_err();
        assert_eq!(
            e,
            HessianError::Count {
                field: "slq_steps",
                value: 4,
                min: 1,
                max: 3
            }
        );
        let rep = slq(
            &op,
            &SlqParams {
                runs: 1,
                steps: 3,
                seed: 0,
            },
        )
        .unwrap();
        let e = density_on_grid(
            &rep,
            &DensityParams {
                grid_points: 1,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("`grid_points`"), "{e}");
        let e = density_on_grid(
            &rep,
            &DensityParams {
                sigma_squared: 0.0,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("`sigma_squared`"), "{e}");
    }
}
