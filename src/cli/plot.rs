//! `losscape plot F.h5 --out F.png` and `losscape export-vtp F.h5 --out F.vtp`: figures of
//! surface and Hessian files (see [`crate::plot`]).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};

use crate::plot::{self, LevelSpec, PlotConfig, PlotKind, VtpConfig, VtpLog};

/// Plot kinds on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// Labelled isolines (marching squares), the centre marked.
    Contour,
    /// Filled contours with a colourbar.
    Filled,
    /// One colour per grid point with a colourbar.
    Heat,
    /// A 3-D surface, clipped at --zmax.
    Surface3d,
    /// Loss and accuracy along α of a 1-D surface (the β = 0 row of a 2-D one).
    Curve,
    /// |λmin/λmax| on a 0–0.5 scale (needs max_eig and min_eig datasets).
    Ratio,
    /// Eigenvalue density of a Hessian file (from `losscape hessian --density`); for a file
    /// written with --per-block, every block's density and top eigenvalues against depth.
    Spectrum,
    /// Several surfaces side by side on one colour scale.
    Panel,
}

impl From<KindArg> for PlotKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Contour => PlotKind::Contour,
            KindArg::Filled => PlotKind::Filled,
            KindArg::Heat => PlotKind::Heat,
            KindArg::Surface3d => PlotKind::Surface3d,
            KindArg::Curve => PlotKind::Curve,
            KindArg::Ratio => PlotKind::Ratio,
            KindArg::Spectrum => PlotKind::Spectrum,
            KindArg::Panel => PlotKind::Panel,
        }
    }
}

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Surface file(s) (losscape's or loss-landscape's); a Hessian file for --kind spectrum;
    /// several for --kind panel.
    #[arg(value_name = "F.h5", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// What to draw.
    #[arg(long, value_enum, default_value_t = KindArg::Contour)]
    pub kind: KindArg,
    /// Which dataset of the surface file.
    #[arg(long, default_value = "train_loss")]
    pub surf_name: String,
    /// Lowest contour level (loss-landscape's default 0.1 when any level option is given;
    /// otherwise levels follow the data).
    #[arg(long)]
    pub vmin: Option<f64>,
    /// Highest contour level (default 10 when any level option is given).
    #[arg(long)]
    pub vmax: Option<f64>,
    /// Spacing of contour levels (default 0.5 when any level option is given).
    #[arg(long)]
    pub vlevel: Option<f64>,
    /// Logarithmic colour scale (curve: logarithmic loss axis).
    #[arg(long)]
    pub log: bool,
    /// Clip the 3-D surface at this value (default: --vmax, else the 95% quantile).
    #[arg(long)]
    pub zmax: Option<f64>,
    /// Image width in pixels (default depends on the kind).
    #[arg(long, value_parser = clap::value_parser!(u32).range(200..=10000))]
    pub width: Option<u32>,
    /// Image height in pixels (default depends on the kind).
    #[arg(long, value_parser = clap::value_parser!(u32).range(150..=10000))]
    pub height: Option<u32>,
    /// Title (default: quantity, model and data from the file's attributes).
    #[arg(long)]
    pub title: Option<String>,
    /// A projected training path (datasets proj_xcoord, proj_ycoord) drawn on 2-D maps.
    #[arg(long, value_name = "PROJ.h5")]
    pub trajectory: Option<PathBuf>,
    /// Output image; the format follows the extension (.png or .svg).
    #[arg(long, short = 'o', value_name = "F.png|F.svg")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct ExportVtpArgs {
    /// Surface file (losscape's or loss-landscape's).
    #[arg(value_name = "F.h5")]
    pub file: PathBuf,
    /// Which dataset of the surface file.
    #[arg(long, default_value = "train_loss")]
    pub surf_name: String,
    /// Clip values above this.
    #[arg(long)]
    pub zmax: Option<f64>,
    /// Write log10 of the values (values ≤ 0 left out).
    #[arg(long, conflicts_with = "h52vtp_log")]
    pub log: bool,
    /// Write ln(z + 0.1), the transform of loss-landscape's `h52vtp.py --log` (after
    /// clipping at --zmax, as there), so files compare with theirs.
    #[arg(long)]
    pub h52vtp_log: bool,
    /// Output file (ParaView PolyData XML: one quad per grid cell, as h52vtp writes).
    #[arg(long, short = 'o', value_name = "F.vtp")]
    pub out: PathBuf,
}

/// Builds the validated plot configuration.
pub fn config(args: &PlotArgs) -> Result<PlotConfig> {
    let kind = PlotKind::from(args.kind);
    if args.trajectory.is_some()
        && !matches!(kind, PlotKind::Contour | PlotKind::Filled | PlotKind::Heat)
    {
        anyhow::bail!("--trajectory is drawn on --kind contour, filled or heat (not {kind})");
    }
    let size = match (args.width, args.height) {
        (None, None) => None,
        (w, h) => Some((w.unwrap_or(800), h.unwrap_or(700))),
    };
    Ok(PlotConfig {
        inputs: args.files.clone(),
        kind,
        surf_name: args.surf_name.clone(),
        levels: LevelSpec {
            vmin: args.vmin,
            vmax: args.vmax,
            vlevel: args.vlevel,
        },
        log: args.log,
        zmax: args.zmax,
        size,
        title: args.title.clone(),
        trajectory: args.trajectory.clone(),
        out: args.out.clone(),
    })
}

pub fn run(args: &PlotArgs) -> Result<()> {
    let cfg = config(args)?;
    let report = plot::plot(&cfg)?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    eprintln!("wrote {}", cfg.out.display());
    Ok(())
}

pub fn run_export_vtp(args: &ExportVtpArgs) -> Result<()> {
    let cfg = VtpConfig {
        input: args.file.clone(),
        surf_name: args.surf_name.clone(),
        zmax: args.zmax,
        log: match (args.log, args.h52vtp_log) {
            (true, _) => Some(VtpLog::Log10),
            (_, true) => Some(VtpLog::H52vtp),
            _ => None,
        },
        out: args.out.clone(),
    };
    let r = plot::export_vtp(&cfg)?;
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    eprintln!(
        "wrote {} ({} points, {} quads, {} triangles{})",
        cfg.out.display(),
        r.points,
        r.quads,
        r.triangles,
        if r.lines > 0 {
            format!(", {} lines", r.lines)
        } else {
            String::new()
        }
    );
    Ok(())
}
