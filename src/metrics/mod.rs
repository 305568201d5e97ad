//! Smoothness of a loss surface in numbers: what Li et al. (2018, arXiv:1712.09913) show
//! in pictures — wide, convex basins for residual networks, chaotic non-convex ones for
//! deep plain networks — as quantities a table can compare.
//!
//! A surface is `z[iy, ix] = L(θ + α_ix d₁ + β_iy d₂)` on a rectilinear grid with strictly
//! increasing coordinates (1-D: one row, `ys = [0.0]`); NaN marks points not computed and
//! is ignored everywhere, +∞ (an overflowed loss) counts as "higher" but is never fitted.
//! A grid with a single row is 1-D. The center c is the grid point nearest (0, 0): the
//! trained weights. Distances are in grid coordinates (α, β).
//!
//! ```text
//! center, minimum  z(c); min over finite points and its (α, β)          [extrema]
//! local minima     interior points strictly below every non-NaN neighbour (8; 1-D: 2)
//! basin radius     along R rays from c, the distance where the bilinear interpolant
//!                  first exceeds z(c) + δ; rays leaving the grid (or meeting a NaN)
//!                  first are censored at that distance; mean, min, censored count [basin]
//! roughness        RMS residual of the least-squares quadratic over finite points within
//!                  ρ of c, divided by the loss range there                     [roughness]
//! non-convexity    share of interior points within ρ whose finite-difference 2×2 Hessian
//!                  has λ_min < −τ, τ = 1e-3 · median(|f_αα| + |f_ββ|)          [curvature]
//! curvature        f_αα(c), f_ββ(c) by central differences ≈ d₁ᵀHd₁, d₂ᵀHd₂   [curvature]
//! ```
//!
//! Defaults: δ = 0.5 (absolute, in loss units — nats for cross-entropy — so that two
//! networks' basins are measured at the same loss rise; 0.5 is the contour spacing of
//! loss-landscape's plots), ρ = half the smaller half-width (max − min)/2 of the axes,
//! R = 16 rays in 2-D (always 2, ±α, in 1-D).
//!
//! Each metric that a grid cannot support (a 1-point axis, a NaN center, too few points in
//! the disc) is `None` with the reason in [`SurfaceMetrics::undefined`]; nothing panics on
//! a valid grid.

mod basin;
mod curvature;
mod extrema;
mod roughness;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

pub use basin::{basin_radius, BasinRadius};
pub use curvature::{center_curvature, fd_hessian, non_convex_fraction, NonConvexity};
pub use extrema::{center_index, grid_minimum, local_minima, nearest_zero};
pub use roughness::{roughness, Roughness};

/// Loss rise that ends a basin, when not given: loss-landscape's default contour spacing.
pub const DEFAULT_DELTA: f64 = 0.5;
/// Rays of a 2-D basin-radius measurement, when not given.
pub const DEFAULT_RAYS: usize = 16;
/// Negative-curvature tolerance τ relative to the median |f_αα| + |f_ββ|.
pub const CURVATURE_NOISE: f64 = 1e-3;

/// Parameters; `None` takes the default.
#[derive(Clone, Copy, Debug, Default)]
pub struct MetricParams {
    /// Loss rise δ that ends the basin ([`DEFAULT_DELTA`]).
    pub delta: Option<f64>,
    /// Radius ρ of the disc for roughness and non-convexity (half the smaller half-width).
    pub radius: Option<f64>,
    /// Rays R of a 2-D basin radius ([`DEFAULT_RAYS`]; 1-D always uses 2).
    pub rays: Option<usize>,
}

/// Errors that stop every metric (per-metric gaps are [`SurfaceMetrics::undefined`]).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Occurs when the requested quantity is not in the surface file.
    #[error(
        "no dataset '{name}' in the surface (it has {available:?}); choose one with `surf_name`"
    )]
    Missing {
        name: String,
        available: Vec<String>,
    },
    /// Occurs when the values' shape disagrees with the coordinates.
    #[error("values have shape {got:?}, the coordinates give {expected:?}")]
    Shape {
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// Occurs when an axis has no points.
    #[error("the grid is empty")]
    Empty,
    /// Occurs when coordinates are not finite and strictly increasing.
    #[error("the {axis} coordinates are not finite and strictly increasing")]
    Coordinates { axis: &'static str },
    /// Occurs when a parameter is out of range.
    #[error("`{field}` = {value} is invalid: it must be {want}")]
    Param {
        /// Config field that sets the parameter.
        field: &'static str,
        value: f64,
        want: &'static str,
    },
}

/// Why one metric is undefined on a grid (recorded in [`SurfaceMetrics::undefined`]; the
/// other metrics are still computed).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Undefined {
    /// Occurs when the center point is NaN (not computed).
    #[error("the center point is not computed")]
    CenterNotComputed,
    /// Occurs when no grid point holds a finite value.
    #[error("no finite value on the grid")]
    NoFiniteValue,
    /// Occurs when an axis the basin radius marches along has fewer than 2 points.
    #[error("needs at least 2 points along each axis, the grid is {nx}×{ny}")]
    TooFewAxisPoints { nx: usize, ny: usize },
    /// Occurs when the center's value is NaN or infinite.
    #[error("the center (α, β) = ({alpha}, {beta}) has no finite value")]
    CenterNotFinite { alpha: f64, beta: f64 },
    /// Occurs when the disc holds too few finite points for a quadratic fit.
    #[error("{points} finite points within radius {radius} of the center, a quadratic fit needs {needed}")]
    TooFewDiscPoints {
        points: usize,
        radius: f64,
        needed: usize,
    },
    /// Occurs when LAPACK's least-squares solver fails; `why` is its message.
    #[error("least squares failed ({why})")]
    LeastSquares { why: String },
    /// Occurs when the disc's points do not determine a quadratic (e.g. all on a line).
    #[error("the {points} points within radius {radius} do not determine a quadratic (rank {rank} < {coefficients})")]
    Rank {
        points: usize,
        radius: f64,
        rank: i32,
        coefficients: usize,
    },
    /// Occurs when no interior point within the radius has a finite stencil.
    #[error(
        "no interior point with a finite 3-point stencil within radius {radius} of the center"
    )]
    NoStencil { radius: f64 },
    /// Occurs when the center is on the boundary of the axis (no neighbour on one side).
    #[error("the center is on the {axis} boundary of the grid (no neighbour on both sides)")]
    CenterOnBoundary { axis: &'static str },
    /// Occurs when a neighbour of the center along the axis is not finite.
    #[error("a value next to the center along {axis} is not finite")]
    NeighbourNotFinite { axis: &'static str },
}

/// Every metric of one surface, with the parameters used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SurfaceMetrics {
    /// 1 or 2.
    pub dims: usize,
    /// Grid points, and how many of them hold a finite value.
    pub points: usize,
    pub finite_points: usize,
    /// (α, β) of the center, the grid point nearest (0, 0) (β = 0 in 1-D).
    pub center: (f64, f64),
    /// Value at the center.
    pub center_loss: Option<f64>,
    /// Smallest finite value and its (α, β).
    pub min_loss: Option<f64>,
    pub min_at: Option<(f64, f64)>,
    /// See [`basin_radius`].
    pub basin_radius: Option<BasinRadius>,
    /// See [`roughness`]: RMS residual of the quadratic fit / loss range, within ρ.
    pub roughness: Option<f64>,
    /// Finite points within ρ of the center (those fitted for the roughness).
    pub disc_points: usize,
    /// See [`non_convex_fraction`].
    pub non_convex_fraction: Option<f64>,
    /// Interior points within ρ with a finite stencil (the fraction's denominator).
    pub convexity_points: usize,
    /// See [`local_minima`].
    pub local_minima: usize,
    /// f_αα and f_ββ at the center, see [`center_curvature`] (`curvature_y` is `None` in 1-D).
    pub curvature_x: Option<f64>,
    pub curvature_y: Option<f64>,
    /// δ, ρ, R and τ used (τ is `None` when the non-convex fraction is undefined).
    pub delta: f64,
    pub radius: f64,
    pub rays: usize,
    pub tau: Option<f64>,
    /// Metric name → why it is `None`.
    pub undefined: BTreeMap<String, String>,
}

/// Grid points within `radius` of the center, `(iy, ix)` in row-major order (with a
/// relative tolerance of 1e-9 so points exactly on the circle count).
pub(crate) fn disc_points<'a>(
    xs: &'a [f64],
    ys: &'a [f64],
    radius: f64,
) -> impl Iterator<Item = (usize, usize)> + 'a {
    let (cy, cx) = center_index(xs, ys);
    let r2 = radius * radius * (1.0 + 1e-9);
    (0..ys.len())
        .flat_map(move |iy| (0..xs.len()).map(move |ix| (iy, ix)))
        .filter(move |&(iy, ix)| (xs[ix] - xs[cx]).powi(2) + (ys[iy] - ys[cy]).powi(2) <= r2)
}

fn check_positive(name: &'static str, v: f64) -> Result<f64, MetricsError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(MetricsError::Param {
            field: name,
            value: v,
            want: "finite and > 0",
        })
    }
}

/// Every metric of a surface `z` (`[ys.len(), xs.len()]`); a 1-D surface is passed as one
/// row with `ys = [0.0]`.
pub fn surface_metrics(
    z: ArrayView2<f64>,
    xs: &[f64],
    ys: &[f64],
    p: &MetricParams,
) -> Result<SurfaceMetrics, MetricsError> {
    if z.dim() != (ys.len(), xs.len()) {
        return Err(MetricsError::Shape {
            expected: vec![ys.len(), xs.len()],
            got: z.shape().to_vec(),
        });
    }
    if xs.is_empty() || ys.is_empty() {
        return Err(MetricsError::Empty);
    }
    for (axis, c) in [("x", xs), ("y", ys)] {
        if c.iter().any(|v| !v.is_finite()) || c.windows(2).any(|w| w[1] <= w[0]) {
            return Err(MetricsError::Coordinates { axis });
        }
    }
    let two_d = ys.len() > 1;
    let half = |c: &[f64]| (c[c.len() - 1] - c[0]) / 2.0;
    let delta = check_positive("delta", p.delta.unwrap_or(DEFAULT_DELTA))?;
    let radius = match p.radius {
        Some(r) => check_positive("radius", r)?,
        None if two_d => half(xs).min(half(ys)) / 2.0,
        None => half(xs) / 2.0,
    };
    let rays = match p.rays {
        Some(0) => {
            return Err(MetricsError::Param {
                field: "rays",
                value: 0.0,
                want: "at least 1",
            })
        }
        Some(r) if two_d => r,
        _ if two_d => DEFAULT_RAYS,
        _ => 2,
    };

    let mut undefined = BTreeMap::new();
    fn keep<T>(
        undefined: &mut BTreeMap<String, String>,
        name: &str,
        r: Result<T, Undefined>,
    ) -> Option<T> {
        r.map_err(|why| undefined.insert(name.to_string(), why.to_string()))
            .ok()
    }
    let (cy, cx) = center_index(xs, ys);
    let z0 = z[[cy, cx]];
    let center_loss = keep(
        &mut undefined,
        "center_loss",
        if z0.is_nan() {
            Err(Undefined::CenterNotComputed)
        } else {
            Ok(z0)
        },
    );
    let minimum = keep(
        &mut undefined,
        "min_loss",
        grid_minimum(z, xs, ys).ok_or(Undefined::NoFiniteValue),
    );
    let basin = keep(
        &mut undefined,
        "basin_radius",
        basin_radius(z, xs, ys, delta, rays),
    );
    let rough = keep(&mut undefined, "roughness", roughness(z, xs, ys, radius));
    let convex = keep(
        &mut undefined,
        "non_convex_fraction",
        non_convex_fraction(z, xs, ys, radius),
    );
    let (cur_x, cur_y) = center_curvature(z, xs, ys);
    let curvature_x = keep(&mut undefined, "curvature_x", cur_x);
    let curvature_y = cur_y.and_then(|r| keep(&mut undefined, "curvature_y", r));

    Ok(SurfaceMetrics {
        dims: if two_d { 2 } else { 1 },
        points: z.len(),
        finite_points: z.iter().filter(|v| v.is_finite()).count(),
        center: (xs[cx], ys[cy]),
        center_loss,
        min_loss: minimum.map(|m| m.0),
        min_at: minimum.map(|m| m.1),
        basin_radius: basin,
        roughness: rough.as_ref().map(|r| r.value),
        disc_points: disc_points(xs, ys, radius)
            .filter(|&(iy, ix)| z[[iy, ix]].is_finite())
            .count(),
        non_convex_fraction: convex.as_ref().map(|c| c.fraction),
        convexity_points: convex.as_ref().map_or(0, |c| c.points),
        local_minima: local_minima(z),
        curvature_x,
        curvature_y,
        delta,
        radius,
        rays,
        tau: convex.map(|c| c.tau),
        undefined,
    })
}

/// Metrics of the dataset `quantity` (e.g. `train_loss`) of a surface file.
pub fn surface_file_metrics(
    f: &crate::io::surface::SurfaceFile,
    quantity: &str,
    p: &MetricParams,
) -> Result<SurfaceMetrics, MetricsError> {
    let z = f
        .values
        .get(quantity)
        .ok_or_else(|| MetricsError::Missing {
            name: quantity.into(),
            available: f.values.names.clone(),
        })?;
    let ys = f.y.clone().unwrap_or_else(|| vec![0.0]);
    let expected = match &f.y {
        Some(y) => vec![y.len(), f.x.len()],
        None => vec![f.x.len()],
    };
    if z.shape() != expected.as_slice() {
        return Err(MetricsError::Shape {
            expected,
            got: z.shape().to_vec(),
        });
    }
    let z2 = z
        .to_shape((ys.len(), f.x.len()))
        .expect("same number of elements");
    surface_metrics(z2.view(), &f.x, &ys, p)
}

/// [`surface_file_metrics`], `None` on any error.
pub fn file_metrics(
    f: &crate::io::surface::SurfaceFile,
    quantity: &str,
    p: &MetricParams,
) -> Option<SurfaceMetrics> {
    surface_file_metrics(f, quantity, p).ok()
}
