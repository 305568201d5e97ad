//! 2-D maps: contour lines, filled contours, heat maps (also the |λmin/λmax| map), and
//! panels of several surfaces on one scale.

use plotters::prelude::*;

use super::data::{viridis, Grid, Levels};
use super::draw::{
    band_color, border, colorbar, draw_isolines, draw_trajectory, fill_plot, font, frame, isolines,
    label_isolines, mark_center, Area, Clipped, LINE_COLOR_TOP,
};
use super::{draw_err, Ctx, DrawError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapStyle {
    /// Coloured, labelled isolines on white.
    Contour,
    /// Bands between levels, thin isolines, a banded colourbar.
    Filled,
    /// One colour per grid point, a continuous colourbar.
    Heat,
}

pub struct MapData {
    pub grid: Grid,
    pub levels: Levels,
    pub style: MapStyle,
    pub title: String,
    pub labels: (String, String),
    pub quantity: String,
    pub trajectory: Option<Vec<(f64, f64)>>,
    /// Which ends of the colour scale clip values (heat and ratio maps).
    pub clipped: Clipped,
}

pub struct PanelData {
    /// (title, grid) of each surface.
    pub cells: Vec<(String, Grid)>,
    pub levels: Levels,
    pub title: String,
    pub labels: (String, String),
    pub quantity: String,
}

fn colorbar_width(ctx: Ctx) -> u32 {
    ctx.label * 2 + ctx.tick * 6
}

pub fn draw_map<DB: DrawingBackend>(
    root: &Area<DB>,
    d: &MapData,
    ctx: Ctx,
) -> Result<(), DrawError> {
    let (w, _) = root.dim_in_pixel();
    let bar_w = if d.style == MapStyle::Contour {
        0
    } else {
        colorbar_width(ctx)
    };
    let (main, bar) = root.split_horizontally(w - bar_w);
    let g = &d.grid;
    // a heat map's cells are centred on the grid points: the frame holds the outer cells whole
    let extent = match d.style {
        MapStyle::Heat => (g.x_cells(), g.y_cells()),
        _ => (g.x_range(), g.y_range()),
    };
    let mut chart = frame(&main, &d.title, extent, (&d.labels.0, &d.labels.1), ctx)?;
    let levels = &d.levels;
    match d.style {
        MapStyle::Contour => {
            let lines = isolines(g, &levels.values);
            draw_isolines(&mut chart, &lines, 2, |l| {
                viridis(levels.scale.t(l) * LINE_COLOR_TOP).to_rgba()
            })?;
            label_isolines(&chart, &lines, ctx)?;
        }
        MapStyle::Filled => {
            fill_plot(&chart, ctx, |x, y| {
                g.bilinear(x, y).map(|v| band_color(levels, v))
            })?;
            let lines = isolines(g, &levels.values);
            draw_isolines(&mut chart, &lines, 1, |_| BLACK.mix(0.45))?;
        }
        MapStyle::Heat => {
            fill_plot(&chart, ctx, |x, y| {
                g.nearest_cell(x, y).map(|v| levels.scale.color(v))
            })?;
        }
    }
    if let Some(t) = &d.trajectory {
        draw_trajectory(&mut chart, g, t)?;
    }
    mark_center(&mut chart, g, ctx)?;
    border(&chart)?;
    if d.style != MapStyle::Contour {
        let bands = (d.style == MapStyle::Filled).then_some(levels);
        let rows = chart.plotting_area().get_pixel_range().1;
        colorbar(
            &bar,
            &levels.scale,
            bands,
            &d.quantity,
            rows,
            d.clipped,
            ctx,
        )?;
    }
    Ok(())
}

/// (rows, columns) of a panel of `n` maps: one row up to 4, then two rows.
pub fn panel_grid(n: usize) -> (usize, usize) {
    let n = n.max(1);
    if n <= 4 {
        (1, n)
    } else {
        (2, n.div_ceil(2))
    }
}

pub fn draw_panel<DB: DrawingBackend>(
    root: &Area<DB>,
    d: &PanelData,
    ctx: Ctx,
) -> Result<(), DrawError> {
    let root = root.titled(&d.title, font(ctx.title)).map_err(draw_err)?;
    let (w, _) = root.dim_in_pixel();
    let (plots, bar) = root.split_horizontally(w - colorbar_width(ctx));
    let (rows_n, cols_n) = panel_grid(d.cells.len());
    let cells = plots.split_evenly((rows_n, cols_n));
    let cell_ctx = Ctx {
        title: ctx.label,
        ..ctx
    };
    let mut rows = None;
    for ((name, g), area) in d.cells.iter().zip(&cells) {
        let extent = (g.x_range(), g.y_range());
        let mut chart = frame(area, name, extent, (&d.labels.0, &d.labels.1), cell_ctx)?;
        fill_plot(&chart, ctx, |x, y| {
            g.bilinear(x, y).map(|v| band_color(&d.levels, v))
        })?;
        let lines = isolines(g, &d.levels.values);
        draw_isolines(&mut chart, &lines, 1, |_| BLACK.mix(0.45))?;
        mark_center(&mut chart, g, ctx)?;
        border(&chart)?;
        rows.get_or_insert(chart.plotting_area().get_pixel_range().1);
    }
    if let Some(rows) = rows {
        colorbar(
            &bar,
            &d.levels.scale,
            Some(&d.levels),
            &d.quantity,
            rows,
            Clipped::default(),
            ctx,
        )?;
    }
    Ok(())
}
