//! `.npz` archives (`x`, `y`, optional `x_test`, `y_test`) and `.npy` input/label pairs.

use std::path::{Path, PathBuf};

use super::npy::{self, Origin};
use super::zip::Archive;
use super::{assemble, check_labels, read_file, Classes, DataError, Dataset, Split, MAX_CLASSES};

/// Loads one split of the `.npz` file at `path`.
pub(crate) fn load_npz(path: &Path, split: Split) -> Result<Dataset, DataError> {
    let bytes = read_file(path, None)?;
    let mut ds = from_npz_bytes(&bytes, path, split)?;
    ds.name = format!("{}[{split}]", path.display());
    Ok(ds)
}

/// Loads one split of an `.npz` image; `path` is only used in messages and the name.
pub(crate) fn from_npz_bytes(
    bytes: &[u8],
    path: &Path,
    split: Split,
) -> Result<Dataset, DataError> {
    let arch = Archive::parse(bytes, path)?;
    let missing = |name: &str| DataError::MissingArray {
        path: path.to_path_buf(),
        name: name.to_string(),
        available: arch.names(),
    };
    for required in ["x", "y"] {
        arch.find(required).ok_or_else(|| missing(required))?;
    }
    let has_test = arch.find("x_test").is_some();
    if has_test && arch.find("y_test").is_none() {
        return Err(missing("y_test"));
    }
    let (x_field, y_field, other_y) = match split {
        Split::Train => ("x", "y", has_test.then_some("y_test")),
        Split::Test if has_test => ("x_test", "y_test", Some("y")),
        Split::Test => {
            return Err(DataError::NoTestSplit {
                path: path.to_path_buf(),
                missing: "array `x_test`".into(),
            })
        }
    };
    let labels = |field: &str| -> Result<Vec<i128>, DataError> {
        let o = Origin { path, field };
        let raw = arch.read(arch.find(field).ok_or_else(|| missing(field))?)?;
        npy::parse(&raw, o)?.to_labels(o)
    };
    let y = labels(y_field)?;
    let other = match other_y {
        Some(f) => check_labels(path, f, &labels(f)?, MAX_CLASSES)?,
        None => Vec::new(),
    };
    let x = {
        let o = Origin {
            path,
            field: x_field,
        };
        let raw = arch.read(arch.find(x_field).ok_or_else(|| missing(x_field))?)?;
        npy::parse(&raw, o)?.to_inputs(o)?
    };
    assemble(
        path,
        path.display().to_string(),
        (x_field, x),
        (y_field, &y),
        Classes::Inferred(&[&other]),
    )
}

/// The labels file paired with an inputs `.npy`: the last `x` token of the stem (delimited by
/// the ends, `_`, `-` or `.`) becomes `y`, keeping its case.
pub(crate) fn sibling_labels(x_path: &Path) -> Option<PathBuf> {
    let file = x_path.file_name()?.to_str()?;
    let (stem, ext) = file.rsplit_once('.')?;
    let b = stem.as_bytes();
    let is_sep = |i: usize| matches!(b.get(i), None | Some(b'_' | b'-' | b'.'));
    let pos = (0..b.len())
        .rev()
        .find(|&i| matches!(b[i], b'x' | b'X') && (i == 0 || is_sep(i - 1)) && is_sep(i + 1))?;
    let y = if b[pos] == b'x' { "y" } else { "Y" };
    Some(x_path.with_file_name(format!("{}{y}{}.{ext}", &stem[..pos], &stem[pos + 1..])))
}

/// Loads an inputs `.npy` and its sibling labels `.npy` (see [`sibling_labels`]).
pub(crate) fn load_npy_pair(x_path: &Path) -> Result<Dataset, DataError> {
    let y_path = sibling_labels(x_path).ok_or_else(|| DataError::UnknownFormat {
        path: x_path.to_path_buf(),
        reason: "cannot pair this .npy with a labels file: name the inputs x.npy (or \
                 x_train.npy, train_x.npy, …) and the labels y.npy (y_train.npy, train_y.npy, …) \
                 in the same folder"
            .into(),
    })?;
    // Labels first: a missing sibling is reported before reading a large input file.
    let y_bytes = read_file(&y_path, Some(x_path))?;
    let yo = Origin {
        path: &y_path,
        field: "labels",
    };
    let y = npy::parse(&y_bytes, yo)?.to_labels(yo)?;
    drop(y_bytes);
    let x_bytes = read_file(x_path, None)?;
    let xo = Origin {
        path: x_path,
        field: "inputs",
    };
    let x = npy::parse(&x_bytes, xo)?.to_inputs(xo)?;
    drop(x_bytes);
    let y_name = y_path.display().to_string();
    let x_name = x_path.display().to_string();
    assemble(
        x_path,
        x_name.clone(),
        (&x_name, x),
        (&y_name, &y),
        Classes::Inferred(&[]),
    )
}
