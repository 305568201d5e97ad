//! CIFAR-10 and CIFAR-100 "python version" batches, as torchvision downloads them
//! (`cifar-10-batches-py/data_batch_1..5`, `test_batch`; `cifar-100-python/train`, `test`).
//!
//! Each file is a pickle of a dict with bytes keys (`pickle.load(f, encoding='bytes')`):
//! `data`, a uint8 NumPy array `[N, 3072]` (1024 red, 1024 green, 1024 blue, each 32×32
//! row-major), and `labels` (CIFAR-10) or `fine_labels` (CIFAR-100), a list of ints. They
//! are read with the restricted unpickler, which allows only the NumPy globals that
//! rebuild an array (`_reconstruct`, `ndarray`, `dtype`) and `_codecs.encode` (how
//! Python 3 pickles bytes at protocol 2). Inputs become `[N, 3, 32, 32]` scaled by 1/255.

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};

use super::{assemble, read_file, Classes, DataError, Dataset, Split};
use crate::pickle::{self, Global, Object, PickleError, Policy, Value};

const PIXELS: usize = 3 * 32 * 32;
const TRAIN10: [&str; 5] = [
    "data_batch_1",
    "data_batch_2",
    "data_batch_3",
    "data_batch_4",
    "data_batch_5",
];

/// Which of the two datasets a folder holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Cifar10,
    Cifar100,
}

/// The python-batches folder: `path` itself or its `cifar-10-batches-py` /
/// `cifar-100-python` child.
pub(crate) fn find_dir(path: &Path) -> Option<(PathBuf, Kind)> {
    let kind = |d: &Path| {
        if d.join(TRAIN10[0]).is_file() || d.join("test_batch").is_file() {
            Some(Kind::Cifar10)
        } else if d.join("train").is_file() && d.join("meta").is_file()
            || d.join("test").is_file() && d.join("meta").is_file()
        {
            Some(Kind::Cifar100)
        } else {
            None
        }
    };
    if let Some(k) = kind(path) {
        return Some((path.to_path_buf(), k));
    }
    ["cifar-10-batches-py", "cifar-100-python"]
        .iter()
        .map(|c| path.join(c))
        .find_map(|d| kind(&d).map(|k| (d, k)))
}

/// Loads a split of a python-batches folder.
pub(crate) fn load_dir(dir: &Path, kind: Kind, split: Split) -> Result<Dataset, DataError> {
    let files: Vec<&str> = match (kind, split) {
        (Kind::Cifar10, Split::Train) => TRAIN10.to_vec(),
        (Kind::Cifar10, Split::Test) => vec!["test_batch"],
        (Kind::Cifar100, Split::Train) => vec!["train"],
        (Kind::Cifar100, Split::Test) => vec!["test"],
    };
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for f in &files {
        let p = dir.join(f);
        if split == Split::Test && !p.is_file() {
            return Err(DataError::NoTestSplit {
                path: dir.to_path_buf(),
                missing: f.to_string(),
            });
        }
        read_batch(&p, Some(dir), kind, &mut pixels, &mut labels)?;
    }
    finish(
        dir,
        format!("{}[{split}]", dir.display()),
        pixels,
        labels,
        kind,
    )
}

/// Loads one batch file (its dataset told by its label key).
pub(crate) fn load_file(path: &Path) -> Result<Dataset, DataError> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let kind = read_batch(path, None, Kind::Cifar10, &mut pixels, &mut labels)?;
    finish(path, path.display().to_string(), pixels, labels, kind)
}

fn finish(
    path: &Path,
    name: String,
    pixels: Vec<u8>,
    labels: Vec<i128>,
    kind: Kind,
) -> Result<Dataset, DataError> {
    let n = labels.len();
    let x: Vec<f32> = pixels.iter().map(|&b| b as f32 / 255.0).collect();
    let x = ArrayD::from_shape_vec(IxDyn(&[n, 3, 32, 32]), x)
        .map_err(|e| DataError::corrupt(path, "data", e.to_string()))?;
    let classes = match kind {
        Kind::Cifar10 => 10,
        Kind::Cifar100 => 100,
    };
    assemble(
        path,
        name,
        ("data", x),
        ("labels", &labels),
        Classes::Fixed(classes),
    )
}

/// Only the NumPy globals that rebuild an array; no persistent ids.
struct NumpyPolicy;

impl Policy for NumpyPolicy {
    fn global(&self, module: &str, name: &str) -> Option<Global> {
        match (module, name) {
            ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => {
                Some(Global::NpReconstruct)
            }
            ("numpy", "ndarray") => Some(Global::NpNdarray),
            ("numpy", "dtype") => Some(Global::NpDtype),
            ("_codecs", "encode") => Some(Global::CodecsEncode),
            _ => None,
        }
    }

    fn persistent(&mut self, _pid: &Value, at: usize) -> Result<Value, PickleError> {
        Err(PickleError::Bad {
            at,
            op: "PERSID",
            why: "persistent ids do not occur in a CIFAR batch".into(),
        })
    }
}

/// Appends one batch; `kind` is the folder's, or for a lone file a guess that the label
/// key corrects (returned).
fn read_batch(
    path: &Path,
    needed_by: Option<&Path>,
    kind: Kind,
    pixels: &mut Vec<u8>,
    labels: &mut Vec<i128>,
) -> Result<Kind, DataError> {
    let bytes = read_file(path, needed_by)?;
    let (root, _) = pickle::load(&bytes, &mut NumpyPolicy)
        .map_err(|e| DataError::corrupt(path, "pickle", e.to_string()))?;
    let field = |k: &str| root.get(k);
    let (label_key, kind) = match (field("labels"), field("fine_labels")) {
        (Some(_), _) => ("labels", Kind::Cifar10),
        (None, Some(_)) => ("fine_labels", Kind::Cifar100),
        _ if kind == Kind::Cifar100 => ("fine_labels", kind),
        _ => ("labels", kind),
    };
    let missing = |name: &str| DataError::MissingArray {
        path: path.to_path_buf(),
        name: name.to_string(),
        available: match &root {
            Value::Dict(d) => d
                .borrow()
                .iter()
                .filter_map(|(k, _)| k.as_str().map(str::to_string))
                .collect(),
            _ => vec![],
        },
    };
    let data = field("data").ok_or_else(|| missing("data"))?;
    let arr = match &data {
        Value::Object(o) => match &*o.borrow() {
            Object::NdArray(a) => a.clone(),
            _ => return Err(DataError::corrupt(path, "data", "is not a NumPy array")),
        },
        _ => return Err(DataError::corrupt(path, "data", "is not a NumPy array")),
    };
    let dtype = arr.dtype.as_ref().map(|d| d.code.as_str()).unwrap_or("?");
    if dtype != "u1" {
        return Err(DataError::WrongDtype {
            path: path.to_path_buf(),
            field: "data".into(),
            found: dtype.to_string(),
            expected: "uint8".into(),
        });
    }
    let n = match arr.shape[..] {
        [n, PIXELS] if !arr.fortran => n,
        _ => {
            return Err(DataError::BadShape {
                path: path.to_path_buf(),
                field: "data".into(),
                shape: arr.shape.clone(),
                expected: "[N, 3072] in C order".into(),
            })
        }
    };
    let raw = arr
        .data
        .as_ref()
        .ok_or_else(|| DataError::corrupt(path, "data", "array elements are not raw bytes"))?;
    if n.checked_mul(PIXELS) != Some(raw.len()) {
        return Err(DataError::corrupt(
            path,
            "data",
            format!(
                "shape {:?} needs {} bytes but the array holds {}",
                arr.shape,
                n.saturating_mul(PIXELS),
                raw.len()
            ),
        ));
    }
    let lab = field(label_key).ok_or_else(|| missing(label_key))?;
    let lab: Vec<i128> = lab
        .items()
        .and_then(|l| l.iter().map(Value::as_int).collect())
        .ok_or_else(|| DataError::corrupt(path, label_key, "is not a list of integers"))?;
    if lab.len() != n {
        return Err(DataError::LengthMismatch {
            path: path.to_path_buf(),
            x_field: "data".into(),
            x_len: n,
            y_field: label_key.into(),
            y_len: lab.len(),
        });
    }
    pixels.extend_from_slice(raw);
    labels.extend(lab);
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CIFAR-10 batch as Python 2's cPickle wrote the real download: protocol 2,
    /// `SHORT_BINSTRING` keys, the pixels one `BINSTRING`, `numpy.core.multiarray._reconstruct`.
    fn py2_batch(n: usize, labels: &[u8], pixel_len: usize) -> Vec<u8> {
        let mut b = vec![0x80, 2, b'}', b'q', 1, b'('];
        b.extend(b"U\x04data");
        b.extend(b"cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00\x85U\x01b\x87R");
        b.extend(b"(K\x01");
        b.push(b'M');
        b.extend((n as u16).to_le_bytes());
        b.push(b'M');
        b.extend((PIXELS as u16).to_le_bytes());
        b.push(0x86);
        b.extend(b"cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb");
        b.push(0x89);
        b.push(b'T');
        b.extend((pixel_len as u32).to_le_bytes());
        b.extend((0..pixel_len).map(|i| (i % 251) as u8));
        b.extend(b"tb");
        b.extend(b"U\x06labels](");
        for &l in labels {
            b.extend([b'K', l]);
        }
        b.extend(b"eu.");
        b
    }

    #[test]
    fn python2_batch_reads_like_torchvision() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("data_batch_1");
        std::fs::write(&p, py2_batch(2, &[3, 9], 2 * PIXELS)).unwrap();
        let ds = load_file(&p).unwrap();
        assert_eq!(ds.x.shape(), &[2, 3, 32, 32]);
        assert_eq!(ds.y, vec![3, 9]);
        // pixel 1024 of sample 0 is the first green value: byte 1024
        assert_eq!(ds.x[[0, 1, 0, 0]], (1024 % 251) as f32 / 255.0);
        assert_eq!(
            ds.x[[1, 2, 31, 31]],
            ((2 * PIXELS - 1) % 251) as f32 / 255.0
        );
    }

    #[test]
    fn truncated_and_inconsistent_batches_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b");
        let good = py2_batch(2, &[3, 9], 2 * PIXELS);
        for n in (0..good.len()).step_by(97) {
            std::fs::write(&p, &good[..n]).unwrap();
            assert!(load_file(&p).is_err(), "prefix {n}");
        }
        std::fs::write(&p, py2_batch(2, &[3, 9], 2 * PIXELS - 5)).unwrap();
        assert!(matches!(load_file(&p), Err(DataError::Corrupt { .. })));
        std::fs::write(&p, py2_batch(2, &[3], 2 * PIXELS)).unwrap();
        assert!(matches!(
            load_file(&p),
            Err(DataError::LengthMismatch { .. })
        ));
        std::fs::write(&p, py2_batch(2, &[3, 10], 2 * PIXELS)).unwrap();
        assert!(matches!(
            load_file(&p),
            Err(DataError::LabelOutOfRange { .. })
        ));
        std::fs::write(&p, b"\x80\x02cos\nsystem\n.").unwrap();
        let e = load_file(&p).unwrap_err().to_string();
        assert!(e.contains("os.system"), "{e}");
    }

    #[test]
    fn torchvision_folder_both_splits() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/data");
        let (dir, kind) = find_dir(&root).unwrap();
        assert_eq!(kind, Kind::Cifar10);
        let train = load_dir(&dir, kind, Split::Train).unwrap();
        let test = load_dir(&dir, kind, Split::Test).unwrap();
        assert_eq!((train.len(), test.len(), train.num_classes), (20, 4, 10));
    }
}
