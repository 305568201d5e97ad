//! Files of a training run: per-epoch model checkpoints (`model_{epoch}.safetensors`, as
//! loss-landscape names its `model_{epoch}.t7`), the resume state, and the history.
//!
//! ```text
//! DIR/model_0.safetensors        the initialization
//! DIR/model_{e}.safetensors      every K epochs and the last one (weights + running stats)
//! DIR/state.safetensors          θ, momentum buffer (AdamW: m, and v as `second_moment`);
//!                                 metadata: epoch, steps, recipe, arch, history
//! M.history.csv / M.history.h5   one row per epoch (epoch, lr, batch/train/test loss and
//!                                accuracy, seconds with and without the evaluations)
//! ```
//! Every file is written to a temporary sibling and renamed into place, so a run killed at
//! any moment leaves the previous complete state, from which `--resume` continues.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

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
pub fn list_checkpoints(dir: &Path) -> Result<Vec<(usize, PathBuf)>, TrainError> {
    let read = |source| TrainError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let path = entry.map_err(read)?.path();
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
pub fn save_state(
    path: &Path,
    arch: &Arch,
    cfg: &TrainConfig,
    state: &TrainState,
) -> Result<(), TrainError> {
    let mut bufs = vec![("theta".to_string(), f32_bytes(&state.theta.data))];
    if let Some(m) = &state.momentum {
        bufs.push(("momentum".to_string(), f32_bytes(m)));
    }
    if let Some(v) = &state.second_moment {
        bufs.push(("second_moment".to_string(), f32_bytes(v)));
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
    let meta: BTreeMap<String, String> = [
        ("epoch".to_string(), state.epoch.to_string()),
        ("steps".to_string(), state.steps.to_string()),
        ("recipe".to_string(), serde_json::to_string(cfg)?),
        ("losscape_arch".to_string(), serde_json::to_string(arch)?),
        ("history".to_string(), history_to_csv(&state.history)),
    ]
    .into_iter()
    .collect();
    let bytes = crate::model::safetensors_io::serialize_canonical(views, meta)
        .map_err(|e| TrainError::Safetensors(Box::new(e)))?;
    crate::io::output::write_atomic(path, |f| f.write_all(&bytes)).map_err(|source| {
        TrainError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

fn read_f32(
    st: &SafeTensors,
    name: &'static str,
    n: usize,
    path: &Path,
) -> Result<Option<Array1<f32>>, TrainError> {
    let Ok(t) = st.tensor(name) else {
        return Ok(None);
    };
    if t.dtype() != Dtype::F32 || t.shape() != [n] {
        return Err(TrainError::BadTensor {
            path: path.to_path_buf(),
            name,
            len: n,
        });
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
) -> Result<TrainState, TrainError> {
    let bytes = std::fs::read(path).map_err(|source| TrainError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| TrainError::NotSafetensors {
        path: path.to_path_buf(),
        source: Box::new(e),
    })?;
    let (_, header) =
        SafeTensors::read_metadata(&bytes).map_err(|e| TrainError::Safetensors(Box::new(e)))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let get = |key: &'static str| {
        meta.get(key).ok_or_else(|| TrainError::MissingMetadata {
            path: path.to_path_buf(),
            key,
        })
    };
    let saved_arch: Arch = serde_json::from_str(get("losscape_arch")?)?;
    if &saved_arch != arch {
        return Err(TrainError::OtherArch {
            path: path.to_path_buf(),
            saved: saved_arch.to_string(),
            arch: arch.to_string(),
        });
    }
    let saved: TrainConfig = serde_json::from_str(get("recipe")?)?;
    if &saved != cfg {
        return Err(TrainError::OtherRecipe {
            path: path.to_path_buf(),
            saved: serde_json::to_string(&saved)?,
            asked: serde_json::to_string(cfg)?,
        });
    }
    let n = template.data.len();
    let theta = read_f32(&st, "theta", n, path)?.ok_or_else(|| TrainError::MissingTensor {
        path: path.to_path_buf(),
        name: "theta",
    })?;
    Ok(TrainState {
        theta: ParamVec::from_data(template.layout.clone(), theta),
        momentum: read_f32(&st, "momentum", n, path)?,
        second_moment: read_f32(&st, "second_moment", n, path)?,
        // states written before AdamW lack `steps`; SGD does not read it
        steps: match meta.get("steps") {
            Some(s) => s.parse().map_err(TrainError::Epoch)?,
            None => 0,
        },
        epoch: get("epoch")?.parse().map_err(TrainError::Epoch)?,
        history: history_from_csv(get("history")?, path)?,
    })
}

/// Writes a model checkpoint (atomically) with the epoch and its numbers in the metadata.
pub fn save_model(
    path: &Path,
    arch: &Arch,
    theta: &ParamVec<f32>,
    record: Option<&EpochRecord>,
) -> Result<(), TrainError> {
    save_model_with(path, arch, theta, record, &[])
}

/// [`save_model`] with extra metadata entries.
pub fn save_model_with(
    path: &Path,
    arch: &Arch,
    theta: &ParamVec<f32>,
    record: Option<&EpochRecord>,
    extra: &[(&str, String)],
) -> Result<(), TrainError> {
    let mut model = Model {
        arch: arch.clone(),
        graph: arch.build(),
        theta: theta.clone(),
        path: None,
        sha256: None,
        metadata: Default::default(),
        inference: None,
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
    model.save(path).map_err(|e| TrainError::WriteModel {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
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
pub fn write_history_csv(path: &Path, history: &[EpochRecord]) -> Result<(), TrainError> {
    let s = history_to_csv(history);
    crate::io::output::write_atomic(path, |f| f.write_all(s.as_bytes())).map_err(|source| {
        TrainError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Writes the history as HDF5: one f64 dataset per column, atomically.
pub fn write_history_h5(path: &Path, history: &[EpochRecord]) -> Result<(), TrainError> {
    let io = |source| TrainError::Write {
        path: path.to_path_buf(),
        source,
    };
    let h5 = |e| TrainError::WriteHdf5 {
        path: path.to_path_buf(),
        source: Box::new(e),
    };
    crate::io::output::replace_atomically(path, false, io, |tmp| {
        crate::io::hdf5_init();
        let f = hdf5::File::create(tmp).map_err(h5)?;
        for (k, name) in HISTORY_COLUMNS.iter().enumerate() {
            let col: Vec<f64> = history.iter().map(|r| row(r)[k]).collect();
            f.new_dataset_builder()
                .with_data(col.as_slice())
                .create(*name)
                .map_err(h5)?;
        }
        f.flush().map_err(h5)
    })
}

/// Reads a history CSV written by [`write_history_csv`].
pub fn read_history_csv(path: &Path) -> Result<Vec<EpochRecord>, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|source| TrainError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    history_from_csv(&text, path)
}

fn history_from_csv(text: &str, path: &Path) -> Result<Vec<EpochRecord>, TrainError> {
    let mut out = Vec::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let mut v: Vec<f64> = line
            .split(',')
            .map(|x| x.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|source| TrainError::BadRow {
                path: path.to_path_buf(),
                line: line.to_string(),
                source,
            })?;
        if v.len() == HISTORY_COLUMNS.len() - 1 {
            v.push(f64::NAN); // written before step_seconds existed
        }
        if v.len() != HISTORY_COLUMNS.len() {
            return Err(TrainError::RowColumns {
                path: path.to_path_buf(),
                line: line.to_string(),
                columns: v.len(),
            });
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The error and its sources joined by `: `, as the CLI prints them.
    fn chain(e: &TrainError) -> String {
        let mut s = e.to_string();
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            s.push_str(&format!(": {c}"));
            cause = c.source();
        }
        s
    }

    #[test]
    fn errors_name_the_file_and_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none");
        let e = list_checkpoints(&missing).unwrap_err();
        assert!(matches!(&e, TrainError::Read { path, .. } if *path == missing));
        assert!(
            chain(&e).starts_with(&format!("reading {}: ", missing.display())),
            "{}",
            chain(&e)
        );

        let p = dir.path().join("h.csv");
        let rows = |text: &str| history_from_csv(text, &p).unwrap_err();
        let e = rows("epoch\n1,x\n");
        assert!(matches!(e, TrainError::BadRow { .. }));
        assert_eq!(
            chain(&e),
            format!("{}: bad row '1,x': invalid float literal", p.display())
        );
        let e = rows("epoch\n1,2\n");
        assert_eq!(
            chain(&e),
            format!("{}: row '1,2' has 2 columns", p.display())
        );

        let state = dir.path().join(STATE_FILE);
        std::fs::write(&state, b"garbage").unwrap();
        let arch: Arch = "mlp:in_features=2,num_classes=2,depth=1,width=2"
            .parse()
            .unwrap();
        let template = ParamVec::zeros(arch.build().layout);
        let e = load_state(&state, &arch, &TrainConfig::default(), &template).unwrap_err();
        assert!(matches!(e, TrainError::NotSafetensors { .. }));
        assert!(
            chain(&e).starts_with(&format!("{}: not a safetensors file: ", state.display())),
            "{}",
            chain(&e)
        );
    }
}
