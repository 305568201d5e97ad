//! The command line: one file per subcommand, each turning typed clap `Args` into a
//! validated configuration and one library call. Results go to stdout (text, or JSON with
//! `--json`); progress and warnings go to stderr.
//!
//! Library messages name config fields in backticks (see [`crate::error`]); this edge
//! renames each to the flag of the running subcommand whose clap id is that field
//! (`` `top_k` `` → `--top-k`), in errors ([`render_error`]) and warnings ([`reporter`]).
//! The running subcommand is the one piece of global state here, set once by `main`.

pub mod args;
pub mod bench;
pub mod choices;
pub mod completions;
pub mod convert;
pub mod engine_args;
pub mod eval;
pub mod hessian;
pub mod info;
pub mod merge;
pub mod metrics;
pub mod numbers;
pub mod plot;
pub mod probe;
pub mod run;
pub mod sharpness;
pub mod surface;
pub mod train;
pub mod trajectory;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use anyhow::Result;
use clap::{ArgAction, CommandFactory, Parser, Subcommand};

pub use self::args::{DataArgs, ModelArgs};
use crate::progress::{FieldNames, Reporter};

/// Loss landscapes and Hessian curvature of plain and residual networks, on the CPU.
///
/// Loads trained networks (safetensors with the architecture in their metadata, ONNX
/// exports, PyTorch checkpoints), evaluates
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
    /// Rewrite a checkpoint (torch.save .pt/.pth/.t7) as a self-describing .safetensors file.
    Convert(convert::ConvertArgs),
    /// Loss and accuracy of a model on a dataset.
    Eval(eval::EvalArgs),
    /// Curvature (Hessian, or GGN / Fisher / empirical Fisher with --operator): top/bottom
    /// eigenvalues with residuals, trace, spectral density, per block.
    Hessian(hessian::HessianArgs),
    /// Loss and accuracy on a 1-D or 2-D grid along (filter-normalized) random directions,
    /// a direction file, or the top eigenvectors of the Hessian (GGN, Fisher), to HDF5.
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions(completions::CompletionsArgs),
}

/// The command line as `main` parses it: [`Cli`] with every option that takes a value
/// accepting a negative number (`--x -1:1:51` aside, which its own flag allows), so that
/// `--samples -1` is a range error from the flag's parser instead of an unknown argument.
/// Real-valued options (and `--normalize MEAN/STD`) take any value that starts with a minus
/// (clap's own test for a negative number refuses an exponent's sign, `-1e-3`); their
/// parsers judge it.
pub fn command() -> clap::Command {
    let real = [
        std::any::TypeId::of::<f64>(),
        std::any::TypeId::of::<(f64, f64)>(),
        std::any::TypeId::of::<Vec<f64>>(),
        std::any::TypeId::of::<crate::data::Normalize>(),
    ];
    Cli::command().mut_subcommands(|sub| {
        sub.mut_args(|a| {
            let takes_value = matches!(a.get_action(), ArgAction::Set | ArgAction::Append);
            if !(takes_value && a.get_long().is_some()) {
                return a;
            }
            let a = a.allow_negative_numbers(true);
            match real.iter().any(|t| a.get_value_parser().type_id() == *t) {
                true => a.allow_hyphen_values(true),
                false => a,
            }
        })
    })
}

/// The subcommand `main` is running (for naming flags in messages).
static RUNNING: OnceLock<String> = OnceLock::new();

/// Records the running subcommand; called once by `main`.
pub fn set_running(subcommand: &str) {
    let _ = RUNNING.set(subcommand.to_string());
}

/// The flags of `subcommand` by clap id: `top_k` → `--top-k`; positional arguments by
/// their value name (`SPEC.toml`).
pub fn flags_of(subcommand: &str) -> HashMap<String, String> {
    let cmd = Cli::command();
    let Some(sub) = cmd.find_subcommand(subcommand) else {
        return HashMap::new();
    };
    let aliases = ALIASES
        .iter()
        .filter(|(c, _, _)| *c == subcommand)
        .map(|(_, field, flag)| (field.to_string(), flag.to_string()));
    sub.get_arguments()
        .map(|a| {
            let shown = match (a.get_long(), a.get_value_names()) {
                (Some(long), _) => format!("--{long}"),
                (None, Some(names)) if !names.is_empty() => names[0].to_string(),
                _ => a.get_id().to_string().to_uppercase(),
            };
            (a.get_id().to_string(), shown)
        })
        .chain(aliases)
        .collect()
}

/// Fields a subcommand sets under another flag than its own name: `surface` passes
/// `--hessian-max-iter` and `--hessian-tol` to the Hessian's `max_iter` and `tol`.
const ALIASES: &[(&str, &str, &str)] = &[
    ("surface", "max_iter", "--hessian-max-iter"),
    ("surface", "tol", "--hessian-tol"),
];

/// [`flags_of`] the running subcommand.
fn flags() -> &'static HashMap<String, String> {
    static FLAGS: OnceLock<HashMap<String, String>> = OnceLock::new();
    FLAGS.get_or_init(|| RUNNING.get().map(|n| flags_of(n)).unwrap_or_default())
}

/// Renames fields to the running subcommand's flags.
pub fn field_names() -> FieldNames {
    Arc::new(|field: &str| flags().get(field).cloned())
}

/// Where a job reports when run from the command line.
/// Ranks other than 0 of an MPI job are always quiet (rank 0 reports for the job).
pub fn reporter(quiet: bool) -> Reporter {
    let quiet = quiet || crate::dist::world().rank() > 0;
    Reporter::new(quiet, Some(field_names()))
}

/// A message with fields named by the running subcommand's flags.
pub fn render_message(message: &str) -> String {
    crate::error::translate_fields(message, |f| flags().get(f).cloned())
}

/// An error chain as one line (`context: cause: …`) with fields named by their flags.
pub fn render_error(e: &anyhow::Error) -> String {
    render_message(&format!("{e:#}"))
}

/// A failed write to standard output: a closed pipe (`| head`, exit 0 in `main`) or a full
/// disk (exit 2). `println!` would panic instead.
#[derive(Debug, thiserror::Error)]
#[error("writing to standard output")]
pub struct StdoutError(#[source] pub std::io::Error);

/// `println!` that returns a failed write as a [`StdoutError`] instead of panicking; use
/// as `outln!(...)?`.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::write_line(&mut ::std::io::stdout().lock(), format_args!($($arg)*))
    };
}

/// Writes one line to `w` (standard output in [`outln!`]); a failure is a [`StdoutError`].
pub fn write_line(
    w: &mut impl std::io::Write,
    line: std::fmt::Arguments<'_>,
) -> Result<(), StdoutError> {
    w.write_fmt(line)
        .and_then(|()| w.write_all(b"\n"))
        .map_err(StdoutError)
}

/// Whether `e` is a closed standard output (EPIPE: the reader went away, as `| head` does),
/// which ends a command quietly with exit 0; every other error exits 2 with a message.
pub fn is_closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints a value as pretty JSON on stdout; a failed write is a [`StdoutError`].
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    crate::outln!("{text}")?;
    Ok(())
}

#[cfg(test)]
mod tests;
