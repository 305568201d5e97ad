//! What the plots draw: a surface file's chosen quantity as a masked grid, its labels, and
//! the value scales (levels, colours) shared by the 2-D kinds.

use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2, Ix1, Ix2};
use plotters::style::colors::colormaps::ViridisRGB;
use plotters::style::RGBColor;

use super::PlotError;
use crate::io::surface::{read_surface, Attr, SurfaceFile, SurfaceFileError};

/// Levels drawn when neither `--vmin/--vmax/--vlevel` nor anything else says otherwise.
pub const AUTO_LEVELS: usize = 12;
/// The automatic scale stops at this quantile of the finite values, so that the steep
/// corners of a landscape (losses 100× the minimum) do not squeeze every contour into the
/// basin. Values above it are drawn in the top colour.
pub const AUTO_TOP_QUANTILE: f64 = 0.95;
/// At most this many explicit levels; more would be an unreadable black smear.
pub const MAX_LEVELS: usize = 200;
/// A log scale is chosen automatically when the value range spans this factor or more.
pub const AUTO_LOG_RATIO: f64 = 20.0;

/// A surface file opened for plotting.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub file: SurfaceFile,
}

impl Loaded {
    pub fn open(path: &Path) -> Result<Self, PlotError> {
        let file = read_surface(path).map_err(|e| match e {
            SurfaceFileError::Missing { path, field } => PlotError::NotSurface {
                path,
                dataset: field,
            },
            other => PlotError::Surface(other),
        })?;
        // an axis must be drawable: finite and increasing (a NaN would poison every range)
        for (axis, c) in [
            ("xcoordinates", Some(&file.x)),
            ("ycoordinates", file.y.as_ref()),
        ] {
            let Some(c) = c else { continue };
            if let Some(i) = c.iter().position(|v| !v.is_finite()) {
                return Err(PlotError::Input {
                    path: path.to_path_buf(),
                    why: format!("'{axis}'[{i}] is {}: coordinates must be finite", c[i]),
                });
            }
            if let Some(i) = c.windows(2).position(|w| w[0] >= w[1]) {
                return Err(PlotError::Input {
                    path: path.to_path_buf(),
                    why: format!(
                        "'{axis}' is not increasing at index {} ({} then {})",
                        i + 1,
                        c[i],
                        c[i + 1]
                    ),
                });
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Warnings a reader should see (axes reinterpreted, points not computed).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if let Some(a) = self.file.attrs.get("reinterpreted_axes") {
            w.push(format!("{}: {a}", self.path.display()));
        }
        let total = self.file.values.completed.len();
        let done = self.file.values.completed_count();
        if done < total {
            w.push(format!(
                "{}: {} of {total} points not computed; drawn blank",
                self.path.display(),
                total - done
            ));
        }
        w
    }

    /// The named quantity with pending points set to NaN.
    pub fn quantity(&self, name: &str) -> Result<ndarray::ArrayD<f64>, PlotError> {
        let v = &self.file.values;
        let a = v.get(name).ok_or_else(|| PlotError::MissingDataset {
            path: self.path.clone(),
            dataset: name.into(),
            available: v.names.join(", "),
        })?;
        let mut a = a.clone();
        if v.completed.shape() == a.shape() {
            ndarray::Zip::from(&mut a)
                .and(&v.completed)
                .for_each(|z, &c| {
                    if c == 0 {
                        *z = f64::NAN;
                    }
                });
        }
        Ok(a)
    }

    /// A 2-D quantity (`[iy, ix]`), or an error naming the file when the surface is 1-D.
    pub fn grid(&self, name: &str, kind: &str) -> Result<Grid, PlotError> {
        let Some(y) = &self.file.y else {
            return Err(PlotError::Input {
                path: self.path.clone(),
                why: format!(
                    "the surface is 1-D (no 'ycoordinates'); `kind` {kind} needs a 2-D surface, use `kind` curve"
                ),
            });
        };
        let z = self
            .quantity(name)?
            .into_dimensionality::<Ix2>()
            .map_err(|e| PlotError::Input {
                path: self.path.clone(),
                why: format!("dataset '{name}': {e}"),
            })?;
        Ok(Grid {
            x: self.file.x.clone(),
            y: y.clone(),
            z,
        })
    }

    /// A 1-D quantity along α; for a 2-D surface, the row nearest β = 0 (and a warning).
    pub fn line(&self, name: &str) -> Result<Option<LineData>, PlotError> {
        if self.file.values.get(name).is_none() {
            return Ok(None);
        }
        let q = self.quantity(name)?;
        match &self.file.y {
            None => {
                let a = q
                    .into_dimensionality::<Ix1>()
                    .map_err(|e| PlotError::Input {
                        path: self.path.clone(),
                        why: format!("dataset '{name}': {e}"),
                    })?;
                Ok(Some((a, None)))
            }
            Some(y) => {
                let iy = (0..y.len())
                    .min_by(|&a, &b| y[a].abs().total_cmp(&y[b].abs()))
                    .unwrap_or(0);
                let a = q
                    .into_dimensionality::<Ix2>()
                    .map_err(|e| PlotError::Input {
                        path: self.path.clone(),
                        why: format!("dataset '{name}': {e}"),
                    })?;
                Ok(Some((
                    a.row(iy).to_owned(),
                    Some(format!(
                        "{}: 2-D surface; drawing the row β = {:.3}",
                        self.path.display(),
                        y[iy]
                    )),
                )))
            }
        }
    }

    fn attr(&self, key: &str) -> Option<String> {
        self.file.attrs.get(key).map(Attr::to_string)
    }

    /// "α (x direction, filter-normalized)"; `axis` is "x" or "y". Along eigenvectors:
    /// "α (top-1 eigenvector of the GGN, λ = 0.18, unit)".
    pub fn axis_label(&self, axis: &str) -> String {
        self.axis_label_with(axis, true)
    }

    /// [`Loaded::axis_label`] without the eigenvalue, for axes shared by several models.
    pub fn shared_axis_label(&self, axis: &str) -> String {
        self.axis_label_with(axis, false)
    }

    fn axis_label_with(&self, axis: &str, values: bool) -> String {
        let letter = if axis == "x" { "α" } else { "β" };
        let eigen = self.attr("direction_kind").as_deref() == Some("eigen");
        let mut parts = vec![format!("{axis} direction")];
        if eigen {
            let op = match self.attr("eigen_operator").as_deref() {
                Some("ggn") => "GGN".to_string(),
                Some("fisher") => "Fisher".to_string(),
                Some("empirical-fisher") => "empirical Fisher".to_string(),
                Some(other) if !other.is_empty() && other != "hessian" => other.to_string(),
                _ => "Hessian".to_string(),
            };
            let rank = if axis == "x" { 1 } else { 2 };
            parts = vec![format!("top-{rank} eigenvector of the {op}")];
            if let Some(Attr::Float(l)) = self.file.attrs.get(&format!("eigenvalue_{axis}")) {
                if values {
                    parts.push(format!("λ = {}", fmt_value(*l)));
                }
            }
        }
        match self.attr("direction_norm").as_deref() {
            None | Some("") => {}
            Some("none") if eigen => parts.push("unit".into()),
            Some("none") | Some("unnormalized") => parts.push("unnormalized".into()),
            Some(n) => parts.push(format!("{n}-normalized")),
        }
        if let Some(t) = self.attr("dir_type") {
            if t != "weights" && !t.is_empty() {
                parts.push(t);
            }
        }
        format!("{letter} ({})", parts.join(", "))
    }

    /// The model's file name, else the surface file's name.
    pub fn short_name(&self) -> String {
        let from = |s: &str| {
            Path::new(s)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| s.to_string())
        };
        match self.attr("model") {
            Some(m) if !m.is_empty() => from(&m),
            _ => from(&self.path.to_string_lossy()),
        }
    }

    /// "train loss · resnet20.safetensors on digits (train)".
    pub fn title(&self, quantity: &str) -> String {
        let mut t = format!("{} · {}", quantity_label(quantity), self.short_name());
        if let Some(d) = self.attr("data") {
            let d = Path::new(&d)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or(d);
            t.push_str(&format!(" on {d}"));
        }
        t
    }
}

/// A 1-D quantity and, when it was cut from a 2-D surface, a warning saying so.
pub type LineData = (Array1<f64>, Option<String>);

/// A human name for a dataset of a surface file.
pub fn quantity_label(name: &str) -> String {
    match name {
        "train_loss" => "train loss".into(),
        "test_loss" => "test loss".into(),
        "train_acc" => "train accuracy (%)".into(),
        "test_acc" => "test accuracy (%)".into(),
        "max_eig" => "λmax".into(),
        "min_eig" => "λmin".into(),
        other => other.replace('_', " "),
    }
}

/// A 2-D quantity on its grid: `z[[iy, ix]]` at `(x[ix], y[iy])`, NaN where masked.
#[derive(Clone, Debug)]
pub struct Grid {
    pub x: Vec<f64>,
    pub y: Vec<f64>,
    pub z: Array2<f64>,
}

impl Grid {
    pub fn x_range(&self) -> (f64, f64) {
        range_of(&self.x)
    }
    pub fn y_range(&self) -> (f64, f64) {
        range_of(&self.y)
    }

    /// The x extent of the cells centred on the grid points: half a spacing beyond the
    /// outermost points, so a heat map's edge cells are as wide as the others.
    pub fn x_cells(&self) -> (f64, f64) {
        cell_range(&self.x)
    }

    /// The y extent of the cells centred on the grid points (see [`Grid::x_cells`]).
    pub fn y_cells(&self) -> (f64, f64) {
        cell_range(&self.y)
    }

    /// The value of the grid point whose cell holds `(x, y)`: the nearest point, the outer
    /// cells reaching half a spacing past the grid; `None` outside or when masked.
    pub fn nearest_cell(&self, x: f64, y: f64) -> Option<f64> {
        let inside = |c: &[f64], (lo, hi): (f64, f64), v: f64| {
            (lo..=hi)
                .contains(&v)
                .then(|| v.clamp(c[0], c[c.len() - 1]))
        };
        let x = inside(&self.x, self.x_cells(), x)?;
        let y = inside(&self.y, self.y_cells(), y)?;
        self.nearest(x, y)
    }

    /// Bilinear value at `(x, y)`; `None` outside the grid or when a corner is masked.
    pub fn bilinear(&self, x: f64, y: f64) -> Option<f64> {
        let (fx, ix) = locate(&self.x, x)?;
        let (fy, iy) = locate(&self.y, y)?;
        let ix1 = (ix + 1).min(self.x.len() - 1);
        let iy1 = (iy + 1).min(self.y.len() - 1);
        let c = [
            self.z[[iy, ix]],
            self.z[[iy, ix1]],
            self.z[[iy1, ix]],
            self.z[[iy1, ix1]],
        ];
        if c.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let top = c[0] * (1.0 - fx) + c[1] * fx;
        let bottom = c[2] * (1.0 - fx) + c[3] * fx;
        Some(top * (1.0 - fy) + bottom * fy)
    }

    /// The value of the nearest grid point; `None` outside the grid or when masked.
    pub fn nearest(&self, x: f64, y: f64) -> Option<f64> {
        let (fx, ix) = locate(&self.x, x)?;
        let (fy, iy) = locate(&self.y, y)?;
        let ix = if fx > 0.5 { ix + 1 } else { ix }.min(self.x.len() - 1);
        let iy = if fy > 0.5 { iy + 1 } else { iy }.min(self.y.len() - 1);
        let v = self.z[[iy, ix]];
        v.is_finite().then_some(v)
    }

    pub fn finite(&self) -> impl Iterator<Item = f64> + '_ {
        self.z.iter().copied().filter(|v| v.is_finite())
    }
}

fn cell_range(c: &[f64]) -> (f64, f64) {
    let n = c.len();
    if n >= 2 && c[1] > c[0] && c[n - 1] > c[n - 2] {
        (
            c[0] - 0.5 * (c[1] - c[0]),
            c[n - 1] + 0.5 * (c[n - 1] - c[n - 2]),
        )
    } else {
        range_of(c)
    }
}

fn range_of(c: &[f64]) -> (f64, f64) {
    let lo = c.first().copied().unwrap_or(0.0);
    let hi = c.last().copied().unwrap_or(1.0);
    if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, lo + 0.5)
    }
}

/// Index of the cell holding `v` in increasing coordinates `c`, and the fraction across it.
fn locate(c: &[f64], v: f64) -> Option<(f64, usize)> {
    let n = c.len();
    if n == 0 || !v.is_finite() {
        return None;
    }
    if n == 1 {
        return Some((0.0, 0));
    }
    let (lo, hi) = (c[0], c[n - 1]);
    let span = hi - lo;
    let tol = span.abs() * 1e-9;
    if v < lo.min(hi) - tol || v > lo.max(hi) + tol {
        return None;
    }
    // coordinates are evenly spaced (linspace), so the cell index is arithmetic
    let f = ((v - lo) / span * (n - 1) as f64).clamp(0.0, (n - 1) as f64);
    let i = (f.floor() as usize).min(n - 2);
    Some((f - i as f64, i))
}

/// The `q` quantile (0..1) of finite values, by linear interpolation between order statistics.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let i = pos.floor() as usize;
    let j = (i + 1).min(v.len() - 1);
    Some(v[i] + (v[j] - v[i]) * (pos - i as f64))
}

/// Where colours map from and to, linear or logarithmic.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColorScale {
    pub lo: f64,
    pub hi: f64,
    pub log: bool,
}

impl ColorScale {
    /// A scale over `[lo, hi]`; a log scale needs `lo > 0`. A flat range is widened.
    pub fn new(lo: f64, hi: f64, log: bool) -> Self {
        let (mut lo, mut hi) = (lo, hi);
        if log {
            lo = lo.max(f64::MIN_POSITIVE);
            hi = hi.max(lo);
            if hi <= lo * (1.0 + 1e-9) {
                hi = lo * 10.0;
            }
        } else if hi <= lo {
            let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
            lo -= pad;
            hi += pad;
        }
        Self { lo, hi, log }
    }

    /// Position of `v` on the scale, clamped to 0..1.
    pub fn t(&self, v: f64) -> f64 {
        let t = if self.log {
            (v.max(self.lo).ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        };
        t.clamp(0.0, 1.0)
    }

    /// The value at position `t` (inverse of [`ColorScale::t`]).
    pub fn value(&self, t: f64) -> f64 {
        if self.log {
            (self.lo.ln() + t * (self.hi.ln() - self.lo.ln())).exp()
        } else {
            self.lo + t * (self.hi - self.lo)
        }
    }

    pub fn color(&self, v: f64) -> RGBColor {
        viridis(self.t(v))
    }
}

pub fn viridis(t: f64) -> RGBColor {
    use plotters::style::colors::colormaps::ColorMap;
    ViridisRGB.get_color(t.clamp(0.0, 1.0) as f32)
}

/// Contour levels and the colour scale they imply.
#[derive(Clone, Debug, PartialEq)]
pub struct Levels {
    pub values: Vec<f64>,
    pub scale: ColorScale,
}

/// `--vmin/--vmax/--vlevel` as given (loss-landscape's defaults 0.1, 10, 0.5 fill the gaps).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LevelSpec {
    pub vmin: Option<f64>,
    pub vmax: Option<f64>,
    pub vlevel: Option<f64>,
}

impl LevelSpec {
    pub fn is_given(&self) -> bool {
        self.vmin.is_some() || self.vmax.is_some() || self.vlevel.is_some()
    }
}

/// loss-landscape `plot_2D.py` defaults.
pub const LL_VMIN: f64 = 0.1;
pub const LL_VMAX: f64 = 10.0;
pub const LL_VLEVEL: f64 = 0.5;

/// Levels from an explicit spec (`vmin, vmin+vlevel, … ≤ vmax`), else automatic over the
/// finite values: `AUTO_LEVELS` levels from the minimum to the `AUTO_TOP_QUANTILE`
/// quantile, log-spaced when `log` is asked or the range spans `AUTO_LOG_RATIO`.
pub fn make_levels(spec: &LevelSpec, values: &[f64], log: bool) -> Result<Levels, PlotError> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if spec.is_given() {
        let vmin = spec.vmin.unwrap_or(LL_VMIN);
        let vmax = spec.vmax.unwrap_or(LL_VMAX);
        let step = spec.vlevel.unwrap_or(LL_VLEVEL);
        if vmax.partial_cmp(&vmin) != Some(std::cmp::Ordering::Greater)
            || step.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
        {
            return Err(PlotError::LevelOrder {
                vmin,
                vmax,
                vlevel: step,
            });
        }
        if log && vmin <= 0.0 {
            return Err(PlotError::LogVmin { vmin });
        }
        let n = ((vmax - vmin) / step * (1.0 + 1e-12)).floor() as usize + 1;
        if n > MAX_LEVELS {
            return Err(PlotError::TooManyLevels {
                vmin,
                vmax,
                vlevel: step,
                levels: n,
                max: MAX_LEVELS,
            });
        }
        let values: Vec<f64> = (0..n).map(|i| vmin + i as f64 * step).collect();
        return Ok(Levels {
            values,
            scale: ColorScale::new(vmin, vmax, log),
        });
    }
    if finite.is_empty() {
        return Err(PlotError::NoFiniteValues);
    }
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let mut hi = quantile(&finite, AUTO_TOP_QUANTILE).unwrap_or(lo);
    if hi <= lo {
        hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    }
    let use_log = lo > 0.0 && (log || hi / lo >= AUTO_LOG_RATIO);
    let scale = ColorScale::new(lo, hi, use_log);
    let values = (0..AUTO_LEVELS)
        .map(|i| scale.value((i as f64 + 0.5) / AUTO_LEVELS as f64))
        .collect();
    Ok(Levels { values, scale })
}

/// A short label for a level: three significant digits, no trailing zeros.
pub fn fmt_value(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.2e}");
    }
    let digits = (2 - a.log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_levels_follow_loss_landscape() {
        let l = make_levels(
            &LevelSpec {
                vmin: Some(0.1),
                vmax: Some(10.0),
                vlevel: Some(0.5),
            },
            &[],
            false,
        )
        .unwrap();
        assert_eq!(l.values.len(), 20);
        assert!((l.values[19] - 9.6).abs() < 1e-12);
        assert!(make_levels(
            &LevelSpec {
                vmin: Some(0.0),
                vmax: Some(1.0),
                vlevel: Some(1e-6)
            },
            &[],
            false
        )
        .is_err());
    }

    #[test]
    fn auto_levels_go_log_on_wide_ranges() {
        let v: Vec<f64> = (0..100).map(|i| 0.01 * 1.1f64.powi(i)).collect();
        let l = make_levels(
            &LevelSpec {
                vmin: None,
                vmax: None,
                vlevel: None,
            },
            &v,
            false,
        )
        .unwrap();
        assert!(l.scale.log);
        assert_eq!(l.values.len(), AUTO_LEVELS);
        assert!(l.values.windows(2).all(|w| w[1] > w[0]));
    }

    #[test]
    fn scale_round_trips() {
        for log in [false, true] {
            let s = ColorScale::new(0.1, 10.0, log);
            for t in [0.0, 0.3, 1.0] {
                assert!((s.t(s.value(t)) - t).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn bilinear_masks_nan_cells() {
        let mut z = Array2::from_shape_fn((3, 3), |(i, j)| (i + j) as f64);
        z[[2, 2]] = f64::NAN;
        let g = Grid {
            x: vec![-1.0, 0.0, 1.0],
            y: vec![-1.0, 0.0, 1.0],
            z,
        };
        assert_eq!(g.bilinear(-0.5, -0.5), Some(1.0));
        assert_eq!(g.bilinear(0.5, 0.5), None);
        assert_eq!(g.bilinear(2.0, 0.0), None);
        assert_eq!(g.nearest(0.9, -0.9), Some(2.0));
    }

    /// Heat-map cells centred on the grid points: the extent reaches half a spacing past
    /// the outer points, and every cell, edge cells included, covers the same width.
    #[test]
    fn heat_cells_are_equally_wide() {
        let g = Grid {
            x: vec![-1.0, -0.5, 0.0, 0.5, 1.0],
            y: vec![0.0, 2.0],
            z: Array2::from_shape_fn((2, 5), |(i, j)| (10 * i + j) as f64),
        };
        assert_eq!(g.x_cells(), (-1.25, 1.25));
        assert_eq!(g.y_cells(), (-1.0, 3.0));
        assert_eq!(g.nearest_cell(-1.2, 2.9), Some(10.0));
        assert_eq!(g.nearest_cell(-1.3, 0.0), None);
        assert_eq!(g.nearest_cell(0.0, 3.1), None);
        let n = 10_000;
        let mut width = [0usize; 5];
        for k in 0..n {
            let x = -1.25 + 2.5 * (k as f64 + 0.5) / n as f64;
            width[g.nearest_cell(x, 0.0).unwrap() as usize] += 1;
        }
        assert!(width.iter().all(|&w| w.abs_diff(n / 5) <= 1), "{width:?}");
        // one point along an axis: no spacing to extend by
        let one = Grid {
            x: vec![0.0],
            y: vec![0.0],
            z: Array2::zeros((1, 1)),
        };
        assert_eq!(one.x_cells(), (-0.5, 0.5));
    }

    #[test]
    fn values_format_short() {
        assert_eq!(fmt_value(0.5), "0.5");
        assert_eq!(fmt_value(2.3456), "2.35");
        assert_eq!(fmt_value(123.4), "123");
        assert_eq!(fmt_value(1e-5), "1.00e-5");
    }
}
