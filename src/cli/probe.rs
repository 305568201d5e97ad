//! `losscape probe --model M --data D`: per-layer gradient norms and per-block activation
//! statistics, for the trained weights and a freshly He-initialized copy (the copy with
//! batch-norm batch statistics, as in its first training step).

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use super::{DataArgs, ModelArgs};
use crate::engine::Mode;
use crate::objective::Objective;
use crate::probe::{probe, ProbeReport};

#[derive(Debug, Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Seed of the fresh He-initialized copy.
    #[arg(long, default_value_t = 0)]
    pub init_seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<std::path::PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
pub struct ProbeOutput {
    pub model: String,
    pub data: String,
    pub residual: bool,
    pub trained: ProbeReport,
    pub init: ProbeReport,
    pub init_seed: u64,
}

/// Probes a model (trained and re-initialized) on the first requested split.
pub fn compute(args: &ProbeArgs) -> Result<ProbeOutput> {
    let model = args.model.load()?;
    let ds = args.data.load()?.remove(0);
    let cfg = args.data.objective_config();
    let fresh = model.fresh(args.init_seed, true);
    let obj = Objective::new(&model.graph, ds.x.view(), &ds.y, cfg).with_context(|| {
        format!(
            "data '{}' does not fit model {}",
            args.data.data,
            args.model.model.display()
        )
    })?;
    let fresh_cfg = crate::objective::ObjectiveConfig {
        mode: Mode::Train,
        ..cfg
    };
    let fresh_obj = Objective::new(&fresh.graph, ds.x.view(), &ds.y, fresh_cfg)?;
    let (trained, init) = super::with_threads(args.threads, || {
        (
            probe(
                &obj,
                ds.x.view(),
                model.theta.data.view(),
                cfg.batch_size,
                cfg.mode,
            ),
            // at initialization the running statistics are 0 and 1, so eval-mode BN would be
            // the identity; the network in training sees batch statistics, so probe those
            probe(
                &fresh_obj,
                ds.x.view(),
                fresh.theta.data.view(),
                cfg.batch_size,
                Mode::Train,
            ),
        )
    })?;
    Ok(ProbeOutput {
        model: args.model.model.display().to_string(),
        data: ds.name.clone(),
        residual: model.arch.is_residual(),
        trained,
        init,
        init_seed: args.init_seed,
    })
}

pub fn run(args: &ProbeArgs) -> Result<()> {
    let out = compute(args)?;
    if let Some(p) = &args.out {
        let json = serde_json::to_vec_pretty(&out)?;
        crate::util::write_atomic(p, |f| std::io::Write::write_all(f, &json))
            .with_context(|| format!("writing --out {}", p.display()))?;
    }
    if args.json {
        return super::print_json(&out);
    }
    println!(
        "{} on {} ({})",
        out.model,
        out.data,
        if out.residual { "residual" } else { "plain" }
    );
    for (label, r) in [("trained", &out.trained), ("fresh He init", &out.init)] {
        println!(
            "\n{label}: loss {:.4}, accuracy {:.2}%, first-to-last gradient ratio {:.3e}, last/first activation std {:.3}",
            r.loss, r.accuracy, r.first_to_last_gradient_ratio, r.last_to_first_activation_std
        );
        println!(
            "  {:<32} {:>12} {:>12} {:>10}",
            "weight", "‖∂L/∂W‖", "‖W‖", "ratio"
        );
        for g in &r.gradients {
            println!(
                "  {:<32} {:>12.4e} {:>12.4} {:>10.3e}",
                g.name, g.grad_norm, g.weight_norm, g.ratio
            );
        }
        println!("  {:<32} {:>12} {:>12}", "block output", "mean", "std");
        for a in &r.activations {
            println!("  {:<32} {:>12.4} {:>12.4}", a.name, a.mean, a.std);
        }
    }
    Ok(())
}
