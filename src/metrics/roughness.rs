//! Roughness: how far the surface near the center is from its best quadratic.

use ndarray::{Array1, Array2, ArrayView2};
use ndarray_linalg::LeastSquaresSvd;
use serde::{Deserialize, Serialize};

use super::extrema::center_index;
use super::{disc_points, Undefined};

/// A quadratic fit near the center and how badly it misses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Roughness {
    /// RMS residual divided by the loss range (max − min) of the fitted points.
    pub value: f64,
    /// RMS residual of the fit, in loss units.
    pub rms: f64,
    /// max − min of the fitted points.
    pub range: f64,
    /// Finite points fitted (those within the radius).
    pub points: usize,
}

/// Roughness of the surface within `radius` of the center.
///
/// Li et al. (2018, arXiv:1712.09913) observe that deep plain networks have "chaotic"
/// landscapes while residual ones stay smooth and bowl-like; near a minimizer a smooth
/// loss is a quadratic to second order. With (u, v) = (α − α_c, β − β_c) the offsets from
/// the center and P the finite points with u² + v² ≤ ρ², fit by least squares (SVD)
///
/// ```text
/// q(u, v) = a + b u + c v + d u² + e u v + f v²        (1-D: a + b u + c u²)
/// roughness = sqrt( Σ_P (z − q)² / |P| ) / (max_P z − min_P z)
/// ```
///
/// 0 for any quadratic (a bowl, a saddle, a tilted plane); ripples, kinks and chaos raise
/// it. Dividing by the range makes it independent of the loss scale; a flat patch
/// (range 0) scores 0.
///
/// Undefined (the reason is returned) when P has fewer than 7 points in 2-D (4 in 1-D)
/// or does not determine the quadratic (e.g. all points on a line).
///
/// # Panics
/// When `z` is not `[ys.len(), xs.len()]`.
pub fn roughness(
    z: ArrayView2<f64>,
    xs: &[f64],
    ys: &[f64],
    radius: f64,
) -> Result<Roughness, Undefined> {
    assert_eq!(z.dim(), (ys.len(), xs.len()), "z must be [ny, nx]");
    let two_d = ys.len() > 1;
    let ncoef = if two_d { 6 } else { 3 };
    let (cy, cx) = center_index(xs, ys);
    let pts: Vec<(usize, usize)> = disc_points(xs, ys, radius)
        .filter(|&(iy, ix)| z[[iy, ix]].is_finite())
        .collect();
    if pts.len() < ncoef + 1 {
        return Err(Undefined::TooFewDiscPoints {
            points: pts.len(),
            radius,
            needed: ncoef + 1,
        });
    }
    // offsets scaled by the radius keep the design matrix well conditioned
    let scale = if radius > 0.0 { radius } else { 1.0 };
    let mut a = Array2::<f64>::zeros((pts.len(), ncoef));
    let mut b = Array1::<f64>::zeros(pts.len());
    for (row, &(iy, ix)) in pts.iter().enumerate() {
        let (u, v) = ((xs[ix] - xs[cx]) / scale, (ys[iy] - ys[cy]) / scale);
        let feats = [1.0, u, u * u, v, u * v, v * v];
        for c in 0..ncoef {
            a[[row, c]] = feats[c];
        }
        b[row] = z[[iy, ix]];
    }
    let fit = a
        .least_squares(&b)
        .map_err(|e| Undefined::LeastSquares { why: e.to_string() })?;
    if fit.rank < ncoef as i32 {
        return Err(Undefined::Rank {
            points: pts.len(),
            radius,
            rank: fit.rank,
            coefficients: ncoef,
        });
    }
    let resid = a.dot(&fit.solution) - &b;
    let rms = (resid.mapv(|e| e * e).sum() / pts.len() as f64).sqrt();
    let (lo, hi) = b
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let range = hi - lo;
    Ok(Roughness {
        value: if range > 0.0 { rms / range } else { 0.0 },
        rms,
        range,
        points: pts.len(),
    })
}
