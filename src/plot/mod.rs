//! Plots of surface and Hessian files, to PNG or SVG, drawn with plotters and an embedded
//! font (see [`font`]) so the same file gives the same bytes on every machine.
//!
//! Kinds (loss-landscape's `plot_2D.py`, `plot_1D.py`, `plot_surface.py` and `h52vtp.py`,
//! plus PyHessian's density plot):
//! - `contour`: isolines by marching squares (the `contour` crate), labelled, the centre
//!   marked, optionally a projected training trajectory on top;
//! - `filled`: filled contours (bands between the levels, viridis) with isolines and a
//!   colourbar; `heat`: one colour per grid point, continuous colourbar;
//! - `surface3d`: a 3-D surface, values clipped at `zmax`;
//! - `curve`: loss (left axis) and accuracy (right axis) along α of a 1-D surface;
//! - `ratio`: |λmin/λmax| on a 0–0.5 scale from `max_eig`/`min_eig`;
//! - `spectrum`: the SLQ spectral density of a Hessian file, log density; for a file
//!   written with `--per-block`, every block's density and top eigenvalues against depth
//!   in one figure (`spectra.rs`);
//! - `panel`: several 2-D surfaces side by side on one colour scale and one set of levels;
//! - [`export_vtp`]: ParaView PolyData (`.vtp`) of a surface.
//!
//! Masked points (NaN, not computed) are never drawn as a value: rasters leave them as
//! background, isolines and 3-D cells next to them are skipped.

pub(crate) mod curve;
mod data;
mod draw;
pub mod font;
pub(crate) mod job;
mod map2d;
mod spectra;
mod surface3d;
mod vtp;

use std::fmt;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

pub use data::{make_levels, quantile, ColorScale, LevelSpec, Levels};
pub use spectra::operator_label;
pub use vtp::{export_vtp, VtpConfig, VtpLog, VtpReport};

use crate::io::surface::SurfaceFileError;

/// What to draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlotKind {
    Contour,
    Filled,
    Heat,
    Surface3d,
    Curve,
    Ratio,
    Spectrum,
    Panel,
}

impl fmt::Display for PlotKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PlotKind::Contour => "contour",
            PlotKind::Filled => "filled",
            PlotKind::Heat => "heat",
            PlotKind::Surface3d => "surface3d",
            PlotKind::Curve => "curve",
            PlotKind::Ratio => "ratio",
            PlotKind::Spectrum => "spectrum",
            PlotKind::Panel => "panel",
        })
    }
}

/// The output format, chosen by the file extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Png,
    Svg,
}

impl OutputFormat {
    /// `.png` or `.svg` (any case); anything else is an error naming the file.
    pub fn from_path(path: &Path) -> Result<Self, PlotError> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "png" => Ok(OutputFormat::Png),
            "svg" => Ok(OutputFormat::Svg),
            _ => Err(PlotError::Format {
                path: path.to_path_buf(),
                ext,
            }),
        }
    }
}

/// Everything a plot needs; built and validated by the CLI.
#[derive(Clone, Debug)]
pub struct PlotConfig {
    /// Surface files (one, or several for `panel`), or a Hessian file for `spectrum`.
    pub inputs: Vec<PathBuf>,
    pub kind: PlotKind,
    /// The dataset to draw (`train_loss`, `test_acc`, …).
    pub surf_name: String,
    pub levels: LevelSpec,
    /// Logarithmic colour (or loss) scale.
    pub log: bool,
    /// Clip values above this (3-D surface); default: the automatic top of the scale.
    pub zmax: Option<f64>,
    /// Image size in pixels; `None`: a size that suits the kind.
    pub size: Option<(u32, u32)>,
    pub title: Option<String>,
    /// A projection file (`proj_xcoord`, `proj_ycoord`) drawn over contour/filled/heat.
    pub trajectory: Option<PathBuf>,
    pub out: PathBuf,
}

/// What a plot wants the user to know.
#[derive(Clone, Debug, Default)]
pub struct PlotReport {
    pub warnings: Vec<String>,
}

/// Why a plot could not be drawn. Messages name config fields (see [`crate::error`]).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Occurs when a surface file cannot be read.
    #[error(transparent)]
    Surface(SurfaceFileError),
    /// Occurs when an input is not a surface file at all.
    #[error("{path} is not a surface file: it has no '{dataset}' dataset (write surfaces with `losscape surface`)")]
    NotSurface { path: PathBuf, dataset: String },
    /// Occurs when the chosen dataset is not in the file.
    #[error("{path}: no dataset '{dataset}' (it has: {available}); choose one with `surf_name`")]
    MissingDataset {
        path: PathBuf,
        dataset: String,
        available: String,
    },
    /// Occurs when a plot needs datasets that the file lacks (ratio, spectrum, trajectory).
    #[error("{path}: missing dataset(s) {missing}; {hint}")]
    Needs {
        path: PathBuf,
        missing: String,
        hint: String,
    },
    /// Occurs when an input cannot be opened as HDF5.
    #[error("{path}: {why}")]
    Hdf5 { path: PathBuf, why: String },
    /// Occurs when the output extension is neither `.png` nor `.svg`.
    #[error("{path}: unknown output format '{ext}'; use a .png or .svg file name")]
    Format { path: PathBuf, ext: String },
    /// Occurs when the input does not suit the kind or the options.
    #[error("{path}: {why}")]
    Input { path: PathBuf, why: String },
    /// Occurs when the input's values cannot be drawn as the options ask.
    #[error("{path}: {why}")]
    Unfit { path: PathBuf, why: DrawError },
    /// Occurs when no input file is given.
    #[error("no input file given")]
    NoInput,
    /// Occurs when several inputs are given to a kind that draws one.
    #[error("`kind` {kind} takes one input file (got {got}); use `kind` panel for several")]
    OneInput { kind: PlotKind, got: usize },
    /// Occurs when the image size is too small or too large.
    #[error("image size {width}×{height} is outside 200×150 … 10000×10000")]
    Size { width: u32, height: u32 },
    /// Occurs when explicit levels are not increasing.
    #[error("need `vmin` < `vmax` and `vlevel` > 0 (got {vmin}, {vmax}, {vlevel})")]
    LevelOrder { vmin: f64, vmax: f64, vlevel: f64 },
    /// Occurs when a logarithmic scale starts at a level ≤ 0.
    #[error("`log` needs `vmin` > 0 (got {vmin})")]
    LogVmin { vmin: f64 },
    /// Occurs when explicit levels are too many to draw.
    #[error("`vmin` {vmin} `vmax` {vmax} `vlevel` {vlevel} gives {levels} levels (at most {max})")]
    TooManyLevels {
        vmin: f64,
        vmax: f64,
        vlevel: f64,
        levels: usize,
        max: usize,
    },
    /// Occurs when every point is masked or not finite.
    #[error("no finite values to draw (every point is masked)")]
    NoFiniteValues,
    /// Occurs when a logarithmic heat map would start at a value ≤ 0.
    #[error("`log` needs positive values (the minimum is {min}); give `vmin`")]
    LogNonPositive { min: f64 },
    /// Occurs when a logarithmic export is clipped at a `zmax` outside the logarithm's
    /// domain (≤ 0 for log10, ≤ −0.1 for h52vtp's ln(z + 0.1)).
    #[error(
        "the logarithm is undefined at `zmax`: give a `zmax` > 0 (log10) or > -0.1 (ln(z + 0.1))"
    )]
    LogZmax,
    /// Occurs when drawing the image fails.
    #[error("drawing {path}: {why}")]
    Draw { path: PathBuf, why: DrawError },
    /// Occurs when the output path cannot be written (not a regular file, no folder, or
    /// locked by another process); checked before anything is read or drawn.
    #[error(transparent)]
    Output(#[from] crate::io::output::OutputError),
    /// Occurs when writing the image (or moving it into place) fails.
    #[error("drawing {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// Why drawing stopped (nothing is written).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum DrawError {
    /// Occurs when plotters fails to draw an element or to encode the image; `why` is the
    /// backend's message.
    #[error("{why}")]
    Backend { why: String },
    /// Occurs when every point is masked or not finite.
    #[error("no finite values to draw (every point is masked)")]
    NoFiniteValues,
    /// Occurs when a curve has no finite loss value (none > 0 on a logarithmic scale).
    #[error("no finite loss values to draw")]
    NoFiniteLoss,
    /// Occurs when a spectral density is zero everywhere.
    #[error("the density is zero everywhere")]
    ZeroDensity,
    /// Occurs when a logarithmic 3-D surface is clipped at a `zmax` ≤ 0.
    #[error("`log` needs a positive `zmax` (got {zmax})")]
    LogZmax { zmax: f64 },
}

/// Text sizes and format details shared by the kinds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx {
    pub title: u32,
    pub label: u32,
    pub tick: u32,
    pub svg: bool,
}

impl Ctx {
    fn new(size: (u32, u32), format: OutputFormat) -> Self {
        // text scales with the smaller side, 700 px being the reference
        let s = (size.0.min(size.1) as f64 / 700.0).clamp(0.6, 2.5);
        let px = |v: f64| (v * s).round().max(8.0) as u32;
        Self {
            title: px(21.0),
            label: px(17.0),
            tick: px(14.0),
            svg: format == OutputFormat::Svg,
        }
    }
}

fn default_size(kind: PlotKind, inputs: usize) -> (u32, u32) {
    match kind {
        PlotKind::Contour => (720, 700),
        PlotKind::Filled | PlotKind::Heat | PlotKind::Ratio => (820, 700),
        PlotKind::Surface3d => (800, 700),
        PlotKind::Curve => (800, 520),
        PlotKind::Spectrum => (800, 520),
        PlotKind::Panel => {
            let (r, c) = map2d::panel_grid(inputs);
            (420 * c as u32 + 130, 40 + 460 * r as u32)
        }
    }
}

fn checked_size(cfg: &PlotConfig) -> Result<(u32, u32), PlotError> {
    if cfg.inputs.is_empty() {
        return Err(PlotError::NoInput);
    }
    if cfg.kind != PlotKind::Panel && cfg.inputs.len() > 1 {
        return Err(PlotError::OneInput {
            kind: cfg.kind,
            got: cfg.inputs.len(),
        });
    }
    let default = match cfg.kind {
        PlotKind::Spectrum => spectra::default_size(&cfg.inputs[0]),
        _ => None,
    }
    .unwrap_or_else(|| default_size(cfg.kind, cfg.inputs.len()));
    let size = cfg.size.unwrap_or(default);
    if size.0 < 200 || size.1 < 150 || size.0 > 10_000 || size.1 > 10_000 {
        return Err(PlotError::Size {
            width: size.0,
            height: size.1,
        });
    }
    font::ensure_font();
    Ok(size)
}

/// Draws one plot into `cfg.out`, written whole to a temporary sibling and renamed into
/// place, so a failed plot leaves no partial image.
pub fn plot(cfg: &PlotConfig) -> Result<PlotReport, PlotError> {
    let format = OutputFormat::from_path(&cfg.out)?;
    let size = checked_size(cfg)?;
    let ctx = Ctx::new(size, format);
    let _lock = crate::io::output::prepare_output(&cfg.out)?;
    // load everything before touching the output
    let job = job::prepare(cfg)?;
    let mut drawn_report = None;
    let result = crate::io::output::replace_atomically(
        &cfg.out,
        true,
        |cause| PlotError::Write {
            path: cfg.out.clone(),
            cause,
        },
        |tmp| {
            let drawn = match format {
                OutputFormat::Png => {
                    let root = BitMapBackend::new(tmp, size).into_drawing_area();
                    let r = job.draw(&root, cfg, ctx);
                    r.and_then(|rep| root.present().map(|_| rep).map_err(draw_err))
                }
                OutputFormat::Svg => {
                    let root = SVGBackend::new(tmp, size).into_drawing_area();
                    let r = job.draw(&root, cfg, ctx);
                    r.and_then(|rep| root.present().map(|_| rep).map_err(draw_err))
                }
            };
            drawn_report = Some(drawn.map_err(|why| PlotError::Draw {
                path: cfg.out.clone(),
                why,
            })?);
            Ok(())
        },
    )
    .map(|()| drawn_report.expect("drawn when written"));
    let mut report = job.report;
    report.warnings.extend(result?.warnings);
    Ok(report)
}

/// An RGB image in memory (rows top to bottom, 3 bytes a pixel).
#[derive(Clone, Debug)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

impl RgbImage {
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = 3 * (y as usize * self.width as usize + x as usize);
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }
}

/// Draws the plot into memory, as [`plot`] would into a PNG (`cfg.out` is ignored): for
/// tests and for callers that embed the pixels elsewhere.
pub fn render_rgb(cfg: &PlotConfig) -> Result<(RgbImage, PlotReport), PlotError> {
    let size = checked_size(cfg)?;
    let ctx = Ctx::new(size, OutputFormat::Png);
    let job = job::prepare(cfg)?;
    let mut pixels = vec![0u8; 3 * size.0 as usize * size.1 as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        job.draw(&root, cfg, ctx)
            .and_then(|_| root.present().map_err(draw_err))
            .map_err(|why| PlotError::Draw {
                path: cfg.out.clone(),
                why,
            })?;
    }
    Ok((
        RgbImage {
            width: size.0,
            height: size.1,
            pixels,
        },
        job.report,
    ))
}

pub(crate) fn draw_err<E: fmt::Debug>(e: E) -> DrawError {
    DrawError::Backend {
        why: format!("{e:?}"),
    }
}
