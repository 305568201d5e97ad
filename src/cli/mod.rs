//! The command line: one file per subcommand, each turning typed clap `Args` into a
//! validated configuration and a library call. Results go to stdout (text, or JSON with
//! `--json`); progress and warnings go to stderr.

pub mod bench;
pub mod engine_args;
pub mod eval;
pub mod hessian;
pub mod info;
pub mod merge;
pub mod metrics;
pub mod plot;
pub mod probe;
pub mod run;
pub mod sharpness;
pub mod surface;
pub mod train;
pub mod trajectory;

use anyhow::Result;
use clap::{Parser, Subcommand};

pub use crate::args::{with_threads, BnMode, DataArgs, ModelArgs, Precision};

/// Loss landscapes and Hessian curvature of plain and residual networks, on the CPU.
///
/// Loads trained networks (safetensors with the architecture in their metadata), evaluates
/// loss, gradients and exact Hessian-vector products over whole datasets, and measures what
/// the residual-connection literature claims.
#[derive(Debug, Parser)]
#[command(name = "losscape", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show a model's layers, parameter count and tensors.
    Info(info::InfoArgs),
    /// Loss and accuracy of a model on a dataset.
    Eval(eval::EvalArgs),
    /// Hessian curvature: top/bottom eigenvalues with residuals, trace, spectral density.
    Hessian(hessian::HessianArgs),
    /// Loss and accuracy on a 1-D or 2-D grid along (filter-normalized) directions, to HDF5.
    Surface(surface::SurfaceArgs),
    /// Smoothness metrics of a surface: basin radius, roughness, non-convexity, minima, curvature.
    Metrics(metrics::MetricsArgs),
    /// Join the shard files of one surface into a single file.
    Merge(merge::MergeArgs),
    /// ε-sharpness (Keskar et al. 2017) and β-smoothness along the gradient (Santurkar et al. 2018).
    Sharpness(sharpness::SharpnessArgs),
    /// Per-layer gradient norms and per-block activation statistics (trained and fresh He init).
    Probe(probe::ProbeArgs),
    /// Draw a surface or Hessian file: contour, filled, heat, 3-D, 1-D curve, |λmin/λmax|, spectrum, panel.
    Plot(plot::PlotArgs),
    /// Export a surface to ParaView (PolyData XML, .vtp), as loss-landscape's h52vtp does.
    ExportVtp(plot::ExportVtpArgs),
    /// Run an analysis spec (TOML) into outputs/NAME/: surfaces, Hessians, probes, plots, report.
    Run(run::RunArgs),
    /// Train a zoo network with SGD (PyTorch semantics), with checkpoints and resumption.
    Train(train::TrainArgs),
    /// PCA directions of a training trajectory (checkpoints) and the projected path.
    Trajectory(trajectory::TrajectoryArgs),
    /// Measure speed: forward images/s, GFLOP/s, gradient and H·v cost (ResNet-20/56, 32×32×3).
    Bench(bench::BenchArgs),
}

/// Prints a value as pretty JSON on stdout; a closed pipe is an `io::Error` (exit 0 in main),
/// not a panic.
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    #[test]
    fn batch_size_must_be_positive() {
        assert!(Cli::try_parse_from([
            "losscape",
            "eval",
            "-m",
            "a.safetensors",
            "-d",
            "digits",
            "--batch-size",
            "0"
        ])
        .is_err());
        assert!(Cli::try_parse_from([
            "losscape",
            "eval",
            "-m",
            "a.safetensors",
            "-d",
            "digits",
            "--split",
            "valid"
        ])
        .is_err());
        let c = Cli::try_parse_from([
            "losscape",
            "eval",
            "-m",
            "a.safetensors",
            "-d",
            "digits",
            "--arch",
            "resnet-cifar:depth=20",
        ]);
        assert!(c.is_ok());
        assert!(Cli::try_parse_from([
            "losscape",
            "eval",
            "-m",
            "a.safetensors",
            "-d",
            "digits",
            "--arch",
            "resnet-cifar:depth=21"
        ])
        .is_err());
    }
}
