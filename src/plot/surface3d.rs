//! A 3-D surface (loss-landscape's `plot_surface.py` `plot_3d`): one polygon per grid cell,
//! coloured by its mean value, drawn back to front; values clipped at `zmax` so a steep rim
//! does not flatten the basin (the colourbar then ends in a "≥ zmax" triangle); cells
//! touching a masked point are left out. Each axis is named beside its tick values: α and
//! β at the floor edges, the quantity along the vertical edge; the footer spells out α and β.

use plotters::prelude::*;

use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontTransform;

use super::data::{fmt_value, ColorScale, Grid};
use super::draw::{colorbar, font, Area, Clipped};
use super::{draw_err, Ctx, DrawError};

/// The viewing angle: pitch (radians above the horizon) and yaw (turn about the vertical),
/// chosen so the basin's floor and both direction axes stay visible; plotters' default
/// (0.15, 0.5) looks at the surface almost edge-on.
const PITCH: f64 = 0.5;
const YAW: f64 = 0.65;
/// Cell outlines are drawn up to this many cells per side; beyond they blacken the surface.
const MAX_OUTLINED: usize = 60;

pub struct Surface3dData {
    grid: Grid,
    scale: ColorScale,
    title: String,
    labels: (String, String),
    z_label: String,
    /// Some value was above `zmax` (drawn at `zmax`).
    clipped: bool,
}

impl Surface3dData {
    /// Clips at `zmax` (and, with `log`, draws log10 of the values).
    pub fn new(
        mut grid: Grid,
        zmax: f64,
        title: String,
        labels: (String, String),
        quantity: String,
        log: bool,
    ) -> Result<Self, DrawError> {
        let mut z_label = quantity;
        let mut zmax = zmax;
        if log {
            if zmax <= 0.0 {
                return Err(DrawError::LogZmax { zmax });
            }
            grid.z
                .mapv_inplace(|v| if v > 0.0 { v.log10() } else { f64::NAN });
            zmax = zmax.log10();
            z_label = format!("log10 {z_label}");
        }
        let lo = grid.finite().fold(f64::INFINITY, f64::min);
        if !lo.is_finite() {
            return Err(DrawError::NoFiniteValues);
        }
        let clipped = grid.finite().any(|v| v > zmax);
        grid.z
            .mapv_inplace(|v| if v.is_finite() { v.min(zmax) } else { v });
        Ok(Self {
            clipped,
            scale: ColorScale::new(lo, zmax.max(lo), false),
            grid,
            title,
            labels,
            z_label,
        })
    }
}

pub fn draw<DB: DrawingBackend>(
    root: &Area<DB>,
    d: &Surface3dData,
    ctx: Ctx,
) -> Result<(), DrawError> {
    let root = root.titled(&d.title, font(ctx.title)).map_err(draw_err)?;
    let (w, h) = root.dim_in_pixel();
    let foot_h = ctx.tick * 2 + ctx.tick / 2;
    let (upper, foot) = root.split_vertically(h - foot_h);
    let bar_w = ctx.label * 2 + ctx.tick * 6;
    let (main, bar) = upper.split_horizontally(w - bar_w);
    let g = &d.grid;
    let (x0, x1) = g.x_range();
    let (y0, y1) = g.y_range();
    let (zlo, zhi) = (d.scale.lo, d.scale.hi);
    // room on the left for the vertical axis's name beside its tick values
    let mut chart = ChartBuilder::on(&main)
        .margin(ctx.tick)
        .margin_left(ctx.tick + ctx.label * 2)
        .build_cartesian_3d(x0..x1, zlo..zhi, y0..y1)
        .map_err(draw_err)?;
    chart.with_projection(|mut p| {
        p.pitch = PITCH;
        p.yaw = YAW;
        p.scale = 0.8;
        p.into_matrix()
    });
    chart
        .configure_axes()
        .label_style(font(ctx.tick))
        .light_grid_style(BLACK.mix(0.06))
        .bold_grid_style(BLACK.mix(0.15))
        .max_light_lines(1)
        .x_labels(5)
        .y_labels(5)
        .z_labels(5)
        .x_formatter(&|v| fmt_value(*v))
        .y_formatter(&|v| fmt_value(*v))
        .z_formatter(&|v| fmt_value(*v))
        .draw()
        .map_err(draw_err)?;
    let (nx, ny) = (g.x.len(), g.y.len());
    let mut cells = Vec::new();
    for iy in 0..ny.saturating_sub(1) {
        for ix in 0..nx.saturating_sub(1) {
            let idx = [(iy, ix), (iy, ix + 1), (iy + 1, ix + 1), (iy + 1, ix)];
            let pts: Vec<(f64, f64, f64)> = idx
                .iter()
                .map(|&(i, j)| (g.x[j], g.z[[i, j]], g.y[i]))
                .collect();
            if pts.iter().any(|p| !p.1.is_finite()) {
                continue;
            }
            let mean = pts.iter().map(|p| p.1).sum::<f64>() / 4.0;
            let (cx, cy) = (0.5 * (g.x[ix] + g.x[ix + 1]), 0.5 * (g.y[iy] + g.y[iy + 1]));
            let depth = chart.as_coord_spec().projected_depth(&cx, &mean, &cy);
            cells.push((depth, pts, d.scale.color(mean)));
        }
    }
    // painter's algorithm: farthest first
    cells.sort_by_key(|c| std::cmp::Reverse(c.0));
    let outline = nx.max(ny) <= MAX_OUTLINED;
    for (_, pts, color) in cells {
        chart
            .draw_series(std::iter::once(Polygon::new(pts.clone(), color.filled())))
            .map_err(draw_err)?;
        if outline {
            let mut ring = pts;
            ring.push(ring[0]);
            chart
                .draw_series(std::iter::once(PathElement::new(ring, BLACK.mix(0.25))))
                .map_err(draw_err)?;
        }
    }
    label_axes(&main, &chart, d, ctx)?;
    let rows = main.get_pixel_range().1;
    let pad = (rows.end - rows.start) / 8;
    colorbar(
        &bar,
        &d.scale,
        None,
        &d.z_label,
        rows.start + pad..rows.end - pad,
        Clipped {
            low: false,
            high: d.clipped,
        },
        ctx,
    )?;
    let legend = if d.clipped {
        format!(
            "{}   ·   {}   ·   clipped at {}",
            d.labels.0,
            d.labels.1,
            fmt_value(zhi)
        )
    } else {
        format!("{}   ·   {}", d.labels.0, d.labels.1)
    };
    foot.draw_text(
        &legend,
        &font(ctx.tick),
        (ctx.tick as i32, (foot_h / 4) as i32),
    )
    .map_err(draw_err)?;
    Ok(())
}

/// The chart of [`draw`]: α along plotters' x, the quantity up (y), β along z.
type Chart3d<'a, DB> = ChartContext<
    'a,
    DB,
    plotters::coord::ranged3d::Cartesian3d<
        plotters::coord::types::RangedCoordf64,
        plotters::coord::types::RangedCoordf64,
        plotters::coord::types::RangedCoordf64,
    >,
>;

/// Names the axes where plotters puts their tick values: α and β (the first word of their
/// labels) beyond the middle of the floor edges nearest the viewer, the quantity rotated
/// beside the vertical edge at the leftmost floor corner (plotters' choice for this view).
fn label_axes<DB: DrawingBackend>(
    area: &Area<DB>,
    chart: &Chart3d<'_, DB>,
    d: &Surface3dData,
    ctx: Ctx,
) -> Result<(), DrawError> {
    let (ox, oy) = area.get_pixel_range();
    let coord = chart.as_coord_spec();
    let px = |x: f64, z: f64, y: f64| {
        let (a, b) = coord.translate(&(x, z, y));
        ((a - ox.start) as f64, (b - oy.start) as f64)
    };
    let g = &d.grid;
    let ((x0, x1), (y0, y1)) = (g.x_range(), g.y_range());
    let (zlo, zhi) = (d.scale.lo, d.scale.hi);
    let centre = px(0.5 * (x0 + x1), 0.5 * (zlo + zhi), 0.5 * (y0 + y1));
    let gap = 3.2 * ctx.tick as f64;
    // a floor edge's midpoint, pushed away from the box's centre across the edge
    let beyond = |a: (f64, f64), b: (f64, f64)| {
        let m = (0.5 * (a.0 + b.0), 0.5 * (a.1 + b.1));
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len = dx.hypot(dy).max(1e-9);
        let mut n = (-dy / len, dx / len);
        if n.0 * (m.0 - centre.0) + n.1 * (m.1 - centre.1) < 0.0 {
            n = (-n.0, -n.1);
        }
        ((m.0 + gap * n.0) as i32, (m.1 + gap * n.1) as i32)
    };
    let lowest = |edges: [((f64, f64), (f64, f64)); 2]| {
        let mid_y = |e: &((f64, f64), (f64, f64))| e.0 .1 + e.1 .1;
        let [e, f] = edges;
        if mid_y(&e) >= mid_y(&f) {
            e
        } else {
            f
        }
    };
    let symbol = |label: &str| label.split_whitespace().next().unwrap_or("").to_string();
    let style = font(ctx.label).pos(Pos::new(HPos::Center, VPos::Center));
    let alpha = lowest([
        (px(x0, zlo, y0), px(x1, zlo, y0)),
        (px(x0, zlo, y1), px(x1, zlo, y1)),
    ]);
    let beta = lowest([
        (px(x0, zlo, y0), px(x0, zlo, y1)),
        (px(x1, zlo, y0), px(x1, zlo, y1)),
    ]);
    for (edge, label) in [(alpha, &d.labels.0), (beta, &d.labels.1)] {
        area.draw_text(&symbol(label), &style, beyond(edge.0, edge.1))
            .map_err(draw_err)?;
    }
    // the vertical edge at the leftmost floor corner, its tick values on its left
    let corners = [(x0, y0), (x0, y1), (x1, y0), (x1, y1)];
    let (cx, cy) = corners
        .iter()
        .copied()
        .min_by(|a, b| px(a.0, zlo, a.1).0.total_cmp(&px(b.0, zlo, b.1).0))
        .expect("four corners");
    let (bottom, top) = (px(cx, zlo, cy), px(cx, zhi, cy));
    let widest = [zlo, zhi]
        .iter()
        .map(|v| area.estimate_text_size(&fmt_value(*v), &font(ctx.tick)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(draw_err)?
        .iter()
        .map(|s| s.0 as f64)
        .fold(0.0, f64::max);
    let x = (bottom.0 - widest - 1.2 * ctx.tick as f64 - 0.5 * ctx.label as f64)
        .max(0.7 * ctx.label as f64);
    let vertical = font(ctx.label)
        .transform(FontTransform::Rotate270)
        .pos(Pos::new(HPos::Center, VPos::Center));
    area.draw_text(
        &d.z_label,
        &vertical,
        (x as i32, (0.5 * (bottom.1 + top.1)) as i32),
    )
    .map_err(draw_err)
}
