//! Basin radius: how far one can walk from the trained weights before the loss rises by δ.

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use super::extrema::center_index;
use super::Undefined;

/// Distances from the center at which the loss first rises by δ, over rays.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BasinRadius {
    /// Mean distance over rays (censored rays enter with their boundary distance, so
    /// this is a lower bound when `censored > 0`).
    pub mean: f64,
    /// Smallest distance over rays: the narrowest direction of the basin.
    pub min: f64,
    /// Number of rays.
    pub rays: usize,
    /// Rays that stayed below z(0) + δ up to the grid boundary (or up to a point that is
    /// not computed): their distance is where they stopped, a lower bound.
    pub censored: usize,
    /// Distance along each ray; ray k points at angle 2πk/R from the +α axis
    /// (1-D: +α, then −α).
    pub distances: Vec<f64>,
}

/// Bilinear interpolation of `z` at (a, b). Corners with zero weight are skipped, so a ray
/// along a grid line never sees the row beside it; NaN when a weighted corner is NaN or
/// (a, b) is outside the grid; +∞ when a weighted corner is +∞.
pub(crate) fn interpolate(z: &ArrayView2<f64>, xs: &[f64], ys: &[f64], a: f64, b: f64) -> f64 {
    fn locate(c: &[f64], v: f64) -> Option<(usize, f64)> {
        let (lo, hi) = (c[0], c[c.len() - 1]);
        let eps = 1e-9 * (hi - lo).abs().max(1e-300);
        if v < lo - eps || v > hi + eps {
            return None;
        }
        if c.len() == 1 {
            return Some((0, 0.0));
        }
        let v = v.clamp(lo, hi);
        let i = c.partition_point(|&x| x <= v).clamp(1, c.len() - 1) - 1;
        Some((i, ((v - c[i]) / (c[i + 1] - c[i])).clamp(0.0, 1.0)))
    }
    let (Some((ix, tx)), Some((iy, ty))) = (locate(xs, a), locate(ys, b)) else {
        return f64::NAN;
    };
    let mut v = 0.0;
    for (jy, wy) in [(iy, 1.0 - ty), (iy + 1, ty)] {
        for (jx, wx) in [(ix, 1.0 - tx), (ix + 1, tx)] {
            let w = wx * wy;
            if w > 0.0 {
                v += w * z[[jy, jx]];
            }
        }
    }
    v
}

/// The most march steps of one ray per grid point (`nx + ny`): a uniform grid needs at most
/// 4 per point, so this only coarsens the march on grids with very uneven spacing.
const MAX_STEPS_PER_POINT: usize = 16;

/// Basin radius along `rays` rays from the center (2-D; a 1-D surface always uses 2 rays,
/// +α and −α).
///
/// Li et al. (2018, arXiv:1712.09913, §6–7) compare the *width* of the basin around a
/// minimizer — wide, near-convex for residual networks, narrow and chaotic for deep plain
/// ones — by eye on contour plots. This makes it a number. With z₀ the loss at the
/// center c (the grid point nearest (0, 0)) and f the bilinear interpolant of the grid,
/// ray k (direction u_k = (cos 2πk/R, sin 2πk/R), in grid coordinates (α, β)) has
///
/// ```text
/// r_k = min { t > 0 : f(c + t u_k) > z₀ + δ }
/// ```
///
/// found by marching in steps of a quarter of the smallest grid spacing (at most
/// 16 (nx + ny) steps per ray) and then bisecting the bracketing step. A ray that reaches the grid boundary, or a point that is not
/// computed (NaN), without crossing is *censored*: r_k is where it stopped. Reported:
/// the mean and minimum of r_k and the censored count. For a quadratic bowl
/// a‖(α, β)‖² the radius is √(δ/a) along every ray.
///
/// Undefined (the reason is returned) when the center is not finite or an axis of a 2-D
/// surface (the x axis of a 1-D one) has fewer than 2 points.
///
/// # Panics
/// When `z` is not `[ys.len(), xs.len()]`, or `delta` is not positive.
pub fn basin_radius(
    z: ArrayView2<f64>,
    xs: &[f64],
    ys: &[f64],
    delta: f64,
    rays: usize,
) -> Result<BasinRadius, Undefined> {
    assert_eq!(z.dim(), (ys.len(), xs.len()), "z must be [ny, nx]");
    assert!(delta > 0.0, "delta must be positive");
    let two_d = ys.len() > 1;
    if xs.len() < 2 {
        return Err(Undefined::TooFewAxisPoints {
            nx: xs.len(),
            ny: ys.len(),
        });
    }
    let (cy, cx) = center_index(xs, ys);
    let z0 = z[[cy, cx]];
    if !z0.is_finite() {
        return Err(Undefined::CenterNotFinite {
            alpha: xs[cx],
            beta: ys[cy],
        });
    }
    let rays = if two_d { rays.max(1) } else { 2 };
    let threshold = z0 + delta;
    let spacing = |c: &[f64]| {
        c.windows(2)
            .map(|w| w[1] - w[0])
            .fold(f64::INFINITY, f64::min)
    };
    let h = if two_d {
        spacing(xs).min(spacing(ys))
    } else {
        spacing(xs)
    } / 4.0;
    let (x0, y0) = (xs[cx], ys[cy]);
    let at = |t: f64, dx: f64, dy: f64| interpolate(&z, xs, ys, x0 + t * dx, y0 + t * dy);

    let mut distances = Vec::with_capacity(rays);
    let mut censored = 0;
    for k in 0..rays {
        let angle = if two_d {
            2.0 * std::f64::consts::PI * k as f64 / rays as f64
        } else {
            std::f64::consts::PI * k as f64
        };
        let snap = |v: f64| if v.abs() < 1e-12 { 0.0 } else { v };
        let (dx, dy) = (
            snap(angle.cos()),
            if two_d { snap(angle.sin()) } else { 0.0 },
        );
        // distance to the grid boundary along the ray
        let exit = |p: f64, d: f64, c: &[f64]| {
            if d > 0.0 {
                (c[c.len() - 1] - p) / d
            } else if d < 0.0 {
                (c[0] - p) / d
            } else {
                f64::INFINITY
            }
        };
        let t_max = exit(x0, dx, xs).min(exit(y0, dy, ys)).max(0.0);
        // On a very uneven grid (one tiny spacing) a quarter-spacing march would take
        // unboundedly many steps: cap it at MAX_STEPS_PER_POINT per grid point.
        let max_steps = MAX_STEPS_PER_POINT * (xs.len() + ys.len());
        let (steps, h) = match (t_max / h).ceil() {
            n if n <= max_steps as f64 => (n as usize, h),
            _ => (max_steps, t_max / max_steps as f64),
        };
        let mut t_prev = 0.0;
        let mut crossed = None;
        for s in 1..=steps {
            let t = (s as f64 * h).min(t_max);
            let v = at(t, dx, dy);
            if v.is_nan() {
                break;
            }
            if v > threshold {
                let (mut lo, mut hi) = (t_prev, t);
                for _ in 0..60 {
                    let mid = 0.5 * (lo + hi);
                    let w = at(mid, dx, dy);
                    if w > threshold || w.is_nan() {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                crossed = Some(0.5 * (lo + hi));
                break;
            }
            t_prev = t;
        }
        match crossed {
            Some(r) => distances.push(r),
            None => {
                censored += 1;
                distances.push(t_prev);
            }
        }
    }
    Ok(BasinRadius {
        mean: distances.iter().sum::<f64>() / rays as f64,
        min: distances.iter().copied().fold(f64::INFINITY, f64::min),
        rays,
        censored,
        distances,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn interpolation_skips_zero_weights() {
        let z = array![[0.0, 1.0], [f64::NAN, f64::NAN]];
        let c = [0.0, 1.0];
        assert_eq!(interpolate(&z.view(), &c, &c, 0.25, 0.0), 0.25);
        assert!(interpolate(&z.view(), &c, &c, 0.25, 0.5).is_nan());
        assert!(interpolate(&z.view(), &c, &c, 1.5, 0.0).is_nan());
        let z = array![[0.0, 2.0], [4.0, 6.0]];
        assert_eq!(interpolate(&z.view(), &c, &c, 0.5, 0.5), 3.0);
    }

    #[test]
    fn censored_rays_stop_at_the_boundary() {
        let c: Vec<f64> = (0..11).map(|i| -1.0 + 0.2 * i as f64).collect();
        let z = ndarray::Array2::from_shape_fn((11, 11), |(iy, ix)| {
            0.1 * (c[ix].powi(2) + c[iy].powi(2))
        });
        let b = basin_radius(z.view(), &c, &c, 1.0, 4).unwrap();
        assert_eq!(b.censored, 4);
        assert!(
            b.distances.iter().all(|&d| (d - 1.0).abs() < 1e-12),
            "{b:?}"
        );
        let one = ndarray::Array2::zeros((1, 1));
        assert!(basin_radius(one.view(), &[0.0], &[0.0], 1.0, 16).is_err());
    }

    /// A grid with one spacing of 1e-300 (a corrupt file) used to march ~1e300 steps; the
    /// capped march still finds the crossing by bisection.
    #[test]
    fn uneven_grids_march_a_bounded_number_of_steps() {
        let c: [f64; 4] = [-1.0, 0.0, 1e-300, 1.0];
        let z = ndarray::Array2::from_shape_fn((4, 4), |(iy, ix)| c[ix].powi(2) + c[iy].powi(2));
        let b = basin_radius(z.view(), &c, &c, 0.25, 8).unwrap();
        assert_eq!(b.censored, 0);
        // along the axes the interpolant of x² on [0, 1] is linear: it crosses 0.25 at 0.25
        assert!((b.distances[0] - 0.25).abs() < 1e-9, "{b:?}");
    }
}
