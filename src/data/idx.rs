//! MNIST idx files (`*-images-idx3-ubyte` with `*-labels-idx1-ubyte`, optionally `.gz`).
//!
//! Layout: magic `00 00 08 NDIM`, NDIM big-endian `u32` sizes, then unsigned bytes.

use std::io::Read;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};

use super::{assemble, read_file, Classes, DataError, Dataset, Split};

/// Reads an idx file of `ndim` dimensions: its sizes and data bytes.
///
/// The data is read through `take(expected + 1)` into a growing buffer, so neither a lying
/// header nor a gzip bomb can allocate more than the stream actually yields up to the size
/// the header claims.
fn read_idx(
    path: &Path,
    ndim: u8,
    needed_by: Option<&Path>,
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let file = read_file(path, needed_by)?;
    let gz = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    let mut reader: Box<dyn Read + '_> = if gz {
        Box::new(flate2::read::GzDecoder::new(&file[..]))
    } else {
        Box::new(&file[..])
    };
    let io_err = |at: &str, e: std::io::Error| {
        let what = if gz {
            "gzip stream damaged or cut off"
        } else {
            "file cut off"
        };
        DataError::corrupt(path, at, format!("{what}: {e}"))
    };
    let mut magic = [0u8; 4];
    reader
        .read_exact(&mut magic)
        .map_err(|e| io_err("byte 0 (magic)", e))?;
    if magic[..2] != [0, 0] {
        return Err(DataError::corrupt(
            path,
            "byte 0 (magic)",
            format!("bad idx magic {magic:02x?}; expected 00 00 08 {ndim:02x}"),
        ));
    }
    if magic[2] != 0x08 {
        return Err(DataError::WrongDtype {
            path: path.to_path_buf(),
            field: "byte 2 (idx type code)".into(),
            found: format!("type code {:#04x}", magic[2]),
            expected: "0x08 (unsigned byte)".into(),
        });
    }
    if magic[3] != ndim {
        return Err(DataError::corrupt(
            path,
            "byte 3 (idx dimension count)",
            format!("{} dimensions, expected {ndim}", magic[3]),
        ));
    }
    let mut dims = Vec::with_capacity(ndim as usize);
    for d in 0..ndim as usize {
        let mut b = [0u8; 4];
        reader
            .read_exact(&mut b)
            .map_err(|e| io_err(&format!("byte {} (size {d})", 4 + 4 * d), e))?;
        dims.push(u32::from_be_bytes(b) as usize);
    }
    let header = 4 + 4 * ndim as usize;
    let expected = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| DataError::corrupt(path, "header", format!("sizes {dims:?} overflow")))?;
    let mut data = Vec::new();
    reader
        .take((expected as u64).saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|e| io_err(&format!("byte {header} (data)"), e))?;
    if data.len() != expected {
        return Err(DataError::corrupt(
            path,
            format!("byte {header} (data)"),
            format!(
                "header sizes {dims:?} need {expected} data bytes but the file {} {}",
                if data.len() > expected {
                    "holds more than"
                } else {
                    "holds only"
                },
                data.len().min(expected)
            ),
        ));
    }
    Ok((dims, data))
}

/// Candidate labels files for an images file, same compression first.
fn label_candidates(images: &Path) -> Vec<PathBuf> {
    let Some(name) = images.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    let labels = name.replace("images", "labels").replace("idx3", "idx1");
    let other = match labels.strip_suffix(".gz") {
        Some(raw) => raw.to_string(),
        None => format!("{labels}.gz"),
    };
    vec![images.with_file_name(labels), images.with_file_name(other)]
}

/// Loads an images file and its sibling labels file: `[N, 1, H, W]`, scaled by 1/255.
pub(crate) fn load_file(images: &Path) -> Result<Dataset, DataError> {
    let candidates = label_candidates(images);
    let labels = candidates
        .iter()
        .find(|p| p.is_file())
        .or(candidates.first())
        .cloned()
        .unwrap_or_else(|| images.with_file_name("labels-idx1-ubyte"));
    let (_, lbytes) = read_idx(&labels, 1, Some(images))?;
    let (dims, bytes) = read_idx(images, 3, None)?;
    let shape = [dims[0], 1, dims[1], dims[2]];
    let x = ArrayD::from_shape_vec(
        IxDyn(&shape),
        bytes.iter().map(|&b| b as f32 / 255.0).collect(),
    )
    .expect("size checked in read_idx");
    drop(bytes);
    let y: Vec<i128> = lbytes.iter().map(|&b| b as i128).collect();
    let (xf, yf) = (images.display().to_string(), labels.display().to_string());
    assemble(images, xf.clone(), (&xf, x), (&yf, &y), Classes::Fixed(10))
}

/// The images file of `split` in an MNIST folder (`train-…` or `t10k-…`).
fn find_images(dir: &Path, split: Split) -> Option<PathBuf> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .map(|n| n.to_ascii_lowercase())
                .is_some_and(|n| {
                    n.starts_with(prefix) && n.contains("images") && n.contains("idx3")
                })
        })
        .collect();
    found.sort(); // uncompressed before `.gz`, deterministically
    found.into_iter().next()
}

/// Whether `dir` holds MNIST images files.
pub(crate) fn is_mnist_dir(dir: &Path) -> bool {
    find_images(dir, Split::Train).is_some() || find_images(dir, Split::Test).is_some()
}

/// Loads one split from an MNIST folder.
pub(crate) fn load_dir(dir: &Path, split: Split) -> Result<Dataset, DataError> {
    let images = find_images(dir, split).ok_or_else(|| match split {
        Split::Test => DataError::NoTestSplit {
            path: dir.to_path_buf(),
            missing: "t10k-images-idx3-ubyte[.gz]".into(),
        },
        Split::Train => DataError::NotFound {
            path: dir.join("train-images-idx3-ubyte"),
            needed_by: None,
        },
    })?;
    let mut ds = load_file(&images)?;
    ds.name = format!("{}[{split}]", dir.display());
    Ok(ds)
}
