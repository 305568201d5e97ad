//! HDF5 files with an inputs and a labels dataset, named by [`super::DataFormat::keys`]
//! (default `x`/`y` for the train split, `x_test`/`y_test` for the test split).
//!
//! Inputs may be float32/float64 (as stored) or uint8 (scaled by 1/255), `[N, …]` with at
//! least two dimensions; labels any integer type, `[N]`. Before reading, every dataset's
//! element count is checked against the file: an uncompressed dataset must have its bytes
//! allocated in the file, and a filtered (compressed) one may expand at most
//! [`MAX_EXPANSION`] times, so a small hostile file cannot demand a huge allocation.

use std::path::Path;

use hdf5::types::{IntSize, TypeDescriptor};
use ndarray::{ArrayD, IxDyn};

use super::{assemble, Classes, DataError, Dataset, Split};

/// Largest accepted ratio of decompressed to stored bytes of a filtered dataset.
pub const MAX_EXPANSION: u64 = 1024;

/// Loads one split of the HDF5 file at `path`.
pub(crate) fn load(
    path: &Path,
    split: Split,
    keys: Option<&(String, String)>,
) -> Result<Dataset, DataError> {
    let file_len = std::fs::metadata(path)
        .map_err(|e| DataError::io(path, e))?
        .len();
    let f = hdf5::File::open(path).map_err(|e| {
        DataError::corrupt(path, "HDF5 header", format!("cannot open as HDF5: {e}"))
    })?;
    let (xk, yk) = match (keys, split) {
        (Some((x, y)), _) => (x.clone(), y.clone()),
        (None, Split::Train) => ("x".to_string(), "y".to_string()),
        (None, Split::Test) => ("x_test".to_string(), "y_test".to_string()),
    };
    let available = || f.member_names().unwrap_or_default();
    let open = |name: &str| {
        f.dataset(name).map_err(|_| DataError::MissingArray {
            path: path.to_path_buf(),
            name: name.to_string(),
            available: available(),
        })
    };
    let xd = open(&xk)?;
    let yd = open(&yk)?;
    let checked = |d: &hdf5::Dataset, name: &str| -> Result<TypeDescriptor, DataError> {
        let t = d
            .dtype()
            .and_then(|t| t.to_descriptor())
            .map_err(|e| DataError::corrupt(path, name, format!("unreadable datatype: {e}")))?;
        let elem = t.size() as u64;
        let numel = d
            .shape()
            .iter()
            .try_fold(1u64, |a, &s| a.checked_mul(s as u64));
        let bytes = numel.and_then(|n| n.checked_mul(elem));
        let stored = d.storage_size();
        let filtered = !d.filters().is_empty();
        let ok = match bytes {
            None => false,
            Some(b) if filtered => b <= stored.saturating_mul(MAX_EXPANSION) && stored <= file_len,
            Some(b) => b <= stored && stored <= file_len,
        };
        if !ok {
            return Err(DataError::corrupt(
                path,
                name,
                format!(
                    "shape {:?} needs {} bytes but the file stores {stored} for it (file of {file_len} bytes); is it truncated?",
                    d.shape(),
                    bytes.map_or("too many".to_string(), |b| b.to_string())
                ),
            ));
        }
        Ok(t)
    };
    let xt = checked(&xd, &xk)?;
    let yt = checked(&yd, &yk)?;
    let read_err = |name: &str| {
        let name = name.to_string();
        move |e: hdf5::Error| DataError::corrupt(path, name.clone(), format!("cannot read: {e}"))
    };
    let shape = xd.shape();
    let x: Vec<f32> = match xt {
        TypeDescriptor::Float(_) => xd.read_raw::<f32>().map_err(read_err(&xk))?,
        TypeDescriptor::Unsigned(IntSize::U1) => xd
            .read_raw::<u8>()
            .map_err(read_err(&xk))?
            .into_iter()
            .map(|b| b as f32 / 255.0)
            .collect(),
        other => {
            return Err(DataError::WrongDtype {
                path: path.to_path_buf(),
                field: xk,
                found: format!("{other}"),
                expected: "float32, float64 or uint8".into(),
            })
        }
    };
    let y: Vec<i64> = match yt {
        TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_) => {
            yd.read_raw::<i64>().map_err(read_err(&yk))?
        }
        other => {
            return Err(DataError::WrongDtype {
                path: path.to_path_buf(),
                field: yk,
                found: format!("{other}"),
                expected: "an integer type".into(),
            })
        }
    };
    if yd.shape().len() != 1 {
        return Err(DataError::BadShape {
            path: path.to_path_buf(),
            field: yk,
            shape: yd.shape(),
            expected: "[N]".into(),
        });
    }
    let x = ArrayD::from_shape_vec(IxDyn(&shape), x)
        .map_err(|e| DataError::corrupt(path, &xk, e.to_string()))?;
    let y: Vec<i128> = y.into_iter().map(i128::from).collect();
    assemble(
        path,
        format!("{}[{split}]", path.display()),
        (&xk, x),
        (&yk, &y),
        Classes::Inferred(&[]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_datasets_uint8_scaling_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.h5");
        {
            let f = hdf5::File::create(&p).unwrap();
            let x: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
            f.new_dataset_builder()
                .with_data(&ndarray::Array3::from_shape_vec((2, 3, 4), x).unwrap())
                .create("images")
                .unwrap();
            f.new_dataset_builder()
                .with_data(&ndarray::arr1(&[1i32, 4]))
                .create("targets")
                .unwrap();
        }
        let keys = ("images".to_string(), "targets".to_string());
        let ds = load(&p, Split::Train, Some(&keys)).unwrap();
        assert_eq!(ds.x.shape(), &[2, 3, 4]);
        assert_eq!(ds.x[[1, 2, 3]], 23.0 / 255.0);
        assert_eq!((ds.y.clone(), ds.num_classes), (vec![1, 4], 5));
        // default names are absent: the error lists what the file holds
        let e = load(&p, Split::Train, None).unwrap_err().to_string();
        assert!(e.contains("'x'") && e.contains("images"), "{e}");
        // truncated file
        let bytes = std::fs::read(&p).unwrap();
        let t = dir.path().join("t.h5");
        for n in [0, 100, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&t, &bytes[..n]).unwrap();
            assert!(load(&t, Split::Train, Some(&keys)).is_err(), "prefix {n}");
        }
    }
}
