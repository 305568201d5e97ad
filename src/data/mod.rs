//! Labelled classification datasets, loaded into memory as `f32` inputs and class labels.
//!
//! [`load`] takes a *spec*, which is a bundled name or a path:
//!
//! | spec | format |
//! |------|--------|
//! | `digits`, `mnist1d` | bundled `.npz` sets, built into the binary (checked before paths) |
//! | `*.npz` | arrays `x`, `y`; optional `x_test`, `y_test` (the split picks one pair) |
//! | `*.npy` | inputs; labels in the sibling file whose name swaps the `x` token for `y` (`x.npy`→`y.npy`, `x_train.npy`→`y_train.npy`, `train_x.npy`→`train_y.npy`) |
//! | `*-images-idx3-ubyte[.gz]` | MNIST idx images; labels in the sibling `*-labels-idx1-ubyte[.gz]` |
//! | folder with `train-`/`t10k-images-idx3-ubyte[.gz]` | MNIST; the split picks the prefix |
//! | folder `cifar-10-batches-bin` (or its parent) | CIFAR-10 binary: `data_batch_1..5.bin` (train) or `test_batch.bin` (test) |
//! | `*.bin` | one CIFAR-10 binary batch |
//! | folder `cifar-10-batches-py` / `cifar-100-python` (or its parent) | torchvision's CIFAR-10 / CIFAR-100 python pickles: `data_batch_1..5` / `train` (train), `test_batch` / `test` (test); fine labels for CIFAR-100 |
//! | a pickle file (`data_batch_1`, …) | one CIFAR python batch |
//! | `*.h5`, `*.hdf5` | datasets `x`, `y` (test split: `x_test`, `y_test`), or as [`DataFormat::keys`] names them |
//! | any other folder with subfolders | torchvision `ImageFolder`: one subfolder per class (sorted names are the labels) of `.png`/`.jpg`/`.jpeg` files, as `[N, 3, H, W]` RGB in `[0, 1]`; one size, or [`DataFormat::resize`] (see [`image_folder`]) |
//!
//! 4-D inputs stored NHWC (`[N, 32, 32, 3]`, torchvision's `CIFAR10.data`) are detected and
//! transposed to NCHW; [`DataFormat::layout`] decides where the shape cannot.
//!
//! The split option applies to `.npz` files and MNIST/CIFAR folders; a single `.npy`, idx or
//! `.bin` file, or an image folder, *is* the data it holds, whatever the split.
//!
//! **Layout.** Inputs are sample-major like PyTorch: `[N, C, H, W]` for images (MNIST
//! `[N, 1, 28, 28]`, CIFAR-10 `[N, 3, 32, 32]`), `[N, F]` for vectors; `.npz`/`.npy` inputs
//! keep their stored shape (at least two dimensions). Inputs may be float32, float64 or
//! uint8; uint8 (and idx/CIFAR bytes) are scaled by 1/255. Labels may be any integer type
//! and must lie in `0..num_classes`; `num_classes` is 10 for MNIST and CIFAR-10, and
//! otherwise the largest label in the file (over both splits of a `.npz`) plus one.
//!
//! After loading, [`DataOptions::samples`] keeps a deterministic subset (see
//! [`Dataset::random_subset`]) and [`DataOptions::normalize`] standardizes each channel.
//!
//! **Errors.** Every failure is a [`DataError`] naming the file, the array or byte offset, and
//! the fix. Loaders never panic on bad input and check header sizes against the bytes actually
//! present before allocating.

mod bundled;
mod cifar;
pub(crate) mod cifar_py;
mod error;
mod h5;
mod idx;
pub mod image_folder;
mod npy;
mod npz;
pub(crate) mod zip;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn};
use rand::seq::SliceRandom;
use rand::SeedableRng;

pub use bundled::BUNDLED;
pub use error::DataError;

/// Seed of the permutation behind [`DataOptions::samples`].
pub const SAMPLE_SEED: u64 = 0;

/// Largest accepted label plus one for formats whose class count is inferred.
pub const MAX_CLASSES: usize = 1 << 16;

/// A labelled classification dataset held in memory.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Bundled name with split (`digits[train]`) or the path (with split where it chose).
    pub name: String,
    /// Inputs, sample-major like PyTorch: `[N, C, H, W]` for images, `[N, F]` for vectors.
    pub x: ArrayD<f32>,
    /// Labels in `0..num_classes`.
    pub y: Vec<usize>,
    pub num_classes: usize,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// Shape of one sample (`x`'s shape without the leading `N`).
    pub fn sample_shape(&self) -> &[usize] {
        &self.x.shape()[1..]
    }

    /// The samples at `indices`, in that order (same name and class count).
    ///
    /// # Panics
    /// If an index is `>= self.len()`.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        Dataset {
            name: self.name.clone(),
            x: self.x.select(Axis(0), indices),
            y: indices.iter().map(|&i| self.y[i]).collect(),
            num_classes: self.num_classes,
        }
    }

    /// `n` samples chosen deterministically: the first `n` entries of a ChaCha8 permutation
    /// seeded with `seed`, sorted ascending so that the file's order is kept.
    ///
    /// Errors with [`DataError::InvalidSamples`] when `n == 0` or `n > len`.
    pub fn random_subset(&self, n: usize, seed: u64) -> Result<Dataset, DataError> {
        if n == 0 || n > self.len() {
            return Err(DataError::InvalidSamples {
                dataset: self.name.clone(),
                requested: n,
                available: self.len(),
            });
        }
        let mut idx: Vec<usize> = (0..self.len()).collect();
        idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        idx.truncate(n);
        idx.sort_unstable();
        Ok(self.subset(&idx))
    }

    /// Applies `(x - mean[c]) / std[c]` along dimension 1 (channels, or features of `[N, F]`).
    pub fn normalize(&mut self, norm: &Normalize) -> Result<(), DataError> {
        if self.x.ndim() < 2 {
            return Err(DataError::InvalidNormalize {
                spec: norm.to_string(),
                reason: format!(
                    "inputs of shape {:?} have no channel dimension",
                    self.x.shape()
                ),
            });
        }
        let (mean, std) = norm.per_channel(self.x.shape()[1])?;
        for (c, mut lane) in self.x.axis_iter_mut(Axis(1)).enumerate() {
            let (m, s) = (mean[c], std[c]);
            lane.mapv_inplace(|v| (v - m) / s);
        }
        Ok(())
    }

    /// Number of samples of each class, indexed by label.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes];
        for &l in &self.y {
            counts[l] += 1;
        }
        counts
    }

    /// Consecutive mini-batches of at most `batch_size` samples, in order, as views.
    ///
    /// # Panics
    /// If `batch_size == 0`.
    pub fn batches(
        &self,
        batch_size: usize,
    ) -> impl Iterator<Item = (ArrayViewD<'_, f32>, &[usize])> + '_ {
        assert!(batch_size > 0, "batch size must be positive");
        self.x
            .axis_chunks_iter(Axis(0), batch_size)
            .zip(self.y.chunks(batch_size))
    }
}

/// Which part of a dataset to load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Split {
    #[default]
    Train,
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = DataError;

    /// `train` or `test`, case-insensitive.
    fn from_str(s: &str) -> Result<Self, DataError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" => Ok(Split::Train),
            "test" => Ok(Split::Test),
            _ => Err(DataError::UnknownSplit {
                given: s.to_string(),
            }),
        }
    }
}

/// Per-channel standardization statistics.
///
/// Parsed from `MEAN/STD`, each a comma-separated list with one value per channel (dimension
/// 1 of `x`) or a single value for all channels: `"0.4914,0.4822,0.4465/0.247,0.243,0.261"`
/// or `"0.5/0.25"`; or a preset name from [`NORMALIZE_PRESETS`] (`cifar10`, `cifar100`,
/// `mnist`, `imagenet`).
#[derive(Clone, Debug, PartialEq)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// The preset it came from, if any.
    pub preset: Option<&'static str>,
}

/// Normalization presets: name, per-channel means, per-channel stds.
/// - `cifar10`: loss-landscape's (`cifar10/dataloader.py`: mean (125.3, 123.0, 113.9)/255,
///   std (63.0, 62.1, 66.7)/255);
/// - `cifar100`: the training-set statistics used across CIFAR-100 repositories;
/// - `mnist`: torchvision's example (0.1307 / 0.3081);
/// - `imagenet`: torchvision's pretrained models.
pub const NORMALIZE_PRESETS: [(&str, &[f32], &[f32]); 4] = [
    (
        "cifar10",
        &[125.3 / 255.0, 123.0 / 255.0, 113.9 / 255.0],
        &[63.0 / 255.0, 62.1 / 255.0, 66.7 / 255.0],
    ),
    (
        "cifar100",
        &[0.5071, 0.4865, 0.4409],
        &[0.2673, 0.2564, 0.2762],
    ),
    ("mnist", &[0.1307], &[0.3081]),
    ("imagenet", &[0.485, 0.456, 0.406], &[0.229, 0.224, 0.225]),
];

impl Normalize {
    /// Checks that both lists are non-empty, of equal length (or one of length 1), finite,
    /// and that every std is positive.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Self, DataError> {
        let n = Normalize {
            mean,
            std,
            preset: None,
        };
        let bad = |reason: String| DataError::InvalidNormalize {
            spec: n.to_string(),
            reason,
        };
        if n.mean.is_empty() || n.std.is_empty() {
            return Err(bad("mean and std need at least one value each".into()));
        }
        if n.mean.len() != n.std.len() && n.mean.len() != 1 && n.std.len() != 1 {
            return Err(bad(format!(
                "{} means but {} stds",
                n.mean.len(),
                n.std.len()
            )));
        }
        if let Some(m) = n.mean.iter().find(|m| !m.is_finite()) {
            return Err(bad(format!("mean {m} is not finite")));
        }
        if let Some(s) = n.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(bad(format!("std {s} is not a positive finite number")));
        }
        Ok(n)
    }

    /// Mean and std expanded to `channels` values.
    fn per_channel(&self, channels: usize) -> Result<(Vec<f32>, Vec<f32>), DataError> {
        let expand = |v: &[f32]| -> Option<Vec<f32>> {
            match v.len() {
                1 => Some(vec![v[0]; channels]),
                n if n == channels => Some(v.to_vec()),
                _ => None,
            }
        };
        match (expand(&self.mean), expand(&self.std)) {
            (Some(m), Some(s)) => Ok((m, s)),
            _ => Err(DataError::InvalidNormalize {
                spec: self.to_string(),
                reason: format!(
                    "the data has {channels} channels (dimension 1) but mean has {} and std {} values",
                    self.mean.len(),
                    self.std.len()
                ),
            }),
        }
    }
}

impl Normalize {
    /// The preset's name and values, or the values: what output files record
    /// (`cifar10 = 0.4913,…/0.2470,…`).
    pub fn describe(&self) -> String {
        let join = |v: &[f32]| v.iter().map(f32::to_string).collect::<Vec<_>>().join(",");
        let values = format!("{}/{}", join(&self.mean), join(&self.std));
        match self.preset {
            Some(p) => format!("{p} = {values}"),
            None => values,
        }
    }
}

impl std::fmt::Display for Normalize {
    /// The preset's name, else `MEAN/STD` (both parse back).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(p) = self.preset {
            return f.write_str(p);
        }
        let join = |v: &[f32]| v.iter().map(f32::to_string).collect::<Vec<_>>().join(",");
        write!(f, "{}/{}", join(&self.mean), join(&self.std))
    }
}

impl FromStr for Normalize {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, DataError> {
        let bad = |reason: &str| DataError::InvalidNormalize {
            spec: s.to_string(),
            reason: reason.to_string(),
        };
        let name = s.trim().to_ascii_lowercase();
        if let Some((p, m, d)) = NORMALIZE_PRESETS.iter().find(|(p, _, _)| *p == name) {
            let mut n = Normalize::new(m.to_vec(), d.to_vec())?;
            n.preset = Some(p);
            return Ok(n);
        }
        let (m, d) = s.split_once('/').ok_or_else(|| {
            bad("neither a preset (cifar10, cifar100, mnist, imagenet) nor MEAN/STD with a `/`")
        })?;
        let list = |t: &str| -> Result<Vec<f32>, DataError> {
            t.split(',')
                .map(|v| {
                    v.trim()
                        .parse::<f32>()
                        .map_err(|_| bad(&format!("`{}` is not a number", v.trim())))
                })
                .collect()
        };
        Normalize::new(list(m)?, list(d)?)
    }
}

/// How to load: split, subset size, normalization.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DataOptions {
    pub split: Split,
    /// Keep this many samples (deterministic, see [`Dataset::random_subset`] with
    /// [`SAMPLE_SEED`]).
    pub samples: Option<usize>,
    /// Standardize each channel after subsetting.
    pub normalize: Option<Normalize>,
}

/// Layout of 4-D image inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageLayout {
    /// `[N, C, H, W]` (PyTorch).
    Nchw,
    /// `[N, H, W, C]` (NumPy/TensorFlow, torchvision's `CIFAR10.data`).
    Nhwc,
}

impl FromStr for ImageLayout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "nchw" => Ok(ImageLayout::Nchw),
            "nhwc" => Ok(ImageLayout::Nhwc),
            _ => Err(format!("unknown layout `{s}`; expected nchw or nhwc")),
        }
    }
}

/// How to read files whose layout or array names are not self-evident.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DataFormat {
    /// Layout of 4-D inputs; `None`: detected — NHWC when the last axis has 1, 3 or 4
    /// entries and axis 1 does not, NCHW otherwise; both looking like channels is an error.
    pub layout: Option<ImageLayout>,
    /// Names of the inputs and labels datasets of an HDF5 file (default `x`/`y`, and
    /// `x_test`/`y_test` for the test split).
    pub keys: Option<(String, String)>,
    /// Resize every image of an image folder to `N×N` (bilinear; see [`image_folder`]).
    /// Other formats reject it.
    pub resize: Option<u32>,
}

/// Loads the dataset named by `spec` (a bundled name or a path; see the module docs), then
/// applies `opts.samples` and `opts.normalize`.
pub fn load(spec: &str, opts: &DataOptions) -> Result<Dataset, DataError> {
    load_with(spec, opts, &DataFormat::default())
}

/// [`load`] with a layout and HDF5 dataset names ([`DataFormat`]); 4-D NHWC inputs are
/// transposed to NCHW before subsetting and normalization.
pub fn load_with(
    spec: &str,
    opts: &DataOptions,
    format: &DataFormat,
) -> Result<Dataset, DataError> {
    let (mut ds, arrays) = match bundled::bytes(spec) {
        Some(_) if format.resize.is_some() => {
            return Err(DataError::ResizeNeedsImages {
                dataset: spec.to_string(),
            })
        }
        Some(bytes) => {
            let path = PathBuf::from(format!("<bundled {spec}>"));
            let mut ds = npz::from_npz_bytes(bytes, &path, opts.split)?;
            ds.name = format!("{spec}[{}]", opts.split);
            (ds, false)
        }
        None => {
            let path = Path::new(spec);
            (
                load_path(path, opts.split, format)?,
                holds_plain_arrays(path),
            )
        }
    };
    // only plain arrays (npz, npy, HDF5) can be NHWC; idx, CIFAR and image folders fix
    // their layout (image folders are decoded straight to NCHW, `layout` is for arrays)
    let image_dir = !arrays && bundled::bytes(spec).is_none() && is_image_dir(Path::new(spec));
    if arrays || (format.layout.is_some() && !image_dir) {
        to_nchw(&mut ds, format.layout)?;
    }
    if let Some(n) = opts.samples {
        ds = ds.random_subset(n, SAMPLE_SEED)?;
    }
    if let Some(norm) = &opts.normalize {
        ds.normalize(norm)?;
    }
    Ok(ds)
}

/// Transposes 4-D NHWC inputs (given, or detected) to NCHW.
fn to_nchw(ds: &mut Dataset, layout: Option<ImageLayout>) -> Result<(), DataError> {
    if ds.x.ndim() != 4 {
        return Ok(());
    }
    let s = ds.x.shape().to_vec();
    let chan = |d: usize| matches!(d, 1 | 3 | 4);
    let layout = match layout {
        Some(l) => l,
        None if chan(s[1]) && chan(s[3]) => {
            return Err(DataError::AmbiguousLayout {
                dataset: ds.name.clone(),
                shape: s,
            })
        }
        None if chan(s[3]) => ImageLayout::Nhwc,
        None => ImageLayout::Nchw,
    };
    if layout == ImageLayout::Nhwc {
        ds.x =
            ds.x.view()
                .permuted_axes(IxDyn(&[0, 3, 1, 2]))
                .as_standard_layout()
                .into_owned();
    }
    Ok(())
}

/// Whether the file at `path` (already read by [`load_path`]) is a plain array file — npz,
/// npy or HDF5 — whose image layout is not fixed by its format.
fn holds_plain_arrays(path: &Path) -> bool {
    if path.is_dir() {
        return false;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if [".h5", ".hdf5", ".npz", ".npy"]
        .iter()
        .any(|e| name.ends_with(e))
    {
        return true;
    }
    let base = name.strip_suffix(".gz").unwrap_or(&name);
    if base.contains("idx3") || name.ends_with(".bin") {
        return false;
    }
    let mut head = [0u8; 6];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    matches!(&head[..n], [b'P', b'K', 3, 4, ..] | [b'P', b'K', 5, 6, ..])
        || &head[..n] == b"\x93NUMPY"
}

/// Whether `path` is a folder that [`load_path`] reads as an image folder.
fn is_image_dir(path: &Path) -> bool {
    path.is_dir()
        && cifar::find_dir(path).is_none()
        && cifar_py::find_dir(path).is_none()
        && !idx::is_mnist_dir(path)
        && image_folder::is_image_folder(path)
}

/// Dispatches on a path's kind, name and first bytes.
fn load_path(path: &Path, split: Split, format: &DataFormat) -> Result<Dataset, DataError> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    if format.resize.is_some() && !is_image_dir(path) {
        return Err(DataError::ResizeNeedsImages {
            dataset: path.display().to_string(),
        });
    }
    if meta.is_dir() {
        if let Some(dir) = cifar::find_dir(path) {
            return cifar::load_dir(&dir, split);
        }
        if let Some((dir, kind)) = cifar_py::find_dir(path) {
            return cifar_py::load_dir(&dir, kind, split);
        }
        if idx::is_mnist_dir(path) {
            return idx::load_dir(path, split);
        }
        if image_folder::is_image_folder(path) {
            return image_folder::load(path, format.resize);
        }
        return Err(DataError::UnknownFormat {
            path: path.to_path_buf(),
            reason: "the folder holds neither CIFAR-10 batches, MNIST idx files nor class \
                     subfolders of images"
                .into(),
        });
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let base = name.strip_suffix(".gz").unwrap_or(&name);
    if name.ends_with(".h5") || name.ends_with(".hdf5") {
        h5::load(path, split, format.keys.as_ref())
    } else if name.ends_with(".npz") {
        npz::load_npz(path, split)
    } else if name.ends_with(".npy") {
        npz::load_npy_pair(path)
    } else if base.contains("idx3") {
        idx::load_file(path)
    } else if base.contains("idx1") {
        Err(DataError::UnknownFormat {
            path: path.to_path_buf(),
            reason: "this is an MNIST labels file; pass the images file (*-images-idx3-ubyte)"
                .into(),
        })
    } else if name.ends_with(".bin") {
        cifar::load_file(path)
    } else {
        let mut head = [0u8; 6];
        let n = {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
            f.read(&mut head).map_err(|e| DataError::io(path, e))?
        };
        match &head[..n] {
            [b'P', b'K', 3, 4, ..] | [b'P', b'K', 5, 6, ..] => npz::load_npz(path, split),
            b"\x93NUMPY" => npz::load_npy_pair(path),
            [0x80, 2..=5, ..] => cifar_py::load_file(path),
            _ => Err(DataError::UnknownFormat {
                path: path.to_path_buf(),
                reason: "unrecognised file name and contents".into(),
            }),
        }
    }
}

/// Reads a whole file, mapping errors to [`DataError`].
pub(crate) fn read_file(path: &Path, needed_by: Option<&Path>) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|e| match DataError::io(path, e) {
        DataError::NotFound { path, .. } => DataError::NotFound {
            path,
            needed_by: needed_by.map(Path::to_path_buf),
        },
        other => other,
    })
}

/// How `num_classes` is decided.
pub(crate) enum Classes<'a> {
    /// A fixed count; every label must be below it.
    Fixed(usize),
    /// Largest label plus one over these extra label arrays (already range-checked) and `y`.
    Inferred(&'a [&'a [usize]]),
}

/// Range-checks raw labels: `0 <= label < limit`.
pub(crate) fn check_labels(
    path: &Path,
    field: &str,
    raw: &[i128],
    limit: usize,
) -> Result<Vec<usize>, DataError> {
    raw.iter()
        .enumerate()
        .map(|(index, &l)| {
            usize::try_from(l)
                .ok()
                .filter(|&u| u < limit)
                .ok_or_else(|| DataError::LabelOutOfRange {
                    path: path.to_path_buf(),
                    field: field.to_string(),
                    index,
                    label: l,
                    limit,
                })
        })
        .collect()
}

/// Validates inputs against labels and builds the dataset: `x` has at least two dimensions and
/// non-empty samples, lengths agree, labels are in range, inputs are finite.
pub(crate) fn assemble(
    path: &Path,
    name: String,
    (x_field, x): (&str, ArrayD<f32>),
    (y_field, y): (&str, &[i128]),
    classes: Classes<'_>,
) -> Result<Dataset, DataError> {
    if x.ndim() < 2 {
        return Err(DataError::BadShape {
            path: path.to_path_buf(),
            field: x_field.to_string(),
            shape: x.shape().to_vec(),
            expected: "[N, features] or [N, C, H, W]".into(),
        });
    }
    if x.shape()[0] != y.len() {
        return Err(DataError::LengthMismatch {
            path: path.to_path_buf(),
            x_field: x_field.to_string(),
            x_len: x.shape()[0],
            y_field: y_field.to_string(),
            y_len: y.len(),
        });
    }
    if x.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            field: x_field.to_string(),
        });
    }
    let (y, num_classes) = match classes {
        Classes::Fixed(n) => (check_labels(path, y_field, y, n)?, n),
        Classes::Inferred(others) => {
            let y = check_labels(path, y_field, y, MAX_CLASSES)?;
            let max = others.iter().copied().chain([&y[..]]).flatten().max();
            let n = max.map_or(0, |m| m + 1);
            (y, n)
        }
    };
    if let Some((index, &value)) = x.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        let per_sample = x.len() / x.shape()[0];
        return Err(DataError::NonFinite {
            path: path.to_path_buf(),
            field: x_field.to_string(),
            index,
            sample: index / per_sample,
            value: value as f64,
        });
    }
    Ok(Dataset {
        name,
        x,
        y,
        num_classes,
    })
}

#[cfg(test)]
mod tests;
