//! `losscape probe --model M --data D`: per-layer and per-block gradient norms and
//! per-block activation statistics (transformers: also the rank collapse of the tokens,
//! see [`crate::probe`]), for the trained weights and a freshly He-initialized copy (the
//! copy with batch-norm batch statistics, as in its first training step).

use anyhow::Result;
use clap::Args;

use super::{DataArgs, ModelArgs};
use crate::jobs::eval::{run_probe, ProbeConfig};

#[derive(Debug, Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Seed of the fresh He-initialized copy.
    #[arg(long, default_value_t = 0, value_parser = super::numbers::count::<u64>)]
    pub init_seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long, value_parser = crate::cli::args::parse_threads)]
    pub threads: Option<usize>,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<std::path::PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bar on stderr (it shows only on a terminal; warnings still print).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub fn run(args: &ProbeArgs) -> Result<()> {
    let out = run_probe(
        &ProbeConfig {
            model: args.model.source(),
            data: args.data.config(),
            init_seed: args.init_seed,
            threads: args.threads,
            out: args.out.clone(),
        },
        &super::reporter(args.quiet),
    )?;
    if args.json {
        return super::print_json(&out);
    }
    crate::outln!(
        "{} on {} ({})",
        out.model,
        out.data,
        if out.residual { "residual" } else { "plain" }
    )?;
    for (label, r) in [("trained", &out.trained), ("fresh He init", &out.init)] {
        crate::outln!(
            "\n{label}: loss {:.4}, accuracy {:.2}%, first-to-last gradient ratio {:.3e}, last/first activation std {:.3}",
            r.loss, r.accuracy, r.first_to_last_gradient_ratio, r.last_to_first_activation_std
        )?;
        crate::outln!(
            "  {:<32} {:>12} {:>12} {:>10}",
            "weight",
            "‖∂L/∂W‖",
            "‖W‖",
            "ratio"
        )?;
        for g in &r.gradients {
            crate::outln!(
                "  {:<32} {:>12.4e} {:>12.4} {:>10.3e}",
                g.name,
                g.grad_norm,
                g.weight_norm,
                g.ratio
            )?;
        }
        if !r.blocks.is_empty() {
            crate::outln!("  {:<32} {:>12} {:>12}", "block", "‖∂L/∂θ‖", "‖θ‖")?;
            for b in &r.blocks {
                crate::outln!(
                    "  {:<32} {:>12.4e} {:>12.4}",
                    b.name,
                    b.grad_norm,
                    b.weight_norm
                )?;
            }
        }
        let tokens = r.activations.iter().any(|a| a.rank_residual.is_some());
        match tokens {
            true => crate::outln!(
                "  {:<32} {:>12} {:>12} {:>12} {:>12}",
                "block output",
                "mean",
                "std",
                "rank res.",
                "token cos"
            )?,
            false => crate::outln!("  {:<32} {:>12} {:>12}", "block output", "mean", "std")?,
        }
        for a in &r.activations {
            match (a.rank_residual, a.token_cosine) {
                (Some(res), Some(cos)) => crate::outln!(
                    "  {:<32} {:>12.4} {:>12.4} {:>12.4} {:>12.4}",
                    a.name,
                    a.mean,
                    a.std,
                    res,
                    cos
                )?,
                _ => crate::outln!("  {:<32} {:>12.4} {:>12.4}", a.name, a.mean, a.std)?,
            }
        }
    }
    Ok(())
}
