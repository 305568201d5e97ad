//! Scale-out over processes: one communicator interface for the jobs, with a
//! single-process implementation that is always compiled and an MPI one (the `mpi` crate,
//! rsmpi, over the system's OpenMPI) behind the cargo feature `mpi`.
//!
//! ```text
//! main ─► dist::init() ─► launched by mpirun/srun (OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK)?
//!           yes, feature on  ─► MPI_Init_thread; world() = every rank
//!           yes, feature off ─► error: N copies would each run the whole job
//!           no               ─► world() = Single (rank 0 of 1): exactly the single-process code
//! ```
//! Jobs use [`world`] in two ways: the surface job runs a dynamic work queue (rank 0 hands
//! out grid points, owns the journal and the HDF5 file, [`crate::jobs::surface`]); the
//! curvature jobs split a dataset's batches over ranks and add the per-batch partial sums
//! in batch order ([`crate::objective::Objective::distributed`]), so every result is
//! bit-identical for any number of ranks.

#[cfg(feature = "mpi")]
mod mpi_world;
mod wire;

use std::sync::OnceLock;

pub use wire::{Wire, WireError};

/// A message received from another rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub from: usize,
    pub tag: i32,
    pub bytes: Vec<u8>,
}

/// A group of cooperating processes (ranks 0..size). Collective calls must be made by
/// every rank in the same order. Implementations serialize their calls internally, so a
/// communicator may be shared between threads.
pub trait Comm: Sync {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Every rank's bytes, in rank order (collective).
    fn all_gather(&self, mine: &[u8]) -> Vec<Vec<u8>>;
    /// Rank `root`'s bytes on every rank (collective).
    fn broadcast(&self, root: usize, bytes: &mut Vec<u8>);
    /// Sends `bytes` to rank `to` under `tag` (point to point).
    fn send(&self, to: usize, tag: i32, bytes: &[u8]);
    /// A message already waiting from any rank, without blocking.
    fn try_receive(&self) -> Option<Message>;
    /// Waits for the next message from rank `from`.
    fn receive_from(&self, from: usize) -> Message;
    /// Ends every rank of the job with exit code `code` (MPI_Abort).
    fn abort(&self, code: i32) -> !;
    /// What runs the ranks (`"single process"`, `"MPI (Open MPI v4.1.4)"`).
    fn describe(&self) -> String;
}

/// One process: rank 0 of 1. Collectives return the caller's own data; point-to-point
/// calls have no peer and are never made by the jobs (they branch on `size() > 1`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Single;

impl Comm for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_gather(&self, mine: &[u8]) -> Vec<Vec<u8>> {
        vec![mine.to_vec()]
    }
    fn broadcast(&self, _root: usize, _bytes: &mut Vec<u8>) {}
    fn send(&self, to: usize, _tag: i32, _bytes: &[u8]) {
        unreachable!("a single process has no rank {to} to send to")
    }
    fn try_receive(&self) -> Option<Message> {
        None
    }
    fn receive_from(&self, from: usize) -> Message {
        unreachable!("a single process has no rank {from} to receive from")
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
    fn describe(&self) -> String {
        "single process".into()
    }
}

/// Why the process group could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// Occurs when the program was started by mpirun/srun with several ranks but built
    /// without MPI support: every copy would run the whole job and write the same files.
    #[error("started by {launcher} as {size} processes, but this losscape was built without MPI; rebuild with `cargo build --release --features mpi` (or `make build`), or run one process")]
    NoMpi { launcher: &'static str, size: usize },
    /// Occurs when MPI_Init_thread fails or grants less than serialized threading.
    #[error("MPI could not be initialized: {0}")]
    Init(String),
}

static WORLD: OnceLock<Box<dyn Comm + Send>> = OnceLock::new();

/// The process group of this run: every MPI rank after [`init`] under mpirun/srun, else
/// a [`Single`] process.
pub fn world() -> &'static dyn Comm {
    WORLD.get_or_init(|| Box::new(Single)).as_ref()
}

/// The size announced by a launcher in the environment, if any, and the launcher's name.
pub fn launch_size() -> Option<(&'static str, usize)> {
    let read = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
    };
    if let Some(n) = read("OMPI_COMM_WORLD_SIZE") {
        return Some(("mpirun", n));
    }
    if let Some(n) = read("PMI_SIZE") {
        return Some(("srun", n));
    }
    if let Some(n) = read("PMIX_SIZE") {
        return Some(("srun", n));
    }
    if std::env::var_os("PMIX_RANK").is_some() {
        // PMIx launches without a size variable: the size is known once MPI is up.
        return Some(("srun", 0));
    }
    None
}

/// Keeps MPI initialized; finalizes it when dropped (end of `main`).
#[must_use = "MPI is finalized when the guard is dropped"]
pub struct Launch {
    #[cfg(feature = "mpi")]
    _universe: Option<mpi_world::UniverseGuard>,
}

/// Sets up [`world`]: initializes MPI when launched by mpirun/srun (feature `mpi`); a
/// plain start stays a single process and behaves exactly as without the feature.
pub fn init() -> Result<Launch, DistError> {
    let launched = launch_size();
    #[cfg(feature = "mpi")]
    {
        if launched.is_some() {
            let (comm, guard) = mpi_world::start()?;
            let _ = WORLD.set(Box::new(comm));
            return Ok(Launch {
                _universe: Some(guard),
            });
        }
        Ok(Launch { _universe: None })
    }
    #[cfg(not(feature = "mpi"))]
    {
        match launched {
            Some((launcher, size)) if size > 1 => Err(DistError::NoMpi { launcher, size }),
            _ => Ok(Launch {}),
        }
    }
}

/// Whether MPI support is compiled in.
pub const fn has_mpi() -> bool {
    cfg!(feature = "mpi")
}
