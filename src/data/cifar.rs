//! CIFAR-10 binary batches: records of 1 label byte and 3072 pixel bytes (1024 red, 1024
//! green, 1024 blue, each 32×32 row-major), giving `[N, 3, 32, 32]` scaled by 1/255.

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};

use super::{assemble, read_file, Classes, DataError, Dataset, Split};

const RECORD: usize = 1 + 3 * 32 * 32;
const TRAIN: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
const TEST: &str = "test_batch.bin";

/// The batches folder: `path` itself, or its `cifar-10-batches-bin` child.
pub(crate) fn find_dir(path: &Path) -> Option<PathBuf> {
    let holds = |d: &Path| d.join(TRAIN[0]).is_file() || d.join(TEST).is_file();
    if holds(path) {
        return Some(path.to_path_buf());
    }
    let child = path.join("cifar-10-batches-bin");
    holds(&child).then_some(child)
}

/// Appends the records of one batch file to `pixels` and `labels`.
fn read_batch(
    path: &Path,
    needed_by: Option<&Path>,
    pixels: &mut Vec<f32>,
    labels: &mut Vec<i128>,
) -> Result<(), DataError> {
    let bytes = read_file(path, needed_by)?;
    if bytes.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            field: "records".into(),
        });
    }
    if bytes.len() % RECORD != 0 {
        let whole = bytes.len() / RECORD;
        return Err(DataError::corrupt(
            path,
            format!("byte {} (record {whole})", whole * RECORD),
            format!(
                "{} bytes is not a whole number of {RECORD}-byte records",
                bytes.len()
            ),
        ));
    }
    pixels.reserve(bytes.len() / RECORD * (RECORD - 1));
    for (i, rec) in bytes.chunks_exact(RECORD).enumerate() {
        if rec[0] >= 10 {
            return Err(DataError::LabelOutOfRange {
                path: path.to_path_buf(),
                field: format!("label byte of record {i} (byte {})", i * RECORD),
                index: i,
                label: rec[0] as i128,
                limit: 10,
            });
        }
        labels.push(rec[0] as i128);
        pixels.extend(rec[1..].iter().map(|&b| b as f32 / 255.0));
    }
    Ok(())
}

fn build(
    path: &Path,
    name: String,
    pixels: Vec<f32>,
    labels: Vec<i128>,
) -> Result<Dataset, DataError> {
    let n = labels.len();
    let x = ArrayD::from_shape_vec(IxDyn(&[n, 3, 32, 32]), pixels).expect("whole records");
    assemble(
        path,
        name,
        ("pixels", x),
        ("labels", &labels),
        Classes::Fixed(10),
    )
}

/// Loads one split of a batches folder (all five training batches, or the test batch).
pub(crate) fn load_dir(dir: &Path, split: Split) -> Result<Dataset, DataError> {
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    match split {
        Split::Train => {
            for f in TRAIN {
                read_batch(&dir.join(f), Some(dir), &mut pixels, &mut labels)?;
            }
        }
        Split::Test => {
            let p = dir.join(TEST);
            if !p.exists() {
                return Err(DataError::NoTestSplit {
                    path: dir.to_path_buf(),
                    missing: TEST.into(),
                });
            }
            read_batch(&p, None, &mut pixels, &mut labels)?;
        }
    }
    build(dir, format!("{}[{split}]", dir.display()), pixels, labels)
}

/// Loads a single batch file.
pub(crate) fn load_file(path: &Path) -> Result<Dataset, DataError> {
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    read_batch(path, None, &mut pixels, &mut labels)?;
    build(path, path.display().to_string(), pixels, labels)
}
