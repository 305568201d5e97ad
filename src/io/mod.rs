//! HDF5 files: surfaces (readable by loss-landscape's scripts), directions and Hessian
//! results; and [`output`], through which every output file is written (kind checks,
//! atomic replacement, locks, clean-up of stale temporary files).
//!
//! **Global state (documented):** before the first HDF5 call, [`hdf5_init`] sets
//! `HDF5_USE_FILE_LOCKING=FALSE` unless the user set it. Every file here is written whole
//! to a temporary sibling and renamed into place, and never opened for writing in place,
//! so HDF5's advisory locks protect nothing here; they only make readers fail with
//! "unable to lock file" on network filesystems, or while another process (or a test)
//! still holds a handle — a failure loss-landscape's users know well.
//!
//! Reading goes through [`contain`]: libhdf5 runs in a forked child, so a corrupt or
//! crafted file yields a typed error instead of a crash, a hang or an unbounded allocation.

pub mod contain;
pub mod directions;
pub mod hessian;
pub mod output;
pub mod surface;

/// Disables HDF5 file locking for this process unless the environment already decides.
///
/// libhdf5 reads `HDF5_USE_FILE_LOCKING` once, when it initializes, so a program that
/// calls the `hdf5` crate itself must call this first (every losscape entry point does).
/// Otherwise its files keep `flock`s, a child forked by a contained read (see
/// [`contain`]) inherits the descriptors of files open at that instant (with their
/// locks), and reopening one of them fails with "unable to lock file" until the child
/// exits.
pub fn hdf5_init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("HDF5_USE_FILE_LOCKING").is_none() {
            std::env::set_var("HDF5_USE_FILE_LOCKING", "FALSE");
        }
    });
}

/// Checks, before a dataset is read, that its declared size fits the file: at most the
/// file's bytes for contiguous storage, and [`contain::MEMORY_PER_FILE_BYTE`] times that
/// for chunked (possibly compressed) storage. Sizes are computed without overflow.
pub(crate) fn check_fits(ds: &hdf5::Dataset, file_bytes: u64) -> Result<(), String> {
    let shape = ds.shape();
    let values = shape
        .iter()
        .fold(1u128, |a, &d| a.saturating_mul(d as u128));
    let elem = ds.dtype().map(|t| t.size() as u128).unwrap_or(1).max(1);
    let bytes = values.saturating_mul(elem);
    let allowed = if ds.is_chunked() {
        file_bytes as u128 * contain::MEMORY_PER_FILE_BYTE as u128
    } else {
        file_bytes as u128
    };
    if bytes > allowed {
        return Err(format!(
            "it declares shape {shape:?} of {elem}-byte values ({bytes} bytes), more than a \
             {file_bytes}-byte file holds (corrupt file?)"
        ));
    }
    Ok(())
}

/// The size of the file at `path` in bytes, 0 when unknown.
pub(crate) fn file_bytes(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}
