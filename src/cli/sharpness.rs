//! `losscape sharpness --model M --data D`: ε-sharpness (Keskar et al. 2017) by projected
//! sign-gradient ascent in the box |y_i| ≤ ε(|θ_i|+1), and effective β-smoothness along the
//! gradient (Santurkar et al. 2018) over a list of step sizes. Algorithms, formulas and
//! defaults are documented in [`crate::sharpness`].
//!
//! Options are validated before the first gradient. stdout gets text, or JSON with
//! `--json`; stderr gets a progress bar (only on a terminal) and one line per stage.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ndarray::{Array1, ArrayView1};
use serde::Serialize;

use super::{DataArgs, ModelArgs, Precision};
use crate::objective::Objective;
use crate::sharpness::{
    beta_smoothness, check_etas, eps_sharpness, BetaReport, EpsParams, EpsReport, LossGradient,
    ObjectiveOracle, PerturbedParams, DEFAULT_EPS, DEFAULT_ETAS, DEFAULT_ITERS, DEFAULT_STEP,
};

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
    #[arg(long, default_value_t = DEFAULT_ITERS)]
    pub iters: usize,
    /// Ascent step as a fraction of the box half-width.
    #[arg(long, default_value_t = DEFAULT_STEP)]
    pub step: f64,
    /// Extra ascents from uniform random points of the box (seeded by --seed).
    #[arg(long, default_value_t = 0)]
    pub random_starts: usize,
    /// Seed of the random starts; written to the output.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Step sizes η of the β-smoothness scan along −∇L, comma-separated
    /// [default: 1e-3 … 1, half-decade steps].
    #[arg(long, value_delimiter = ',', value_name = "ETA,...")]
    pub etas: Option<Vec<f64>>,
    /// Which tensors are perturbed.
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
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print JSON on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Validated options.
#[derive(Debug, Clone)]
pub struct SharpnessPlan {
    pub eps: Option<EpsParams>,
    pub etas: Option<Vec<f64>>,
    pub params: PerturbedParams,
}

impl SharpnessPlan {
    pub fn from_args(a: &SharpnessArgs) -> Result<Self> {
        let eps = EpsParams {
            eps: a.eps,
            iters: a.iters,
            step: a.step,
            random_starts: a.random_starts,
            seed: a.seed,
        };
        eps.check()?;
        let etas = a.etas.clone().unwrap_or_else(|| DEFAULT_ETAS.to_vec());
        check_etas(&etas)?;
        if a.data.split.len() > 1 {
            bail!(
                "--split: sharpness takes one split, got {}",
                a.data.split.len()
            );
        }
        Ok(Self {
            eps: (!a.no_eps).then_some(eps),
            etas: (!a.no_beta).then_some(etas),
            params: match a.params {
                ParamChoice::Weights => PerturbedParams::Weights,
                ParamChoice::Trainable => PerturbedParams::Trainable,
            },
        })
    }
}

/// Counts gradient/loss calls on a progress bar.
struct Ticking<'a> {
    inner: &'a dyn LossGradient,
    bar: &'a ProgressBar,
}

impl LossGradient for Ticking<'_> {
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn loss(&self, theta: ArrayView1<f64>) -> f64 {
        let r = self.inner.loss(theta);
        self.bar.inc(1);
        r
    }
    fn loss_grad(&self, theta: ArrayView1<f64>) -> (f64, Array1<f64>) {
        let r = self.inner.loss_grad(theta);
        self.bar.inc(1);
        r
    }
}

fn stage<R>(
    label: &str,
    total: u64,
    f: &dyn LossGradient,
    run: impl FnOnce(&dyn LossGradient) -> Result<R>,
) -> Result<(R, f64)> {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} evaluations  {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    let t0 = Instant::now();
    let r = run(&Ticking {
        inner: f,
        bar: &bar,
    });
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    if r.is_ok() {
        eprintln!(
            "sharpness: {label}: {} evaluations, {secs:.1} s",
            bar.position()
        );
    }
    r.map(|r| (r, secs))
}

#[derive(Serialize)]
struct Output {
    model: String,
    data: String,
    samples: usize,
    params: PerturbedParams,
    perturbed: usize,
    precision: &'static str,
    bn_mode: String,
    eps_sharpness: Option<EpsReport>,
    eps_seconds: Option<f64>,
    beta_smoothness: Option<BetaReport>,
    beta_seconds: Option<f64>,
    losscape_version: &'static str,
}

pub fn run(args: &SharpnessArgs) -> Result<()> {
    let plan = SharpnessPlan::from_args(args)?;
    let model = args.model.load()?;
    let ds = args.data.load()?.remove(0);
    let cfg = args.data.objective_config();
    let obj = Objective::new(&model.graph, ds.x.view(), &ds.y, cfg).with_context(|| {
        format!(
            "data '{}' does not fit model {}",
            args.data.data,
            args.model.model.display()
        )
    })?;
    let mask = plan.params.mask(&model.graph.layout);
    let perturbed = mask.iter().filter(|&&m| m != 0.0).count();
    if perturbed == 0 {
        bail!(
            "--params {:?}: the model has no such tensor (see `losscape info {}`)",
            args.params,
            args.model.model.display()
        );
    }
    let theta = model.theta.cast::<f64>().data;
    let oracle = ObjectiveOracle {
        objective: &obj,
        double_precision: args.precision == Precision::F64,
    };
    let (eps, beta) = super::with_threads(args.threads, || -> Result<_> {
        let eps = match &plan.eps {
            None => None,
            Some(p) => {
                let total = ((p.random_starts + 1) * (p.iters + 1)) as u64;
                Some(stage("ε-sharpness", total, &oracle, |f| {
                    Ok(eps_sharpness(f, theta.view(), mask.view(), p)?)
                })?)
            }
        };
        let beta = match &plan.etas {
            None => None,
            Some(etas) => Some(stage(
                "β-smoothness",
                1 + etas.len() as u64,
                &oracle,
                |f| Ok(beta_smoothness(f, theta.view(), mask.view(), etas)?),
            )?),
        };
        Ok((eps, beta))
    })??;
    let out = Output {
        model: args.model.model.display().to_string(),
        data: ds.name.clone(),
        samples: ds.len(),
        params: plan.params,
        perturbed,
        precision: if oracle.double_precision {
            "f64"
        } else {
            "f32"
        },
        bn_mode: format!("{:?}", cfg.mode).to_lowercase(),
        eps_seconds: eps.as_ref().map(|e| e.1),
        eps_sharpness: eps.map(|e| e.0),
        beta_seconds: beta.as_ref().map(|b| b.1),
        beta_smoothness: beta.map(|b| b.0),
        losscape_version: env!("CARGO_PKG_VERSION"),
    };
    if args.json {
        return super::print_json(&out);
    }
    print_text(&out);
    Ok(())
}

fn print_text(o: &Output) {
    println!(
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
    );
    if let (Some(e), Some(s)) = (&o.eps_sharpness, o.eps_seconds) {
        let p = &e.params;
        println!(
            "ε-sharpness (Keskar et al. 2017), ε = {:e}: φ = {:.6e} %   [{} sign-ascent steps of {} box, {} random start(s), {:.1} s]",
            p.eps, e.sharpness, p.iters, p.step, p.random_starts, s
        );
        println!(
            "  L(θ) = {:.8e}   max L(θ+y) = {:.8e}   (start {}, step {}; {:.1}% of coordinates on the box face)",
            e.loss,
            e.max_loss,
            e.best_start,
            e.best_iteration,
            100.0 * e.at_bound_fraction
        );
        let trace: Vec<String> = e.traces[0].iter().map(|l| format!("{l:.6e}")).collect();
        println!("  ascent from y = 0: {}", trace.join(" "));
    }
    if let (Some(b), Some(s)) = (&o.beta_smoothness, o.beta_seconds) {
        println!(
            "β-smoothness along −∇L (Santurkar et al. 2018): max β = {:.6e} at η = {:.3e}   [‖∇L‖ = {:.6e}, {:.1} s]",
            b.beta_max, b.beta_max_eta, b.grad_norm, s
        );
        println!(
            "  {:>10}  {:>14}  {:>18}  {:>14}",
            "η", "L(θ−η∇L)", "‖∇L(θ−η∇L)−∇L‖", "β(η)"
        );
        for r in &b.rows {
            println!(
                "  {:>10.3e}  {:>14.6e}  {:>18.6e}  {:>14.6e}",
                r.eta, r.loss, r.grad_change, r.beta
            );
        }
        println!(
            "  loss range over η: {:.6e} ({:.6e} … {:.6e}); max gradient change {:.6e}",
            b.loss_range, b.loss_min, b.loss_max, b.grad_change_max
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(extra: &[&str]) -> Result<SharpnessArgs, clap::Error> {
        let mut a = vec![
            "losscape",
            "sharpness",
            "-m",
            "m.safetensors",
            "-d",
            "digits",
        ];
        a.extend(extra);
        Cli::try_parse_from(a).map(|c| match c.command {
            Command::Sharpness(s) => s,
            _ => unreachable!(),
        })
    }

    fn plan_err(extra: &[&str]) -> String {
        format!(
            "{:#}",
            SharpnessPlan::from_args(&parse(extra).unwrap()).unwrap_err()
        )
    }

    #[test]
    fn options_are_validated_by_flag() {
        assert!(plan_err(&["--eps", "0"]).contains("--eps"));
        assert!(plan_err(&["--eps=-1e-3"]).contains("--eps"));
        assert!(plan_err(&["--eps", "NaN"]).contains("--eps"));
        assert!(plan_err(&["--iters", "0"]).contains("--iters"));
        assert!(plan_err(&["--step", "3"]).contains("--step"));
        assert!(plan_err(&["--etas", "0.1,nan"]).contains("--etas"));
        assert!(plan_err(&["--etas=0.1,-1"]).contains("--etas"));
        assert!(plan_err(&["--split", "train,test"]).contains("--split"));
        assert!(parse(&["--etas", "a"]).is_err());
        assert!(parse(&["--no-eps", "--no-beta"]).is_err());
        let p = SharpnessPlan::from_args(&parse(&["--etas", "0.5,1"]).unwrap()).unwrap();
        assert_eq!(p.etas.unwrap(), vec![0.5, 1.0]);
        let p = SharpnessPlan::from_args(&parse(&["--no-beta"]).unwrap()).unwrap();
        assert!(p.etas.is_none() && p.eps.is_some());
    }
}
