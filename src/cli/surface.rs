//! `losscape surface`: see [`crate::landscape::job`] for what it computes.

use anyhow::Result;

use crate::landscape::job::run_surface_job;
pub use crate::landscape::job::SurfaceJob as SurfaceArgs;

pub fn run(args: &SurfaceArgs) -> Result<()> {
    let summary = run_surface_job(args)?;
    if args.json {
        return super::print_json(&summary);
    }
    println!(
        "{}: {} points ({} computed, {} resumed) in {:.1} s, {:.2} points/s{}",
        summary.out,
        summary.points,
        summary.computed,
        summary.resumed,
        summary.seconds,
        summary.points_per_second,
        summary
            .xy_cosine
            .map(|c| format!(", x–y cosine {c:.4}"))
            .unwrap_or_default()
    );
    Ok(())
}
