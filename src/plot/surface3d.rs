//! A 3-D surface (loss-landscape's `plot_surface.py` `plot_3d`): one polygon per grid cell,
//! coloured by its mean value, drawn back to front; values clipped at `zmax` so a steep rim
//! does not flatten the basin; cells touching a masked point are left out.

use plotters::prelude::*;

use super::data::{fmt_value, ColorScale, Grid};
use super::draw::{colorbar, font, Area};
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
        grid.z
            .mapv_inplace(|v| if v.is_finite() { v.min(zmax) } else { v });
        Ok(Self {
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
    let mut chart = ChartBuilder::on(&main)
        .margin(ctx.tick)
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
    let rows = main.get_pixel_range().1;
    let pad = (rows.end - rows.start) / 8;
    colorbar(
        &bar,
        &d.scale,
        None,
        &d.z_label,
        rows.start + pad..rows.end - pad,
        ctx,
    )?;
    let legend = format!(
        "x: {}   ·   z: {}   ·   up: {} (clipped at {})",
        d.labels.0,
        d.labels.1,
        d.z_label,
        fmt_value(zhi)
    );
    foot.draw_text(
        &legend,
        &font(ctx.tick),
        (ctx.tick as i32, (foot_h / 4) as i32),
    )
    .map_err(draw_err)?;
    Ok(())
}
