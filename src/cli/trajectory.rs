//! `losscape trajectory --checkpoints DIR --final M --out dirs.h5`: PCA directions of a
//! training run and its path projected onto them; see [`crate::jobs::trajectory`].

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::jobs::trajectory::{run_trajectory, ProjMethod, TrajectoryConfig};

#[derive(Debug, Args)]
pub struct TrajectoryArgs {
    /// Folder of checkpoints model_{epoch}.safetensors (as `train --checkpoints` writes).
    #[arg(long, value_name = "DIR")]
    pub checkpoints: PathBuf,
    /// The final model, the origin of the plane (default: the last checkpoint).
    #[arg(long = "final", value_name = "M")]
    pub final_model: Option<PathBuf>,
    /// Only ≥ 2-D weights enter the PCA (biases and BN γ/β are held at 0).
    #[arg(long)]
    pub ignore_biasbn: bool,
    /// Which projection goes into proj_xcoord/proj_ycoord.
    #[arg(long, value_enum, default_value_t = ProjMethod::Cos)]
    pub proj_method: ProjMethod,
    /// Direction file to write.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Projection file (default: beside --out, `<stem>_proj_<method>.h5` as loss-landscape names it).
    #[arg(long)]
    pub proj: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bar on stderr (it shows only on a terminal; warnings still print).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub fn run(args: &TrajectoryArgs) -> Result<()> {
    let config = TrajectoryConfig {
        checkpoints: args.checkpoints.clone(),
        final_model: args.final_model.clone(),
        ignore_biasbn: args.ignore_biasbn,
        proj_method: args.proj_method,
        out: args.out.clone(),
        proj: args.proj.clone(),
    };
    let report = run_trajectory(&config, &super::reporter(args.quiet))?;
    if args.json {
        return super::print_json(&report);
    }
    let span = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo, hi)
    };
    let ((x0, x1), (y0, y1)) = (span(&report.x), span(&report.y));
    crate::outln!(
        "{} checkpoints; explained variance ratio {:.4}, {:.4} (sum {:.4})",
        report.checkpoints,
        report.explained_variance_ratio[0],
        report.explained_variance_ratio[1],
        report.explained_variance_ratio.iter().sum::<f64>()
    )?;
    crate::outln!(
        "directions -> {}\nprojection -> {}  (x in [{x0:.3}, {x1:.3}], y in [{y0:.3}, {y1:.3}])",
        report.directions,
        report.projection
    )?;
    let pad = |a: f64, b: f64| {
        let m = 0.2 * (b - a).max(1e-3);
        (a - m, b + m)
    };
    let ((a, b), (c, d)) = (pad(x0, x1), pad(y0, y1));
    crate::outln!(
        "next: losscape surface --model {} --data DATA --directions {} --x {a:.3}:{b:.3}:31 --y {c:.3}:{d:.3}:31 --out S.h5\n      losscape plot S.h5 --kind contour --trajectory {} --out S.png",
        report.final_model.display(),
        report.directions,
        report.projection
    )?;
    Ok(())
}
