//! Surface files (HDF5), readable by loss-landscape's own plotting scripts.
//!
//! ```text
//! /xcoordinates   f64 (nx)               α of each column
//! /ycoordinates   f64 (ny)               β of each row (2-D surfaces only)
//! /train_loss     f64 (ny, nx) or (nx)   per-sample mean loss; NaN where not computed
//! /train_acc      f64 …                  accuracy in percent
//! /test_loss, /test_acc                  when test data was given
//! /completed      u8  …                  1 where the point is computed
//! /dir_file       string                 the direction file (loss-landscape's name)
//! attributes      axis_order ("iy,ix" or "ix"), x_axis, y_axis (MIN:MAX:NUM), seed,
//!                 direction_norm, perturb_biasbn, dir_type, xy_cosine, model, model_sha256,
//!                 data, samples, bn_mode, batch_size, shard, fingerprint, losscape_version…
//! ```
//! Arrays are stored `[iy, ix]`, which is how loss-landscape's `plot_2D.py` reads them
//! (`X, Y = meshgrid(x, y)`) for any grid shape; its own writer declares (nx, ny), correct
//! only for square grids. Pending points are NaN *and* 0 in `completed`, instead of
//! loss-landscape's −1 sentinel (which it cannot tell from a true value).
//!
//! Files are written whole to a temporary sibling and renamed into place, so a reader or a
//! crash never sees a half-written file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hdf5::types::VarLenUnicode;
use ndarray::{Array1, ArrayD};

use crate::landscape::grid::GridAxis;
use crate::landscape::surface::{SurfaceGrid, SurfaceValues};

/// An attribute value.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Attr {
    Str(String),
    Int(i64),
    Float(f64),
}

impl From<&str> for Attr {
    fn from(s: &str) -> Self {
        Attr::Str(s.into())
    }
}
impl From<String> for Attr {
    fn from(s: String) -> Self {
        Attr::Str(s)
    }
}
impl From<i64> for Attr {
    fn from(v: i64) -> Self {
        Attr::Int(v)
    }
}
impl From<usize> for Attr {
    fn from(v: usize) -> Self {
        Attr::Int(v as i64)
    }
}
impl From<f64> for Attr {
    fn from(v: f64) -> Self {
        Attr::Float(v)
    }
}
impl From<bool> for Attr {
    fn from(v: bool) -> Self {
        Attr::Int(v as i64)
    }
}

impl Attr {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Attr::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl std::fmt::Display for Attr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attr::Str(s) => f.write_str(s),
            Attr::Int(v) => write!(f, "{v}"),
            Attr::Float(v) => write!(f, "{v}"),
        }
    }
}

/// Errors reading or writing surface files.
#[non_exhaustive]
#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum SurfaceFileError {
    /// Occurs when libhdf5 crashes, hangs or over-allocates on the file (see [`super::contain`]).
    #[error(transparent)]
    Contained(#[from] super::contain::ContainError),
    /// Occurs when HDF5 cannot create, open, read or write the file.
    #[error("{path}: {why}")]
    Hdf5 { path: PathBuf, why: String },
    /// Occurs when a file lacks a dataset a surface needs.
    #[error("{path} is not a surface file: it has no '{field}' dataset (write surfaces with `losscape surface`)")]
    Missing { path: PathBuf, field: String },
    /// Occurs when a dataset is declared larger than the file, or coordinates are empty.
    #[error("{path}: dataset '{field}': {why}")]
    Invalid {
        path: PathBuf,
        field: String,
        why: String,
    },
    /// Occurs when a dataset's shape disagrees with the coordinates.
    #[error(
        "{path}: dataset '{field}' has shape {got:?}, expected {expected:?} from the coordinates"
    )]
    Shape {
        path: PathBuf,
        field: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
}

/// A surface file's contents.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SurfaceFile {
    pub x: Vec<f64>,
    pub y: Option<Vec<f64>>,
    pub values: SurfaceValues,
    pub dir_file: Option<String>,
    pub attrs: BTreeMap<String, Attr>,
}

/// Quantities written when present, in this order.
pub const QUANTITIES: [&str; 6] = [
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "max_eig",
    "min_eig",
];

fn h5err(path: &Path) -> impl Fn(hdf5::Error) -> SurfaceFileError + '_ {
    move |e| SurfaceFileError::Hdf5 {
        path: path.to_path_buf(),
        why: e.to_string(),
    }
}

pub(crate) fn write_attr(loc: &hdf5::Location, name: &str, value: &Attr) -> hdf5::Result<()> {
    match value {
        Attr::Str(s) => {
            let v: VarLenUnicode = s.parse().map_err(|e| hdf5::Error::from(format!("{e:?}")))?;
            loc.new_attr::<VarLenUnicode>()
                .create(name)?
                .write_scalar(&v)
        }
        Attr::Int(v) => loc.new_attr::<i64>().create(name)?.write_scalar(v),
        Attr::Float(v) => loc.new_attr::<f64>().create(name)?.write_scalar(v),
    }
}

pub(crate) fn read_attrs(loc: &hdf5::Location) -> BTreeMap<String, Attr> {
    let mut out = BTreeMap::new();
    for name in loc.attr_names().unwrap_or_default() {
        let Ok(a) = loc.attr(&name) else { continue };
        // HDF5 converts a float attribute to an integer on request (0.75 → 0): ask for the
        // type the attribute has
        let float = a
            .dtype()
            .and_then(|t| t.to_descriptor())
            .is_ok_and(|d| matches!(d, hdf5::types::TypeDescriptor::Float(_)));
        let value = if let Ok(s) = a.read_scalar::<VarLenUnicode>() {
            Attr::Str(s.to_string())
        } else if float {
            match a.read_scalar::<f64>() {
                Ok(v) => Attr::Float(v),
                Err(_) => continue,
            }
        } else if let Ok(v) = a.read_scalar::<i64>() {
            Attr::Int(v)
        } else if let Ok(v) = a.read_scalar::<f64>() {
            Attr::Float(v)
        } else {
            continue;
        };
        out.insert(name, value);
    }
    out
}

/// Writes a surface file atomically.
pub fn write_surface(
    path: &Path,
    grid: &SurfaceGrid,
    values: &SurfaceValues,
    dir_file: Option<&str>,
    attrs: &BTreeMap<String, Attr>,
) -> Result<(), SurfaceFileError> {
    let e = h5err(path);
    let io = |x: std::io::Error| SurfaceFileError::Hdf5 {
        path: path.into(),
        why: x.to_string(),
    };
    crate::io::output::replace_atomically(path, false, io, |tmp| {
        crate::io::hdf5_init();
        let f = hdf5::File::create(tmp).map_err(&e)?;
        f.new_dataset_builder()
            .with_data(&Array1::from(grid.x.coordinates()))
            .create("xcoordinates")
            .map_err(&e)?;
        if let Some(y) = &grid.y {
            f.new_dataset_builder()
                .with_data(&Array1::from(y.coordinates()))
                .create("ycoordinates")
                .map_err(&e)?;
        }
        for (name, arr) in values.names.iter().zip(&values.arrays) {
            f.new_dataset_builder()
                .with_data(arr)
                .create(name.as_str())
                .map_err(&e)?;
        }
        f.new_dataset_builder()
            .with_data(&values.completed)
            .create("completed")
            .map_err(&e)?;
        if let Some(d) = dir_file {
            let v: VarLenUnicode = d.parse().map_err(|x| SurfaceFileError::Hdf5 {
                path: path.into(),
                why: format!("{x:?}"),
            })?;
            f.new_dataset::<VarLenUnicode>()
                .create("dir_file")
                .map_err(&e)?
                .write_scalar(&v)
                .map_err(&e)?;
        }
        let mut all = attrs.clone();
        all.insert(
            "axis_order".into(),
            if grid.y.is_some() { "iy,ix" } else { "ix" }.into(),
        );
        all.insert("x_axis".into(), grid.x.to_string().into());
        if let Some(y) = &grid.y {
            all.insert("y_axis".into(), y.to_string().into());
        }
        all.insert("points_completed".into(), values.completed_count().into());
        all.insert("points_total".into(), grid.len().into());
        all.entry("losscape_version".into())
            .or_insert(env!("CARGO_PKG_VERSION").into());
        for (k, v) in &all {
            write_attr(&f, k, v).map_err(&e)?;
        }
        f.flush().map_err(&e)?;
        Ok(())
    })
}

/// Reads a surface file written by losscape or by loss-landscape.
///
/// loss-landscape's files have no `completed` mask: points whose value is the −1 sentinel
/// count as pending. Their arrays may be declared (nx, ny); for non-square grids this is
/// reinterpreted as (ny, nx) and reported through `attrs["reinterpreted_axes"]`.
pub fn read_surface(path: &Path) -> Result<SurfaceFile, SurfaceFileError> {
    super::contain::contain(path, || read_surface_here(path))?
}

/// [`read_surface`] in this process.
fn read_surface_here(path: &Path) -> Result<SurfaceFile, SurfaceFileError> {
    let e = h5err(path);
    crate::io::hdf5_init();
    let f = hdf5::File::open(path).map_err(|x| SurfaceFileError::Hdf5 {
        path: path.into(),
        why: format!("cannot open as HDF5 ({x}); is the file complete?"),
    })?;
    let missing = |field: &str| SurfaceFileError::Missing {
        path: path.into(),
        field: field.into(),
    };
    let bytes = super::file_bytes(path);
    let fits = |d: &hdf5::Dataset, field: &str| {
        super::check_fits(d, bytes).map_err(|why| SurfaceFileError::Invalid {
            path: path.into(),
            field: field.into(),
            why,
        })
    };
    let coordinates = |field: &str| -> Result<Option<Vec<f64>>, SurfaceFileError> {
        let Ok(d) = f.dataset(field) else {
            return Ok(None);
        };
        fits(&d, field)?;
        let v: Vec<f64> = d.read_raw().map_err(&e)?;
        if v.is_empty() || v.iter().any(|c| !c.is_finite()) {
            return Err(SurfaceFileError::Invalid {
                path: path.into(),
                field: field.into(),
                why: "coordinates must be non-empty and finite".into(),
            });
        }
        if let Some(i) = v.windows(2).position(|w| w[1] <= w[0]) {
            return Err(SurfaceFileError::Invalid {
                path: path.into(),
                field: field.into(),
                why: format!(
                    "coordinates must be strictly increasing, but [{i}] = {} is followed by {}; \
                     the file is corrupt or was written with min > max (recompute the surface \
                     with min < max)",
                    v[i],
                    v[i + 1]
                ),
            });
        }
        Ok(Some(v))
    };
    let x = coordinates("xcoordinates")?.ok_or_else(|| missing("xcoordinates"))?;
    let y = coordinates("ycoordinates")?;
    let shape: Vec<usize> = match &y {
        Some(y) => vec![y.len(), x.len()],
        None => vec![x.len()],
    };
    let mut attrs = read_attrs(&f);
    let read = |name: &str,
                attrs: &mut BTreeMap<String, Attr>|
     -> Result<Option<ArrayD<f64>>, SurfaceFileError> {
        let Ok(d) = f.dataset(name) else {
            return Ok(None);
        };
        fits(&d, name)?;
        let a: ArrayD<f64> = d.read_dyn().map_err(&e)?;
        if a.shape() == shape.as_slice() {
            return Ok(Some(a));
        }
        // loss-landscape declares (nx, ny): same bytes, axes swapped in the declaration
        if shape.len() == 2 && a.shape() == [shape[1], shape[0]] {
            attrs.insert(
                "reinterpreted_axes".into(),
                "array stored as (nx, ny) by loss-landscape; read as (ny, nx)".into(),
            );
            let v = a.into_raw_vec_and_offset().0;
            return Ok(Some(
                ArrayD::from_shape_vec(shape.clone(), v).expect("same size"),
            ));
        }
        Err(SurfaceFileError::Shape {
            path: path.into(),
            field: name.into(),
            expected: shape.clone(),
            got: a.shape().to_vec(),
        })
    };
    let mut names = Vec::new();
    let mut arrays = Vec::new();
    for q in QUANTITIES {
        if let Some(a) = read(q, &mut attrs)? {
            names.push(q.to_string());
            arrays.push(a);
        }
    }
    if names.is_empty() {
        return Err(missing("train_loss"));
    }
    let completed = match f.dataset("completed") {
        Ok(d) => {
            fits(&d, "completed")?;
            let c = d.read_dyn::<u8>().map_err(&e)?;
            if c.shape() != shape.as_slice() {
                return Err(SurfaceFileError::Shape {
                    path: path.into(),
                    field: "completed".into(),
                    expected: shape.clone(),
                    got: c.shape().to_vec(),
                });
            }
            c
        }
        // loss-landscape: −1 marks unfinished points
        Err(_) => arrays[0].mapv(|v| u8::from(v != -1.0 && !v.is_nan())),
    };
    let dir_file = f
        .dataset("dir_file")
        .ok()
        .and_then(|d| d.read_scalar::<VarLenUnicode>().ok())
        .map(|s| s.to_string());
    Ok(SurfaceFile {
        x,
        y,
        values: SurfaceValues {
            names,
            arrays,
            completed,
        },
        dir_file,
        attrs,
    })
}

impl SurfaceFile {
    /// The grid, reconstructed from the coordinates.
    pub fn grid(&self) -> SurfaceGrid {
        let axis = |c: &[f64]| GridAxis {
            min: c[0],
            max: *c.last().unwrap(),
            num: c.len(),
        };
        SurfaceGrid {
            x: axis(&self.x),
            y: self.y.as_deref().map(axis),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Float attributes come back as floats (HDF5 would convert 0.75 to the integer 0).
    #[test]
    fn attributes_keep_their_type() {
        let dir = tempfile::tempdir().unwrap();
        crate::io::hdf5_init();
        let f = hdf5::File::create(dir.path().join("a.h5")).unwrap();
        for (k, v) in [
            ("f", Attr::Float(0.75)),
            ("i", Attr::Int(3)),
            ("s", Attr::Str("x".into())),
        ] {
            write_attr(&f, k, &v).unwrap();
        }
        let a = read_attrs(&f);
        assert_eq!(a["f"], Attr::Float(0.75));
        assert_eq!(a["i"], Attr::Int(3));
        assert_eq!(a["s"], Attr::Str("x".into()));
    }

    /// Coordinates out of order (a corrupt file) are refused, naming the dataset.
    #[test]
    fn coordinates_must_increase() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.h5");
        let seed = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fuzz-corpus/surface/seed-1d.h5"
        );
        std::fs::copy(seed, &p).unwrap();
        assert!(read_surface(&p).is_ok());
        crate::io::hdf5_init();
        {
            let f = hdf5::File::open_rw(&p).unwrap();
            f.dataset("xcoordinates")
                .unwrap()
                .write_raw(&[-1.0f64, 0.5, 0.5])
                .unwrap();
        }
        let e = read_surface(&p).unwrap_err().to_string();
        assert!(
            e.contains("xcoordinates") && e.contains("strictly increasing"),
            "{e}"
        );
    }
}
