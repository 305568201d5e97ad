//! Smoothness of a loss surface in numbers: what Li et al. (2018, arXiv:1712.09913) show
//! in pictures — wide convex basins for residual networks, chaotic non-convex ones for deep
//! plain networks — as quantities a table can compare.
//!
//! A surface is `z[iy, ix] = L(θ + α_ix d₁ + β_iy d₂)` (1-D: `z[ix]`), NaN where unknown.
//! The center is the grid point nearest (α, β) = (0, 0).
//!
//! ```text
//! basin radius   along R rays from the center, the first distance r at which the
//!                bilinearly interpolated loss exceeds z(0) + δ (δ default 0.5, the
//!                contour spacing of loss-landscape's plots); rays that stay below it
//!                inside the grid are "censored" at the boundary distance
//! roughness      RMS residual of the least-squares quadratic
//!                a + bα + cβ + dα² + eαβ + fβ² (1-D: a + bα + cα²)
//!                over finite points with α² + β² ≤ ρ², divided by max − min there;
//!                a smooth bowl scores ≈ 0, ripples and chaos score high
//! non-convexity  share of interior points within ρ whose finite-difference Hessian
//!                [[f_αα, f_αβ], [f_αβ, f_ββ]] has an eigenvalue < −τ (1-D: f'' < −τ),
//!                τ = 1e-3 · median(|f_αα| + |f_ββ|) over those points (noise floor);
//!                the surface-level view of Li et al.'s |λmin/λmax| convexity maps (Fig. 7)
//! local minima   points strictly below all finite 8-neighbours (1-D: 2)
//! curvature      f_αα(0) and f_ββ(0) by central differences: d₁ᵀHd₁ and d₂ᵀHd₂ up to
//!                O(h²), comparable with the exact Hessian's quadratic form
//! ```
//! ρ defaults to half the smaller half-width of the grid.

use ndarray::{Array1, Array2, ArrayView2};
use ndarray_linalg::LeastSquaresSvd;
use serde::{Deserialize, Serialize};

/// Loss rise that ends a basin, when not given (loss-landscape's default contour spacing).
pub const DEFAULT_DELTA: f64 = 0.5;
/// Rays of a 2-D basin-radius measurement.
pub const DEFAULT_RAYS: usize = 16;
/// Negative-curvature threshold relative to the median curvature magnitude.
pub const CURVATURE_NOISE: f64 = 1e-3;

#[derive(Clone, Copy, Debug, Default)]
pub struct MetricParams {
    pub delta: Option<f64>,
    pub radius: Option<f64>,
    pub rays: Option<usize>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BasinRadius {
    pub mean: f64,
    pub min: f64,
    pub rays: usize,
    /// Rays that never crossed z(0) + δ inside the grid (their distance is a lower bound).
    pub censored: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SurfaceMetrics {
    pub center_loss: f64,
    pub center: (f64, f64),
    pub min_loss: f64,
    pub min_at: (f64, f64),
    pub basin_radius: Option<BasinRadius>,
    pub roughness: Option<f64>,
    pub non_convex_fraction: Option<f64>,
    pub local_minima: usize,
    pub curvature_x: Option<f64>,
    pub curvature_y: Option<f64>,
    pub delta: f64,
    pub radius: f64,
    pub tau: Option<f64>,
    /// Why a metric is missing (too few points, 1-point grid, …).
    pub notes: Vec<String>,
}

fn nearest(c: &[f64]) -> usize {
    c.iter()
        .enumerate()
        .min_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

/// Bilinear interpolation of z at (a, b), NaN outside the grid or next to a NaN.
fn interp(z: &ArrayView2<f64>, xs: &[f64], ys: &[f64], a: f64, b: f64) -> f64 {
    let locate = |c: &[f64], v: f64| -> Option<(usize, f64)> {
        if c.len() == 1 {
            return ((v - c[0]).abs() < 1e-12).then_some((0, 0.0));
        }
        if v < c[0] || v > c[c.len() - 1] {
            return None;
        }
        let i = c.partition_point(|&x| x <= v).clamp(1, c.len() - 1) - 1;
        Some((i, (v - c[i]) / (c[i + 1] - c[i])))
    };
    let (Some((ix, tx)), Some((iy, ty))) = (locate(xs, a), locate(ys, b)) else {
        return f64::NAN;
    };
    let g = |iy: usize, ix: usize| z[[iy.min(ys.len() - 1), ix.min(xs.len() - 1)]];
    let top = g(iy, ix) * (1.0 - tx) + g(iy, ix + 1) * tx;
    let bottom = g(iy + 1, ix) * (1.0 - tx) + g(iy + 1, ix + 1) * tx;
    top * (1.0 - ty) + bottom * ty
}

/// Computes every metric of a surface; 1-D surfaces are passed with `ys = [0.0]` and
/// `z` of shape `[1, nx]`.
pub fn surface_metrics(
    z: ArrayView2<f64>,
    xs: &[f64],
    ys: &[f64],
    p: &MetricParams,
) -> SurfaceMetrics {
    let two_d = ys.len() > 1;
    let (cx, cy) = (nearest(xs), nearest(ys));
    let center_loss = z[[cy, cx]];
    let mut notes = Vec::new();
    let (mut min_loss, mut min_at) = (f64::INFINITY, (f64::NAN, f64::NAN));
    for iy in 0..ys.len() {
        for ix in 0..xs.len() {
            if z[[iy, ix]] < min_loss {
                min_loss = z[[iy, ix]];
                min_at = (xs[ix], ys[iy]);
            }
        }
    }
    let half = |c: &[f64]| (c[c.len() - 1] - c[0]) / 2.0;
    let radius = p.radius.unwrap_or_else(|| {
        if two_d {
            half(xs).min(half(ys)) / 2.0
        } else {
            half(xs) / 2.0
        }
    });
    let delta = p.delta.unwrap_or(DEFAULT_DELTA);

    // basin radius along rays
    let basin_radius = if xs.len() < 2 || !center_loss.is_finite() {
        notes.push("basin radius: needs ≥ 2 points along x and a finite center".into());
        None
    } else {
        let rays = if two_d {
            p.rays.unwrap_or(DEFAULT_RAYS).max(1)
        } else {
            2
        };
        let step = (xs[1] - xs[0]).abs() / 8.0;
        let (mut dists, mut censored) = (Vec::new(), 0);
        for k in 0..rays {
            let angle = if two_d {
                2.0 * std::f64::consts::PI * k as f64 / rays as f64
            } else {
                std::f64::consts::PI * k as f64
            };
            let (dx, dy) = (angle.cos(), if two_d { angle.sin() } else { 0.0 });
            let (x0, y0) = (xs[cx], ys[cy]);
            let mut r = 0.0;
            let mut last_inside = 0.0;
            let crossed = loop {
                r += step;
                let v = interp(&z, xs, ys, x0 + r * dx, y0 + r * dy);
                if v.is_nan() {
                    break None;
                }
                last_inside = r;
                if v > center_loss + delta {
                    break Some(r);
                }
            };
            match crossed {
                Some(r) => dists.push(r),
                None => {
                    censored += 1;
                    dists.push(last_inside);
                }
            }
        }
        Some(BasinRadius {
            mean: dists.iter().sum::<f64>() / dists.len() as f64,
            min: dists.iter().copied().fold(f64::INFINITY, f64::min),
            rays,
            censored,
        })
    };

    // points inside the disc
    let inside: Vec<(usize, usize)> = (0..ys.len())
        .flat_map(|iy| (0..xs.len()).map(move |ix| (iy, ix)))
        .filter(|&(iy, ix)| {
            (xs[ix] - xs[cx]).powi(2) + (ys[iy] - ys[cy]).powi(2) <= radius * radius + 1e-12
                && z[[iy, ix]].is_finite()
        })
        .collect();

    // roughness: quadratic fit residual
    let ncoef = if two_d { 6 } else { 3 };
    let roughness = if inside.len() < ncoef + 1 {
        notes.push(format!(
            "roughness: only {} finite points within radius {radius}",
            inside.len()
        ));
        None
    } else {
        let mut a = Array2::<f64>::zeros((inside.len(), ncoef));
        let mut b = Array1::<f64>::zeros(inside.len());
        for (row, &(iy, ix)) in inside.iter().enumerate() {
            let (u, v) = (xs[ix] - xs[cx], ys[iy] - ys[cy]);
            let feats: Vec<f64> = if two_d {
                vec![1.0, u, v, u * u, u * v, v * v]
            } else {
                vec![1.0, u, u * u]
            };
            for (c, f) in feats.into_iter().enumerate() {
                a[[row, c]] = f;
            }
            b[row] = z[[iy, ix]];
        }
        match a.least_squares(&b) {
            Ok(sol) => {
                let fit = a.dot(&sol.solution);
                let rms = ((&fit - &b).mapv(|e| e * e).sum() / b.len() as f64).sqrt();
                let range = b.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                    - b.iter().copied().fold(f64::INFINITY, f64::min);
                Some(if range > 0.0 { rms / range } else { 0.0 })
            }
            Err(e) => {
                notes.push(format!("roughness: least squares failed ({e})"));
                None
            }
        }
    };

    // finite-difference Hessians at interior points
    let second = |iy: usize, ix: usize| -> Option<(f64, f64, f64)> {
        if ix == 0 || ix + 1 >= xs.len() || (two_d && (iy == 0 || iy + 1 >= ys.len())) {
            return None;
        }
        let hx = (xs[ix + 1] - xs[ix - 1]) / 2.0;
        let fxx = (z[[iy, ix + 1]] - 2.0 * z[[iy, ix]] + z[[iy, ix - 1]]) / (hx * hx);
        if !two_d {
            return fxx.is_finite().then_some((fxx, 0.0, 0.0));
        }
        let hy = (ys[iy + 1] - ys[iy - 1]) / 2.0;
        let fyy = (z[[iy + 1, ix]] - 2.0 * z[[iy, ix]] + z[[iy - 1, ix]]) / (hy * hy);
        let fxy = (z[[iy + 1, ix + 1]] - z[[iy + 1, ix - 1]] - z[[iy - 1, ix + 1]]
            + z[[iy - 1, ix - 1]])
            / (4.0 * hx * hy);
        (fxx.is_finite() && fyy.is_finite() && fxy.is_finite()).then_some((fxx, fyy, fxy))
    };
    let hess: Vec<(f64, f64, f64)> = inside
        .iter()
        .filter_map(|&(iy, ix)| second(iy, ix))
        .collect();
    let (non_convex_fraction, tau) = if hess.is_empty() {
        notes.push("non-convex fraction: no interior points within the radius".into());
        (None, None)
    } else {
        let mut mags: Vec<f64> = hess.iter().map(|h| h.0.abs() + h.1.abs()).collect();
        mags.sort_by(|a, b| a.total_cmp(b));
        let tau = CURVATURE_NOISE * mags[mags.len() / 2];
        let neg = hess
            .iter()
            .filter(|&&(fxx, fyy, fxy)| {
                let lmin = (fxx + fyy) / 2.0 - (((fxx - fyy) / 2.0).powi(2) + fxy * fxy).sqrt();
                lmin < -tau
            })
            .count();
        (Some(neg as f64 / hess.len() as f64), Some(tau))
    };

    // strict local minima
    let mut local_minima = 0;
    for iy in 0..ys.len() {
        for ix in 0..xs.len() {
            let v = z[[iy, ix]];
            if !v.is_finite() {
                continue;
            }
            let mut is_min = true;
            let mut any = false;
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    if (dx == 0 && dy == 0) || (!two_d && dy != 0) {
                        continue;
                    }
                    let (jy, jx) = (iy as i64 + dy, ix as i64 + dx);
                    if jy < 0 || jx < 0 || jy >= ys.len() as i64 || jx >= xs.len() as i64 {
                        continue;
                    }
                    let w = z[[jy as usize, jx as usize]];
                    if w.is_finite() {
                        any = true;
                        if w <= v {
                            is_min = false;
                        }
                    }
                }
            }
            if is_min && any {
                local_minima += 1;
            }
        }
    }

    let at_center = second(cy, cx);
    let curvature_x = at_center.map(|h| h.0);
    let curvature_y = if two_d { at_center.map(|h| h.1) } else { None };
    if at_center.is_none() {
        notes.push("curvature: the center is on the grid boundary".into());
    }
    SurfaceMetrics {
        center_loss,
        center: (xs[cx], ys[cy]),
        min_loss,
        min_at,
        basin_radius,
        roughness,
        non_convex_fraction,
        local_minima,
        curvature_x,
        curvature_y,
        delta,
        radius,
        tau,
        notes,
    }
}

/// Metrics of one quantity of a surface file.
pub fn file_metrics(
    f: &crate::io::surface::SurfaceFile,
    quantity: &str,
    p: &MetricParams,
) -> Option<SurfaceMetrics> {
    let z = f.values.get(quantity)?;
    let ys = f.y.clone().unwrap_or_else(|| vec![0.0]);
    let z2 = z.view().into_shape_with_order((ys.len(), f.x.len())).ok()?;
    Some(surface_metrics(z2, &f.x, &ys, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| -1.0 + 2.0 * i as f64 / (n - 1) as f64)
            .collect()
    }

    fn surface(n: usize, f: impl Fn(f64, f64) -> f64) -> (Array2<f64>, Vec<f64>) {
        let c = grid(n);
        (Array2::from_shape_fn((n, n), |(iy, ix)| f(c[ix], c[iy])), c)
    }

    #[test]
    fn quadratic_bowl() {
        let a = 2.0;
        let (z, c) = surface(41, |x, y| a * (x * x + y * y));
        let m = surface_metrics(
            z.view(),
            &c,
            &c,
            &MetricParams {
                delta: Some(0.5),
                ..Default::default()
            },
        );
        assert_eq!(m.center_loss, 0.0);
        assert_eq!(m.min_loss, 0.0);
        let want = (0.5f64 / a).sqrt();
        let b = m.basin_radius.unwrap();
        assert!(
            (b.mean - want).abs() < 0.03 && (b.min - want).abs() < 0.03,
            "{b:?} vs {want}"
        );
        assert_eq!(b.censored, 0);
        assert!(m.roughness.unwrap() < 1e-10);
        assert_eq!(m.non_convex_fraction, Some(0.0));
        assert_eq!(m.local_minima, 1);
        assert!(
            (m.curvature_x.unwrap() - 2.0 * a).abs() < 1e-9
                && (m.curvature_y.unwrap() - 2.0 * a).abs() < 1e-9
        );
    }

    #[test]
    fn ripples_are_rough_and_saddles_non_convex() {
        let (z, c) = surface(81, |x, y| {
            x * x + y * y + 0.05 * (40.0 * x).sin() * (40.0 * y).sin()
        });
        let m = surface_metrics(z.view(), &c, &c, &MetricParams::default());
        assert!(m.roughness.unwrap() > 0.01, "{:?}", m.roughness);
        assert!(m.local_minima > 3, "{}", m.local_minima);
        let (z, c) = surface(41, |x, y| x * x - y * y);
        let m = surface_metrics(z.view(), &c, &c, &MetricParams::default());
        assert!(m.non_convex_fraction.unwrap() > 0.99);
        assert!((m.curvature_y.unwrap() + 2.0).abs() < 1e-9);
    }

    #[test]
    fn anisotropic_bowl_ray_minimum_and_nan_holes() {
        let (mut z, c) = surface(61, |x, y| x * x + 16.0 * y * y);
        z[[5, 5]] = f64::NAN;
        let m = surface_metrics(
            z.view(),
            &c,
            &c,
            &MetricParams {
                delta: Some(0.25),
                ..Default::default()
            },
        );
        let b = m.basin_radius.unwrap();
        assert!((b.min - 0.125).abs() < 0.02, "{b:?}"); // along y: 16 y² = 0.25
        assert!(b.mean > b.min);
        assert_eq!(m.local_minima, 1);
    }

    #[test]
    fn one_dimensional() {
        let c = grid(21);
        let z = Array2::from_shape_fn((1, 21), |(_, ix)| 3.0 * c[ix] * c[ix]);
        let m = surface_metrics(
            z.view(),
            &c,
            &[0.0],
            &MetricParams {
                delta: Some(0.75),
                ..Default::default()
            },
        );
        assert!((m.basin_radius.unwrap().mean - 0.5).abs() < 0.02);
        assert!((m.curvature_x.unwrap() - 6.0).abs() < 1e-9);
        assert_eq!(m.curvature_y, None);
        assert_eq!(m.local_minima, 1);
        assert!(m.roughness.unwrap() < 1e-10);
    }
}
