//! Where the surface sits: the center point, the grid minimum, and strict local minima.

use ndarray::ArrayView2;

/// Index of the coordinate nearest 0 (the first one on ties). `c` must not be empty.
pub fn nearest_zero(c: &[f64]) -> usize {
    c.iter()
        .enumerate()
        .min_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
        .map(|(i, _)| i)
        .expect("non-empty coordinates")
}

/// `(iy, ix)` of the center: the grid point nearest (α, β) = (0, 0), where the trained
/// weights θ sit on a surface `L(θ + α d₁ + β d₂)`.
pub fn center_index(xs: &[f64], ys: &[f64]) -> (usize, usize) {
    (nearest_zero(ys), nearest_zero(xs))
}

/// The smallest finite value of the grid and where it is: `(value, (α, β))`; the first
/// in row-major order on ties, `None` when no value is finite.
///
/// # Panics
/// When `z` is not `[ys.len(), xs.len()]`.
pub fn grid_minimum(z: ArrayView2<f64>, xs: &[f64], ys: &[f64]) -> Option<(f64, (f64, f64))> {
    assert_eq!(z.dim(), (ys.len(), xs.len()), "z must be [ny, nx]");
    let mut best: Option<(f64, (f64, f64))> = None;
    for ((iy, ix), &v) in z.indexed_iter() {
        if v.is_finite() && best.is_none_or(|(b, _)| v < b) {
            best = Some((v, (xs[ix], ys[iy])));
        }
    }
    best
}

/// Number of strict local minima on the grid.
///
/// A point counts when it is interior (all 8 neighbour positions — 2 for a single-row,
/// 1-D surface — lie on the grid; boundary points are left out because the surface may
/// keep falling beyond the grid), its value is finite, at least one neighbour is not NaN,
/// and every neighbour that is not NaN is strictly larger. NaN (not computed) neighbours
/// are ignored; +∞ (overflowed) neighbours count as larger.
pub fn local_minima(z: ArrayView2<f64>) -> usize {
    let (ny, nx) = z.dim();
    let rows: &[isize] = if ny > 1 { &[-1, 0, 1] } else { &[0] };
    let interior = |i: usize, n: usize| n == 1 || (i > 0 && i + 1 < n);
    let mut count = 0;
    for ((iy, ix), &v) in z.indexed_iter() {
        if !v.is_finite() || !interior(iy, ny) || !interior(ix, nx) || nx < 3 {
            continue;
        }
        let (mut strict, mut any) = (true, false);
        for &dy in rows {
            for dx in [-1isize, 0, 1] {
                if dx == 0 && dy == 0 {
                    continue;
                }
                let w = z[[(iy as isize + dy) as usize, (ix as isize + dx) as usize]];
                if w.is_nan() {
                    continue;
                }
                any = true;
                if w <= v {
                    strict = false;
                }
            }
        }
        if strict && any {
            count += 1;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn center_minimum_and_minima() {
        assert_eq!(nearest_zero(&[-1.0, -0.1, 0.2, 1.0]), 1);
        assert_eq!(center_index(&[-1.0, 0.0, 1.0], &[0.5, 1.0]), (0, 1));
        let z = array![[3.0, 2.0, 3.0], [2.0, f64::NAN, 1.5], [3.0, 2.0, 3.0]];
        let xs = [-1.0, 0.0, 1.0];
        assert_eq!(grid_minimum(z.view(), &xs, &xs), Some((1.5, (1.0, 0.0))));
        // the only interior point is NaN
        assert_eq!(local_minima(z.view()), 0);
        let z = array![
            [3.0, 2.0, 3.0],
            [2.0, 1.0, f64::NAN],
            [3.0, 2.0, f64::INFINITY]
        ];
        assert_eq!(local_minima(z.view()), 1);
        let z = array![[3.0, 2.0, 3.0], [2.0, 2.0, 3.0], [3.0, 3.0, 3.0]];
        assert_eq!(local_minima(z.view()), 0, "ties are not strict");
        let all_nan = ndarray::Array2::from_elem((3, 3), f64::NAN);
        assert_eq!(grid_minimum(all_nan.view(), &xs, &xs), None);
        assert_eq!(local_minima(all_nan.view()), 0);
        // 1-D: two neighbours, edges excluded
        let z = array![[0.0, 1.0, 0.5, 2.0, 1.0, 3.0]];
        assert_eq!(local_minima(z.view()), 2);
    }
}
