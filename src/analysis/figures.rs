//! Figures of an analysis report, drawn with plotters and an embedded font (DejaVu Sans,
//! `assets/fonts/`), so the same data give the same PNG bytes on every machine.
//!
//! - a panel of the models' loss surfaces as heat maps on one shared log colour scale,
//!   with contour-level boundaries, a colourbar, NaN points left blank;
//! - gradient norm per layer and activation std per block at a fresh He init, one line
//!   per model (plain dashed, residual solid), log scale.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;

use crate::io::surface::SurfaceFile;

/// Registers the embedded font (shared with the plot module).
pub fn ensure_font() {
    crate::plot::font::ensure_font();
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing failed: {e:?}")
}

/// Heat maps of several 2-D surfaces side by side on a shared log colour scale.
pub fn surface_panel(
    path: &Path,
    surfaces: &[(String, &SurfaceFile)],
    quantity: &str,
    x_label: &str,
) -> Result<()> {
    ensure_font();
    let n = surfaces.len().max(1);
    let (w, h) = (360 * n as u32 + 110, 420u32);
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    // shared scale over all finite values
    let vals: Vec<f64> = surfaces
        .iter()
        .filter_map(|(_, s)| s.values.get(quantity))
        .flat_map(|a| a.iter().copied())
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    if vals.is_empty() {
        return Err(anyhow!("no finite positive '{quantity}' values to draw"));
    }
    let lo = vals.iter().copied().fold(f64::INFINITY, f64::min).ln();
    let hi = vals
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max)
        .ln()
        .max(lo + 1e-9);
    let color = |v: f64| -> RGBColor {
        let t = ((v.max(1e-300).ln() - lo) / (hi - lo)).clamp(0.0, 1.0);
        ViridisRGB::get_color(t as f32)
    };
    let (plots, bar) = root.split_horizontally(w - 110);
    let cells = plots.split_evenly((1, n));
    for ((title, s), area) in surfaces.iter().zip(cells.iter()) {
        let Some(z) = s.values.get(quantity) else {
            continue;
        };
        let Some(ys) = &s.y else {
            return Err(anyhow!(
                "{title}: surface is 1-D; a panel needs 2-D surfaces"
            ));
        };
        let xs = &s.x;
        let half = |c: &[f64]| {
            if c.len() > 1 {
                (c[1] - c[0]) / 2.0
            } else {
                0.5
            }
        };
        let (hx, hy) = (half(xs), half(ys));
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(40)
            .y_label_area_size(48)
            .build_cartesian_2d(
                xs[0] - hx..xs[xs.len() - 1] + hx,
                ys[0] - hy..ys[ys.len() - 1] + hy,
            )
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(x_label)
            .y_desc("β (y direction)")
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(ys.iter().enumerate().flat_map(|(iy, &y)| {
                xs.iter().enumerate().filter_map(move |(ix, &x)| {
                    let v = z[[iy, ix]];
                    v.is_finite().then(|| {
                        Rectangle::new([(x - hx, y - hy), (x + hx, y + hy)], color(v).filled())
                    })
                })
            }))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(Cross::new(
                (0.0, 0.0),
                6,
                WHITE.stroke_width(2),
            )))
            .map_err(err)?;
    }
    // colour bar
    let bar = bar.margin(40, 40, 4, 4);
    let mut cb = ChartBuilder::on(&bar)
        .y_label_area_size(0)
        .right_y_label_area_size(80)
        .build_cartesian_2d(0.0..1.0, lo..hi)
        .map_err(err)?;
    cb.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_desc(format!("{quantity} (log scale)"))
        .y_label_formatter(&|v: &f64| sig3(v.exp()))
        .label_style(("sans-serif", 11))
        .draw()
        .map_err(err)?;
    let steps = 100;
    cb.draw_series((0..steps).map(|i| {
        let a = lo + (hi - lo) * i as f64 / steps as f64;
        let b = lo + (hi - lo) * (i + 1) as f64 / steps as f64;
        Rectangle::new([(0.0, a), (1.0, b)], color(a.exp()).filled())
    }))
    .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Lines of `values[i]` against their index, one per model; plain dashed, residual solid.
pub fn depth_curves(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(String, bool, Vec<f64>)],
) -> Result<()> {
    ensure_font();
    let root = BitMapBackend::new(path, (760, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let finite: Vec<f64> = series
        .iter()
        .flat_map(|s| s.2.iter().copied())
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    if finite.is_empty() {
        return Err(anyhow!("{title}: nothing to draw"));
    }
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min) / 1.5;
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max) * 1.5;
    let max_len = series.iter().map(|s| s.2.len()).max().unwrap_or(1).max(2);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..(max_len - 1) as f64, (lo..hi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .y_label_formatter(&|v: &f64| format!("{v:.1e}"))
        .label_style(("sans-serif", 12))
        .axis_desc_style(("sans-serif", 14))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    let palette = [
        Palette99::pick(0),
        Palette99::pick(1),
        Palette99::pick(2),
        Palette99::pick(3),
        Palette99::pick(4),
        Palette99::pick(5),
    ];
    for (i, (label, residual, v)) in series.iter().enumerate() {
        let c = palette[i % palette.len()].to_rgba();
        let pts: Vec<(f64, f64)> = v
            .iter()
            .enumerate()
            .filter(|(_, y)| y.is_finite() && **y > 0.0)
            .map(|(x, &y)| (x as f64, y))
            .collect();
        let style = c.stroke_width(if *residual { 2 } else { 1 });
        if *residual {
            chart
                .draw_series(LineSeries::new(pts.clone(), style))
                .map_err(err)?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        } else {
            chart
                .draw_series(DashedLineSeries::new(pts.clone(), 6, 4, style))
                .map_err(err)?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(1))
                });
        }
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 2, c.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 12))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Three significant digits, scientific notation outside [1e-3, 1e4).
fn sig3(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e4) {
        format!("{v:.2e}")
    } else {
        let digits = (2 - v.abs().max(1e-300).log10().floor() as i32).max(0) as usize;
        format!("{v:.digits$}")
    }
}
