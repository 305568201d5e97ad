//! PCA directions of a training trajectory and the path projected onto them (Li et al.
//! 2018, arXiv:1712.09913, §7; loss-landscape's `setup_PCA_directions` and
//! `project_trajectory`).
//!
//! ```text
//! rows  mₑ = θₑ − θ_final   for every checkpoint e (trainable tensors; with ignore-biasbn
//!                            only ≥ 2-D weights, biases and BN γ/β set to 0)
//! PCA   M̄ = M − mean_rows(M);  G = M̄ M̄ᵀ (n × n, n = checkpoints) = U Λ Uᵀ (eigh)
//!       sᵢ = √λᵢ,  vᵢ = M̄ᵀ uᵢ / sᵢ  (unit norm),  i = 1, 2 (largest λ)
//!       explained_variance_ = s²/(n−1),  ratio = λᵢ / trace G   (sklearn's PCA)
//!       sign: the largest-|·| entry of each vᵢ is positive (sklearn ≥ 1.5's svd_flip)
//! project  cos:   xₑ = mₑ·v₁/‖v₁‖,  yₑ = mₑ·v₂/‖v₂‖
//!          lstsq: [x y] minimizing ‖mₑ − x v₁ − y v₂‖  (equal to cos for orthogonal vᵢ)
//! ```
//! The Gram matrix is n × n for n checkpoints, so the cost is n² dot products of length P,
//! never a P × P matrix.

use ndarray::{Array1, Array2};
use ndarray_linalg::{Eigh, UPLO};

use crate::engine::{ParamVec, Role};

/// Two principal directions of a trajectory with sklearn's PCA statistics.
#[derive(Clone, Debug)]
pub struct TrajectoryPca {
    pub x: ParamVec<f32>,
    pub y: ParamVec<f32>,
    pub explained_variance_ratio: [f64; 2],
    pub singular_values: [f64; 2],
    pub explained_variance: [f64; 2],
}

/// Which entries of θ the trajectory moves in: trainable tensors, or only ≥ 2-D weights.
pub fn trajectory_mask(theta: &ParamVec<f32>, ignore_biasbn: bool) -> Array1<f64> {
    theta.layout.mask(|t| {
        if ignore_biasbn {
            t.role == Role::Weight
        } else {
            t.role.is_trainable()
        }
    })
}

fn diff(a: &ParamVec<f32>, b: &ParamVec<f32>, mask: &Array1<f64>) -> Array1<f64> {
    ndarray::Zip::from(&a.data)
        .and(&b.data)
        .and(mask)
        .map_collect(|&p, &q, &m| (p as f64 - q as f64) * m)
}

/// Why the PCA directions of a trajectory cannot be formed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TrajectoryError {
    /// Occurs when fewer than 3 checkpoints are given.
    #[error("PCA of a trajectory needs at least 3 checkpoints, got {got}")]
    TooFewCheckpoints { got: usize },
    /// Occurs when LAPACK fails to decompose the Gram matrix; `why` is its message.
    #[error("eigendecomposition of the Gram matrix failed: {why}")]
    Eigh { why: String },
    /// Occurs when the checkpoints lie on a line (or coincide).
    #[error(
        "the trajectory spans fewer than 2 dimensions (component {component} has zero variance)"
    )]
    Flat { component: usize },
}

/// PCA (2 components) of the rows θₑ − θ_final.
///
/// # Errors
/// With fewer than 3 checkpoints, or when the trajectory spans fewer than 2 dimensions.
pub fn pca_directions(
    checkpoints: &[ParamVec<f32>],
    last: &ParamVec<f32>,
    mask: &Array1<f64>,
) -> Result<TrajectoryPca, TrajectoryError> {
    let n = checkpoints.len();
    if n < 3 {
        return Err(TrajectoryError::TooFewCheckpoints { got: n });
    }
    let p = last.data.len();
    let mut m = Array2::<f64>::zeros((n, p));
    for (i, c) in checkpoints.iter().enumerate() {
        m.row_mut(i).assign(&diff(c, last, mask));
    }
    let mean = m.mean_axis(ndarray::Axis(0)).expect("n > 0");
    m -= &mean;
    let g = m.dot(&m.t());
    let (lambda, u) = g
        .eigh(UPLO::Lower)
        .map_err(|e| TrajectoryError::Eigh { why: e.to_string() })?;
    let total: f64 = lambda.iter().map(|l| l.max(0.0)).sum();
    let mut dirs = Vec::new();
    let mut s = [0.0; 2];
    let mut ratio = [0.0; 2];
    let mut var = [0.0; 2];
    for k in 0..2 {
        let idx = n - 1 - k;
        let l = lambda[idx].max(0.0);
        if l <= total * 1e-14 || l == 0.0 {
            return Err(TrajectoryError::Flat { component: k + 1 });
        }
        s[k] = l.sqrt();
        ratio[k] = l / total;
        var[k] = l / (n - 1) as f64;
        let mut v = m.t().dot(&u.column(idx)) / s[k];
        let big = v
            .iter()
            .copied()
            .fold(0.0f64, |a, b| if b.abs() > a.abs() { b } else { a });
        if big < 0.0 {
            v.mapv_inplace(|x| -x);
        }
        dirs.push(ParamVec::from_data(
            last.layout.clone(),
            v.mapv(|x| x as f32),
        ));
    }
    let y = dirs.pop().unwrap();
    let x = dirs.pop().unwrap();
    Ok(TrajectoryPca {
        x,
        y,
        explained_variance_ratio: ratio,
        singular_values: s,
        explained_variance: var,
    })
}

/// Coordinates of θ − θ_final along (x, y): cosine projections and least squares.
pub fn project(
    theta: &ParamVec<f32>,
    last: &ParamVec<f32>,
    x: &ParamVec<f32>,
    y: &ParamVec<f32>,
    mask: &Array1<f64>,
) -> ((f64, f64), (f64, f64)) {
    let d = diff(theta, last, mask);
    let xv = x.data.mapv(|v| v as f64) * mask;
    let yv = y.data.mapv(|v| v as f64) * mask;
    let (xx, yy, xy) = (xv.dot(&xv), yv.dot(&yv), xv.dot(&yv));
    let (dx, dy) = (d.dot(&xv), d.dot(&yv));
    let cos = (dx / xx.sqrt(), dy / yy.sqrt());
    let det = xx * yy - xy * xy;
    let lstsq = ((yy * dx - xy * dy) / det, (xx * dy - xy * dx) / det);
    (cos, lstsq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Arch, Model};

    /// θₑ = θ_f + aₑ u + bₑ w with orthonormal u, w: PCA recovers span{u, w}, the ratios
    /// sum to 1, and the least-squares projection reproduces the (centered-free) coordinates.
    #[test]
    fn recovers_a_planted_plane() {
        let arch: Arch = "mlp:in_features=4,depth=1,width=6,num_classes=3"
            .parse()
            .unwrap();
        let m = Model::init(arch, 1, false);
        let mask = trajectory_mask(&m.theta, false);
        let p = m.theta.data.len();
        let mut u = Array1::<f64>::zeros(p);
        let mut w = Array1::<f64>::zeros(p);
        for i in 0..p {
            u[i] = ((i as f64) * 0.37).sin() * mask[i];
            w[i] = ((i as f64) * 1.91 + 0.3).cos() * mask[i];
        }
        u /= u.dot(&u).sqrt();
        w -= &(&u * u.dot(&w));
        w /= w.dot(&w).sqrt();
        let coords: Vec<(f64, f64)> = (0..8)
            .map(|e| {
                let t = e as f64;
                (3.0 * (1.0 - t / 8.0).powi(2), 0.8 * (t * 0.9).sin())
            })
            .collect();
        let cps: Vec<ParamVec<f32>> = coords
            .iter()
            .map(|&(a, b)| {
                let d = &u * a + &w * b;
                ParamVec::from_data(
                    m.theta.layout.clone(),
                    ndarray::Zip::from(&m.theta.data)
                        .and(&d)
                        .map_collect(|&t, &x| (t as f64 + x) as f32),
                )
            })
            .collect();
        let pca = pca_directions(&cps, &m.theta, &mask).unwrap();
        let r = pca.explained_variance_ratio;
        assert!((r[0] + r[1] - 1.0).abs() < 1e-5, "{r:?}");
        assert!(r[0] >= r[1]);
        for v in [&pca.x, &pca.y] {
            let v = v.data.mapv(|x| x as f64);
            let inplane = (v.dot(&u).powi(2) + v.dot(&w).powi(2)).sqrt();
            assert!((inplane - 1.0).abs() < 1e-5, "{inplane}");
        }
        for (cp, &(a, b)) in cps.iter().zip(&coords) {
            let (cos, lstsq) = project(cp, &m.theta, &pca.x, &pca.y, &mask);
            let r_true = (a * a + b * b).sqrt();
            let r_got = (lstsq.0 * lstsq.0 + lstsq.1 * lstsq.1).sqrt();
            assert!((r_true - r_got).abs() < 1e-4, "{r_true} {r_got}");
            assert!((cos.0 - lstsq.0).abs() < 1e-4 && (cos.1 - lstsq.1).abs() < 1e-4);
        }
        assert!(pca_directions(&cps[..2], &m.theta, &mask).is_err());
    }
}
