//! Direction files (HDF5) in loss-landscape's layout (Li et al. 2018, arXiv:1712.09913,
//! `h5_util.write_list`), with names added.
//!
//! ```text
//! /xdirection/0 … /xdirection/P−1   float32, each tensor's original shape, layout order
//! /ydirection/0 … /ydirection/P−1   (2-D surfaces)
//! dataset attributes: name (state_dict path), role            ← ours; loss-landscape has none
//! root attributes:    seed, norm, perturb_biasbn, dir_type, kind, xy_cosine (2-D),
//!                     model_sha256 (when known), losscape_version; for eigenvector
//!                     directions (kind `eigen`) eigen_operator, eigenvalue_x, eigenvalue_y
//! /explained_variance_ratio_, /singular_values_, /explained_variance_
//!                     f64 (2), in PCA files (loss-landscape's and `losscape trajectory`'s)
//! ```
//! P counts the tensors the direction type moves: `parameters()` for `weights`, every
//! `state_dict` entry for `states`. loss-landscape's own `states` files also hold one 0-d
//! `num_batches_tracked` entry per batch norm, right after its `running_var`; reading
//! skips exactly those. Mapping is positional (that is all loss-landscape's files offer),
//! with every shape checked and, where our `name` attributes exist, every name.
//! loss-landscape's scripts read our files unchanged: they ignore attributes.
//!
//! Files are written whole to a temporary sibling and renamed into place, so a reader or a
//! crash never sees a half-written file.

// Errors are cold and carry the full context of their message (path, position, names).
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};

use ndarray::ArrayD;

use super::surface::{read_attrs, write_attr, Attr};
use crate::engine::{ParamVec, Role};
use crate::landscape::directions::{
    included, DirType, DirectionConfig, DirectionKind, DirectionNorm, Directions,
};

/// The datasets loss-landscape's PCA direction files add at the root (length 2, f64).
pub const PCA_DATASETS: [&str; 3] = [
    "explained_variance_ratio_",
    "singular_values_",
    "explained_variance_",
];

/// Errors reading or writing direction files.
#[non_exhaustive]
#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum DirectionFileError {
    /// Occurs when libhdf5 crashes, hangs or over-allocates on the file (see [`super::contain`]).
    #[error(transparent)]
    Contained(#[from] super::contain::ContainError),
    /// Occurs when the direction file does not exist.
    #[error("{path}: no such direction file")]
    NotFound { path: PathBuf },
    /// Occurs when the file exists but HDF5 cannot open it (not HDF5, or truncated).
    #[error("{path} cannot be opened as HDF5 ({why}); is it a complete direction file?")]
    NotHdf5 { path: PathBuf, why: String },
    /// Occurs when HDF5 cannot create, read or write the file.
    #[error("{path}: {why}")]
    Hdf5 { path: PathBuf, why: String },
    /// Occurs when the file has no `/xdirection` group.
    #[error("{path} is not a direction file: it has no /xdirection group")]
    NotDirections { path: PathBuf },
    /// Occurs when a group's datasets are not exactly `0`, `1`, … `P−1`.
    #[error("{path}: /{group} should hold datasets named 0, 1, …, {last} but has '{member}'")]
    Member {
        path: PathBuf,
        group: String,
        last: usize,
        member: String,
    },
    /// Occurs when the file holds another number of tensors than the model.
    #[error("{path}: /{group} holds {got} tensors but the model has {expected} for dir type '{dir_type}'{}; the file was made for another model (or another `dir_type`)",
        .with_counters.map(|n| format!(" ({n} with loss-landscape's num_batches_tracked entries)")).unwrap_or_default())]
    Count {
        path: PathBuf,
        group: String,
        expected: usize,
        /// What a loss-landscape `states` file for this model would hold.
        with_counters: Option<usize>,
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
    /// Occurs when a loss-landscape `states` file lacks the 0-d `num_batches_tracked`
    /// entry expected after a batch norm's `running_var`.
    #[error("{path}: /{group}/{position} has shape {got:?} where loss-landscape's 0-d num_batches_tracked of '{after}' was expected; the file was made for another model")]
    Counter {
        path: PathBuf,
        group: String,
        position: usize,
        after: String,
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

/// Writes `dirs` atomically (temporary sibling, then rename); `model_sha256` is recorded
/// so that a reader can tell which weights the directions were normalized to.
///
/// # Errors
/// [`DirectionFileError::Hdf5`] when the file cannot be created, filled or renamed.
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
    crate::io::output::replace_atomically(path, false, io, |tmp| {
        crate::io::hdf5_init();
        let f = hdf5::File::create(tmp).map_err(&e)?;
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
                write_attr(&ds, "role", &role_name(t.role).into()).map_err(&e)?;
                pos += 1;
            }
        }
        for (name, values) in dirs.pca.iter().flatten() {
            f.new_dataset_builder()
                .with_data(values.as_slice())
                .create(name.as_str())
                .map_err(&e)?;
        }
        let c = dirs.config;
        let mut attrs: Vec<(&str, Attr)> = vec![
            // stored as the i64 with the same bits; read back with `as u64`
            ("seed", (c.seed as i64).into()),
            ("norm", c.norm.to_string().into()),
            ("perturb_biasbn", c.perturb_biasbn.into()),
            ("dir_type", c.dir_type.to_string().into()),
            ("kind", dirs.kind.to_string().into()),
            ("losscape_version", env!("CARGO_PKG_VERSION").into()),
        ];
        if let Some(cos) = dirs.cosine() {
            attrs.push(("xy_cosine", cos.into()));
        }
        if let DirectionKind::Eigen(e) = &dirs.kind {
            attrs.push(("eigen_operator", e.operator.as_str().into()));
            for (name, v) in ["eigenvalue_x", "eigenvalue_y"].into_iter().zip(&e.values) {
                attrs.push((name, (*v).into()));
            }
        }
        if let Some(s) = model_sha256 {
            attrs.push(("model_sha256", s.into()));
        }
        for (k, v) in &attrs {
            write_attr(&f, k, v).map_err(&e)?;
        }
        f.flush().map_err(&e)?;
        Ok(())
    })
}

/// A role's kebab-case name (`weight`, `bn-scale`, `running-var`, …), as serde writes it.
fn role_name(role: Role) -> String {
    serde_json::to_value(role)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Reads a direction file for the model whose parameters are `theta`: ours, or one that
/// loss-landscape wrote (positional datasets only, `weights` or `states`).
///
/// The file's own `dir_type` attribute, when present, wins over `dir_type` (which is what
/// loss-landscape's files, lacking attributes, are read as). Their files also lack `seed`
/// and `norm`: the returned config then holds the defaults for those. `kind` is
/// [`DirectionKind::Pca`] when the PCA datasets are present, else `File(path)`.
///
/// # Errors
/// A missing file, a file HDF5 cannot open, a file without `/xdirection`, another tensor
/// count than the model's, a shape or a recorded name that differs from the model's tensor
/// at that position: each error names the path and, where it applies, the position, the
/// tensor and both shapes.
pub fn read_directions(
    path: &Path,
    theta: &ParamVec<f32>,
    dir_type: DirType,
) -> Result<Directions, DirectionFileError> {
    if !path.exists() {
        return Err(DirectionFileError::NotFound { path: path.into() });
    }
    let layout = theta.layout.clone();
    let (config, x, y, pca) =
        super::contain::contain(path, || read_directions_here(path, theta, dir_type))??;
    let x = ParamVec::from_data(layout.clone(), x.into());
    let y = y.map(|y| ParamVec::from_data(layout, y.into()));
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

/// The parts of a direction file, as plain data: its config, x and y flat over the
/// model's layout, and loss-landscape's PCA datasets.
type RawDirections = (
    DirectionConfig,
    Vec<f32>,
    Option<Vec<f32>>,
    Vec<(String, Vec<f64>)>,
);

/// [`read_directions`]' HDF5 part, in this process.
fn read_directions_here(
    path: &Path,
    theta: &ParamVec<f32>,
    dir_type: DirType,
) -> Result<RawDirections, DirectionFileError> {
    crate::io::hdf5_init();
    let f = hdf5::File::open(path).map_err(|x| DirectionFileError::NotHdf5 {
        path: path.into(),
        why: x.to_string(),
    })?;
    let attrs = read_attrs(&f);
    let attr_str = |k: &str| attrs.get(k).and_then(Attr::as_str).map(str::to_owned);
    let dir_type = attr_str("dir_type")
        .and_then(|s| s.parse::<DirType>().ok())
        .unwrap_or(dir_type);
    let config = DirectionConfig {
        norm: attr_str("norm")
            .and_then(|s| s.parse::<DirectionNorm>().ok())
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
    let x = read_group(path, &f, "xdirection", theta, dir_type)?;
    let y = if f.group("ydirection").is_ok() {
        Some(read_group(path, &f, "ydirection", theta, dir_type)?)
    } else {
        None
    };
    let flat = |v: ParamVec<f32>| v.data.to_vec();
    let pca: Vec<(String, Vec<f64>)> = PCA_DATASETS
        .iter()
        .filter_map(|n| {
            f.dataset(n)
                .ok()
                .and_then(|d| d.read_raw::<f64>().ok())
                .map(|v| (n.to_string(), v))
        })
        .collect();
    Ok((config, flat(x), y.map(flat), pca))
}

/// Reads one group (`xdirection` or `ydirection`) onto the tensors of `dir_type`.
///
/// The datasets map one to one onto the included tensors in layout order. A `states` file
/// may instead hold one more 0-d dataset after every `running_var` (loss-landscape's
/// `num_batches_tracked`, which our layouts drop): those are checked to be 0-d and skipped.
fn read_group(
    path: &Path,
    f: &hdf5::File,
    gname: &str,
    theta: &ParamVec<f32>,
    dir_type: DirType,
) -> Result<ParamVec<f32>, DirectionFileError> {
    let e = h5(path);
    let g = f.group(gname).map_err(&e)?;
    let slots: Vec<usize> = theta
        .layout
        .tensors()
        .iter()
        .enumerate()
        .filter(|(_, t)| included(t, dir_type))
        .map(|(i, _)| i)
        .collect();
    let counters = match dir_type {
        DirType::States => slots
            .iter()
            .filter(|&&i| theta.layout.tensor(i).role == Role::RunningVar)
            .count(),
        DirType::Weights => 0,
    };
    let members = g.member_names().map_err(&e)?;
    let count = members.len();
    if let Some(m) = members
        .iter()
        .find(|m| m.parse::<usize>().map_or(true, |i| i >= count))
    {
        return Err(DirectionFileError::Member {
            path: path.into(),
            group: gname.into(),
            last: count.saturating_sub(1),
            member: m.clone(),
        });
    }
    let skip_counters = counters > 0 && count == slots.len() + counters;
    if count != slots.len() && !skip_counters {
        return Err(DirectionFileError::Count {
            path: path.into(),
            group: gname.into(),
            expected: slots.len(),
            with_counters: (counters > 0).then_some(slots.len() + counters),
            got: count,
            dir_type,
        });
    }
    let mut v = ParamVec::<f32>::zeros(theta.layout.clone());
    let mut pos = 0;
    for &slot in &slots {
        let spec = theta.layout.tensor(slot);
        let ds = g.dataset(&pos.to_string()).map_err(&e)?;
        if let Some(Attr::Str(n)) = read_attrs(&ds).get("name") {
            if n != &spec.name {
                return Err(DirectionFileError::Name {
                    path: path.into(),
                    group: gname.into(),
                    position: pos,
                    expected: spec.name.clone(),
                    got: n.clone(),
                });
            }
        }
        if ds.shape() != spec.shape {
            return Err(DirectionFileError::Shape {
                path: path.into(),
                group: gname.into(),
                position: pos,
                name: spec.name.clone(),
                expected: spec.shape.clone(),
                got: ds.shape(),
            });
        }
        super::check_fits(&ds, super::file_bytes(path)).map_err(|why| {
            DirectionFileError::Hdf5 {
                path: path.into(),
                why: format!("/{gname}/{pos}: {why}"),
            }
        })?;
        let a: ArrayD<f32> = ds.read_dyn().map_err(&e)?;
        v.tensor_mut(slot).assign(&a);
        pos += 1;
        if skip_counters && spec.role == Role::RunningVar {
            let counter = g.dataset(&pos.to_string()).map_err(&e)?;
            if !counter.shape().is_empty() {
                return Err(DirectionFileError::Counter {
                    path: path.into(),
                    group: gname.into(),
                    position: pos,
                    after: spec.name.clone(),
                    got: counter.shape(),
                });
            }
            pos += 1;
        }
    }
    Ok(v)
}
