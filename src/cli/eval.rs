//! `losscape eval --model M --data D`: per-sample mean loss and accuracy over a dataset.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use super::{DataArgs, ModelArgs, Precision};
use crate::objective::{Evaluation, Objective};

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
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct EvalReport {
    model: String,
    data: String,
    #[serde(flatten)]
    eval: Evaluation,
    precision: &'static str,
    bn_mode: &'static str,
    seconds: f64,
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let model = args.model.load()?;
    let cfg = args.data.objective_config();
    let mut reports = Vec::new();
    for ds in args.data.load()? {
        let obj = Objective::new(&model.graph, ds.x.view(), &ds.y, cfg).with_context(|| {
            format!(
                "data '{}' does not fit model {}",
                args.data.data,
                args.model.model.display()
            )
        })?;
        let start = Instant::now();
        let eval = super::with_threads(args.threads, || match args.precision {
            Precision::F32 => obj.evaluate(model.theta.data.view()),
            Precision::F64 => obj.evaluate(model.theta.cast::<f64>().data.view()),
        })?;
        let report = EvalReport {
            model: args.model.model.display().to_string(),
            data: ds.name.clone(),
            eval,
            precision: if args.precision == Precision::F32 {
                "f32"
            } else {
                "f64"
            },
            bn_mode: if args.data.bn_mode == super::BnMode::Eval {
                "eval"
            } else {
                "train"
            },
            seconds: start.elapsed().as_secs_f64(),
        };
        if !args.json {
            println!(
                "{}  on {}: loss {:.6}  accuracy {:.2}% ({}/{})  [{}, BN {}, {:.2} s]",
                report.model,
                report.data,
                eval.loss,
                eval.accuracy,
                eval.correct,
                eval.samples,
                report.precision,
                report.bn_mode,
                report.seconds
            );
        }
        reports.push(report);
    }
    if args.json {
        // one object for one split (the common case), an array for several
        return if reports.len() == 1 {
            super::print_json(&reports[0])
        } else {
            super::print_json(&reports)
        };
    }
    Ok(())
}
