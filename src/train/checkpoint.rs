//! Files of a training run: per-epoch model checkpoints (`model_{epoch}.safetensors`, as
//! loss-landscape names its `model_{epoch}.t7`), the resume state, and the history.
//!
//! ```text
//! DIR/model_0.safetensors        the initialization
//! DIR/model_{e}.safetensors      every K epochs and the last one (weights + running stats)
//! DIR/state.safetensors          θ, momentum buffer; metadata: epoch, recipe, arch, history
//! M.history.csv / M.history.h5   one row per epoch (epoch, lr, batch/train/test loss and
//!                                accuracy, seconds with and without the evaluations)
//! ```
//! Every file is written to a temporary sibling and renamed into place, so a run killed at
//! any moment leaves the previous complete state, from which `--resume` continues.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ndarray::Array1;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use super::{EpochRecord, TrainConfig, TrainError, TrainState};
use crate::engine::ParamVec;
use crate::model::{Arch, Model};

/// Name of the resume state inside a checkpoint folder.
pub const STATE_FILE: &str = "state.safetensors";

/// Path of the checkpoint of `epoch` in `dir`.
pub fn checkpoint_path(dir: &Path, epoch: usize) -> PathBuf {
    dir.join(format!("model_{epoch}.safetensors"))
}

/// The checkpoints in `dir`, sorted by epoch.
pub fn list_checkpoints(dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if let Some(e) = name
            .strip_prefix("model_")
            .and_then(|r| r.strip_suffix(".safetensors"))
            .and_then(|e| e.parse::<usize>().ok())
        {
            out.push((e, path));
        }
    }
    out.sort();
    Ok(out)
}

fn f32_bytes(a: &Array1<f32>) -> Vec<u8> {
    a.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes the resume state atomically.
pub fn save_state(path: &Path, arch: &Arch, cfg: &TrainConfig, state: &TrainState) -> Result<()> {
    let mut bufs = vec![("theta".to_string(), f32_bytes(&state.theta.data))];
    if let Some(m) = &state.momentum {
        bufs.push(("momentum".to_string(), f32_bytes(m)));
    }
    let n = state.theta.data.len();
    let views: Vec<(String, TensorView<'_>)> = bufs
        .iter()
        .map(|(k, b)| {
            (
                k.clone(),
                TensorView::new(Dtype::F32, vec![n], b).expect("sizes agree"),
            )
        })
        .collect();
    let meta: HashMap<String, String> = [
        ("epoch".to_string(), state.epoch.to_string()),
        ("recipe".to_string(), serde_json::to_string(cfg)?),
        ("losscape_arch".to_string(), serde_json::to_string(arch)?),
        ("history".to_string(), history_to_csv(&state.history)),
    ]
    .into_iter()
    .collect();
    let bytes = safetensors::serialize(views, Some(meta))?;
    crate::util::write_atomic(path, |f| f.write_all(&bytes))
        .with_context(|| format!("writing {}", path.display()))
}

fn read_f32(st: &SafeTensors, name: &str, n: usize, path: &Path) -> Result<Option<Array1<f32>>> {
    let Ok(t) = st.tensor(name) else {
        return Ok(None);
    };
    if t.dtype() != Dtype::F32 || t.shape() != [n] {
        bail!(
            "{}: tensor '{name}' is not f32 of length {n}",
            path.display()
        );
    }
    Ok(Some(
        t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
    ))
}

/// Reads a resume state written by [`save_state`] for this architecture and recipe; any
/// difference is an error naming it (a resumed run must continue the same run).
pub fn load_state(
    path: &Path,
    arch: &Arch,
    cfg: &TrainConfig,
    template: &ParamVec<f32>,
) -> Result<TrainState> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)?;
    let meta = header.metadata().clone().unwrap_or_default();
    let get = |k: &str| {
        meta.get(k)
            .with_context(|| format!("{}: metadata lacks '{k}'", path.display()))
    };
    let saved_arch: Arch = serde_json::from_str(get("losscape_arch")?)?;
    if &saved_arch != arch {
        return Err(TrainError::OtherArch {
            path: path.to_path_buf(),
            saved: saved_arch.to_string(),
            arch: arch.to_string(),
        }
        .into());
    }
    let saved: TrainConfig = serde_json::from_str(get("recipe")?)?;
    if &saved != cfg {
        return Err(TrainError::OtherRecipe {
            path: path.to_path_buf(),
            saved: serde_json::to_string(&saved)?,
            asked: serde_json::to_string(cfg)?,
        }
        .into());
    }
    let n = template.data.len();
    let theta = read_f32(&st, "theta", n, path)?
        .with_context(|| format!("{}: no 'theta'", path.display()))?;
    Ok(TrainState {
        theta: ParamVec::from_data(template.layout.clone(), theta),
        momentum: read_f32(&st, "momentum", n, path)?,
        epoch: get("epoch")?.parse()?,
        history: history_from_csv(get("history")?, path)?,
    })
}

/// Writes a model checkpoint (atomically) with the epoch and its numbers in the metadata.
pub fn save_model(
    path: &Path,
    arch: &Arch,
    theta: &ParamVec<f32>,
    record: Option<&EpochRecord>,
) -> Result<()> {
    save_model_with(path, arch, theta, record, &[])
}

/// [`save_model`] with extra metadata entries.
pub fn save_model_with(
    path: &Path,
    arch: &Arch,
    theta: &ParamVec<f32>,
    record: Option<&EpochRecord>,
    extra: &[(&str, String)],
) -> Result<()> {
    let mut model = Model {
        arch: arch.clone(),
        graph: arch.build(),
        theta: theta.clone(),
        path: None,
        sha256: None,
        metadata: Default::default(),
    };
    if let Some(r) = record {
        model.metadata.insert("epoch".into(), r.epoch.to_string());
        model
            .metadata
            .insert("train_loss".into(), r.train_loss.to_string());
        model
            .metadata
            .insert("train_acc".into(), r.train_acc.to_string());
        model
            .metadata
            .insert("test_loss".into(), r.test_loss.to_string());
        model
            .metadata
            .insert("test_acc".into(), r.test_acc.to_string());
    } else {
        model.metadata.insert("epoch".into(), "0".into());
    }
    for (k, v) in extra {
        model.metadata.insert(k.to_string(), v.clone());
    }
    model
        .save(path)
        .with_context(|| format!("writing {}", path.display()))
}

/// Column names of the history files, in order.
pub const HISTORY_COLUMNS: [&str; 10] = [
    "epoch",
    "lr",
    "batch_loss",
    "batch_acc",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "seconds",
    "step_seconds",
];

fn row(r: &EpochRecord) -> [f64; 10] {
    [
        r.epoch as f64,
        r.lr,
        r.batch_loss,
        r.batch_acc,
        r.train_loss,
        r.train_acc,
        r.test_loss,
        r.test_acc,
        r.seconds,
        r.step_seconds,
    ]
}

/// The history as CSV text: a header and one row per epoch (`f64` printed so that it
/// reads back to the same bits; NaN where there is no test set).
pub fn history_to_csv(history: &[EpochRecord]) -> String {
    let mut s = HISTORY_COLUMNS.join(",");
    s.push('\n');
    for r in history {
        let v: Vec<String> = row(r).iter().map(|x| x.to_string()).collect();
        s.push_str(&v.join(","));
        s.push('\n');
    }
    s
}

/// Writes the history as CSV, atomically.
pub fn write_history_csv(path: &Path, history: &[EpochRecord]) -> Result<()> {
    let s = history_to_csv(history);
    crate::util::write_atomic(path, |f| f.write_all(s.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes the history as HDF5: one f64 dataset per column, atomically.
pub fn write_history_h5(path: &Path, history: &[EpochRecord]) -> Result<()> {
    let io = |e: std::io::Error| anyhow::anyhow!(e);
    crate::util::replace_atomically(path, io, |tmp| {
        crate::io::hdf5_init();
        let f = hdf5::File::create(tmp)?;
        for (k, name) in HISTORY_COLUMNS.iter().enumerate() {
            let col: Vec<f64> = history.iter().map(|r| row(r)[k]).collect();
            f.new_dataset_builder()
                .with_data(col.as_slice())
                .create(*name)?;
        }
        f.flush()?;
        Ok(())
    })
    .with_context(|| format!("writing {}", path.display()))
}

/// Reads a history CSV written by [`write_history_csv`].
pub fn read_history_csv(path: &Path) -> Result<Vec<EpochRecord>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    history_from_csv(&text, path)
}

fn history_from_csv(text: &str, path: &Path) -> Result<Vec<EpochRecord>> {
    let mut out = Vec::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let mut v: Vec<f64> = line
            .split(',')
            .map(|x| x.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("{}: bad row '{line}'", path.display()))?;
        if v.len() == HISTORY_COLUMNS.len() - 1 {
            v.push(f64::NAN); // written before step_seconds existed
        }
        if v.len() != HISTORY_COLUMNS.len() {
            bail!("{}: row '{line}' has {} columns", path.display(), v.len());
        }
        out.push(EpochRecord {
            epoch: v[0] as usize,
            lr: v[1],
            batch_loss: v[2],
            batch_acc: v[3],
            train_loss: v[4],
            train_acc: v[5],
            test_loss: v[6],
            test_acc: v[7],
            seconds: v[8],
            step_seconds: v[9],
        });
    }
    Ok(out)
}
