//! Sharpness at a point of the loss landscape: ε-sharpness (Keskar et al. 2017) and the
//! effective β-smoothness along the gradient (Santurkar et al. 2018).
//!
//! Both need only the loss and its gradient, so they are written against the small
//! [`LossGradient`] trait: [`ObjectiveOracle`] implements it for a network over a dataset
//! (f32 or f64), and tests implement it for analytic functions with known answers.
//!
//! # ε-sharpness
//! Keskar, Mudigere, Nocedal, Smelyanskiy, Tang, "On Large-Batch Training for Deep
//! Learning: Generalization Gap and Sharp Minima", ICLR 2017, arXiv:1609.04836, Metric 2.1
//! (with A = I, the full space):
//! ```text
//! C_ε = { y : |y_i| ≤ ε (|θ_i| + 1) }          (a box, scaled per coordinate)
//! φ_ε = 100 · (max_{y ∈ C_ε} L(θ + y) − L(θ)) / (1 + L(θ))
//! ```
//! Keskar et al. solve the inner maximum with L-BFGS-B. We use **projected sign-gradient
//! ascent** (the L∞ "PGD" of Madry et al. 2018, arXiv:1706.06083), from y₀ = 0:
//! ```text
//! w_i     = ε (|θ_i| + 1) · m_i                  (half-width; m = 0/1 mask of perturbed scalars)
//! y_{k+1} = clip( y_k + α · w ⊙ sign(∇L(θ + y_k)),  −w, w )      k = 0 … iters−1
//! ```
//! with sign(0) = 0 and α the step as a fraction of the half-width (default 0.25, so a
//! coordinate can cross from the centre to a face in 4 steps and the rest refine).
//! Why not L-BFGS-B or plain projected gradient ascent: w ⊙ sign(g) is the steepest-ascent
//! step for the box's own (scaled L∞) norm, so the step needs no tuning to the gradient's
//! magnitude, which differs by orders of magnitude between models and between layers; it
//! has no line search, costs exactly one gradient per step, and every step is reproduced
//! bit for bit by a few lines of PyTorch (`fixtures/generate/make_sharpness_reference.py`).
//! For a separable convex function (a diagonal quadratic) it reaches the exact box
//! maximum: from the centre of a symmetric interval it moves away from the 1-D minimizer,
//! i.e. towards the farther face, where a convex function is largest. The reported maximum
//! is the **largest loss seen** over every iterate (y₀ and the final y included), not
//! the last one: sign steps can overshoot an interior maximum. Like any gradient method
//! started at y₀ = 0 (L-BFGS-B included), a coordinate whose partial derivative is exactly
//! 0 along the path never moves (θ exactly stationary in it, or a dead ReLU unit), so the
//! result is a lower bound of the true maximum. Optional random starts (y₀ uniform in the
//! box, ChaCha8 seeded) run the same ascent; the best over all starts counts.
//!
//! # β-smoothness along the gradient
//! Santurkar, Tsipras, Ilyas, Madry, "How Does Batch Normalization Help Optimization?",
//! NeurIPS 2018, arXiv:1805.11604, Fig. 4 ("effective β-smoothness", "gradient
//! predictiveness", "loss landscape"): with g = ∇L(θ) and step sizes η,
//! ```text
//! β(η)          = ‖∇L(θ − η g) − g‖ / ‖η g‖
//! predictive(η) = ‖∇L(θ − η g) − g‖
//! β_eff         = max_η β(η)            loss range = max_η L(θ − η g) − min_η L(θ − η g)
//! ```
//! Santurkar et al. measure this during training over the step sizes of the run's own
//! learning-rate range; at a trained point with no optimizer we default to η log-spaced
//! over 1e-3 … 1 (half-decade steps, [`DEFAULT_ETAS`]). For a quadratic, β(η) = ‖Hg‖/‖g‖
//! for every η.
//!
//! # Parameters perturbed
//! A 0/1 mask selects the scalars that are perturbed (and whose gradient counts): by
//! default the weights only (conv/linear tensors with ≥ 2 dimensions), the same set that
//! loss-landscape perturbs with `ignore=biasbn`; [`PerturbedParams::Trainable`] adds
//! biases and BN γ/β. BN running statistics are never perturbed.
//!
//! # Cost and determinism
//! ε-sharpness: `iters` gradients + 1 loss per start. β-smoothness: 1 + |η| gradients.
//! The steps are sequential and the [`crate::objective::Objective`] reductions are
//! deterministic, so the same seed gives the same bits for any thread count.

use ndarray::{Array1, ArrayView1, Zip};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::engine::{Layout, Role};
use crate::objective::Objective;

/// Keskar et al.'s box size (their Table/Fig. values use ε = 1e-3 and 5e-4).
pub const DEFAULT_EPS: f64 = 1e-3;
/// Ascent steps: with the default step of a quarter box a face is reached in 4 steps,
/// leaving 16 to refine (Keskar et al. cap L-BFGS-B at 10 iterations; sign steps are
/// cheaper per iteration, so we allow more).
pub const DEFAULT_ITERS: usize = 20;
/// Step of the sign ascent as a fraction of the box half-width (see the module doc).
pub const DEFAULT_STEP: f64 = 0.25;
/// Step sizes η of the β-smoothness scan: 10^(−3), 10^(−2.5), …, 10^0.
pub const DEFAULT_ETAS: [f64; 7] = [
    1e-3,
    3.162_277_660_168_379_4e-3,
    1e-2,
    3.162_277_660_168_379e-2,
    1e-1,
    3.162_277_660_168_379_4e-1,
    1.0,
];

/// Invalid sharpness options. Messages name the config field (see [`crate::error`]).
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum SharpnessError {
    /// Occurs when ε is not a finite number > 0.
    #[error("`eps` must be a finite number > 0, got {0}")]
    Eps(f64),
    /// Occurs when the ascent is asked for zero steps.
    #[error("`iters` must be at least 1")]
    Iters,
    /// Occurs when the step fraction is not in (0, 2].
    #[error("`step` must be a fraction of the box in (0, 2], got {0}")]
    Step(f64),
    /// Occurs when the list of step sizes is empty.
    #[error("`etas`: give at least one step size")]
    EmptyEtas,
    /// Occurs when a step size is not a finite number > 0.
    #[error("`etas`: every step size must be a finite number > 0, got {0}")]
    Eta(f64),
    /// Occurs when the mask selects no scalar.
    #[error("`params`: no parameter is selected for perturbation")]
    EmptyMask,
    /// Occurs when θ, the mask and the oracle disagree in length.
    #[error("length mismatch: θ has {theta}, mask {mask}, oracle {oracle}")]
    Length {
        theta: usize,
        mask: usize,
        oracle: usize,
    },
}

/// A differentiable function θ ↦ L(θ) (f64 interface, whatever precision inside).
pub trait LossGradient {
    /// Number of scalars in θ.
    fn dim(&self) -> usize;
    /// L(θ).
    fn loss(&self, theta: ArrayView1<f64>) -> f64;
    /// (L(θ), ∇L(θ)).
    fn loss_grad(&self, theta: ArrayView1<f64>) -> (f64, Array1<f64>);
}

/// A network over a dataset as a [`LossGradient`]: per-sample mean loss and its gradient
/// (zero on running statistics), computed in f32 (θ rounded to f32, results widened) or f64.
pub struct ObjectiveOracle<'o, 'a> {
    pub objective: &'o Objective<'a>,
    pub double_precision: bool,
}

impl LossGradient for ObjectiveOracle<'_, '_> {
    fn dim(&self) -> usize {
        self.objective.graph().layout.len()
    }
    fn loss(&self, theta: ArrayView1<f64>) -> f64 {
        if self.double_precision {
            self.objective.evaluate(theta).loss
        } else {
            let t = theta.mapv(|v| v as f32);
            self.objective.evaluate(t.view()).loss
        }
    }
    fn loss_grad(&self, theta: ArrayView1<f64>) -> (f64, Array1<f64>) {
        if self.double_precision {
            let (e, g) = self.objective.gradient(theta);
            (e.loss, g)
        } else {
            let t = theta.mapv(|v| v as f32);
            let (e, g) = self.objective.gradient(t.view());
            (e.loss, g.mapv(f64::from))
        }
    }
}

/// Which tensors are perturbed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PerturbedParams {
    /// Conv and linear weights only (loss-landscape's `ignore=biasbn`).
    #[default]
    Weights,
    /// Every trainable tensor: weights, biases, BN γ/β.
    Trainable,
}

impl PerturbedParams {
    /// The 0/1 mask over all scalars of `layout` (always 0 on running statistics).
    pub fn mask(self, layout: &Layout) -> Array1<f64> {
        layout.mask(|t| match self {
            PerturbedParams::Weights => t.role == Role::Weight,
            PerturbedParams::Trainable => t.role.is_trainable(),
        })
    }
}

/// Options of the ε-sharpness ascent.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EpsParams {
    /// Box size ε (relative: half-width ε(|θ_i|+1)).
    pub eps: f64,
    /// Ascent steps (gradients) per start.
    pub iters: usize,
    /// Step as a fraction of the half-width.
    pub step: f64,
    /// Random starts in addition to the start at y = 0.
    pub random_starts: usize,
    /// Seed of the random starts.
    pub seed: u64,
}

impl Default for EpsParams {
    fn default() -> Self {
        Self {
            eps: DEFAULT_EPS,
            iters: DEFAULT_ITERS,
            step: DEFAULT_STEP,
            random_starts: 0,
            seed: 0,
        }
    }
}

impl EpsParams {
    pub fn check(&self) -> Result<(), SharpnessError> {
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(SharpnessError::Eps(self.eps));
        }
        if self.iters == 0 {
            return Err(SharpnessError::Iters);
        }
        if !(self.step.is_finite() && self.step > 0.0 && self.step <= 2.0) {
            return Err(SharpnessError::Step(self.step));
        }
        Ok(())
    }
}

/// Result of [`eps_sharpness`].
#[derive(Clone, Debug, Serialize)]
pub struct EpsReport {
    pub params: EpsParams,
    /// L(θ).
    pub loss: f64,
    /// Largest L(θ + y) seen over all iterates of all starts.
    pub max_loss: f64,
    /// φ_ε = 100 (max_loss − loss) / (1 + loss).
    pub sharpness: f64,
    /// Start (0 = from y = 0) and iterate (0 = the start itself) where max_loss was seen.
    pub best_start: usize,
    pub best_iteration: usize,
    /// Share of perturbed scalars on a face of the box at the best iterate.
    pub at_bound_fraction: f64,
    /// Number of perturbed scalars.
    pub perturbed: usize,
    /// L(θ + y_k), k = 0 … iters, for each start.
    pub traces: Vec<Vec<f64>>,
    pub gradients: usize,
    pub losses: usize,
}

/// sign(x) with sign(0) = 0 (f64::signum gives ±1 for ±0), as torch.sign.
fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

fn check_lengths(
    f: &dyn LossGradient,
    theta: ArrayView1<f64>,
    mask: ArrayView1<f64>,
) -> Result<usize, SharpnessError> {
    if theta.len() != mask.len() || theta.len() != f.dim() {
        return Err(SharpnessError::Length {
            theta: theta.len(),
            mask: mask.len(),
            oracle: f.dim(),
        });
    }
    let perturbed = mask.iter().filter(|&&m| m != 0.0).count();
    if perturbed == 0 {
        return Err(SharpnessError::EmptyMask);
    }
    Ok(perturbed)
}

/// ε-sharpness of `f` at θ by projected sign-gradient ascent (see the module doc).
///
/// Cost: (1 + random_starts) × (iters gradients + 1 loss).
///
/// # Errors
/// Invalid [`EpsParams`], a mask selecting nothing, or mismatched lengths.
pub fn eps_sharpness(
    f: &dyn LossGradient,
    theta: ArrayView1<f64>,
    mask: ArrayView1<f64>,
    params: &EpsParams,
) -> Result<EpsReport, SharpnessError> {
    params.check()?;
    let perturbed = check_lengths(f, theta, mask)?;
    let half: Array1<f64> = Zip::from(&theta).and(&mask).map_collect(|&t, &m| {
        if m != 0.0 {
            params.eps * (t.abs() + 1.0)
        } else {
            0.0
        }
    });
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let mut traces = Vec::new();
    let (mut gradients, mut losses) = (0, 0);
    let mut best: Option<(f64, usize, usize, Array1<f64>)> = None;
    for start in 0..=params.random_starts {
        let mut y: Array1<f64> = if start == 0 {
            Array1::zeros(theta.len())
        } else {
            half.mapv(|w| {
                if w > 0.0 {
                    w * rng.random_range(-1.0..=1.0)
                } else {
                    0.0
                }
            })
        };
        let mut trace = Vec::with_capacity(params.iters + 1);
        for k in 0..=params.iters {
            let point = &theta + &y;
            let l = if k < params.iters {
                let (l, g) = f.loss_grad(point.view());
                gradients += 1;
                // Record before stepping: `trace[k]` is the loss at y_k.
                let keep = best.as_ref().is_none_or(|b| l > b.0);
                if keep {
                    best = Some((l, start, k, y.clone()));
                }
                Zip::from(&mut y)
                    .and(&half)
                    .and(&g)
                    .for_each(|yi, &w, &gi| {
                        *yi = (*yi + params.step * w * sign(gi)).clamp(-w, w);
                    });
                l
            } else {
                let l = f.loss(point.view());
                losses += 1;
                if best.as_ref().is_none_or(|b| l > b.0) {
                    best = Some((l, start, k, y.clone()));
                }
                l
            };
            trace.push(l);
        }
        traces.push(trace);
    }
    let loss = traces[0][0];
    let (max_loss, best_start, best_iteration, y_best) = best.expect("at least one iterate");
    let at_bound = Zip::from(&y_best)
        .and(&half)
        .fold(0usize, |n, &y, &w| n + usize::from(w > 0.0 && y.abs() == w));
    Ok(EpsReport {
        params: params.clone(),
        loss,
        max_loss,
        sharpness: 100.0 * (max_loss - loss) / (1.0 + loss),
        best_start,
        best_iteration,
        at_bound_fraction: at_bound as f64 / perturbed as f64,
        perturbed,
        traces,
        gradients,
        losses,
    })
}

/// Checks a list of step sizes η.
pub fn check_etas(etas: &[f64]) -> Result<(), SharpnessError> {
    if etas.is_empty() {
        return Err(SharpnessError::EmptyEtas);
    }
    if let Some(&e) = etas.iter().find(|e| !(e.is_finite() && **e > 0.0)) {
        return Err(SharpnessError::Eta(e));
    }
    Ok(())
}

/// One step size of the β-smoothness scan.
#[derive(Clone, Debug, Serialize)]
pub struct BetaRow {
    pub eta: f64,
    /// L(θ − η g).
    pub loss: f64,
    /// ‖∇L(θ − η g) − g‖ (Santurkar et al.'s gradient predictiveness).
    pub grad_change: f64,
    /// ‖∇L(θ − η g) − g‖ / ‖η g‖.
    pub beta: f64,
}

/// Result of [`beta_smoothness`].
#[derive(Clone, Debug, Serialize)]
pub struct BetaReport {
    /// L(θ).
    pub loss: f64,
    /// ‖g‖ over the perturbed scalars.
    pub grad_norm: f64,
    /// max_η β(η) (NaN, i.e. null in JSON, when g = 0).
    pub beta_max: f64,
    /// The η of beta_max.
    pub beta_max_eta: f64,
    /// max_η ‖∇L(θ − η g) − g‖.
    pub grad_change_max: f64,
    /// max_η L(θ − η g) − min_η L(θ − η g).
    pub loss_range: f64,
    pub loss_min: f64,
    pub loss_max: f64,
    pub rows: Vec<BetaRow>,
    pub gradients: usize,
}

fn norm(v: &Array1<f64>) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Effective β-smoothness of `f` along −∇L at θ over the step sizes `etas` (see the
/// module doc). Only the scalars selected by `mask` move, and only their gradient counts.
///
/// Cost: 1 + etas.len() gradients.
///
/// # Errors
/// An empty or invalid η list, a mask selecting nothing, or mismatched lengths.
pub fn beta_smoothness(
    f: &dyn LossGradient,
    theta: ArrayView1<f64>,
    mask: ArrayView1<f64>,
    etas: &[f64],
) -> Result<BetaReport, SharpnessError> {
    check_etas(etas)?;
    check_lengths(f, theta, mask)?;
    let (loss, g) = f.loss_grad(theta);
    let g = g * mask;
    let grad_norm = norm(&g);
    let mut rows = Vec::with_capacity(etas.len());
    for &eta in etas {
        let point = &theta - &(eta * &g);
        let (l, ge) = f.loss_grad(point.view());
        let diff = ge * mask - &g;
        let change = norm(&diff);
        rows.push(BetaRow {
            eta,
            loss: l,
            grad_change: change,
            beta: change / (eta * grad_norm),
        });
    }
    let mut best = &rows[0];
    for r in &rows {
        if r.beta > best.beta || best.beta.is_nan() {
            best = r;
        }
    }
    let fold = |init: f64, pick: fn(f64, f64) -> f64, get: fn(&BetaRow) -> f64| {
        rows.iter().map(get).fold(init, pick)
    };
    let loss_min = fold(f64::INFINITY, f64::min, |r| r.loss);
    let loss_max = fold(f64::NEG_INFINITY, f64::max, |r| r.loss);
    Ok(BetaReport {
        loss,
        grad_norm,
        beta_max: best.beta,
        beta_max_eta: best.eta,
        grad_change_max: fold(0.0, f64::max, |r| r.grad_change),
        loss_range: loss_max - loss_min,
        loss_min,
        loss_max,
        gradients: 1 + rows.len(),
        rows,
    })
}

/// L(θ) = ½ Σ h_i (θ_i − c_i)², a [`LossGradient`] with everything known in closed form:
/// for h_i > 0 the box maximum is separable (each coordinate at the endpoint farther from
/// c_i) and β(η) = ‖Hg‖/‖g‖ for every η. The oracle of this module's tests.
pub struct DiagonalQuadratic {
    pub h: Array1<f64>,
    pub c: Array1<f64>,
}

impl LossGradient for DiagonalQuadratic {
    fn dim(&self) -> usize {
        self.h.len()
    }
    fn loss(&self, t: ArrayView1<f64>) -> f64 {
        0.5 * Zip::from(&t)
            .and(&self.h)
            .and(&self.c)
            .fold(0.0, |s, &t, &h, &c| s + h * (t - c) * (t - c))
    }
    fn loss_grad(&self, t: ArrayView1<f64>) -> (f64, Array1<f64>) {
        let g = Zip::from(&t)
            .and(&self.h)
            .and(&self.c)
            .map_collect(|&t, &h, &c| h * (t - c));
        (self.loss(t), g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_of_zero_is_zero() {
        assert_eq!(sign(0.0), 0.0);
        assert_eq!(sign(-0.0), 0.0);
        assert_eq!(sign(-2.0), -1.0);
    }

    #[test]
    fn rejects_bad_params() {
        let bad = |p: EpsParams| p.check().unwrap_err().to_string();
        assert!(bad(EpsParams {
            eps: 0.0,
            ..Default::default()
        })
        .contains("`eps`"));
        assert!(bad(EpsParams {
            eps: f64::NAN,
            ..Default::default()
        })
        .contains("`eps`"));
        assert!(bad(EpsParams {
            iters: 0,
            ..Default::default()
        })
        .contains("`iters`"));
        assert!(bad(EpsParams {
            step: 0.0,
            ..Default::default()
        })
        .contains("`step`"));
        assert_eq!(check_etas(&[]), Err(SharpnessError::EmptyEtas));
        assert!(check_etas(&[0.1, f64::NAN]).is_err());
        assert!(check_etas(&[-0.1]).is_err());
        let q = DiagonalQuadratic {
            h: Array1::ones(2),
            c: Array1::zeros(2),
        };
        let t = Array1::zeros(2);
        let e = eps_sharpness(&q, t.view(), Array1::zeros(2).view(), &EpsParams::default());
        assert_eq!(e.unwrap_err(), SharpnessError::EmptyMask);
    }

    #[test]
    fn random_starts_never_lower_the_maximum_and_are_seeded() {
        let q = DiagonalQuadratic {
            h: Array1::from(vec![1.0, 3.0, 0.5]),
            c: Array1::from(vec![0.1, -0.2, 0.0]),
        };
        let t = Array1::from(vec![0.3, 0.2, -1.0]);
        let m = Array1::ones(3);
        let p0 = EpsParams {
            eps: 0.1,
            ..Default::default()
        };
        let p3 = EpsParams {
            random_starts: 3,
            seed: 7,
            ..p0.clone()
        };
        let a = eps_sharpness(&q, t.view(), m.view(), &p0).unwrap();
        let b = eps_sharpness(&q, t.view(), m.view(), &p3).unwrap();
        let c = eps_sharpness(&q, t.view(), m.view(), &p3).unwrap();
        assert!(b.max_loss >= a.max_loss);
        assert_eq!(b.traces.len(), 4);
        assert_eq!(b.traces, c.traces);
        assert_eq!(b.gradients, 4 * 20);
    }
}
