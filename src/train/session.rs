//! One training run with its files: checkpoints and resume state, history beside the model,
//! a progress bar (hidden when stderr is not a terminal) and one line per epoch.

use std::path::{Path, PathBuf};

use super::checkpoint::{self, STATE_FILE};
use super::{EpochRecord, TrainConfig, TrainError, TrainState, Trainer};
use crate::data::Dataset;
use crate::io::output::{check_output_folder, prepare_output, OutputLock};
use crate::model::{Arch, Model};
use crate::progress::Progress;

/// Where a run writes and how it reports.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The trained model; the history goes beside it ([`history_paths`]).
    pub out: PathBuf,
    /// Folder of checkpoints and the resume state.
    pub checkpoints: Option<PathBuf>,
    /// Model checkpoint every K epochs (and after the last).
    pub every: usize,
    /// Continue from the state in `checkpoints` when there is one.
    pub resume: bool,
    /// He initialization instead of PyTorch's default.
    pub he_init: bool,
    /// Threads of the per-epoch evaluations.
    pub threads: Option<usize>,
    /// No progress bar and no per-epoch lines.
    pub quiet: bool,
    /// Prefix of per-epoch lines (analyses train several models at once).
    pub label: Option<String>,
}

/// The history files beside a trained model: `M.history.csv` and `M.history.h5`.
pub fn history_paths(out: &Path) -> (PathBuf, PathBuf) {
    (
        out.with_extension("history.csv"),
        out.with_extension("history.h5"),
    )
}

/// Metadata key of the recipe in a trained model (JSON of [`TrainConfig`]).
pub const RECIPE_METADATA_KEY: &str = "losscape_train_recipe";

/// Trains (or resumes) one model as `args` says; returns the history of every epoch.
pub fn train_model(
    args: &RunOptions,
    arch: &Arch,
    cfg: &TrainConfig,
    train: &Dataset,
    test: Option<&Dataset>,
) -> Result<Vec<EpochRecord>, TrainError> {
    if args.every == 0 {
        return Err(TrainError::Every);
    }
    if args.resume && args.checkpoints.is_none() {
        return Err(TrainError::ResumeWithoutCheckpoints);
    }
    // every output is checked and locked before any work
    crate::util::check_threads(args.threads)?;
    let (csv, h5) = history_paths(&args.out);
    let _locks = [
        prepare_output(&args.out)?,
        prepare_output(&csv)?,
        prepare_output(&h5)?,
    ];
    let _dir_lock = match &args.checkpoints {
        Some(dir) => {
            if std::fs::symlink_metadata(dir).is_err() {
                std::fs::create_dir_all(dir).map_err(|cause| TrainError::CreateCheckpoints {
                    dir: dir.clone(),
                    cause,
                })?;
            }
            check_output_folder(dir)?;
            Some(OutputLock::acquire_folder(dir)?)
        }
        None => None,
    };
    let model = Model::init(arch.clone(), cfg.seed, args.he_init);
    let trainer = Trainer::new(&model.graph, cfg.clone(), train, test)
        .map_err(|e| TrainError::Setup(Box::new(e)))?;
    let mut state = TrainState::new(model.theta.clone());
    if let Some(dir) = &args.checkpoints {
        let sp = dir.join(STATE_FILE);
        if sp.exists() {
            if !args.resume {
                return Err(TrainError::RunExists {
                    dir: dir.clone(),
                    state: STATE_FILE,
                });
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
    // several runs at once (an analysis) print lines, not bars
    let lines_only = args.label.is_some();
    let steps = trainer.steps_per_epoch() as u64;
    let epoch_label = |done: usize| format!("epoch {}/{}", done + 1, cfg.epochs);
    // `min`: a resumed run that had already finished must not flash "epoch E+1/E"
    let first = epoch_label(state.epoch.min(cfg.epochs - 1));
    let progress = Progress::bar(quiet || lines_only, steps, "steps", first);
    while state.epoch < cfg.epochs {
        let epoch = epoch_label(state.epoch);
        progress.restart(steps, 0);
        progress.set_label(epoch.clone());
        let rec = crate::util::with_threads(args.threads, || {
            trainer.run_epoch(&mut state, &mut |_, _, loss| {
                progress.inc(1);
                progress.set_label(format!("{epoch}  loss {loss:.4}"));
            })
        })?;
        if !rec.batch_loss.is_finite() {
            return Err(TrainError::Diverged {
                epoch: rec.epoch,
                loss: rec.batch_loss,
            });
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
        let line = match &args.label {
            Some(l) => format!("{l}: {line}"),
            None => line,
        };
        if !quiet {
            if lines_only {
                eprintln!("{line}");
            } else {
                progress.println(line);
            }
        }
        if let Some(dir) = &args.checkpoints {
            if state.epoch.is_multiple_of(args.every) || state.epoch == cfg.epochs {
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
        checkpoint::write_history_h5(&h5, &state.history)?;
    }
    progress.finish();
    checkpoint::write_history_csv(&csv, &state.history)?;
    checkpoint::write_history_h5(&h5, &state.history)?;
    checkpoint::save_model_with(
        &args.out,
        arch,
        &state.theta,
        state.history.last(),
        &[(RECIPE_METADATA_KEY, serde_json::to_string(cfg)?)],
    )?;
    let run: Vec<&EpochRecord> = state.history[resumed_at..].iter().collect();
    let spe = run.iter().map(|r| r.seconds).sum::<f64>() / run.len().max(1) as f64;
    if !quiet {
        eprintln!(
            "trained {arch} for {} epochs ({} resumed) -> {} ({spe:.2} s/epoch)",
            cfg.epochs,
            resumed_at,
            args.out.display()
        );
    }
    Ok(state.history)
}
