//! Drawing pieces shared by the kinds: rasters, colourbars, isolines and their labels,
//! the 2-D frame, the centre mark.

use contour::ContourBuilder;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontTransform;

use super::data::{fmt_value, ColorScale, Grid, Levels};
use super::font::FAMILY;
use super::{draw_err, Ctx, DrawError};

pub type Area<DB> = DrawingArea<DB, Shift>;
pub type Chart2d<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Isolines are drawn in viridis up to this point of the map: its yellow end is unreadable
/// on white.
pub const LINE_COLOR_TOP: f64 = 0.85;

pub fn font(size: u32) -> TextStyle<'static> {
    TextStyle::from((FAMILY, size as f64).into_font()).color(&BLACK)
}

/// Fills an area pixel by pixel (rectangles are exclusive of their far corner in both
/// backends) (`block`×`block` squares), merging runs of one colour
/// along each row into one rectangle; `None` leaves the background.
pub fn raster<DB: DrawingBackend>(
    area: &Area<DB>,
    block: u32,
    color_at: impl Fn(i32, i32) -> Option<RGBColor>,
) -> Result<(), DrawError> {
    let (w, h) = area.dim_in_pixel();
    let (w, h, b) = (w as i32, h as i32, block.max(1) as i32);
    let flush = |x0: i32, x1: i32, y0: i32, c: Option<RGBColor>| -> Result<(), DrawError> {
        if let Some(c) = c {
            let y1 = (y0 + b).min(h);
            area.draw(&Rectangle::new([(x0, y0), (x1, y1)], c.filled()))
                .map_err(draw_err)?;
        }
        Ok(())
    };
    let mut y = 0;
    while y < h {
        let sy = (y + b / 2).min(h - 1);
        let mut start = 0;
        let mut current = color_at(b / 2, sy);
        let mut x = b;
        while x < w {
            let c = color_at((x + b / 2).min(w - 1), sy);
            if c != current {
                flush(start, x, y, current)?;
                start = x;
                current = c;
            }
            x += b;
        }
        flush(start, w, y, current)?;
        y += b;
    }
    Ok(())
}

/// The colour of the band holding `v` between consecutive levels (filled contours).
pub fn band_color(levels: &Levels, v: f64) -> RGBColor {
    let s = &levels.scale;
    let l = &levels.values;
    let i = l.partition_point(|&e| e <= v);
    let lower = if i == 0 { s.lo.min(l[0]) } else { l[i - 1] };
    let upper = if i == l.len() {
        s.hi.max(l[i - 1])
    } else {
        l[i]
    };
    let t = 0.5 * (s.t(lower) + s.t(upper));
    super::data::viridis(t)
}

/// "Nice" tick values inside the scale: 1-2-5 steps, or decades (with 2 and 5 when few).
pub fn nice_ticks(s: &ColorScale) -> Vec<f64> {
    if s.log {
        let (a, b) = (s.lo.log10(), s.hi.log10());
        for mantissas in [&[1.0][..], &[1.0, 2.0, 5.0], &[1.0, 2.0, 3.0, 5.0, 7.0]] {
            let mut t = Vec::new();
            for k in (a.floor() as i32)..=(b.ceil() as i32) {
                for m in mantissas {
                    let v = m * 10f64.powi(k);
                    if v >= s.lo * (1.0 - 1e-9) && v <= s.hi * (1.0 + 1e-9) {
                        t.push(v);
                    }
                }
            }
            if t.len() >= 3 {
                return t;
            }
        }
    }
    let raw = (s.hi - s.lo) / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|st| *st >= raw)
        .unwrap_or(10.0 * mag);
    let first = (s.lo / step).ceil() as i64;
    let last = (s.hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// Which ends of a colour scale clip values of the plot (drawn in the end colour).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clipped {
    /// Some value lies below the scale's low end.
    pub low: bool,
    /// Some value lies above the scale's high end.
    pub high: bool,
}

impl Clipped {
    /// Which ends of `scale` the finite `values` pass.
    pub fn of(scale: &ColorScale, values: impl Iterator<Item = f64>) -> Self {
        values
            .filter(|v| v.is_finite())
            .fold(Self::default(), |c, v| Self {
                low: c.low || v < scale.lo,
                high: c.high || v > scale.hi,
            })
    }
}

/// A vertical colourbar: the bar spans `bar_y` (absolute rows of the root, to line up with
/// the plot beside it), ticks and values on its right, `label` rotated along the far edge.
/// With `levels`, the bar shows the bands and its ticks are the levels. A clipped end
/// (matplotlib's `extend`) gets a triangle in the end colour and its value reads "≥ hi"
/// or "≤ lo".
pub fn colorbar<DB: DrawingBackend>(
    area: &Area<DB>,
    scale: &ColorScale,
    levels: Option<&Levels>,
    label: &str,
    bar_y: std::ops::Range<i32>,
    clipped: Clipped,
    ctx: Ctx,
) -> Result<(), DrawError> {
    let (_, ay) = area.get_pixel_range();
    let (aw, _) = area.dim_in_pixel();
    let top = bar_y.start - ay.start;
    let bottom = bar_y.end - ay.start - 1;
    let bw = (ctx.tick as i32 * 3) / 2;
    let x0 = ctx.tick as i32 / 2;
    let x1 = x0 + bw;
    let bar_h = (bottom - top).max(1);
    let t_of_row = |y: i32| 1.0 - (y - top) as f64 / bar_h as f64;
    let color_at = |y: i32| {
        let v = scale.value(t_of_row(y));
        match levels {
            Some(l) => band_color(l, v),
            None => scale.color(v),
        }
    };
    let mut start = top;
    let mut current = color_at(top);
    for y in top + 1..=bottom + 1 {
        let c = if y <= bottom { Some(color_at(y)) } else { None };
        if c != Some(current) {
            area.draw(&Rectangle::new([(x0, start), (x1, y)], current.filled()))
                .map_err(draw_err)?;
            start = y;
            if let Some(c) = c {
                current = c;
            }
        }
    }
    area.draw(&Rectangle::new(
        [(x0, top), (x1, bottom)],
        BLACK.stroke_width(1),
    ))
    .map_err(draw_err)?;
    let xm = (x0 + x1) / 2;
    for (on, base, tip, row) in [
        (clipped.high, top, top - bw, top),
        (clipped.low, bottom, bottom + bw, bottom),
    ] {
        if on {
            let tri = vec![(x0, base), (x1, base), (xm, tip)];
            area.draw(&Polygon::new(tri.clone(), color_at(row).filled()))
                .map_err(draw_err)?;
            let mut ring = tri;
            ring.push(ring[0]);
            area.draw(&PathElement::new(ring, BLACK.stroke_width(1)))
                .map_err(draw_err)?;
        }
    }
    let at_end = |v: f64, end: f64| (v - end).abs() <= 1e-9 * end.abs().max(1e-300);
    let mut ticks: Vec<f64> = match levels {
        Some(l) => {
            // at most ~bar_h / (2 text heights) labelled levels
            let room = (bar_h / (2 * ctx.tick as i32)).max(2) as usize;
            let every = l.values.len().div_ceil(room).max(1);
            l.values.iter().copied().step_by(every).collect()
        }
        None => nice_ticks(scale),
    };
    // a clipped end is labelled, replacing a tick too close to it
    let min_gap = 1.5 * ctx.tick as f64 / bar_h as f64;
    for (on, end) in [(clipped.low, scale.lo), (clipped.high, scale.hi)] {
        if on && !ticks.iter().any(|&v| at_end(v, end)) {
            let t_end = scale.t(end);
            ticks.retain(|&v| (scale.t(v) - t_end).abs() >= min_gap);
            ticks.push(end);
        }
    }
    let style = font(ctx.tick).pos(Pos::new(HPos::Left, VPos::Center));
    let mut widest = 0i32;
    for v in ticks {
        let t = scale.t(v);
        if !(0.0..=1.0).contains(&t) || (v < scale.lo || v > scale.hi) {
            continue;
        }
        let y = top + ((1.0 - t) * bar_h as f64).round() as i32;
        area.draw(&PathElement::new(vec![(x1, y), (x1 + 5, y)], BLACK))
            .map_err(draw_err)?;
        let text = if clipped.high && at_end(v, scale.hi) {
            format!("≥ {}", fmt_value(v))
        } else if clipped.low && at_end(v, scale.lo) {
            format!("≤ {}", fmt_value(v))
        } else {
            fmt_value(v)
        };
        let (tw, _) = area.estimate_text_size(&text, &style).map_err(draw_err)?;
        widest = widest.max(tw as i32);
        area.draw_text(&text, &style, (x1 + 8, y))
            .map_err(draw_err)?;
    }
    let label_style = font(ctx.label)
        .transform(FontTransform::Rotate270)
        .pos(Pos::new(HPos::Center, VPos::Bottom));
    area.draw_text(
        label,
        &label_style,
        (
            (x1 + 14 + widest + ctx.label as i32).min(aw as i32 - ctx.label as i32 / 3),
            top + bar_h / 2,
        ),
    )
    .map_err(draw_err)?;
    Ok(())
}

/// One level's isolines as polylines in data coordinates.
#[derive(Clone, Debug)]
pub struct Isoline {
    pub level: f64,
    pub paths: Vec<Vec<(f64, f64)>>,
}

/// Isolines by marching squares (d3's algorithm, the `contour` crate), linearly
/// interpolated. Masked points are given a value above every level for the algorithm;
/// every piece touching a masked cell is then dropped, as are the pieces the algorithm
/// closes along the outside of the grid (pieces leaving the grid are cut at its edge).
pub fn isolines(g: &Grid, levels: &[f64]) -> Vec<Isoline> {
    let (nx, ny) = (g.x.len(), g.y.len());
    if nx < 2 || ny < 2 || levels.is_empty() {
        return Vec::new();
    }
    let finite_max = g.finite().fold(0.0f64, |m, v| m.max(v.abs()));
    let level_max = levels.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let above = 4.0 * finite_max.max(level_max) + 1.0;
    let values: Vec<f64> =
        g.z.iter()
            .map(|&v| if v.is_finite() { v } else { above })
            .collect();
    let (x0, x1) = g.x_range();
    let (y0, y1) = g.y_range();
    let sx = (x1 - x0) / (nx - 1) as f64;
    let sy = (y1 - y0) / (ny - 1) as f64;
    // sample i sits at the centre of d3's pixel [i, i+1]
    let builder = ContourBuilder::new(nx, ny, true)
        .x_origin(x0 - 0.5 * sx)
        .y_origin(y0 - 0.5 * sy)
        .x_step(sx)
        .y_step(sy);
    let Ok(lines) = builder.lines(&values, levels) else {
        return Vec::new();
    };
    let tol = 1e-9 * (x1 - x0).abs().max((y1 - y0).abs());
    let inside =
        |p: (f64, f64)| p.0 >= x0 - tol && p.0 <= x1 + tol && p.1 >= y0 - tol && p.1 <= y1 + tol;
    let unmasked = |p: (f64, f64)| {
        let q = (p.0.clamp(x0, x1), p.1.clamp(y0, y1));
        g.bilinear(q.0, q.1).is_some()
    };
    let clip = |a: (f64, f64), b: (f64, f64)| -> (f64, f64) {
        // the point where a (inside) → b (outside) leaves the rectangle
        let mut t: f64 = 1.0;
        let d = (b.0 - a.0, b.1 - a.1);
        for (p, dp, lo, hi) in [(a.0, d.0, x0, x1), (a.1, d.1, y0, y1)] {
            if dp > 0.0 && p + dp > hi {
                t = t.min((hi - p) / dp);
            }
            if dp < 0.0 && p + dp < lo {
                t = t.min((lo - p) / dp);
            }
        }
        (a.0 + t * d.0, a.1 + t * d.1)
    };
    let mut out = Vec::new();
    for line in lines {
        let (geometry, level) = line.into_inner();
        let mut paths = Vec::new();
        for ls in geometry.0 {
            let pts: Vec<(f64, f64)> = ls.0.iter().map(|c| (c.x, c.y)).collect();
            let mut cur: Vec<(f64, f64)> = Vec::new();
            for w in pts.windows(2) {
                let (a, b) = (w[0], w[1]);
                let seg = match (inside(a), inside(b)) {
                    (true, true) => Some((a, b)),
                    (true, false) => Some((a, clip(a, b))),
                    (false, true) => Some((clip(b, a), b)),
                    (false, false) => None,
                };
                let seg = seg.filter(|(p, q)| unmasked(*p) && unmasked(*q));
                match seg {
                    Some((p, q)) => {
                        if cur.last() != Some(&p) {
                            if cur.len() >= 2 {
                                paths.push(std::mem::take(&mut cur));
                            }
                            cur.clear();
                            cur.push(p);
                        }
                        cur.push(q);
                    }
                    None => {
                        if cur.len() >= 2 {
                            paths.push(std::mem::take(&mut cur));
                        }
                        cur.clear();
                    }
                }
            }
            if cur.len() >= 2 {
                paths.push(cur);
            }
        }
        out.push(Isoline { level, paths });
    }
    out
}

/// The 2-D frame over `extent` ((x0, x1), (y0, y1)): caption, axes with their
/// descriptions, no grid lines.
pub fn frame<'a, DB: DrawingBackend>(
    area: &'a Area<DB>,
    title: &str,
    extent: ((f64, f64), (f64, f64)),
    labels: (&str, &str),
    ctx: Ctx,
) -> Result<Chart2d<'a, DB>, DrawError> {
    let ((x0, x1), (y0, y1)) = extent;
    let mut b = ChartBuilder::on(area);
    if !title.is_empty() {
        b.caption(title, font(ctx.title));
    }
    let mut chart = b
        .margin(ctx.tick)
        .margin_right(ctx.tick * 2)
        .x_label_area_size(ctx.label * 3)
        .y_label_area_size(ctx.label * 2 + ctx.tick * 3)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(6)
        .y_labels(6)
        .x_desc(labels.0)
        .y_desc(labels.1)
        .label_style(font(ctx.tick))
        .axis_desc_style(font(ctx.label))
        .x_label_formatter(&|v| fmt_value(snap(*v)))
        .y_label_formatter(&|v| fmt_value(snap(*v)))
        .draw()
        .map_err(draw_err)?;
    Ok(chart)
}

/// Rounds away floating-point dust so tick labels read "0", not "1.1e-16".
fn snap(v: f64) -> f64 {
    if v.abs() < 1e-12 {
        0.0
    } else {
        (v * 1e9).round() / 1e9
    }
}

/// A thin box around the plotting area (drawn last, over rasters).
pub fn border<DB: DrawingBackend>(chart: &Chart2d<'_, DB>) -> Result<(), DrawError> {
    let area = chart.plotting_area().strip_coord_spec();
    let (w, h) = area.dim_in_pixel();
    area.draw(&Rectangle::new(
        [(0, 0), (w as i32 - 1, h as i32 - 1)],
        BLACK.stroke_width(1),
    ))
    .map_err(draw_err)
}

/// A raster over the plotting area: `color_of(x, y)` in data coordinates.
pub fn fill_plot<DB: DrawingBackend>(
    chart: &Chart2d<'_, DB>,
    ctx: Ctx,
    color_of: impl Fn(f64, f64) -> Option<RGBColor>,
) -> Result<(), DrawError> {
    let area = chart.plotting_area().strip_coord_spec();
    let (w, h) = area.dim_in_pixel();
    let (x0, x1) = (chart.x_range().start, chart.x_range().end);
    let (y0, y1) = (chart.y_range().start, chart.y_range().end);
    let (w1, h1) = ((w.max(2) - 1) as f64, (h.max(2) - 1) as f64);
    // SVG gets 2-px blocks: a tenth of the elements, no visible difference at 1:1
    let block = if ctx.svg { 2 } else { 1 };
    raster(&area, block, |px, py| {
        let x = x0 + (x1 - x0) * px as f64 / w1;
        let y = y1 - (y1 - y0) * py as f64 / h1;
        color_of(x, y)
    })
}

/// Draws isolines; `color` picks each level's colour.
pub fn draw_isolines<DB: DrawingBackend>(
    chart: &mut Chart2d<'_, DB>,
    lines: &[Isoline],
    width: u32,
    color: impl Fn(f64) -> RGBAColor,
) -> Result<(), DrawError> {
    for l in lines {
        let style = color(l.level).stroke_width(width);
        for p in &l.paths {
            chart
                .draw_series(std::iter::once(PathElement::new(p.clone(), style)))
                .map_err(draw_err)?;
        }
    }
    Ok(())
}

/// Labels each level once, on its longest piece, where the label overlaps nothing placed
/// before and keeps clear of the centre mark; a white box under the text keeps it readable
/// on any colour.
pub fn label_isolines<DB: DrawingBackend>(
    chart: &Chart2d<'_, DB>,
    lines: &[Isoline],
    ctx: Ctx,
) -> Result<(), DrawError> {
    let area = chart.plotting_area();
    let (px, py) = area.get_pixel_range();
    let style = font(ctx.tick).pos(Pos::new(HPos::Center, VPos::Center));
    // the centre mark counts as placed, with a margin of a third of a text height
    let mut placed: Vec<(i32, i32, i32, i32)> = center_box(chart, ctx)
        .map(|(x0, y0, x1, y1)| {
            let m = ctx.tick as i32 / 3;
            (x0 - m, y0 - m, x1 + m, y1 + m)
        })
        .into_iter()
        .collect();
    let root = area.strip_coord_spec();
    for l in lines {
        let Some(path) = l
            .paths
            .iter()
            .max_by_key(|p| p.len())
            .filter(|p| p.len() >= 4)
        else {
            continue;
        };
        let text = fmt_value(l.level);
        let (tw, th) = root.estimate_text_size(&text, &style).map_err(draw_err)?;
        let (tw, th) = (tw as i32 + 6, th as i32 + 2);
        for frac in [0.5, 0.25, 0.75, 0.1, 0.9, 0.4, 0.6] {
            let (x, y) = path[((path.len() - 1) as f64 * frac) as usize];
            let (cx, cy) = chart.backend_coord(&(x, y));
            let r = (cx - tw / 2, cy - th / 2, cx + tw / 2, cy + th / 2);
            let fits = r.0 > px.start && r.2 < px.end && r.1 > py.start && r.3 < py.end;
            let free = placed
                .iter()
                .all(|q| r.2 < q.0 || r.0 > q.2 || r.3 < q.1 || r.1 > q.3);
            if fits && free {
                let (lx, ly) = (cx - px.start, cy - py.start);
                root.draw(&Rectangle::new(
                    [(lx - tw / 2, ly - th / 2), (lx + tw / 2, ly + th / 2)],
                    WHITE.mix(0.8).filled(),
                ))
                .map_err(draw_err)?;
                root.draw_text(&text, &style, (lx, ly)).map_err(draw_err)?;
                placed.push(r);
                break;
            }
        }
    }
    Ok(())
}

/// Half the side of the centre mark's cross, in pixels.
fn center_half(ctx: Ctx) -> i32 {
    (ctx.tick / 2) as i32
}

/// The pixels (backend coordinates, x0, y0, x1, y1) the centre mark covers, white halo
/// included; None when the origin is outside the plot.
pub fn center_box<DB: DrawingBackend>(
    chart: &Chart2d<'_, DB>,
    ctx: Ctx,
) -> Option<(i32, i32, i32, i32)> {
    let (xr, yr) = (chart.x_range(), chart.y_range());
    if !(xr.start..=xr.end).contains(&0.0) || !(yr.start..=yr.end).contains(&0.0) {
        return None;
    }
    let (cx, cy) = chart.backend_coord(&(0.0, 0.0));
    let r = center_half(ctx) + 3;
    Some((cx - r, cy - r, cx + r, cy + r))
}

/// A black-and-white cross at the origin (the trained model), when it is in the plot.
pub fn mark_center<DB: DrawingBackend>(
    chart: &mut Chart2d<'_, DB>,
    g: &Grid,
    ctx: Ctx,
) -> Result<(), DrawError> {
    let (x0, x1) = g.x_range();
    let (y0, y1) = g.y_range();
    if !(x0..=x1).contains(&0.0) || !(y0..=y1).contains(&0.0) {
        return Ok(());
    }
    let s = center_half(ctx);
    let (cx, cy) = chart.backend_coord(&(0.0, 0.0));
    let area = chart.plotting_area().strip_coord_spec();
    let (ox, oy) = chart.plotting_area().get_pixel_range();
    let (cx, cy) = (cx - ox.start, cy - oy.start);
    for (color, w) in [(WHITE, 5), (BLACK, 2)] {
        area.draw(&PathElement::new(
            vec![(cx - s, cy - s), (cx + s, cy + s)],
            color.stroke_width(w),
        ))
        .map_err(draw_err)?;
        area.draw(&PathElement::new(
            vec![(cx - s, cy + s), (cx + s, cy - s)],
            color.stroke_width(w),
        ))
        .map_err(draw_err)?;
    }
    Ok(())
}

/// A projected training path: a red line with dots, hollow start, filled end; pieces
/// outside the plot are left out.
pub fn draw_trajectory<DB: DrawingBackend>(
    chart: &mut Chart2d<'_, DB>,
    g: &Grid,
    path: &[(f64, f64)],
) -> Result<(), DrawError> {
    let (x0, x1) = g.x_range();
    let (y0, y1) = g.y_range();
    let inside = |p: &(f64, f64)| (x0..=x1).contains(&p.0) && (y0..=y1).contains(&p.1);
    let red = RGBColor(214, 39, 40);
    for w in path.windows(2) {
        if inside(&w[0]) && inside(&w[1]) {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![w[0], w[1]],
                    red.stroke_width(2),
                )))
                .map_err(draw_err)?;
        }
    }
    chart
        .draw_series(
            path.iter()
                .filter(|p| inside(p))
                .map(|p| Circle::new(*p, 3, red.filled())),
        )
        .map_err(draw_err)?;
    if let Some(p) = path.first().filter(|p| inside(p)) {
        chart
            .draw_series(std::iter::once(Circle::new(*p, 6, red.stroke_width(2))))
            .map_err(draw_err)?;
    }
    if let Some(p) = path.last().filter(|p| inside(p)) {
        chart
            .draw_series(std::iter::once(Circle::new(*p, 6, red.filled())))
            .map_err(draw_err)?;
        chart
            .draw_series(std::iter::once(Circle::new(*p, 6, BLACK.stroke_width(1))))
            .map_err(draw_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn clipped_ends_are_found() {
        let s = ColorScale::new(0.0, 0.5, false);
        let none = Clipped::of(&s, [0.0, 0.2, 0.5, f64::NAN].into_iter());
        assert_eq!(none, Clipped::default());
        let high = Clipped::of(&s, [0.1, 0.73].into_iter());
        assert_eq!((high.low, high.high), (false, true));
        let both = Clipped::of(&s, [-0.1, 0.6].into_iter());
        assert_eq!((both.low, both.high), (true, true));
    }

    fn bowl(n: usize) -> Grid {
        let c: Vec<f64> = (0..n)
            .map(|i| -1.0 + 2.0 * i as f64 / (n - 1) as f64)
            .collect();
        let z = Array2::from_shape_fn((n, n), |(i, j)| c[i] * c[i] + c[j] * c[j]);
        Grid {
            x: c.clone(),
            y: c,
            z,
        }
    }

    #[test]
    fn bowl_isolines_are_circles_of_the_right_radius() {
        let g = bowl(41);
        let lines = isolines(&g, &[0.25]);
        let pts: Vec<_> = lines[0].paths.iter().flatten().collect();
        assert!(pts.len() > 20);
        for p in pts {
            let r = (p.0 * p.0 + p.1 * p.1).sqrt();
            assert!((r - 0.5).abs() < 0.02, "point {p:?} at radius {r}");
        }
    }

    #[test]
    fn no_isolines_along_the_border_or_around_holes() {
        let mut g = bowl(41);
        // a level crossing the corners: pieces must stay inside the grid
        for p in isolines(&g, &[1.5])[0].paths.iter().flatten() {
            assert!(p.0.abs() <= 1.0 + 1e-9 && p.1.abs() <= 1.0 + 1e-9);
        }
        // a masked disc around (0.5, 0.5): no line may enter it
        for i in 0..41 {
            for j in 0..41 {
                let (x, y) = (g.x[j], g.y[i]);
                if (x - 0.5).hypot(y - 0.5) < 0.2 {
                    g.z[[i, j]] = f64::NAN;
                }
            }
        }
        for l in isolines(&g, &[0.1, 0.5, 0.9]) {
            for p in l.paths.iter().flatten() {
                assert!((p.0 - 0.5).hypot(p.1 - 0.5) > 0.15, "{p:?} in the hole");
            }
        }
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(
            nice_ticks(&ColorScale::new(0.0, 1.0, false)),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        assert_eq!(
            nice_ticks(&ColorScale::new(0.05, 200.0, true)),
            vec![0.1, 1.0, 10.0, 100.0]
        );
    }
}
