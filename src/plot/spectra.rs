//! Per-block spectra of a Hessian file written with `--per-block`, as one figure: on the
//! left the SLQ eigenvalue density of each block (one curve per block, coloured by depth,
//! the whole network dashed black), on the right the top eigenvalues of each block against
//! its depth (λmax joined by a line, λ2…λk as rings, the whole network's λmax dashed).
//! Without densities the figure is the right panel alone.
//!
//! The densities are drawn from the SLQ quadrature (Ritz values θᵢ, weights wᵢ) on one
//! common grid with one Gaussian width, σ = (range of all Ritz values) / [`SMOOTHING`]:
//! φ(t) = (1/runs) Σ wᵢ N(t; θᵢ, σ²). The files' own densities use PyHessian's
//! σ² = 1e-5 per unit of each group's range, whose spikes would hide one block behind
//! another.

use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;

use super::data::fmt_value;
use super::draw::{font, Area};
use super::{draw_err, Ctx, DrawError, PlotError};
use crate::io::hessian::{read_spectra, GroupSpectrum, Spectra};
use crate::io::surface::Attr;

/// See [`super::curve`]: densities below this fraction of the peak are floored.
const DENSITY_FLOOR: f64 = 1e-6;
/// The display kernel's width is the whole range of Ritz values over this.
pub const SMOOTHING: f64 = 100.0;
/// Points of the common density grid.
const GRID_POINTS: usize = 800;

pub struct BlockSpectraData {
    whole: GroupSpectrum,
    blocks: Vec<GroupSpectrum>,
    title: String,
    /// `Hessian`, `GGN`, …
    operator: String,
}

/// The operator's display name from a file's `operator` attribute.
pub fn operator_label(op: Option<&str>) -> String {
    match op {
        Some("ggn") => "GGN".into(),
        Some("fisher") => "Fisher".into(),
        Some("empirical-fisher") => "empirical Fisher".into(),
        _ => "Hessian".into(),
    }
}

/// Whether a Hessian file has per-block groups (then `spectrum` draws them all).
pub fn has_blocks(path: &Path) -> bool {
    read_spectra(path).is_ok_and(|s| !s.blocks.is_empty())
}

/// The default image size of a per-block spectrum: two panels with densities, one without.
pub fn default_size(path: &Path) -> Option<(u32, u32)> {
    let blocks = read_spectra(path).ok()?.blocks;
    match (
        blocks.is_empty(),
        blocks.iter().any(|b| b.density.is_some()),
    ) {
        (true, _) => None,
        (false, true) => Some((1400, 600)),
        // SLQ data without a stored density still draws the density panel
        (false, false) if blocks.iter().any(|b| b.slq.is_some()) => Some((1400, 600)),
        (false, false) => Some((900, 560)),
    }
}

/// Reads every group of a Hessian file written with `--per-block`.
pub fn load_block_spectra(path: &Path, title: Option<&str>) -> Result<BlockSpectraData, PlotError> {
    let Spectra {
        whole,
        blocks,
        attrs,
    } = read_spectra(path).map_err(|e| PlotError::Hdf5 {
        path: path.into(),
        why: e.to_string(),
    })?;
    if blocks.iter().all(|b| b.top.is_empty()) {
        return Err(PlotError::Needs {
            path: path.into(),
            missing: "'blocks/*/eigenvalues'".into(),
            hint: "per-block spectra need a Hessian file written by `losscape hessian --per-block`"
                .into(),
        });
    }
    let op = operator_label(attrs.get("operator").and_then(Attr::as_str));
    let name = |k: &str| {
        attrs.get(k).map(|a| {
            let s = a.to_string();
            Path::new(&s)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or(s)
        })
    };
    let title = title.map(str::to_string).unwrap_or_else(|| {
        let mut t = format!("{op} spectrum per block");
        if let Some(m) = name("model") {
            t.push_str(&format!(" · {m}"));
        }
        if let Some(d) = name("data") {
            t.push_str(&format!(" on {d}"));
        }
        t
    });
    Ok(BlockSpectraData {
        whole,
        blocks,
        title,
        operator: op,
    })
}

/// Block `i` of `n`'s colour: viridis from dark (input side) to yellow (output side),
/// stopping short of the palest end so lines stay visible on white.
fn depth_color(i: usize, n: usize) -> RGBColor {
    let t = if n > 1 {
        i as f64 / (n - 1) as f64
    } else {
        0.0
    };
    let c = ViridisRGB::get_color(0.9 * t);
    RGBColor(c.0, c.1, c.2)
}

pub fn draw_block_spectra<DB: DrawingBackend>(
    root: &Area<DB>,
    d: &BlockSpectraData,
    ctx: Ctx,
) -> Result<(), DrawError> {
    let root = root.titled(&d.title, font(ctx.title)).map_err(draw_err)?;
    let with_density = d
        .blocks
        .iter()
        .any(|b| b.density.is_some() || b.slq.is_some());
    if with_density {
        let (w, _) = root.dim_in_pixel();
        let (left, right) = root.split_horizontally(w / 2);
        draw_densities(&left, d, ctx)?;
        draw_by_depth(&right, d, ctx)
    } else {
        draw_by_depth(&root, d, ctx)
    }
}

fn legend<'a, DB: DrawingBackend + 'a, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    ctx: Ctx,
    pos: SeriesLabelPosition,
) -> Result<(), DrawError>
where
    X: plotters::coord::ranged1d::Ranged<ValueType = f64>,
    Y: plotters::coord::ranged1d::Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(pos)
        .label_font(font(ctx.tick))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(draw_err)
}

/// One curve of the density panel: (label, colour or None for the whole network, φ on the
/// common grid).
type DensityCurve = (String, Option<RGBColor>, Vec<f64>);

/// The display densities of every group with SLQ data (or a stored density, resampled),
/// on one grid: (grid, curves).
fn display_densities(d: &BlockSpectraData) -> Option<(Vec<f64>, Vec<DensityCurve>)> {
    let n = d.blocks.len();
    let groups: Vec<(&GroupSpectrum, Option<RGBColor>)> = d
        .blocks
        .iter()
        .enumerate()
        .map(|(i, b)| (b, Some(depth_color(i, n))))
        .chain(std::iter::once((&d.whole, None)))
        .filter(|(g, _)| g.slq.is_some() || g.density.is_some())
        .collect();
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for (g, _) in &groups {
        let vals: Vec<f64> = match (&g.slq, &g.density) {
            (Some((nodes, _)), _) => nodes.iter().copied().collect(),
            (None, Some((grid, _))) => vec![grid[0], grid[grid.len() - 1]],
            _ => vec![],
        };
        for v in vals.into_iter().filter(|v| v.is_finite()) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    if !lo.is_finite() {
        return None;
    }
    let span = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
    let sigma = span / SMOOTHING;
    let (a, b) = (lo - 4.0 * sigma, hi + 4.0 * sigma);
    let grid: Vec<f64> = (0..GRID_POINTS)
        .map(|i| a + (b - a) * i as f64 / (GRID_POINTS - 1) as f64)
        .collect();
    let norm = 1.0 / (sigma * (2.0 * std::f64::consts::PI).sqrt());
    let curves = groups
        .iter()
        .map(|(g, color)| {
            let phi: Vec<f64> = match (&g.slq, &g.density) {
                (Some((nodes, weights)), _) => {
                    let runs = nodes.nrows().max(1) as f64;
                    grid.iter()
                        .map(|&t| {
                            nodes
                                .iter()
                                .zip(weights.iter())
                                .map(|(&x, &w)| {
                                    w * (-(t - x).powi(2) / (2.0 * sigma * sigma)).exp()
                                })
                                .sum::<f64>()
                                * norm
                                / runs
                        })
                        .collect()
                }
                (None, Some((gx, gy))) => grid
                    .iter()
                    .map(|&t| match gx.iter().position(|&x| x >= t) {
                        Some(0) | None => 0.0,
                        Some(k) => {
                            let f = (t - gx[k - 1]) / (gx[k] - gx[k - 1]);
                            gy[k - 1] + f * (gy[k] - gy[k - 1])
                        }
                    })
                    .collect(),
                _ => unreachable!("filtered above"),
            };
            let label = match color {
                Some(_) => g.name.clone(),
                None => "whole network".to_string(),
            };
            (label, *color, phi)
        })
        .collect();
    Some((grid, curves))
}

fn draw_densities<DB: DrawingBackend>(
    area: &Area<DB>,
    d: &BlockSpectraData,
    ctx: Ctx,
) -> Result<(), DrawError> {
    let Some((grid, curves)) = display_densities(d) else {
        return Err(DrawError::ZeroDensity);
    };
    let peak = curves
        .iter()
        .flat_map(|c| c.2.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    if peak <= 0.0 {
        return Err(DrawError::ZeroDensity);
    }
    let floor = peak * DENSITY_FLOOR;
    let (x0, x1) = (grid[0], grid[grid.len() - 1]);
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "{} eigenvalue density (SLQ, σ = range/{SMOOTHING:.0})",
                d.operator
            ),
            font(ctx.label),
        )
        .margin(ctx.tick)
        .x_label_area_size(ctx.label * 3)
        .y_label_area_size(ctx.label * 2 + ctx.tick * 4)
        .build_cartesian_2d(x0..x1, (floor..peak * 30.0).log_scale())
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
    for (label, color, phi) in &curves {
        // runs above the floor (a curve does not crawl along the bottom axis)
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for (&x, &v) in grid.iter().zip(phi) {
            if v.is_finite() && v >= floor {
                runs.last_mut().expect("one run").push((x, v));
            } else if !runs.last().expect("one run").is_empty() {
                runs.push(Vec::new());
            }
        }
        let style = match color {
            Some(c) => c.stroke_width(2),
            None => BLACK.stroke_width(1),
        };
        for (k, pts) in runs.into_iter().filter(|r| !r.is_empty()).enumerate() {
            let drawn = match color {
                Some(_) => chart.draw_series(LineSeries::new(pts, style)),
                None => chart.draw_series(DashedLineSeries::new(pts, 6, 4, style)),
            }
            .map_err(draw_err)?;
            if k == 0 {
                drawn
                    .label(label.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            }
        }
    }
    legend(&mut chart, ctx, SeriesLabelPosition::UpperRight)
}

fn draw_by_depth<DB: DrawingBackend>(
    area: &Area<DB>,
    d: &BlockSpectraData,
    ctx: Ctx,
) -> Result<(), DrawError> {
    let values: Vec<f64> = d
        .blocks
        .iter()
        .flat_map(|b| b.top.iter().copied())
        .chain(d.whole.top.first().copied())
        .filter(|v| v.is_finite())
        .collect();
    if values.is_empty() {
        return Err(DrawError::NoFiniteValues);
    }
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let n = d.blocks.len();
    let xr = -0.5..(n as f64 - 0.5);
    if lo > 0.0 {
        let hi = if hi > lo { hi } else { lo * 10.0 };
        // headroom on top for the legend
        by_depth_body(
            area,
            d,
            ctx,
            xr,
            (lo / 2.0..hi * (hi / lo).powf(0.35) * 2.0).log_scale(),
            true,
        )
    } else {
        let pad = if hi > lo { 0.08 * (hi - lo) } else { 0.5 };
        by_depth_body(area, d, ctx, xr, lo - pad..hi + 5.0 * pad, false)
    }
}

fn by_depth_body<DB, R>(
    area: &Area<DB>,
    d: &BlockSpectraData,
    ctx: Ctx,
    xr: std::ops::Range<f64>,
    y_range: R,
    log: bool,
) -> Result<(), DrawError>
where
    DB: DrawingBackend,
    R: AsRangedCoord<Value = f64>,
    R::CoordDescType: ValueFormatter<f64>,
{
    let n = d.blocks.len();
    let k = d.blocks.iter().map(|b| b.top.len()).max().unwrap_or(0);
    let names: Vec<String> = d.blocks.iter().map(|b| b.name.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("top-{k} eigenvalues per block, by depth"),
            font(ctx.label),
        )
        .margin(ctx.tick)
        .margin_right(ctx.tick * 2)
        .x_label_area_size(ctx.label * 3)
        .y_label_area_size(ctx.label * 2 + ctx.tick * 4)
        .build_cartesian_2d(xr.clone(), y_range)
        .map_err(draw_err)?;
    let label_of = move |v: &f64| {
        let i = v.round();
        if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
            names[i as usize].clone()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .light_line_style(BLACK.mix(0.04))
        .bold_line_style(BLACK.mix(0.1))
        .x_labels(n + 1)
        .x_label_formatter(&label_of)
        .x_desc("block (input → output)")
        .y_desc(if log {
            "eigenvalue λ (log scale)"
        } else {
            "eigenvalue λ"
        })
        .label_style(font(ctx.tick))
        .axis_desc_style(font(ctx.label))
        .y_label_formatter(&|v| fmt_value(*v))
        .draw()
        .map_err(draw_err)?;
    let keep = |v: f64| v.is_finite() && (!log || v > 0.0);
    // λ2 … λk as rings, in each block's colour
    let mut ring_label = false;
    for (i, b) in d.blocks.iter().enumerate() {
        let color = depth_color(i, n);
        let rings: Vec<(f64, f64)> = b
            .top
            .iter()
            .skip(1)
            .copied()
            .filter(|&v| keep(v))
            .map(|v| (i as f64, v))
            .collect();
        let s = chart
            .draw_series(
                rings
                    .iter()
                    .map(|&p| Circle::new(p, ctx.tick as i32 / 3 + 2, color.stroke_width(1))),
            )
            .map_err(draw_err)?;
        if !ring_label && !rings.is_empty() {
            ring_label = true;
            let which = if k == 2 {
                "λ2".to_string()
            } else {
                format!("λ2 … λ{k}")
            };
            s.label(which)
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, BLACK.mix(0.6).stroke_width(1)));
        }
    }
    // λmax joined across depth
    let tops: Vec<(f64, f64)> = d
        .blocks
        .iter()
        .enumerate()
        .filter_map(|(i, b)| b.top.first().map(|&v| (i as f64, v)))
        .filter(|&(_, v)| keep(v))
        .collect();
    let line = BLACK.mix(0.5).stroke_width(1);
    chart
        .draw_series(LineSeries::new(tops.clone(), line))
        .map_err(draw_err)?;
    chart
        .draw_series(tops.iter().map(|&(x, v)| {
            let c = depth_color(x as usize, n);
            Circle::new((x, v), ctx.tick as i32 / 2 + 2, c.filled())
        }))
        .map_err(draw_err)?
        .label("λmax of the block")
        .legend(|(x, y)| Circle::new((x + 10, y), 5, depth_color(0, 2).filled()));
    if let Some(&w) = d.whole.top.first().filter(|&&w| keep(w)) {
        let style = RGBColor(214, 39, 40).stroke_width(2);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(xr.start, w), (xr.end, w)],
                8,
                5,
                style,
            ))
            .map_err(draw_err)?
            .label(format!("λmax of the whole network ({})", fmt_value(w)))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    legend(&mut chart, ctx, SeriesLabelPosition::UpperLeft)
}
