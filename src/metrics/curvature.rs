//! Curvature from finite differences: the share of non-convex points near the center, and
//! the second derivative along each direction at the center.

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use super::extrema::center_index;
use super::{disc_points, Undefined, CURVATURE_NOISE};

/// Second derivative from three points at spacings `hm` (left) and `hp` (right):
/// `2 [(f₊ − f₀)/h₊ − (f₀ − f₋)/h₋] / (h₋ + h₊)`, the central difference
/// `(f₊ − 2f₀ + f₋)/h²` on a uniform grid; exact for quadratics.
fn second_difference(fm: f64, f0: f64, fp: f64, hm: f64, hp: f64) -> f64 {
    2.0 * ((fp - f0) / hp - (f0 - fm) / hm) / (hm + hp)
}

/// Finite-difference second derivatives `[f_αα, f_ββ, f_αβ]` at grid point `(iy, ix)`
/// (1-D: `[f_αα, 0, 0]`), from the 3×3 (1-D: 3-point) stencil with the grid's own
/// spacings; `f_αβ = (f₊₊ − f₊₋ − f₋₊ + f₋₋) / ((α₊ − α₋)(β₊ − β₋))`. Exact for quadratics.
/// `None` on the grid boundary or when a stencil value is not finite.
///
/// # Panics
/// When `z` is not `[ys.len(), xs.len()]` or the point is off the grid.
pub fn fd_hessian(
    z: ArrayView2<f64>,
    xs: &[f64],
    ys: &[f64],
    iy: usize,
    ix: usize,
) -> Option<[f64; 3]> {
    assert_eq!(z.dim(), (ys.len(), xs.len()), "z must be [ny, nx]");
    let two_d = ys.len() > 1;
    if ix == 0 || ix + 1 >= xs.len() || (two_d && (iy == 0 || iy + 1 >= ys.len())) {
        return None;
    }
    let (hxm, hxp) = (xs[ix] - xs[ix - 1], xs[ix + 1] - xs[ix]);
    let f = |jy: usize, jx: usize| z[[jy, jx]];
    let fxx = second_difference(f(iy, ix - 1), f(iy, ix), f(iy, ix + 1), hxm, hxp);
    if !two_d {
        return fxx.is_finite().then_some([fxx, 0.0, 0.0]);
    }
    let (hym, hyp) = (ys[iy] - ys[iy - 1], ys[iy + 1] - ys[iy]);
    let fyy = second_difference(f(iy - 1, ix), f(iy, ix), f(iy + 1, ix), hym, hyp);
    let fxy = (f(iy + 1, ix + 1) - f(iy - 1, ix + 1) - f(iy + 1, ix - 1) + f(iy - 1, ix - 1))
        / ((hxm + hxp) * (hym + hyp));
    (fxx.is_finite() && fyy.is_finite() && fxy.is_finite()).then_some([fxx, fyy, fxy])
}

/// Smaller eigenvalue of [[a, c], [c, b]].
fn min_eigenvalue(a: f64, b: f64, c: f64) -> f64 {
    0.5 * (a + b) - (0.25 * (a - b) * (a - b) + c * c).sqrt()
}

/// How much of the neighbourhood of the center curves downward.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NonConvexity {
    /// `non_convex / points`.
    pub fraction: f64,
    /// Points with a negative eigenvalue below −τ.
    pub non_convex: usize,
    /// Interior points within the radius whose stencil is finite.
    pub points: usize,
    /// The tolerance τ used.
    pub tau: f64,
}

/// Share of non-convex points within `radius` of the center.
///
/// The surface-level view of Li et al. (2018, arXiv:1712.09913, §7 and Fig. 7), who map
/// |λ_min/λ_max| of the full Hessian over the plotted plane: blue (convex) near the
/// minimizer of residual networks, yellow (non-convex) spreading over deep plain ones. Here
/// the Hessian is the 2×2 one of the surface itself: at every interior grid point within
/// ρ of the center with a finite 3×3 stencil ([`fd_hessian`]), H = [[f_αα, f_αβ],
/// [f_αβ, f_ββ]] and
///
/// ```text
/// λ_min(H) = (f_αα + f_ββ)/2 − sqrt(((f_αα − f_ββ)/2)² + f_αβ²)     (1-D: f'')
/// τ = 1e-3 · median over those points of (|f_αα| + |f_ββ|)          (a noise floor)
/// fraction = #{λ_min < −τ} / #points
/// ```
///
/// 0 for a bowl, 1 for a saddle α² − β². τ keeps rounding noise on a locally flat
/// (e.g. linear) patch from counting as curvature.
///
/// Undefined (the reason is returned) when no interior point within ρ has a finite stencil.
///
/// # Panics
/// When `z` is not `[ys.len(), xs.len()]`.
pub fn non_convex_fraction(
    z: ArrayView2<f64>,
    xs: &[f64],
    ys: &[f64],
    radius: f64,
) -> Result<NonConvexity, Undefined> {
    let hess: Vec<[f64; 3]> = disc_points(xs, ys, radius)
        .filter_map(|(iy, ix)| fd_hessian(z, xs, ys, iy, ix))
        .collect();
    if hess.is_empty() {
        return Err(Undefined::NoStencil { radius });
    }
    let mut mags: Vec<f64> = hess.iter().map(|h| h[0].abs() + h[1].abs()).collect();
    mags.sort_by(f64::total_cmp);
    let n = mags.len();
    let median = if n % 2 == 1 {
        mags[n / 2]
    } else {
        0.5 * (mags[n / 2 - 1] + mags[n / 2])
    };
    let tau = CURVATURE_NOISE * median;
    let non_convex = hess
        .iter()
        .filter(|h| min_eigenvalue(h[0], h[1], h[2]) < -tau)
        .count();
    Ok(NonConvexity {
        fraction: non_convex as f64 / n as f64,
        non_convex,
        points: n,
        tau,
    })
}

/// Second derivative of the surface at the center along α and along β (1-D: along α,
/// and `None` for β), by the three-point difference with the grid spacing
/// (`(f₊ − 2f₀ + f₋)/h²` on a uniform grid).
///
/// On a surface `L(θ + α d₁ + β d₂)` these estimate d₁ᵀ H d₁ and d₂ᵀ H d₂, the exact
/// Hessian's quadratic forms along the plotted directions (Li et al. 2018, §7), with an
/// O(h²) error from the third/fourth derivatives; exact for quadratics.
///
/// Each is undefined (the reason is returned) when the center is on the boundary of that
/// axis or one of the three values is not finite.
///
/// # Panics
/// When `z` is not `[ys.len(), xs.len()]`.
pub fn center_curvature(
    z: ArrayView2<f64>,
    xs: &[f64],
    ys: &[f64],
) -> (Result<f64, Undefined>, Option<Result<f64, Undefined>>) {
    assert_eq!(z.dim(), (ys.len(), xs.len()), "z must be [ny, nx]");
    let (cy, cx) = center_index(xs, ys);
    let along = |c: &[f64], i: usize, f: &dyn Fn(usize) -> f64, axis: &'static str| {
        if i == 0 || i + 1 >= c.len() {
            return Err(Undefined::CenterOnBoundary { axis });
        }
        let v = second_difference(f(i - 1), f(i), f(i + 1), c[i] - c[i - 1], c[i + 1] - c[i]);
        if v.is_finite() {
            Ok(v)
        } else {
            Err(Undefined::NeighbourNotFinite { axis })
        }
    };
    let x = along(xs, cx, &|j| z[[cy, j]], "α");
    let y = (ys.len() > 1).then(|| along(ys, cy, &|j| z[[j, cx]], "β"));
    (x, y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_uniform_spacing_is_exact_for_quadratics() {
        let xs = [-1.0, -0.3, 0.0, 0.5, 2.0];
        let ys = [-0.2, 0.0, 0.7];
        let f = |x: f64, y: f64| 1.5 * x * x - 0.5 * x * y + 2.0 * y * y + x - 3.0;
        let z = ndarray::Array2::from_shape_fn((3, 5), |(iy, ix)| f(xs[ix], ys[iy]));
        let h = fd_hessian(z.view(), &xs, &ys, 1, 2).unwrap();
        assert!((h[0] - 3.0).abs() < 1e-12 && (h[1] - 4.0).abs() < 1e-12);
        assert!((h[2] + 0.5).abs() < 1e-12, "{h:?}");
        let (x, y) = center_curvature(z.view(), &xs, &ys);
        assert!((x.unwrap() - 3.0).abs() < 1e-12);
        assert!((y.unwrap().unwrap() - 4.0).abs() < 1e-12);
        assert!(fd_hessian(z.view(), &xs, &ys, 0, 2).is_none());
        assert!((min_eigenvalue(1.0, -1.0, 0.0) + 1.0).abs() < 1e-15);
    }
}
