//! `losscape run analyses/NAME.toml`: a whole analysis into `outputs/NAME/`; under
//! `mpirun`/`srun` every step is distributed over the ranks and rank 0 writes.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::analysis::{self, report};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Analysis spec (TOML), e.g. analyses/residual-vs-plain.toml.
    #[arg(value_name = "SPEC.toml")]
    pub spec: PathBuf,
    /// Folder that receives `<name>/`.
    #[arg(long, default_value = "outputs")]
    pub outputs: PathBuf,
    /// No progress output.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &RunArgs) -> Result<()> {
    let a = analysis::load(&args.spec)?;
    let outcome = analysis::run_analysis(&a, &args.outputs, args.quiet)
        .map_err(|e| anyhow::anyhow!(a.render(&format!("{:#}", anyhow::Error::from(e)))))?;
    if !crate::jobs::is_root() {
        // MPI: rank 0 draws, writes the report and prints; the other ranks are done
        return Ok(());
    }
    let images = crate::analysis::runner::plots(&outcome).context("drawing the plots")?;
    report::write_report(&outcome, &images)?;
    if args.json {
        return super::print_json(&outcome);
    }
    let (header, rows) = report::table_rows(&outcome.results);
    crate::outln!("{}", header.join(" | "))?;
    for r in rows {
        crate::outln!("{}", r.join(" | "))?;
    }
    for f in report::findings(&outcome.results) {
        crate::outln!("- {f}")?;
    }
    crate::outln!(
        "\nreport: {}",
        outcome.out_dir.join("report.html").display()
    )?;
    Ok(())
}
