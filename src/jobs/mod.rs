//! Pipelines shared by the command line and the analysis runner: each takes a plain,
//! validated config, does one job end to end (load, compute, write files) and returns
//! what it did. The CLI only parses flags into these configs and prints; analysis specs
//! build the same configs from TOML, so every step has one implementation.
//!
//! ```text
//! surface    model + data + directions + grid → resumable, shardable HDF5 surface
//! hessian    eigenvalues, trace, density (whole subset and per block) → HDF5
//! sharpness  ε-sharpness and β-smoothness
//! merge      shard files → one surface file
//! eval       loss and accuracy; gradient-flow and activation probes
//! trajectory PCA directions of a training run and its projected path
//! ```
//! Layering: jobs sit above `io`, `landscape`, `hessian`, `sharpness` and `objective`, and
//! below `analysis` and `cli`. Errors are [`JobError`]s naming the file or the config
//! field (see [`crate::error`]); progress goes through a [`crate::progress::Reporter`].

pub mod bench;
pub mod error;
pub mod eval;
pub mod hessian;
pub mod inputs;
pub mod merge;
pub mod sharpness;
pub mod surface;
pub mod trajectory;

use std::path::Path;

use crate::io::output::OutputLock;

pub use error::{JobError, JobResult};
pub use inputs::{with_threads, BnMode, DataConfig, ModelSource, Precision};

/// Whether this process writes the job's files: rank 0 of an MPI job, or the only process.
pub fn is_root() -> bool {
    crate::dist::world().rank() == 0
}

/// Validates the output file `out` (the config field `field`) before any work: its folder
/// exists, nothing but a regular file is there; takes its lock and removes stale temporary
/// files (see [`crate::io::output`]). Hold the lock until the output is written.
pub fn prepare_out(field: &'static str, out: &Path) -> JobResult<OutputLock> {
    crate::io::output::prepare_output(out).map_err(|e| JobError::output(field, e))
}

/// Writes `value` as pretty JSON to `path`, atomically; `what` names the file in errors.
pub fn write_json<T: serde::Serialize>(
    path: &Path,
    what: &'static str,
    value: &T,
) -> JobResult<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| JobError::Json {
        what: "a report",
        source,
    })?;
    crate::io::output::write_atomic(path, |f| std::io::Write::write_all(f, &bytes)).map_err(
        |source| JobError::Io {
            what,
            path: path.to_path_buf(),
            source: Box::new(source),
        },
    )
}
