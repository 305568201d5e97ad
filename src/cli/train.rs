//! `losscape train --arch resnet-cifar --depth 20 --data digits --out M.safetensors`: SGD as
//! PyTorch defines it, with checkpoints for trajectories and resumption (see [`crate::train`]).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::data::{self, DataOptions, Dataset, Split};
use crate::model::Arch;
use crate::train::session::RunOptions;
use crate::train::{Optimizer, Schedule, TrainConfig};

#[derive(Debug, Args, Clone)]
pub struct TrainArgs {
    /// Architecture: `resnet-cifar`, `mlp`, or NAME:key=value,... (as `--arch` elsewhere).
    /// Input channels, size and class count default to the data's.
    #[arg(long, value_name = "SPEC")]
    pub arch: String,
    /// Depth (resnet-cifar: 6n+2; mlp: hidden blocks).
    #[arg(long, value_parser = super::numbers::count::<usize>)]
    pub depth: Option<usize>,
    /// Shortcuts of resnet-cifar: `projection` (residual) or `none` (plain).
    #[arg(long)]
    pub shortcut: Option<String>,
    /// Width (resnet-cifar: channels of the first stage).
    #[arg(long, value_parser = super::numbers::count::<usize>)]
    pub width: Option<usize>,
    /// Training data: `digits`, `mnist1d` or a path (its train split; the test split is
    /// evaluated after every epoch when the data has one).
    #[arg(long, short = 'd')]
    pub data: String,
    /// Train on a deterministic subset of N samples.
    #[arg(long, value_name = "N", value_parser = super::numbers::count::<usize>)]
    pub samples: Option<usize>,
    #[arg(long, default_value_t = 10, value_parser = super::numbers::count::<usize>)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128, value_parser = super::numbers::positive::<u64>)]
    pub batch_size: u64,
    #[arg(long, default_value_t = 0.1, value_parser = super::numbers::non_negative)]
    pub lr: f64,
    /// `sgd` (torch.optim.SGD) or `adamw` (torch.optim.AdamW, decoupled weight decay).
    #[arg(long, default_value = "sgd", value_parser = ["sgd", "adamw"])]
    pub optimizer: String,
    /// SGD momentum [default: 0.9; SGD only].
    #[arg(long, value_parser = super::numbers::non_negative)]
    pub momentum: Option<f64>,
    /// Nesterov momentum (SGD only).
    #[arg(long)]
    pub nesterov: bool,
    /// AdamW's β₁,β₂ [default: 0.9,0.999].
    #[arg(long, value_name = "B1,B2", value_parser = parse_betas)]
    pub betas: Option<(f64, f64)>,
    /// AdamW's ε [default: 1e-8].
    #[arg(long, value_parser = super::numbers::positive_real)]
    pub eps: Option<f64>,
    /// Weight decay: SGD's L2 term, AdamW's decoupled decay (as PyTorch).
    #[arg(long, default_value_t = 5e-4, value_parser = super::numbers::non_negative)]
    pub weight_decay: f64,
    /// Learning-rate schedule per epoch: `cosine`, `constant` or `step:E1,E2` (×0.1 at each).
    #[arg(long, default_value = "cosine")]
    pub schedule: Schedule,
    /// Seed of the initialization, the shuffling and the augmentation.
    #[arg(long, default_value_t = 0, value_parser = super::numbers::count::<u64>)]
    pub seed: u64,
    /// He (normal) initialization instead of PyTorch's default (uniform).
    #[arg(long)]
    pub he_init: bool,
    /// Random crop after zero padding by P pixels (images; 1 suits 8×8 digits, 4 CIFAR).
    #[arg(long, default_value_t = 0, value_name = "P", value_parser = super::numbers::count::<usize>)]
    pub crop_pad: usize,
    /// Random horizontal flips (images).
    #[arg(long)]
    pub flip: bool,
    /// The trained model; the history goes beside it (M.history.csv, M.history.h5).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Folder for checkpoints (model_{epoch}.safetensors) and the resume state.
    #[arg(long, value_name = "DIR")]
    pub checkpoints: Option<PathBuf>,
    /// Write a model checkpoint every K epochs (and after the last).
    #[arg(long, default_value_t = 1, value_name = "K", value_parser = super::numbers::count::<usize>)]
    pub every: usize,
    /// Continue the run whose state is in --checkpoints (starts afresh when there is none).
    #[arg(long)]
    pub resume: bool,
    /// Threads for the per-epoch evaluations (a step runs on one core).
    #[arg(long, value_parser = crate::cli::args::parse_threads)]
    pub threads: Option<usize>,
    /// No progress bar and no per-epoch lines on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Print the history as JSON at the end.
    #[arg(long)]
    pub json: bool,
}

impl TrainArgs {
    /// The architecture: `--arch` with the data's input shape and classes filled in, then
    /// `--depth`, `--shortcut`, `--width`.
    pub fn resolve_arch(&self, ds: &Dataset) -> Result<Arch> {
        let mut spec = self.arch.clone();
        let mut extra = Vec::new();
        if let Some(d) = self.depth {
            extra.push(format!("depth={d}"));
        }
        if let Some(s) = &self.shortcut {
            extra.push(format!("shortcut={s}"));
        }
        if let Some(w) = self.width {
            extra.push(format!("width={w}"));
        }
        if !extra.is_empty() {
            spec.push(if spec.contains(':') { ',' } else { ':' });
            spec.push_str(&extra.join(","));
        }
        crate::train::resolve_arch(&spec, ds)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("--arch {}", self.arch))
    }

    /// The recipe; `--betas`/`--eps` with SGD, or `--momentum`/`--nesterov` with AdamW,
    /// are errors (flags that would do nothing).
    pub fn config(&self) -> Result<TrainConfig> {
        let optimizer = Optimizer::from_parts(&self.optimizer, self.betas, self.eps)
            .map_err(anyhow::Error::msg)
            .context("--optimizer")?;
        if optimizer != Optimizer::Sgd && (self.momentum.is_some() || self.nesterov) {
            anyhow::bail!(
                "--momentum and --nesterov are SGD's; AdamW's moments are set by --betas"
            );
        }
        Ok(TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size as usize,
            lr: self.lr,
            momentum: self.momentum.unwrap_or(optimizer.default_momentum()),
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
            optimizer,
            schedule: self.schedule.clone(),
            seed: self.seed,
            crop_pad: self.crop_pad,
            flip: self.flip,
        })
    }
}

/// `B1,B2`.
fn parse_betas(s: &str) -> Result<(f64, f64), String> {
    let bad = || format!("'{s}': give two numbers B1,B2, e.g. 0.9,0.999");
    let (a, b) = s.split_once(',').ok_or_else(bad)?;
    Ok((
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    ))
}

/// Loads the training split and, when the data has one, the test split.
pub fn load_data(spec: &str, samples: Option<usize>) -> Result<(Dataset, Option<Dataset>)> {
    let train = data::load(
        spec,
        &DataOptions {
            split: Split::Train,
            samples,
            normalize: None,
        },
    )
    .with_context(|| format!("loading data '{spec}' (train split)"))?;
    let test = data::load(
        spec,
        &DataOptions {
            split: Split::Test,
            samples: None,
            normalize: None,
        },
    )
    .ok()
    .filter(|t| t.sample_shape() == train.sample_shape() && !t.is_empty());
    Ok((train, test))
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let (train, test) = load_data(&args.data, args.samples)?;
    let arch = args.resolve_arch(&train)?;
    let cfg = args.config()?;
    let opts = RunOptions {
        out: args.out.clone(),
        checkpoints: args.checkpoints.clone(),
        every: args.every,
        resume: args.resume,
        he_init: args.he_init,
        threads: args.threads,
        quiet: args.quiet,
        label: None,
    };
    let history = crate::train::session::train_model(&opts, &arch, &cfg, &train, test.as_ref())?;
    if args.json {
        super::print_json(&history)?;
    }
    Ok(())
}
