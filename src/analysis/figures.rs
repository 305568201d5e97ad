//! Figures of an analysis report, drawn with plotters and an embedded font (DejaVu Sans,
//! `assets/fonts/`), so the same data give the same PNG bytes on every machine.
//!
//! - gradient norm per layer and activation std per block, at a fresh He init and
//!   trained side by side, one line per model (plain dashed, residual solid), log scale.
//! - training curves of trained models: loss (log) and accuracy per epoch, side by side.

use std::path::Path;

use plotters::prelude::*;

use super::error::{AnalysisError, AnalysisResult};

/// Registers the embedded font (shared with the plot module).
pub fn ensure_font() {
    crate::plot::font::ensure_font();
}

/// A legend glyph at (x, y): a solid line, or a dashed one (two segments) when `$dashed`.
macro_rules! legend_line {
    ($dashed:expr, $style:expr) => {{
        let (gap, style) = (if $dashed { 5 } else { 0 }, $style);
        move |(x, y): (i32, i32)| {
            EmptyElement::at((x, y))
                + PathElement::new(vec![(0, 0), (8, 0)], style)
                + PathElement::new(vec![(8 + gap, 0), (20, 0)], style)
        }
    }};
}

/// Draws `$pts` on `$chart` as a solid (residual) or dashed (plain) line in `$style`,
/// with a legend entry when `$label` is `Some`.
macro_rules! family_line {
    ($chart:expr, $pts:expr, $residual:expr, $style:expr, $label:expr) => {{
        let (style, label): (ShapeStyle, Option<&str>) = ($style, $label);
        let drawn = if $residual {
            $chart.draw_series(LineSeries::new($pts, style))
        } else {
            $chart.draw_series(DashedLineSeries::new($pts, 6, 4, style))
        }
        .map_err(err)?;
        if let Some(l) = label {
            drawn.label(l).legend(legend_line!(!$residual, style));
        }
    }};
}

fn err<E: std::fmt::Debug>(e: E) -> AnalysisError {
    AnalysisError::Draw {
        why: format!("{e:?}"),
    }
}

fn nothing_to_draw(title: &str) -> AnalysisError {
    AnalysisError::NothingToDraw {
        title: title.into(),
    }
}

type Series = (String, bool, Vec<f64>);

/// Side-by-side panels of lines `values[i]` against their index, one line per model
/// (plain dashed, residual solid), sharing one log y-axis so the panels compare directly.
pub fn depth_panels(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    panels: &[(&str, Vec<Series>)],
) -> AnalysisResult<()> {
    ensure_font();
    let n = panels.len().max(1);
    let root = BitMapBackend::new(path, (560 * n as u32, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let finite: Vec<f64> = panels
        .iter()
        .flat_map(|p| p.1.iter().flat_map(|s| s.2.iter().copied()))
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    if finite.is_empty() {
        return Err(nothing_to_draw(title));
    }
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min) / 1.5;
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max) * 1.5;
    let max_len = panels
        .iter()
        .flat_map(|p| p.1.iter().map(|s| s.2.len()))
        .max()
        .unwrap_or(1)
        .max(2);
    let root = root.titled(title, ("sans-serif", 22)).map_err(err)?;
    let areas = root.split_evenly((1, n));
    for (k, ((panel_title, series), area)) in panels.iter().zip(areas.iter()).enumerate() {
        let mut chart = ChartBuilder::on(area)
            .caption(*panel_title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..(max_len - 1) as f64, (lo..hi).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&|v: &f64| format!("{v:.0}"))
            .y_label_formatter(&|v: &f64| format!("{v:.1e}"))
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 14))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(err)?;
        for (i, (label, residual, v)) in series.iter().enumerate() {
            let c = Palette99::pick(i).to_rgba();
            let pts: Vec<(f64, f64)> = v
                .iter()
                .enumerate()
                .filter(|(_, y)| y.is_finite() && **y > 0.0)
                .map(|(x, &y)| (x as f64, y))
                .collect();
            let width = if *residual { 2 } else { 1 };
            let label = (k == 0).then_some(label.as_str());
            family_line!(chart, pts.clone(), *residual, c.stroke_width(width), label);
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 2, c.filled())))
                .map_err(err)?;
        }
        if k == 0 {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .label_font(("sans-serif", 12))
                .position(SeriesLabelPosition::LowerLeft)
                .draw()
                .map_err(err)?;
        }
    }
    root.present().map_err(err)?;
    Ok(())
}

/// A line of [`TrendPanel`]: label, residual (solid) or plain (dashed), (depth, value) points.
pub type TrendLine = (String, bool, Vec<(f64, f64)>);

/// One panel of [`depth_trends`]: title, log y-axis or not, and one (depth, value) line per
/// family (residual solid, plain dashed).
pub struct TrendPanel {
    pub title: String,
    pub log: bool,
    pub lines: Vec<TrendLine>,
}

/// A row of small panels, each a metric against network depth.
pub fn depth_trends(path: &Path, title: &str, panels: &[TrendPanel]) -> AnalysisResult<()> {
    ensure_font();
    let n = panels.len().max(1);
    let root = BitMapBackend::new(path, (360 * n as u32, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(err)?;
    let areas = root.split_evenly((1, n));
    let all: Vec<(f64, f64)> = panels
        .iter()
        .flat_map(|p| p.lines.iter().flat_map(|l| l.2.iter().copied()))
        .collect();
    let (dmin, dmax) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
        (a.0.min(p.0), a.1.max(p.0))
    });
    if !dmin.is_finite() {
        return Err(nothing_to_draw(title));
    }
    let pad = ((dmax - dmin) * 0.05).max(1.0);
    let xr = (dmin - pad)..(dmax + pad);
    for (k, (panel, area)) in panels.iter().zip(areas.iter()).enumerate() {
        let vals: Vec<f64> = panel
            .lines
            .iter()
            .flat_map(|l| l.2.iter().map(|p| p.1))
            .filter(|v| v.is_finite() && (!panel.log || *v > 0.0))
            .collect();
        if vals.is_empty() {
            continue;
        }
        let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        // the legend goes in the left corner (upper or lower) with fewer points near it
        let legend_at = {
            let height = |v: f64| match panel.log {
                true if lo > 0.0 && hi > lo => (v.ln() - lo.ln()) / (hi.ln() - lo.ln()),
                _ if hi > lo => (v - lo) / (hi - lo),
                _ => 0.5,
            };
            let left: Vec<f64> = panel
                .lines
                .iter()
                .flat_map(|l| l.2.iter())
                .filter(|p| p.0 <= dmin + 0.4 * (dmax - dmin) && p.1.is_finite())
                .map(|p| height(p.1))
                .collect();
            let upper = left.iter().filter(|&&h| h > 0.6).count();
            let lower = left.iter().filter(|&&h| h < 0.4).count();
            if upper > lower {
                SeriesLabelPosition::LowerLeft
            } else {
                SeriesLabelPosition::UpperLeft
            }
        };
        let mut b = ChartBuilder::on(area);
        b.caption(&panel.title, ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(62);
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc("depth")
                    .x_label_formatter(&|v: &f64| format!("{v:.0}"))
                    .y_label_formatter(&|v: &f64| {
                        if v.abs() >= 1e3 || (v.abs() < 1e-2 && *v != 0.0) {
                            format!("{v:.1e}")
                        } else if v.abs() >= 10.0 {
                            format!("{v:.0}")
                        } else {
                            format!("{v:.3}")
                        }
                    })
                    .label_style(("sans-serif", 11))
                    .axis_desc_style(("sans-serif", 13))
                    .light_line_style(WHITE.mix(0.0))
                    .draw()
                    .map_err(err)?;
                for (i, (label, residual, pts)) in panel.lines.iter().enumerate() {
                    // one hue per family: blues/greens residual, reds/oranges plain
                    let nth = panel.lines[..i].iter().filter(|l| l.1 == *residual).count();
                    let c = if *residual {
                        [
                            RGBColor(31, 119, 180),
                            RGBColor(44, 160, 44),
                            RGBColor(23, 190, 207),
                        ][nth % 3]
                            .to_rgba()
                    } else {
                        [
                            RGBColor(214, 39, 40),
                            RGBColor(255, 127, 14),
                            RGBColor(140, 86, 75),
                        ][nth % 3]
                            .mix(0.9)
                    };
                    let pts: Vec<(f64, f64)> = pts
                        .iter()
                        .copied()
                        .filter(|p| p.1.is_finite() && (!panel.log || p.1 > 0.0))
                        .collect();
                    let width = if *residual { 2 } else { 1 };
                    let label = (k == 0).then_some(label.as_str());
                    family_line!(chart, pts.clone(), *residual, c.stroke_width(width), label);
                    chart
                        .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                        .map_err(err)?;
                }
                if k == 0 {
                    chart
                        .configure_series_labels()
                        .background_style(WHITE.mix(0.85))
                        .border_style(BLACK.mix(0.3))
                        .label_font(("sans-serif", 12))
                        .position(legend_at)
                        .draw()
                        .map_err(err)?;
                }
            }};
        }
        if panel.log {
            let r = (lo / 1.5)..(hi * 1.5);
            draw!(b
                .build_cartesian_2d(xr.clone(), r.log_scale())
                .map_err(err)?);
        } else {
            let m = ((hi - lo) * 0.1).max(1e-12 + hi.abs() * 1e-3);
            draw!(b
                .build_cartesian_2d(xr.clone(), (lo - m)..(hi + m))
                .map_err(err)?);
        }
    }
    root.present().map_err(err)?;
    Ok(())
}

/// One model's training curve: (label, residual, depth, [(loss, accuracy)] per epoch).
pub type TrainingSeries = (String, bool, usize, Vec<(f64, f64)>);

/// Training curves, one line per model (plain dashed, residual solid, one colour per
/// depth): loss (log scale) and accuracy (%) against the epoch, in two panels of one image.
/// `series`: (label, residual, depth, [(loss, accuracy)] per epoch).
pub fn training_curves(
    path: &Path,
    title: &str,
    y_desc: (&str, &str),
    series: &[TrainingSeries],
) -> AnalysisResult<()> {
    ensure_font();
    let root = BitMapBackend::new(path, (1100, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(err)?;
    let (left, right) = root.split_horizontally(550);
    let epochs = series.iter().map(|s| s.3.len()).max().unwrap_or(1).max(2) as f64;
    let mut depths: Vec<usize> = series.iter().map(|s| s.2).collect();
    depths.sort_unstable();
    depths.dedup();
    let losses: Vec<f64> = series
        .iter()
        .flat_map(|s| s.3.iter().map(|p| p.0))
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    if losses.is_empty() {
        return Err(nothing_to_draw(title));
    }
    let lo = losses.iter().copied().fold(f64::INFINITY, f64::min) / 1.5;
    let hi = losses.iter().copied().fold(f64::NEG_INFINITY, f64::max) * 1.5;
    let palette: Vec<RGBAColor> = (0..8).map(|i| Palette99::pick(i).to_rgba()).collect();
    let mut lc = ChartBuilder::on(&left)
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(70)
        .build_cartesian_2d(1.0..epochs, (lo..hi).log_scale())
        .map_err(err)?;
    lc.configure_mesh()
        .x_desc("epoch")
        .y_desc(y_desc.0)
        .y_label_formatter(&|v: &f64| format!("{v:.1e}"))
        .label_style(("sans-serif", 12))
        .axis_desc_style(("sans-serif", 14))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    let mut ac = ChartBuilder::on(&right)
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(60)
        .build_cartesian_2d(1.0..epochs, 0.0..100.0)
        .map_err(err)?;
    ac.configure_mesh()
        .x_desc("epoch")
        .y_desc(y_desc.1)
        .label_style(("sans-serif", 12))
        .axis_desc_style(("sans-serif", 14))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    for (label, residual, depth, v) in series {
        let k = depths.iter().position(|d| d == depth).unwrap_or(0);
        let c = palette[k % palette.len()];
        let style = c.stroke_width(2);
        let loss: Vec<(f64, f64)> = v
            .iter()
            .enumerate()
            .filter(|(_, p)| p.0.is_finite() && p.0 > 0.0)
            .map(|(e, p)| (e as f64 + 1.0, p.0))
            .collect();
        let acc: Vec<(f64, f64)> = v
            .iter()
            .enumerate()
            .filter(|(_, p)| p.1.is_finite())
            .map(|(e, p)| (e as f64 + 1.0, p.1))
            .collect();
        family_line!(lc, loss, *residual, style, Some(label.as_str()));
        family_line!(ac, acc, *residual, style, None);
    }
    lc.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 12))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
