//! Direction files (HDF5) in loss-landscape's layout, with names added.
//!
//! ```text
//! /xdirection/0 … /xdirection/P−1   float32, each tensor's original shape, layout order
//! /ydirection/0 … /ydirection/P−1   (2-D surfaces)
//! dataset attributes: name (state_dict path), role            ← ours; loss-landscape has none
//! root attributes:    seed, norm, perturb_biasbn, dir_type, kind, xy_cosine,
//!                     model_sha256, losscape_version
//! ```
//! P counts the tensors the direction type moves: `parameters()` for `weights`, every
//! `state_dict` entry for `states`. loss-landscape's own `states` files also hold one 0-d
//! `num_batches_tracked` entry per batch norm; reading skips those. Mapping is positional
//! (that is all loss-landscape's files offer), with every shape checked and, where our
//! `name` attributes exist, every name.

// Errors are cold and carry the full context of their message (path, position, names).
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};

use ndarray::ArrayD;

use super::surface::{read_attrs, write_attr, Attr};
use crate::engine::ParamVec;
use crate::landscape::directions::{
    included, DirType, DirectionConfig, DirectionKind, DirectionNorm, Directions,
};

/// Errors reading or writing direction files.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum DirectionFileError {
    /// Occurs when HDF5 cannot create, open, read or write the file.
    #[error("{path}: {why}")]
    Hdf5 { path: PathBuf, why: String },
    /// Occurs when the file has no `/xdirection` group.
    #[error("{path} is not a direction file: it has no /xdirection group")]
    NotDirections { path: PathBuf },
    /// Occurs when the file holds another number of tensors than the model.
    #[error("{path}: /{group} holds {got} tensors but the model has {expected} for dir type '{dir_type}'; the file was made for another model (or another --dir-type)")]
    Count {
        path: PathBuf,
        group: String,
        expected: usize,
        got: usize,
        dir_type: DirType,
    },
    /// Occurs when a tensor's shape differs from the model's.
    #[error("{path}: /{group}/{position} has shape {got:?} but the model's tensor at that position, '{name}', has shape {expected:?}; the file was made for another model")]
    Shape {
        path: PathBuf,
        group: String,
        position: usize,
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// Occurs when a tensor's recorded name differs from the model's.
    #[error("{path}: /{group}/{position} is named '{got}' but the model's tensor at that position is '{expected}'")]
    Name {
        path: PathBuf,
        group: String,
        position: usize,
        expected: String,
        got: String,
    },
}

fn h5(path: &Path) -> impl Fn(hdf5::Error) -> DirectionFileError + '_ {
    move |e| DirectionFileError::Hdf5 {
        path: path.to_path_buf(),
        why: e.to_string(),
    }
}

/// Writes `dirs` atomically (temporary sibling, then rename).
pub fn write_directions(
    path: &Path,
    dirs: &Directions,
    model_sha256: Option<&str>,
) -> Result<(), DirectionFileError> {
    let e = h5(path);
    let io = |x: std::io::Error| DirectionFileError::Hdf5 {
        path: path.into(),
        why: x.to_string(),
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> Result<(), DirectionFileError> {
        let f = hdf5::File::create(&tmp).map_err(&e)?;
        let mut groups = vec![("xdirection", &dirs.x)];
        if let Some(y) = &dirs.y {
            groups.push(("ydirection", y));
        }
        for (gname, v) in groups {
            let g = f.create_group(gname).map_err(&e)?;
            let mut pos = 0;
            for (i, t) in v.layout.tensors().iter().enumerate() {
                if !included(t, dirs.config.dir_type) {
                    continue;
                }
                let data = v.tensor(i).to_owned();
                let ds = g
                    .new_dataset_builder()
                    .with_data(&data)
                    .create(pos.to_string().as_str())
                    .map_err(&e)?;
                write_attr(&ds, "name", &t.name.as_str().into()).map_err(&e)?;
                write_attr(
                    &ds,
                    "role",
                    &serde_json::to_value(t.role)
                        .unwrap()
                        .as_str()
                        .unwrap_or("")
                        .into(),
                )
                .map_err(&e)?;
                pos += 1;
            }
        }
        let c = dirs.config;
        let mut attrs: Vec<(&str, Attr)> = vec![
            ("seed", (c.seed as i64).into()),
            ("norm", c.norm.to_string().into()),
            ("perturb_biasbn", c.perturb_biasbn.into()),
            ("dir_type", c.dir_type.to_string().into()),
            ("kind", format!("{:?}", dirs.kind).to_lowercase().into()),
            ("losscape_version", env!("CARGO_PKG_VERSION").into()),
        ];
        if let Some(cos) = dirs.cosine() {
            attrs.push(("xy_cosine", cos.into()));
        }
        if let Some(s) = model_sha256 {
            attrs.push(("model_sha256", s.into()));
        }
        for (k, v) in &attrs {
            write_attr(&f, k, v).map_err(&e)?;
        }
        f.flush().map_err(&e)?;
        drop(f);
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads a direction file for the model whose parameters are `theta`. The file's own
/// `dir_type` attribute wins over `dir_type` (which is used for loss-landscape's files).
pub fn read_directions(
    path: &Path,
    theta: &ParamVec<f32>,
    dir_type: DirType,
) -> Result<Directions, DirectionFileError> {
    let e = h5(path);
    let f = hdf5::File::open(path).map_err(|x| DirectionFileError::Hdf5 {
        path: path.into(),
        why: format!("cannot open as HDF5 ({x}); is the file complete?"),
    })?;
    let attrs = read_attrs(&f);
    let attr_str = |k: &str| attrs.get(k).and_then(Attr::as_str).map(str::to_owned);
    let dir_type = attr_str("dir_type")
        .and_then(|s| DirType::from_str_loose(&s))
        .unwrap_or(dir_type);
    let config = DirectionConfig {
        norm: attr_str("norm")
            .and_then(|s| <DirectionNorm as clap::ValueEnum>::from_str(&s, true).ok())
            .unwrap_or_default(),
        perturb_biasbn: matches!(attrs.get("perturb_biasbn"), Some(Attr::Int(1))),
        dir_type,
        seed: match attrs.get("seed") {
            Some(Attr::Int(s)) => *s as u64,
            _ => 0,
        },
    };
    if f.group("xdirection").is_err() {
        return Err(DirectionFileError::NotDirections { path: path.into() });
    }
    let read_group = |gname: &str| -> Result<ParamVec<f32>, DirectionFileError> {
        let g = f.group(gname).map_err(&e)?;
        let slots: Vec<usize> = theta
            .layout
            .tensors()
            .iter()
            .enumerate()
            .filter(|(_, t)| included(t, dir_type))
            .map(|(i, _)| i)
            .collect();
        let count = g.member_names().map_err(&e)?.len();
        // read positional datasets, dropping loss-landscape's 0-d num_batches_tracked entries
        let mut tensors: Vec<(usize, ArrayD<f32>, Option<String>)> = Vec::with_capacity(count);
        for pos in 0..count {
            let ds = g.dataset(&pos.to_string()).map_err(&e)?;
            let a: ArrayD<f32> = ds.read_dyn().map_err(&e)?;
            let name = read_attrs(&ds)
                .get("name")
                .and_then(Attr::as_str)
                .map(str::to_owned);
            tensors.push((pos, a, name));
        }
        if tensors.len() != slots.len() {
            tensors.retain(|(_, a, _)| a.ndim() > 0);
        }
        if tensors.len() != slots.len() {
            return Err(DirectionFileError::Count {
                path: path.into(),
                group: gname.into(),
                expected: slots.len(),
                got: count,
                dir_type,
            });
        }
        let mut v = ParamVec::<f32>::zeros(theta.layout.clone());
        for (&slot, (pos, a, name)) in slots.iter().zip(tensors) {
            let spec = theta.layout.tensor(slot);
            if a.shape() != spec.shape.as_slice() {
                return Err(DirectionFileError::Shape {
                    path: path.into(),
                    group: gname.into(),
                    position: pos,
                    name: spec.name.clone(),
                    expected: spec.shape.clone(),
                    got: a.shape().to_vec(),
                });
            }
            if let Some(n) = name.filter(|n| n != &spec.name) {
                return Err(DirectionFileError::Name {
                    path: path.into(),
                    group: gname.into(),
                    position: pos,
                    expected: spec.name.clone(),
                    got: n,
                });
            }
            v.tensor_mut(slot).assign(&a);
        }
        Ok(v)
    };
    let x = read_group("xdirection")?;
    let y = if f.group("ydirection").is_ok() {
        Some(read_group("ydirection")?)
    } else {
        None
    };
    let pca: Vec<(String, Vec<f64>)> = [
        "explained_variance_ratio_",
        "singular_values_",
        "explained_variance_",
    ]
    .iter()
    .filter_map(|n| {
        f.dataset(n)
            .ok()
            .and_then(|d| d.read_raw::<f64>().ok())
            .map(|v| (n.to_string(), v))
    })
    .collect();
    let kind = if pca.is_empty() {
        DirectionKind::File(path.display().to_string())
    } else {
        DirectionKind::Pca
    };
    Ok(Directions {
        x,
        y,
        config,
        kind,
        pca: (!pca.is_empty()).then_some(pca),
    })
}

impl DirType {
    fn from_str_loose(s: &str) -> Option<Self> {
        <DirType as clap::ValueEnum>::from_str(s, true).ok()
    }
}
