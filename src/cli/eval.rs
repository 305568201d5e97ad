//! `losscape eval --model M --data D`: per-sample mean loss and accuracy over a dataset.

use anyhow::Result;
use clap::Args;

use super::{DataArgs, ModelArgs};
use crate::jobs::eval::{run_eval, EvalConfig};
use crate::jobs::Precision;

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Compute precision.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// Worker threads (default: all cores). Results are identical for any count.
    #[arg(long, value_parser = crate::cli::args::parse_threads)]
    pub threads: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bar on stderr (it shows only on a terminal; warnings still print).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let reports = run_eval(
        &EvalConfig {
            model: args.model.source(),
            data: args.data.config(),
            precision: args.precision,
            threads: args.threads,
        },
        &super::reporter(args.quiet),
    )?;
    if args.json {
        // one object for one split (the common case), an array for several
        return if reports.len() == 1 {
            super::print_json(&reports[0])
        } else {
            super::print_json(&reports)
        };
    }
    for r in &reports {
        crate::outln!(
            "{}  on {}: loss {:.6}  accuracy {:.2}% ({}/{})  [{}, BN {}, {:.2} s]",
            r.model,
            r.data,
            r.eval.loss,
            r.eval.accuracy,
            r.eval.correct,
            r.eval.samples,
            r.precision,
            r.bn_mode,
            r.seconds
        )?;
    }
    Ok(())
}
