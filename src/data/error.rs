//! Errors of the data loaders.

use std::path::PathBuf;

/// Why a dataset could not be loaded. Every message names the file (or the bundled set,
/// shown as `<bundled NAME>`), the array or byte offset concerned, and how to fix it.
#[non_exhaustive]
#[derive(thiserror::Error, Debug)]
pub enum DataError {
    /// Occurs when the spec is not a bundled name and no file or folder exists at that path,
    /// or when a file that the format needs next to it (labels, CIFAR batches) is missing.
    #[error(
        "data file `{}` not found{}; pass a bundled name (digits, mnist1d) or an existing \
         .npz, .npy, MNIST idx file or CIFAR-10 binary folder",
        path.display(),
        needed_by.as_ref().map(|p| format!(" (needed by `{}`)", p.display())).unwrap_or_default()
    )]
    NotFound {
        path: PathBuf,
        /// The file whose loading needed `path`, when `path` is a sibling.
        needed_by: Option<PathBuf>,
    },

    /// Occurs when a file exists but reading it fails (permissions, I/O error).
    #[error("cannot read `{}`: {source}; check the file's permissions", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Occurs when the path exists but its name or contents match none of the known formats.
    #[error(
        "cannot tell the data format of `{}`: {reason}; expected a .npz (arrays x, y), \
         an x .npy with a sibling y .npy, an MNIST *-images-idx3-ubyte[.gz] file or folder, \
         or a CIFAR-10 binary folder (cifar-10-batches-bin)",
        path.display()
    )]
    UnknownFormat { path: PathBuf, reason: String },

    /// Occurs when a file is truncated or corrupt: bad magic number, bad zip structure or
    /// checksum, malformed `.npy` header, or a byte count that does not match the header.
    #[error(
        "`{}` is corrupt or truncated ({field}): {reason}; re-download or re-export the file",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        /// The array name or byte offset where the problem was found.
        field: String,
        reason: String,
    },

    /// Occurs when a `.npz` archive lacks a required array (`x`, `y`, or `y_test` when
    /// `x_test` is present).
    #[error(
        "`{}` has no array '{name}' (it holds: {}); save it with np.savez(path, x=..., y=..., \
         x_test=..., y_test=...)",
        path.display(),
        if available.is_empty() { "nothing".to_string() } else { available.join(", ") }
    )]
    MissingArray {
        path: PathBuf,
        name: String,
        available: Vec<String>,
    },

    /// Occurs when an array's element type is not supported for its role (inputs must be
    /// float32, float64 or uint8; labels any integer type).
    #[error(
        "`{}`: array '{field}' has dtype {found}, expected {expected}; convert it, e.g. \
         x.astype(np.float32) or y.astype(np.int64)",
        path.display()
    )]
    WrongDtype {
        path: PathBuf,
        field: String,
        found: String,
        expected: String,
    },

    /// Occurs when an array has the wrong number of dimensions or an unusable shape.
    #[error(
        "`{}`: array '{field}' has shape {shape:?}, expected {expected}; reshape it before saving",
        path.display()
    )]
    BadShape {
        path: PathBuf,
        field: String,
        shape: Vec<usize>,
        expected: String,
    },

    /// Occurs when the inputs and labels hold different numbers of samples.
    #[error(
        "`{}`: '{x_field}' has {x_len} samples but '{y_field}' has {y_len}; \
         save inputs and labels with the same first dimension",
        path.display()
    )]
    LengthMismatch {
        path: PathBuf,
        x_field: String,
        x_len: usize,
        y_field: String,
        y_len: usize,
    },

    /// Occurs when the selected split holds no samples, or a sample has no elements.
    #[error("`{}`: array '{field}' is empty; the dataset needs at least one sample", path.display())]
    Empty { path: PathBuf, field: String },

    /// Occurs when a label is negative, too large (at least `limit`), or not below the fixed
    /// class count of a named format (10 for MNIST and CIFAR-10).
    #[error(
        "`{}`: label {label} of '{field}' at index {index} is out of range (labels must lie \
         in 0..{limit}); relabel the classes as 0, 1, 2, …",
        path.display()
    )]
    LabelOutOfRange {
        path: PathBuf,
        field: String,
        index: usize,
        label: i128,
        limit: usize,
    },

    /// Occurs when an input is NaN or infinite.
    #[error(
        "`{}`: array '{field}' holds a non-finite value ({value}) at sample {sample} \
         (flat element {index}); clean or drop that sample",
        path.display()
    )]
    NonFinite {
        path: PathBuf,
        field: String,
        /// Flat (row-major) index of the first non-finite element.
        index: usize,
        /// Sample that holds it.
        sample: usize,
        value: f64,
    },

    /// Occurs when `samples` is 0 or larger than the split.
    #[error(
        "`samples` {requested} is invalid for `{dataset}`, which has {available} samples; \
         pass a value in 1..={available} or leave `samples` out"
    )]
    InvalidSamples {
        dataset: String,
        requested: usize,
        available: usize,
    },

    /// Occurs when the test split is requested from a file that has none (no `x_test` in a
    /// `.npz`, no t10k files in an MNIST folder, no test_batch.bin in a CIFAR folder).
    #[error(
        "`{}` has no test split ({missing} is missing); use `split` train, or add the test data",
        path.display()
    )]
    NoTestSplit { path: PathBuf, missing: String },

    /// Occurs when 4-D inputs could be NCHW or NHWC (both axis 1 and axis 3 look like channels).
    #[error(
        "`{dataset}`: inputs of shape {shape:?} could be NCHW or NHWC; pass `layout` nchw or nhwc"
    )]
    AmbiguousLayout { dataset: String, shape: Vec<usize> },

    /// Occurs when a split name is neither `train` nor `test`.
    #[error("unknown split `{given}`; expected `train` or `test`")]
    UnknownSplit { given: String },

    /// Occurs when a class folder of an image folder holds no image files.
    #[error(
        "class folder `{}` holds no image files ({extensions}, any case); add images or \
         remove the folder (every subfolder of an image folder is a class, as in \
         torchvision's ImageFolder)",
        dir.display()
    )]
    EmptyClass { dir: PathBuf, extensions: String },

    /// Occurs when the images of an image folder differ in size and no resize was asked for.
    #[error(
        "images differ in size: `{}` is {}×{}, `{}` is {}×{} (width×height); pass --resize N \
         to resize every image to N×N",
        first.display(), first_size.0, first_size.1, path.display(), size.0, size.1
    )]
    ImageSizeMismatch {
        first: PathBuf,
        first_size: (u32, u32),
        path: PathBuf,
        size: (u32, u32),
    },

    /// Occurs when an image's header claims more pixels than its file size allows
    /// (see [`crate::data::image_folder::pixel_limit`]).
    #[error(
        "`{}` claims {width}×{height} pixels, more than the {limit} allowed for a file of \
         {bytes} bytes; the header is corrupt, or shrink the image before loading it",
        path.display()
    )]
    TooManyPixels {
        path: PathBuf,
        width: u32,
        height: u32,
        limit: u64,
        bytes: u64,
    },

    /// Occurs when the resize side is 0 or too large.
    #[error("resize {given} is invalid; pass a side in 1..={max} pixels")]
    InvalidResize { given: u32, max: u32 },

    /// Occurs when a resize is asked for data that is not an image folder.
    #[error(
        "`{dataset}` is not an image folder; resize applies only to folders of PNG/JPEG \
         images (one subfolder per class): leave --resize out"
    )]
    ResizeNeedsImages { dataset: String },

    /// Occurs when the decoded dataset does not fit in memory.
    #[error(
        "`{}`: {elements} input values do not fit in memory; load fewer images or pass a \
         smaller --resize",
        path.display()
    )]
    TooLarge { path: PathBuf, elements: u64 },

    /// Occurs when normalization statistics are malformed or do not fit the data: unparsable
    /// numbers, a non-positive or non-finite std, or a channel count that differs from the
    /// data's dimension 1.
    #[error("invalid normalization `{spec}`: {reason}; write it as a preset (cifar10, cifar100, mnist, imagenet) or MEAN,…/STD,… with one value or one per channel, std > 0")]
    InvalidNormalize { spec: String, reason: String },
}

impl DataError {
    pub(crate) fn corrupt(
        path: &std::path::Path,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        DataError::Corrupt {
            path: path.to_path_buf(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::NotFound {
                path: path.to_path_buf(),
                needed_by: None,
            }
        } else {
            DataError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}
