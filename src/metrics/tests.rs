//! Synthetic surfaces with known answers.

use ndarray::Array2;

use super::*;

fn axis(n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| -1.0 + 2.0 * i as f64 / (n - 1) as f64)
        .collect()
}

fn surface(n: usize, f: impl Fn(f64, f64) -> f64) -> (Array2<f64>, Vec<f64>) {
    let c = axis(n);
    (Array2::from_shape_fn((n, n), |(iy, ix)| f(c[ix], c[iy])), c)
}

fn with_delta(delta: f64) -> MetricParams {
    MetricParams {
        delta: Some(delta),
        ..Default::default()
    }
}

fn metrics(z: &Array2<f64>, xs: &[f64], ys: &[f64], p: &MetricParams) -> SurfaceMetrics {
    surface_metrics(z.view(), xs, ys, p).unwrap()
}

#[test]
fn quadratic_bowl() {
    let a = 2.0;
    let (z, c) = surface(41, |x, y| a * (x * x + y * y));
    let m = metrics(&z, &c, &c, &with_delta(0.5));
    assert_eq!((m.dims, m.points, m.finite_points), (2, 41 * 41, 41 * 41));
    assert_eq!(m.center, (0.0, 0.0));
    assert_eq!(m.center_loss, Some(0.0));
    assert_eq!((m.min_loss, m.min_at), (Some(0.0), Some((0.0, 0.0))));
    let want = (0.5f64 / a).sqrt();
    let b = m.basin_radius.as_ref().unwrap();
    assert_eq!((b.rays, b.censored, b.distances.len()), (16, 0, 16));
    for d in &b.distances {
        // bilinear interpolation overshoots a quadratic by at most a h²/4 between nodes
        assert!((d - want).abs() < 5e-3, "{b:?} vs {want}");
    }
    assert!((b.mean - want).abs() < 5e-3 && (b.min - want).abs() < 5e-3);
    assert!(m.roughness.unwrap() < 1e-10, "{:?}", m.roughness);
    assert_eq!(m.non_convex_fraction, Some(0.0));
    assert!(m.convexity_points > 100);
    assert_eq!(m.local_minima, 1);
    assert!((m.curvature_x.unwrap() - 2.0 * a).abs() < 1e-9);
    assert!((m.curvature_y.unwrap() - 2.0 * a).abs() < 1e-9);
    assert_eq!((m.delta, m.radius, m.rays), (0.5, 0.5, 16));
    assert!(m.undefined.is_empty(), "{:?}", m.undefined);
}

#[test]
fn defaults_are_stated() {
    let (z, c) = surface(21, |x, y| x * x + y * y);
    let m = metrics(&z, &c, &c, &MetricParams::default());
    assert_eq!(
        (m.delta, m.radius, m.rays),
        (DEFAULT_DELTA, 0.5, DEFAULT_RAYS)
    );
    let b = m.basin_radius.unwrap();
    assert!((b.min - DEFAULT_DELTA.sqrt()).abs() < 1e-2, "{b:?}");
}

#[test]
fn ripples_are_rough_with_many_minima() {
    let (z, c) = surface(81, |x, y| {
        x * x + y * y + 0.05 * (40.0 * x).sin() * (40.0 * y).sin()
    });
    let m = metrics(&z, &c, &c, &MetricParams::default());
    assert!(m.roughness.unwrap() > 0.01, "{:?}", m.roughness);
    assert!(m.local_minima > 3, "{}", m.local_minima);
    assert!(m.non_convex_fraction.unwrap() > 0.1);
    // the smooth bowl on the same grid
    let (z, c) = surface(81, |x, y| x * x + y * y);
    let smooth = metrics(&z, &c, &c, &MetricParams::default());
    assert!(smooth.roughness.unwrap() < 1e-10);
}

#[test]
fn saddle_is_non_convex() {
    let (z, c) = surface(41, |x, y| x * x - y * y);
    let m = metrics(&z, &c, &c, &MetricParams::default());
    assert_eq!(m.non_convex_fraction, Some(1.0));
    assert!(
        (m.tau.unwrap() - 4e-3).abs() < 1e-9,
        "τ = 1e-3 · median(|2| + |−2|)"
    );
    assert!((m.curvature_x.unwrap() - 2.0).abs() < 1e-9);
    assert!((m.curvature_y.unwrap() + 2.0).abs() < 1e-9);
    assert!(m.roughness.unwrap() < 1e-10, "a saddle is a quadratic");
    assert_eq!(m.local_minima, 0);
    // along ±β the loss falls: those rays run to the boundary, censored
    let b = m.basin_radius.unwrap();
    assert!(b.censored >= 2, "{b:?}");
    assert!((b.distances[4] - 1.0).abs() < 1e-12 && (b.distances[12] - 1.0).abs() < 1e-12);
}

#[test]
fn anisotropic_bowl_ray_minimum() {
    // x² + 16 y²: δ = 0.25 is reached at |α| = 0.5 and at |β| = 0.125
    let (z, c) = surface(81, |x, y| x * x + 16.0 * y * y);
    let m = metrics(&z, &c, &c, &with_delta(0.25));
    let b = m.basin_radius.unwrap();
    assert!((b.min - 0.125).abs() < 2e-3, "{b:?}");
    assert!((b.distances[0] - 0.5).abs() < 2e-3 && (b.distances[8] - 0.5).abs() < 2e-3);
    assert!((b.distances[4] - 0.125).abs() < 2e-3 && (b.distances[12] - 0.125).abs() < 2e-3);
    // ray at angle θ: r = sqrt(δ / (cos²θ + 16 sin²θ))
    let exact: f64 = (0..16)
        .map(|k| {
            let t = std::f64::consts::PI * k as f64 / 8.0;
            (0.25 / (t.cos().powi(2) + 16.0 * t.sin().powi(2))).sqrt()
        })
        .sum::<f64>()
        / 16.0;
    assert!((b.mean - exact).abs() < 2e-3, "{} vs {exact}", b.mean);
    assert_eq!(b.censored, 0);
    assert!((m.curvature_y.unwrap() - 32.0).abs() < 1e-8);
}

#[test]
fn one_dimensional() {
    let c = axis(21);
    let row = |f: &dyn Fn(f64) -> f64| Array2::from_shape_fn((1, 21), |(_, ix)| f(c[ix]));
    let z = row(&|x| 3.0 * x * x);
    let m = metrics(&z, &c, &[0.0], &with_delta(0.75));
    assert_eq!((m.dims, m.rays), (1, 2));
    let b = m.basin_radius.as_ref().unwrap();
    assert_eq!((b.rays, b.censored), (2, 0));
    assert!((b.distances[0] - 0.5).abs() < 1e-2 && (b.distances[1] - 0.5).abs() < 1e-2);
    assert!((m.curvature_x.unwrap() - 6.0).abs() < 1e-9);
    assert_eq!(m.curvature_y, None);
    assert!(!m.undefined.contains_key("curvature_y"));
    assert_eq!(m.local_minima, 1);
    assert!(m.roughness.unwrap() < 1e-10);
    assert_eq!(m.non_convex_fraction, Some(0.0));
    assert_eq!(m.radius, 0.5);

    let m = metrics(&row(&|x| -x * x), &c, &[0.0], &MetricParams::default());
    assert_eq!(m.non_convex_fraction, Some(1.0));
    assert_eq!(m.basin_radius.unwrap().censored, 2);
    assert!((m.curvature_x.unwrap() + 2.0).abs() < 1e-9);

    let c = axis(201);
    let z = Array2::from_shape_fn((1, 201), |(_, ix)| {
        c[ix] * c[ix] + 0.05 * (40.0 * c[ix]).sin()
    });
    let m = metrics(&z, &c, &[0.0], &MetricParams::default());
    assert!(m.roughness.unwrap() > 0.01, "{:?}", m.roughness);
    assert!(m.local_minima > 1);
}

#[test]
fn nan_holes_are_ignored() {
    let (mut z, c) = surface(41, |x, y| 2.0 * (x * x + y * y));
    // outside every ray's crossing (10 cells from the center), one inside the disc
    for (iy, ix) in [(3, 7), (35, 12), (10, 30), (0, 0), (23, 17)] {
        z[[iy, ix]] = f64::NAN;
    }
    let m = metrics(&z, &c, &c, &with_delta(0.5));
    assert_eq!(m.finite_points, 41 * 41 - 5);
    assert!(m.roughness.unwrap() < 1e-10);
    assert_eq!(m.non_convex_fraction, Some(0.0));
    assert_eq!(m.local_minima, 1);
    assert!((m.curvature_x.unwrap() - 4.0).abs() < 1e-9);
    assert_eq!(m.min_loss, Some(0.0));

    // a hole on the +α axis at α = 0.25 stops that ray just before it: censored
    let (mut z, c) = surface(41, |x, y| 2.0 * (x * x + y * y));
    z[[20, 25]] = f64::NAN;
    let b = metrics(&z, &c, &c, &with_delta(0.5)).basin_radius.unwrap();
    assert_eq!(b.censored, 1, "{b:?}");
    assert!((b.distances[0] - 0.2).abs() < 1e-9, "{b:?}");
    assert!((b.distances[4] - 0.5).abs() < 5e-3);

    // NaN center: basin and center loss undefined, the rest still measured
    let (mut z, c) = surface(41, |x, y| x * x + y * y);
    z[[20, 20]] = f64::NAN;
    let m = metrics(&z, &c, &c, &MetricParams::default());
    assert_eq!(m.center_loss, None);
    assert!(m.basin_radius.is_none());
    assert!(m.undefined.contains_key("basin_radius") && m.undefined.contains_key("center_loss"));
    assert!(m.curvature_x.is_none() && m.undefined.contains_key("curvature_x"));
    assert!(m.roughness.unwrap() < 1e-10);
    assert_eq!(m.local_minima, 0);
}

#[test]
fn degenerate_grids_give_reasons_not_panics() {
    // one point
    let z = Array2::from_elem((1, 1), 1.5);
    let m = metrics(&z, &[0.0], &[0.0], &MetricParams::default());
    assert_eq!((m.center_loss, m.min_loss), (Some(1.5), Some(1.5)));
    assert!(m.basin_radius.is_none() && m.roughness.is_none());
    assert!(m.non_convex_fraction.is_none() && m.curvature_x.is_none());
    for k in [
        "basin_radius",
        "roughness",
        "non_convex_fraction",
        "curvature_x",
    ] {
        assert!(m.undefined.contains_key(k), "{k}: {:?}", m.undefined);
    }
    let json = serde_json::to_string(&m).unwrap();
    assert!(json.contains("\"roughness\":null"), "{json}");
    let back: SurfaceMetrics = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);

    // a single column of a 2-D grid, a 2×2 grid, all NaN, a center on the boundary
    let z = Array2::from_elem((3, 1), 1.0);
    let m = metrics(&z, &[0.0], &[-1.0, 0.0, 1.0], &MetricParams::default());
    assert!(m.basin_radius.is_none() && m.curvature_x.is_none());
    assert_eq!(m.curvature_y, Some(0.0));
    let z = Array2::from_elem((2, 2), 1.0);
    let m = metrics(&z, &[0.0, 1.0], &[0.0, 1.0], &MetricParams::default());
    assert!(m.roughness.is_none() && m.non_convex_fraction.is_none());
    let z = Array2::from_elem((5, 5), f64::NAN);
    let c = axis(5);
    let m = metrics(&z, &c, &c, &MetricParams::default());
    assert_eq!((m.center_loss, m.min_loss, m.local_minima), (None, None, 0));
    let c2: Vec<f64> = (0..11).map(|i| i as f64 / 10.0).collect();
    let z = Array2::from_shape_fn((11, 11), |(iy, ix)| c2[ix] + c2[iy]);
    let m = metrics(&z, &c2, &c2, &MetricParams::default());
    assert_eq!(m.center, (0.0, 0.0));
    assert!(m.undefined["curvature_x"].contains("boundary"));
    assert_eq!(m.basin_radius.unwrap().rays, 16);
}

#[test]
fn bad_input_is_an_error() {
    let z = Array2::zeros((3, 4));
    let c = axis(3);
    assert!(matches!(
        surface_metrics(z.view(), &c, &c, &MetricParams::default()),
        Err(MetricsError::Shape { .. })
    ));
    let z = Array2::zeros((3, 3));
    let bad = [1.0, 0.0, 2.0];
    assert!(matches!(
        surface_metrics(z.view(), &bad, &c, &MetricParams::default()),
        Err(MetricsError::Coordinates { axis: "x" })
    ));
    for p in [
        with_delta(0.0),
        with_delta(f64::NAN),
        MetricParams {
            radius: Some(-1.0),
            ..Default::default()
        },
        MetricParams {
            rays: Some(0),
            ..Default::default()
        },
    ] {
        assert!(matches!(
            surface_metrics(z.view(), &c, &c, &p),
            Err(MetricsError::Param { .. })
        ));
    }
    let z = Array2::<f64>::zeros((0, 0));
    assert!(matches!(
        surface_metrics(z.view(), &[], &[], &MetricParams::default()),
        Err(MetricsError::Empty)
    ));
}

#[test]
fn sum_of_cosines_has_a_known_count_of_minima() {
    // cos(3πα) + cos(2πβ) on [−1, 1]², 41 × 41 (h = 0.05): interior minima of cos(3πα) at
    // α = ±1/3 (nearest nodes ±0.35, strictly lowest), of cos(2πβ) at β = ±1/2 (nodes);
    // a separable sum is a strict 8-neighbour minimum exactly where both terms are, so
    // 2 × 2 = 4 (the minima of cos(3πα) at α = ±1 lie on the boundary and do not count)
    let pi = std::f64::consts::PI;
    let (z, c) = surface(41, |x, y| (3.0 * pi * x).cos() + (2.0 * pi * y).cos());
    let m = metrics(&z, &c, &c, &MetricParams::default());
    assert_eq!(m.local_minima, 4);
    // the same in 1-D: two interior minima of cos(3πα)
    let row = ndarray::Array2::from_shape_fn((1, 41), |(_, ix)| (3.0 * pi * c[ix]).cos());
    assert_eq!(
        metrics(&row, &c, &[0.0], &MetricParams::default()).local_minima,
        2
    );
    // the negated surface: minima where cos(3πα) = 1 (α = 0, ±2/3 → nodes ±0.65) and
    // cos(2πβ) = 1 (β = 0; β = ±1 is the boundary): 3
    assert_eq!(local_minima((-&z).view()), 3);
    // a bowl on the same 41 × 41 grid: one minimum, nothing non-convex, no roughness
    let (z, c) = surface(41, |x, y| 3.0 * x * x + y * y);
    let m = metrics(&z, &c, &c, &MetricParams::default());
    assert_eq!((m.local_minima, m.non_convex_fraction), (1, Some(0.0)));
    assert!(m.roughness.unwrap() < 1e-10);
}
