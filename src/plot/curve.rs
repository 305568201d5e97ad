//! Line plots: the 1-D loss/accuracy curve (loss-landscape's `plot_1D.py`: loss on the left
//! axis, accuracy on the right, train solid, test dashed) and the Hessian's spectral
//! density (PyHessian's density plot, log density).

use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use super::data::{fmt_value, quantity_label};
use super::draw::{font, Area};
use super::{draw_err, Ctx, DrawError, PlotError};
use crate::io::surface::read_attrs;

/// Loss in blue, accuracy in red, as loss-landscape draws them.
const LOSS_COLOR: RGBColor = RGBColor(31, 119, 180);
const ACC_COLOR: RGBColor = RGBColor(214, 39, 40);
/// Axes reach this factor above the data so the legend, top centre, covers no curve.
const LEGEND_HEADROOM: f64 = 1.3;
/// Densities below this fraction of the peak are floored on the log axis: SLQ's Gaussian
/// tails fall to 1e-300 and would stretch the axis over hundreds of empty decades.
const DENSITY_FLOOR: f64 = 1e-8;

pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

pub struct CurveData {
    pub x: Vec<f64>,
    pub series: Vec<Series>,
    pub title: String,
    pub x_label: String,
    pub log: bool,
}

/// Runs of consecutive points where `keep` holds (masked points break the line).
fn runs(x: &[f64], y: &[f64], keep: impl Fn(f64) -> bool) -> Vec<Vec<(f64, f64)>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for (&a, &b) in x.iter().zip(y) {
        if b.is_finite() && keep(b) {
            cur.push((a, b));
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn range(x: &[f64]) -> (f64, f64) {
    let lo = x.first().copied().unwrap_or(0.0);
    let hi = x.last().copied().unwrap_or(1.0);
    if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, lo + 0.5)
    }
}

pub fn draw_curve<DB: DrawingBackend>(
    root: &Area<DB>,
    d: &CurveData,
    ctx: Ctx,
) -> Result<(), DrawError> {
    let keep = |v: f64| !d.log || v > 0.0;
    let loss: Vec<f64> = d
        .series
        .iter()
        .filter(|s| s.name.ends_with("_loss"))
        .flat_map(|s| s.values.iter().copied())
        .filter(|v| v.is_finite() && keep(*v))
        .collect();
    if loss.is_empty() {
        return Err(DrawError::NoFiniteLoss);
    }
    let lo = loss.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = loss.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if d.log {
        let hi = if hi > lo { hi } else { lo * 10.0 };
        // headroom on top for the legend
        curve_body(
            root,
            d,
            ctx,
            (lo / 1.25..hi * (hi / lo).powf(0.3)).log_scale(),
        )
    } else {
        let pad = if hi > lo { 0.05 * (hi - lo) } else { 0.5 };
        curve_body(root, d, ctx, lo - pad..hi + 6.0 * pad)
    }
}

fn curve_body<DB, R>(root: &Area<DB>, d: &CurveData, ctx: Ctx, y_range: R) -> Result<(), DrawError>
where
    DB: DrawingBackend,
    R: AsRangedCoord<Value = f64>,
    R::CoordDescType: ValueFormatter<f64>,
{
    let (x0, x1) = range(&d.x);
    let acc_max = d
        .series
        .iter()
        .filter(|s| s.name.ends_with("_acc"))
        .flat_map(|s| s.values.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let has_acc = d.series.iter().any(|s| s.name.ends_with("_acc"));
    let acc_top = if acc_max > 1.0 { 100.0 } else { 1.0 };
    let mut chart = ChartBuilder::on(root)
        .caption(&d.title, font(ctx.title))
        .margin(ctx.tick)
        .margin_right(ctx.tick * 2)
        .x_label_area_size(ctx.label * 3)
        .y_label_area_size(ctx.label * 2 + ctx.tick * 3)
        .right_y_label_area_size(if has_acc {
            ctx.label * 2 + ctx.tick * 3
        } else {
            0
        })
        .build_cartesian_2d(x0..x1, y_range)
        .map_err(draw_err)?
        .set_secondary_coord(x0..x1, 0.0..acc_top * LEGEND_HEADROOM);
    chart
        .configure_mesh()
        .light_line_style(BLACK.mix(0.04))
        .bold_line_style(BLACK.mix(0.1))
        .x_desc(&d.x_label)
        .y_desc("loss")
        .label_style(font(ctx.tick))
        .axis_desc_style(font(ctx.label))
        .x_label_formatter(&|v| fmt_value(*v))
        .y_label_formatter(&|v| fmt_value(*v))
        .draw()
        .map_err(draw_err)?;
    if has_acc {
        chart
            .configure_secondary_axes()
            .y_desc(if acc_top > 1.0 {
                "accuracy (%)"
            } else {
                "accuracy"
            })
            .label_style(font(ctx.tick))
            .axis_desc_style(font(ctx.label))
            .y_label_formatter(&|v| {
                if *v > acc_top * 1.0001 {
                    String::new()
                } else {
                    fmt_value(*v)
                }
            })
            .draw()
            .map_err(draw_err)?;
    }
    let keep_loss = |v: f64| v > 0.0 || !d.log;
    for s in &d.series {
        let is_acc = s.name.ends_with("_acc");
        let color = if is_acc { ACC_COLOR } else { LOSS_COLOR };
        let dashed = s.name.starts_with("test");
        let style = color.stroke_width(2);
        let label = quantity_label(&s.name);
        let pieces = if is_acc {
            runs(&d.x, &s.values, |_| true)
        } else {
            runs(&d.x, &s.values, keep_loss)
        };
        for (k, p) in pieces.into_iter().enumerate() {
            let anno = if is_acc {
                if dashed {
                    chart.draw_secondary_series(DashedLineSeries::new(p, 8, 5, style))
                } else {
                    chart.draw_secondary_series(LineSeries::new(p, style))
                }
            } else if dashed {
                chart.draw_series(DashedLineSeries::new(p, 8, 5, style))
            } else {
                chart.draw_series(LineSeries::new(p, style))
            }
            .map_err(draw_err)?;
            if k == 0 {
                anno.label(label.clone()).legend(move |(x, y)| {
                    if dashed {
                        PathElement::new(vec![(x, y), (x + 7, y)], style).into_dyn()
                            as DynElement<'static, _, _>
                    } else {
                        PathElement::new(vec![(x, y), (x + 20, y)], style).into_dyn()
                    }
                });
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperMiddle)
        .label_font(font(ctx.tick))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(draw_err)?;
    Ok(())
}

pub struct SpectrumData {
    grid: Vec<f64>,
    density: Vec<f64>,
    top: Vec<f64>,
    bottom: Vec<f64>,
    title: String,
}

/// Reads `density_grid`, `density` (and the eigenvalues, when there) from the root of a
/// Hessian file.
pub fn load_spectrum(path: &Path, title: Option<&str>) -> Result<SpectrumData, PlotError> {
    type Raw = (
        [Option<Vec<f64>>; 4],
        std::collections::BTreeMap<String, crate::io::surface::Attr>,
    );
    let ([grid, density, top, bottom], attrs) = crate::io::contain::contain(path, || {
        crate::io::hdf5_init();
        let f = hdf5::File::open(path).map_err(|e| format!("cannot open as HDF5 ({e})"))?;
        let read = |name: &str| f.dataset(name).and_then(|d| d.read_raw::<f64>()).ok();
        let names = [
            "density_grid",
            "density",
            "eigenvalues",
            "bottom_eigenvalues",
        ];
        Ok::<Raw, String>((names.map(read), read_attrs(&f)))
    })
    .map_err(|e| e.to_string())
    .and_then(|r| r)
    .map_err(|why| PlotError::Hdf5 {
        path: PathBuf::from(path),
        why,
    })?;
    let (Some(grid), Some(density)) = (grid.clone(), density.clone()) else {
        let missing: Vec<&str> = [("'density_grid'", &grid), ("'density'", &density)]
            .into_iter()
            .filter(|(_, v)| v.is_none())
            .map(|(n, _)| n)
            .collect();
        return Err(PlotError::Needs {
            path: path.into(),
            missing: missing.join(", "),
            hint: "a spectrum needs a Hessian file written by `losscape hessian --density`".into(),
        });
    };
    if grid.len() != density.len() || grid.len() < 2 {
        return Err(PlotError::Input {
            path: path.into(),
            why: format!(
                "'density_grid' has {} points and 'density' {}",
                grid.len(),
                density.len()
            ),
        });
    }
    let name = |k: &str| {
        attrs.get(k).map(|a| {
            let s = a.to_string();
            Path::new(&s)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or(s)
        })
    };
    let op = super::spectra::operator_label(attrs.get("operator").and_then(|a| a.as_str()));
    let title = title.map(str::to_string).unwrap_or_else(|| {
        let mut t = format!("{op} eigenvalue density");
        if let Some(m) = name("model") {
            t.push_str(&format!(" · {m}"));
        }
        if let Some(d) = name("data") {
            t.push_str(&format!(" on {d}"));
        }
        t
    });
    Ok(SpectrumData {
        grid,
        density,
        top: top.unwrap_or_default(),
        bottom: bottom.unwrap_or_default(),
        title,
    })
}

pub fn draw_spectrum<DB: DrawingBackend>(
    root: &Area<DB>,
    d: &SpectrumData,
    ctx: Ctx,
) -> Result<(), DrawError> {
    let peak = d
        .density
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    if peak <= 0.0 {
        return Err(DrawError::ZeroDensity);
    }
    let floor = peak * DENSITY_FLOOR;
    let (x0, x1) = range(&d.grid);
    let mut chart = ChartBuilder::on(root)
        .caption(&d.title, font(ctx.title))
        .margin(ctx.tick)
        .margin_right(ctx.tick * 2)
        .x_label_area_size(ctx.label * 3)
        .y_label_area_size(ctx.label * 2 + ctx.tick * 4)
        .build_cartesian_2d(x0..x1, (floor..peak * 2.0).log_scale())
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .light_line_style(BLACK.mix(0.04))
        .bold_line_style(BLACK.mix(0.1))
        .x_desc("eigenvalue λ")
        .y_desc("density (log scale)")
        .label_style(font(ctx.tick))
        .axis_desc_style(font(ctx.label))
        .x_label_formatter(&|v| fmt_value(*v))
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .draw()
        .map_err(draw_err)?;
    let pts = d
        .grid
        .iter()
        .zip(&d.density)
        .filter(|(_, v)| v.is_finite())
        .map(|(&x, &v)| (x, v.max(floor)));
    chart
        .draw_series(LineSeries::new(pts, LOSS_COLOR.stroke_width(2)))
        .map_err(draw_err)?
        .label("SLQ density")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], LOSS_COLOR.stroke_width(2)));
    let marks: Vec<f64> = d
        .top
        .iter()
        .chain(&d.bottom)
        .copied()
        .filter(|v| v.is_finite() && *v >= x0 && *v <= x1)
        .collect();
    if !marks.is_empty() {
        let style = ACC_COLOR.mix(0.7).stroke_width(1);
        for (k, &v) in marks.iter().enumerate() {
            let a = chart
                .draw_series(DashedLineSeries::new(
                    vec![(v, floor), (v, peak * 2.0)],
                    6,
                    4,
                    style,
                ))
                .map_err(draw_err)?;
            if k == 0 {
                a.label("Lanczos eigenvalues")
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperMiddle)
        .label_font(font(ctx.tick))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(draw_err)?;
    Ok(())
}
