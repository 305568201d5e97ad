//! Loading and checking a plot's inputs (everything that can fail on bad input happens
//! here, before the output is touched), then dispatching to the kind's drawing code.

use std::path::Path;

use plotters::prelude::*;

use super::curve::{self, CurveData, Series, SpectrumData};
use super::data::{make_levels, quantity_label, ColorScale, Grid, Levels, Loaded, AUTO_LOG_RATIO};
use super::draw::{Area, Clipped};
use super::map2d::{self, MapData, MapStyle, PanelData};
use super::spectra::{self, BlockSpectraData};
use super::surface3d::{self, Surface3dData};
use super::{Ctx, DrawError, PlotConfig, PlotError, PlotKind, PlotReport};

/// A plot ready to draw.
pub(super) struct Job {
    pub report: PlotReport,
    body: Body,
}

enum Body {
    Map(MapData),
    Panel(PanelData),
    Surface3d(Surface3dData),
    Curve(CurveData),
    Spectrum(SpectrumData),
    BlockSpectra(BlockSpectraData),
}

impl Job {
    pub fn draw<DB: DrawingBackend>(
        &self,
        root: &Area<DB>,
        _cfg: &PlotConfig,
        ctx: Ctx,
    ) -> Result<PlotReport, DrawError> {
        root.fill(&WHITE).map_err(super::draw_err)?;
        match &self.body {
            Body::Map(d) => map2d::draw_map(root, d, ctx)?,
            Body::Panel(d) => map2d::draw_panel(root, d, ctx)?,
            Body::Surface3d(d) => surface3d::draw(root, d, ctx)?,
            Body::Curve(d) => curve::draw_curve(root, d, ctx)?,
            Body::Spectrum(d) => curve::draw_spectrum(root, d, ctx)?,
            Body::BlockSpectra(d) => spectra::draw_block_spectra(root, d, ctx)?,
        }
        Ok(PlotReport::default())
    }
}

pub(super) fn prepare(cfg: &PlotConfig) -> Result<Job, PlotError> {
    let mut report = PlotReport::default();
    let body = match cfg.kind {
        PlotKind::Spectrum if spectra::has_blocks(&cfg.inputs[0]) => Body::BlockSpectra(
            spectra::load_block_spectra(&cfg.inputs[0], cfg.title.as_deref())?,
        ),
        PlotKind::Spectrum => {
            Body::Spectrum(curve::load_spectrum(&cfg.inputs[0], cfg.title.as_deref())?)
        }
        PlotKind::Panel => {
            let mut cells = Vec::new();
            for p in &cfg.inputs {
                let f = Loaded::open(p)?;
                report.warnings.extend(f.warnings());
                let g = f.grid(&cfg.surf_name, "panel")?;
                cells.push((f, g));
            }
            let all: Vec<f64> = cells.iter().flat_map(|(_, g)| g.finite()).collect();
            let levels = make_levels(&cfg.levels, &all, cfg.log)?;
            let first = &cells[0].0;
            let labels = (first.shared_axis_label("x"), first.shared_axis_label("y"));
            let title = cfg.title.clone().unwrap_or_else(|| {
                format!("{} (one colour scale)", quantity_label(&cfg.surf_name))
            });
            Body::Panel(PanelData {
                cells: cells
                    .into_iter()
                    .map(|(f, g)| (f.short_name(), g))
                    .collect(),
                levels,
                title,
                labels,
                quantity: quantity_label(&cfg.surf_name),
            })
        }
        PlotKind::Curve => {
            let f = Loaded::open(&cfg.inputs[0])?;
            report.warnings.extend(f.warnings());
            let mut series = Vec::new();
            for name in ["train_loss", "test_loss", "train_acc", "test_acc"] {
                if let Some((values, warn)) = f.line(name)? {
                    if let Some(w) = warn {
                        if !report.warnings.contains(&w) {
                            report.warnings.push(w);
                        }
                    }
                    series.push(Series {
                        name: name.into(),
                        values: values.to_vec(),
                    });
                }
            }
            if !series.iter().any(|s| s.name.ends_with("_loss")) {
                return Err(PlotError::MissingDataset {
                    path: f.path.clone(),
                    dataset: "train_loss".into(),
                    available: f.file.values.names.join(", "),
                });
            }
            Body::Curve(CurveData {
                x: f.file.x.clone(),
                series,
                title: cfg.title.clone().unwrap_or_else(|| {
                    f.title("train_loss")
                        .replacen("train loss", "loss and accuracy", 1)
                }),
                x_label: f.axis_label("x"),
                log: cfg.log,
            })
        }
        PlotKind::Surface3d => {
            let f = Loaded::open(&cfg.inputs[0])?;
            report.warnings.extend(f.warnings());
            let grid = f.grid(&cfg.surf_name, "surface3d")?;
            let vals: Vec<f64> = grid.finite().collect();
            let levels = make_levels(&cfg.levels, &vals, false)?;
            let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
            let zmax = cfg
                .zmax
                .or(cfg.levels.vmax)
                .unwrap_or(levels.scale.hi)
                .max(lo + f64::EPSILON.max(lo.abs() * 1e-9));
            Surface3dData::new(
                grid,
                zmax,
                cfg.title.clone().unwrap_or_else(|| f.title(&cfg.surf_name)),
                (f.axis_label("x"), f.axis_label("y")),
                quantity_label(&cfg.surf_name),
                cfg.log,
            )
            .map(Body::Surface3d)
            .map_err(|why| PlotError::Unfit {
                path: f.path.clone(),
                why,
            })?
        }
        PlotKind::Contour | PlotKind::Filled | PlotKind::Heat | PlotKind::Ratio => {
            let f = Loaded::open(&cfg.inputs[0])?;
            report.warnings.extend(f.warnings());
            let kind = cfg.kind.to_string();
            let (grid, levels, style, quantity, title) = if cfg.kind == PlotKind::Ratio {
                let missing: Vec<&str> = ["max_eig", "min_eig"]
                    .into_iter()
                    .filter(|n| f.file.values.get(n).is_none())
                    .collect();
                if !missing.is_empty() {
                    return Err(PlotError::Needs {
                        path: f.path.clone(),
                        missing: missing.iter().map(|m| format!("'{m}'")).collect::<Vec<_>>().join(", "),
                        hint: "a ratio map needs the eigenvalues of the Hessian at each grid point (loss-landscape's plot_hessian_eig.py writes them)".into(),
                    });
                }
                let max = f.grid("max_eig", &kind)?;
                let min = f.grid("min_eig", &kind)?;
                let z = ndarray::Zip::from(&max.z)
                    .and(&min.z)
                    .map_collect(|&a, &b| {
                        if a.is_finite() && b.is_finite() && a != 0.0 {
                            (b / a).abs()
                        } else {
                            f64::NAN
                        }
                    });
                let grid = Grid { z, ..max };
                let scale = ColorScale::new(0.0, RATIO_TOP, false);
                let levels = Levels {
                    values: vec![0.1, 0.2, 0.3, 0.4],
                    scale,
                };
                let q = "|λmin/λmax|".to_string();
                let title = cfg
                    .title
                    .clone()
                    .unwrap_or_else(|| f.title("ratio").replacen("ratio", &q, 1));
                (grid, levels, MapStyle::Heat, q, title)
            } else {
                let grid = f.grid(&cfg.surf_name, &kind)?;
                let vals: Vec<f64> = grid.finite().collect();
                let levels = match cfg.kind {
                    PlotKind::Heat => heat_levels(cfg, &vals)?,
                    _ => make_levels(&cfg.levels, &vals, cfg.log)?,
                };
                let style = match cfg.kind {
                    PlotKind::Contour => MapStyle::Contour,
                    PlotKind::Filled => MapStyle::Filled,
                    _ => MapStyle::Heat,
                };
                let title = cfg.title.clone().unwrap_or_else(|| f.title(&cfg.surf_name));
                (grid, levels, style, quantity_label(&cfg.surf_name), title)
            };
            let trajectory = match &cfg.trajectory {
                Some(p) => Some(read_trajectory(p)?),
                None => None,
            };
            // heat and ratio maps paint values past the scale in its end colours
            let clipped = match style {
                MapStyle::Heat => Clipped::of(&levels.scale, grid.finite()),
                _ => Clipped::default(),
            };
            Body::Map(MapData {
                clipped,
                grid,
                levels,
                style,
                title,
                labels: (f.axis_label("x"), f.axis_label("y")),
                quantity,
                trajectory,
            })
        }
    };
    Ok(Job { report, body })
}

/// The top of the |λmin/λmax| scale, as in Li et al. (Fig. 7): ratios past 0.5 mean
/// strong non-convexity already, and a fixed scale makes maps comparable.
pub const RATIO_TOP: f64 = 0.5;

/// A heat map's scale: `--vmin/--vmax` when given, else the whole finite range
/// (logarithmic with `--log` or when it spans [`AUTO_LOG_RATIO`]).
fn heat_levels(cfg: &PlotConfig, vals: &[f64]) -> Result<Levels, PlotError> {
    let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() {
        return Err(PlotError::NoFiniteValues);
    }
    let lo = cfg.levels.vmin.unwrap_or(lo);
    let hi = cfg.levels.vmax.unwrap_or(hi);
    if cfg.log && lo <= 0.0 {
        return Err(PlotError::LogNonPositive { min: lo });
    }
    let log = cfg.log || (lo > 0.0 && hi / lo >= AUTO_LOG_RATIO);
    Ok(Levels {
        values: Vec::new(),
        scale: ColorScale::new(lo, hi, log),
    })
}

/// A projection file's path: `proj_xcoord`, `proj_ycoord` (loss-landscape's names).
pub(crate) fn read_trajectory(path: &Path) -> Result<Vec<(f64, f64)>, PlotError> {
    let xy = crate::io::contain::contain(path, || {
        crate::io::hdf5_init();
        let f = hdf5::File::open(path).map_err(|e| format!("cannot open as HDF5 ({e})"))?;
        let read = |name: &str| f.dataset(name).and_then(|d| d.read_raw::<f64>()).ok();
        Ok::<_, String>((read("proj_xcoord"), read("proj_ycoord")))
    })
    .map_err(|e| e.to_string())
    .and_then(|r| r)
    .map_err(|why| PlotError::Hdf5 {
        path: path.into(),
        why,
    })?;
    match xy {
        (Some(x), Some(y)) if x.iter().chain(&y).any(|v| !v.is_finite()) => Err(PlotError::Input {
            path: path.into(),
            why: "'proj_xcoord'/'proj_ycoord' hold a NaN or infinite coordinate".into(),
        }),
        (Some(x), Some(y)) if x.len() == y.len() => Ok(x.into_iter().zip(y).collect()),
        (Some(x), Some(y)) => Err(PlotError::Input {
            path: path.into(),
            why: format!(
                "'proj_xcoord' has {} points but 'proj_ycoord' has {}",
                x.len(),
                y.len()
            ),
        }),
        (x, _) => Err(PlotError::Needs {
            path: path.into(),
            missing: if x.is_none() {
                "'proj_xcoord'"
            } else {
                "'proj_ycoord'"
            }
            .into(),
            hint: "a trajectory file holds the projected path as 'proj_xcoord' and 'proj_ycoord'"
                .into(),
        }),
    }
}
