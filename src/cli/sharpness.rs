//! `losscape sharpness --model M --data D`: ε-sharpness (Keskar et al. 2017) and
//! effective β-smoothness along the gradient (Santurkar et al. 2018); see
//! [`crate::jobs::sharpness`]. Options are validated before the first gradient. stdout
//! gets text, or JSON with `--json`; stderr gets a progress bar (only on a terminal) and
//! one line per stage.

use anyhow::Result;
use clap::{Args, ValueEnum};

use super::{DataArgs, ModelArgs};
use crate::jobs::sharpness::{run_sharpness, SharpnessConfig, SharpnessOutput, SharpnessPlan};
use crate::jobs::{JobResult, Precision};
use crate::sharpness::{EpsParams, PerturbedParams, DEFAULT_EPS, DEFAULT_ITERS, DEFAULT_STEP};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ParamChoice {
    /// Conv and linear weights only (biases and BN γ/β stay fixed, as with --ignore biasbn).
    Weights,
    /// Every trainable tensor: weights, biases, BN γ/β (running statistics never move).
    Trainable,
}

#[derive(Debug, Args)]
pub struct SharpnessArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// ε-sharpness box size: |y_i| ≤ ε(|θ_i|+1) (Keskar et al. use 1e-3 and 5e-4).
    #[arg(long, default_value_t = DEFAULT_EPS)]
    pub eps: f64,
    /// Sign-gradient ascent steps per start (one gradient each).
    #[arg(long, default_value_t = DEFAULT_ITERS, value_parser = super::numbers::count::<usize>)]
    pub iters: usize,
    /// Ascent step as a fraction of the box half-width.
    #[arg(long, default_value_t = DEFAULT_STEP)]
    pub step: f64,
    /// Extra ascents from uniform random points of the box (seeded by --seed).
    #[arg(long, default_value_t = 0, value_parser = super::numbers::count::<usize>)]
    pub random_starts: usize,
    /// Seed of the random starts; written to the output.
    #[arg(long, default_value_t = 0, value_parser = super::numbers::count::<u64>)]
    pub seed: u64,
    /// Step sizes η of the β-smoothness scan along −∇L, comma-separated
    /// [default: 1e-3 … 1, half-decade steps].
    #[arg(long, value_delimiter = ',', value_name = "ETA,...")]
    pub etas: Option<Vec<f64>>,
    /// Which tensors are perturbed. The default is the set of `surface --hessian`
    /// (loss-landscape's); `hessian` defaults to every trainable tensor (`--params trainable`
    /// here).
    #[arg(long, value_enum, default_value_t = ParamChoice::Weights)]
    pub params: ParamChoice,
    /// Skip the ε-sharpness ascent.
    #[arg(long)]
    pub no_eps: bool,
    /// Skip the β-smoothness scan.
    #[arg(long, conflicts_with = "no_eps")]
    pub no_beta: bool,
    /// Compute precision of losses and gradients (the ascent state is f64 either way).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// Worker threads (default: all cores). Results are identical for any count.
    #[arg(long, value_parser = crate::cli::args::parse_threads)]
    pub threads: Option<usize>,
    /// No progress output on stderr (warnings still print).
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Print JSON on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

impl SharpnessArgs {
    /// The validated job.
    pub fn config(&self) -> JobResult<SharpnessConfig> {
        let eps = EpsParams {
            eps: self.eps,
            iters: self.iters,
            step: self.step,
            random_starts: self.random_starts,
            seed: self.seed,
        };
        let params = match self.params {
            ParamChoice::Weights => PerturbedParams::Weights,
            ParamChoice::Trainable => PerturbedParams::Trainable,
        };
        let c = SharpnessConfig {
            model: self.model.source(),
            data: self.data.config(),
            plan: SharpnessPlan::new(
                eps,
                self.etas.clone(),
                self.no_eps,
                self.no_beta,
                params,
                self.precision,
            )?,
            threads: self.threads,
        };
        c.check()?;
        Ok(c)
    }
}

pub fn run(args: &SharpnessArgs) -> Result<()> {
    let out = run_sharpness(&args.config()?, &super::reporter(args.quiet))?;
    if args.json {
        return super::print_json(&out);
    }
    print_text(&out)?;
    Ok(())
}

fn print_text(o: &SharpnessOutput) -> Result<(), super::StdoutError> {
    crate::outln!(
        "{} on {} ({} samples, {} perturbed scalars ({}), {}, BN {})",
        o.model,
        o.data,
        o.samples,
        o.perturbed,
        serde_json::to_value(o.params)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        o.precision,
        o.bn_mode
    )?;
    if let (Some(e), Some(s)) = (&o.eps_sharpness, o.eps_seconds) {
        let p = &e.params;
        crate::outln!(
            "ε-sharpness (Keskar et al. 2017), ε = {:e}: φ = {:.6e} %   [{} sign-ascent steps of {} box, {} random start(s), {:.1} s]",
            p.eps, e.sharpness, p.iters, p.step, p.random_starts, s
        )?;
        crate::outln!(
            "  L(θ) = {:.8e}   max L(θ+y) = {:.8e}   (start {}, step {}; {:.1}% of coordinates on the box face)",
            e.loss,
            e.max_loss,
            e.best_start,
            e.best_iteration,
            100.0 * e.at_bound_fraction
        )?;
        let trace: Vec<String> = e.traces[0].iter().map(|l| format!("{l:.6e}")).collect();
        crate::outln!("  ascent from y = 0: {}", trace.join(" "))?;
    }
    if let (Some(b), Some(s)) = (&o.beta_smoothness, o.beta_seconds) {
        crate::outln!(
            "β-smoothness along −∇L (Santurkar et al. 2018): max β = {:.6e} at η = {:.3e}   [‖∇L‖ = {:.6e}, {:.1} s]",
            b.beta_max, b.beta_max_eta, b.grad_norm, s
        )?;
        crate::outln!(
            "  {:>10}  {:>14}  {:>18}  {:>14}",
            "η",
            "L(θ−η∇L)",
            "‖∇L(θ−η∇L)−∇L‖",
            "β(η)"
        )?;
        for r in &b.rows {
            crate::outln!(
                "  {:>10.3e}  {:>14.6e}  {:>18.6e}  {:>14.6e}",
                r.eta,
                r.loss,
                r.grad_change,
                r.beta
            )?;
        }
        crate::outln!(
            "  loss range over η: {:.6e} ({:.6e} … {:.6e}); max gradient change {:.6e}",
            b.loss_range,
            b.loss_min,
            b.loss_max,
            b.grad_change_max
        )?;
    }
    Ok(())
}
