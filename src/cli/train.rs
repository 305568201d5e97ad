//! `losscape train --arch resnet-cifar --depth 20 --data digits --out M.safetensors`: SGD as
//! PyTorch defines it, with checkpoints for trajectories and resumption (see [`crate::train`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::data::{self, DataOptions, Dataset, Split};
use crate::model::{Arch, Model};
use crate::train::checkpoint::{self, STATE_FILE};
use crate::train::{EpochRecord, Schedule, TrainConfig, TrainState, Trainer};

#[derive(Debug, Args, Clone)]
pub struct TrainArgs {
    /// Architecture: `resnet-cifar`, `mlp`, or NAME:key=value,... (as `--arch` elsewhere).
    /// Input channels, size and class count default to the data's.
    #[arg(long, value_name = "SPEC")]
    pub arch: String,
    /// Depth (resnet-cifar: 6n+2; mlp: hidden blocks).
    #[arg(long)]
    pub depth: Option<usize>,
    /// Shortcuts of resnet-cifar: `projection` (residual) or `none` (plain).
    #[arg(long)]
    pub shortcut: Option<String>,
    /// Width (resnet-cifar: channels of the first stage).
    #[arg(long)]
    pub width: Option<usize>,
    /// Training data: `digits`, `mnist1d` or a path (its train split; the test split is
    /// evaluated after every epoch when the data has one).
    #[arg(long, short = 'd')]
    pub data: String,
    /// Train on a deterministic subset of N samples.
    #[arg(long, value_name = "N")]
    pub samples: Option<usize>,
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: u64,
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    #[arg(long)]
    pub nesterov: bool,
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f64,
    /// Learning-rate schedule per epoch: `cosine`, `constant` or `step:E1,E2` (×0.1 at each).
    #[arg(long, default_value = "cosine")]
    pub schedule: Schedule,
    /// Seed of the initialization, the shuffling and the augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// He (normal) initialization instead of PyTorch's default (uniform).
    #[arg(long)]
    pub he_init: bool,
    /// Random crop after zero padding by P pixels (images; 1 suits 8×8 digits, 4 CIFAR).
    #[arg(long, default_value_t = 0, value_name = "P")]
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
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub every: usize,
    /// Continue the run whose state is in --checkpoints (starts afresh when there is none).
    #[arg(long)]
    pub resume: bool,
    /// Threads for the per-epoch evaluations (a step runs on one core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Print the history as JSON at the end.
    #[arg(long)]
    pub json: bool,
}

/// The history files beside a trained model: `M.history.csv` and `M.history.h5`.
pub fn history_paths(out: &Path) -> (PathBuf, PathBuf) {
    (
        out.with_extension("history.csv"),
        out.with_extension("history.h5"),
    )
}

impl TrainArgs {
    /// The architecture: `--arch` with the data's input shape and classes filled in, then
    /// `--depth`, `--shortcut`, `--width`.
    pub fn resolve_arch(&self, ds: &Dataset) -> Result<Arch> {
        let (kind, rest) = self.arch.split_once(':').unwrap_or((&self.arch, ""));
        let kind = kind.trim();
        let mut kv: Vec<String> = Vec::new();
        let shape = ds.sample_shape();
        match kind {
            "resnet-cifar" => {
                if shape.len() != 3 || shape[1] != shape[2] {
                    bail!(
                        "resnet-cifar takes square images [C, H, W]; {} has samples {shape:?}",
                        ds.name
                    );
                }
                kv.push(format!("in_channels={}", shape[0]));
                kv.push(format!("input_size={}", shape[1]));
            }
            "mlp" => kv.push(format!("in_features={}", shape.iter().product::<usize>())),
            _ => {}
        }
        kv.push(format!("num_classes={}", ds.num_classes));
        kv.extend(
            rest.split(',')
                .filter(|s| !s.trim().is_empty())
                .map(str::to_string),
        );
        if let Some(d) = self.depth {
            kv.push(format!("depth={d}"));
        }
        if let Some(s) = &self.shortcut {
            kv.push(format!("shortcut={s}"));
        }
        if let Some(w) = self.width {
            kv.push(format!("width={w}"));
        }
        let spec = format!("{kind}:{}", kv.join(","));
        spec.parse::<Arch>()
            .with_context(|| format!("--arch {} (as {spec})", self.arch))
    }

    pub fn config(&self) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size as usize,
            lr: self.lr,
            momentum: self.momentum,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
            schedule: self.schedule.clone(),
            seed: self.seed,
            crop_pad: self.crop_pad,
            flip: self.flip,
        }
    }
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
    let cfg = args.config();
    let history = train_model(args, &arch, &cfg, &train, test.as_ref())?;
    if args.json {
        super::print_json(&history)?;
    }
    Ok(())
}

/// Trains (or resumes) one model as `args` says; returns the report's history.
pub fn train_model(
    args: &TrainArgs,
    arch: &Arch,
    cfg: &TrainConfig,
    train: &Dataset,
    test: Option<&Dataset>,
) -> Result<Vec<EpochRecord>> {
    if args.every == 0 {
        bail!("--every must be at least 1");
    }
    if args.resume && args.checkpoints.is_none() {
        bail!("--resume continues from the state in --checkpoints DIR; give that folder");
    }
    let model = Model::init(arch.clone(), cfg.seed, args.he_init);
    let trainer = Trainer::new(&model.graph, cfg.clone(), train, test)
        .map_err(anyhow::Error::msg)
        .context("setting up training")?;
    let mut state = TrainState::new(model.theta.clone());
    if let Some(dir) = &args.checkpoints {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--checkpoints {}: cannot create it", dir.display()))?;
        let sp = dir.join(STATE_FILE);
        if sp.exists() {
            if !args.resume {
                bail!(
                    "--checkpoints {} already holds a run ({STATE_FILE}); \
                     HINT: pass --resume to continue it, or choose an empty folder",
                    dir.display()
                );
            }
            state = checkpoint::load_state(&sp, arch, cfg, &model.theta)?;
        }
        if state.epoch == 0 {
            checkpoint::save_model(
                &checkpoint::checkpoint_path(dir, 0),
                arch,
                &state.theta,
                None,
            )?;
        }
    }
    let resumed_at = state.epoch;
    let quiet = args.quiet;
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} epoch {prefix} {bar:30} {pos}/{len} steps  {msg}")
            .expect("valid template"),
    );
    let (csv, h5) = history_paths(&args.out);
    while state.epoch < cfg.epochs {
        bar.set_prefix(format!("{}/{}", state.epoch + 1, cfg.epochs));
        bar.set_length(trainer.steps_per_epoch() as u64);
        bar.set_position(0);
        let rec = super::with_threads(args.threads, || {
            trainer.run_epoch(&mut state, &mut |done, _, loss| {
                bar.set_position(done as u64);
                bar.set_message(format!("loss {loss:.4}"));
            })
        })?;
        if !rec.batch_loss.is_finite() {
            bar.abandon();
            bail!(
                "training diverged in epoch {} (loss {}); HINT: lower --lr",
                rec.epoch,
                rec.batch_loss
            );
        }
        let line = format!(
            "epoch {:>3}  lr {:.4}  loss {:.4} (train {:.4}, {:.1}%)  test {:.4} ({:.1}%)  {:.1} s",
            rec.epoch,
            rec.lr,
            rec.batch_loss,
            rec.train_loss,
            rec.train_acc,
            rec.test_loss,
            rec.test_acc,
            rec.seconds
        );
        if quiet {
        } else if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
        if let Some(dir) = &args.checkpoints {
            if state.epoch % args.every == 0 || state.epoch == cfg.epochs {
                checkpoint::save_model(
                    &checkpoint::checkpoint_path(dir, state.epoch),
                    arch,
                    &state.theta,
                    Some(&rec),
                )?;
            }
            checkpoint::save_state(&dir.join(STATE_FILE), arch, cfg, &state)?;
        }
        checkpoint::write_history_csv(&csv, &state.history)?;
    }
    bar.finish_and_clear();
    checkpoint::write_history_csv(&csv, &state.history)?;
    checkpoint::write_history_h5(&h5, &state.history)?;
    checkpoint::save_model(&args.out, arch, &state.theta, state.history.last())?;
    let run: Vec<&EpochRecord> = state.history[resumed_at..].iter().collect();
    let spe = run.iter().map(|r| r.seconds).sum::<f64>() / run.len().max(1) as f64;
    if !args.json && !quiet {
        eprintln!(
            "trained {arch} for {} epochs ({} resumed) -> {} ({spe:.2} s/epoch)",
            cfg.epochs,
            resumed_at,
            args.out.display()
        );
    }
    Ok(state.history)
}
