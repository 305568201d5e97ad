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

pub mod directions;
pub mod hessian;
pub mod output;
pub mod surface;

/// Disables HDF5 file locking for this process unless the environment already decides.
pub fn hdf5_init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("HDF5_USE_FILE_LOCKING").is_none() {
            std::env::set_var("HDF5_USE_FILE_LOCKING", "FALSE");
        }
    });
}
