//! The MPI implementation of [`Comm`] (feature `mpi`): MPI_COMM_WORLD through rsmpi.

use std::sync::Mutex;

use mpi::environment::{Threading, Universe};
use mpi::point_to_point::MatchedReceiveVec;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::{Comm, DistError, Message};

/// MPI_COMM_WORLD. Calls are serialized by the lock; MPI is initialized with at least
/// `MPI_THREAD_SERIALIZED`, so any thread may make them.
pub(super) struct MpiWorld {
    comm: Mutex<SimpleCommunicator>,
    rank: usize,
    size: usize,
    version: String,
}

// SAFETY: the communicator handle is only used under the lock, and MPI was initialized
// with a threading level of at least `Serialized` (checked in `start`), which allows calls
// from any thread as long as no two run at once.
unsafe impl Send for MpiWorld {}
unsafe impl Sync for MpiWorld {}

/// Finalizes MPI when dropped.
pub(super) struct UniverseGuard(#[allow(dead_code)] Universe);

pub(super) fn start() -> Result<(MpiWorld, UniverseGuard), DistError> {
    let (universe, level) = mpi::initialize_with_threading(Threading::Multiple)
        .ok_or_else(|| DistError::Init("MPI was already initialized".into()))?;
    if matches!(level, Threading::Single | Threading::Funneled) {
        return Err(DistError::Init(format!(
            "the MPI library grants only {level:?} threading; losscape needs at least Serialized"
        )));
    }
    let comm = universe.world();
    let version = mpi::environment::library_version().unwrap_or_else(|_| "MPI".into());
    let world = MpiWorld {
        rank: comm.rank() as usize,
        size: comm.size() as usize,
        comm: Mutex::new(comm),
        // "Open MPI v4.1.4, package: …": the name and version only
        version: version
            .split([',', '\n'])
            .next()
            .unwrap_or("MPI")
            .trim()
            .to_string(),
    };
    Ok((world, UniverseGuard(universe)))
}

impl MpiWorld {
    fn with<R>(&self, f: impl FnOnce(&SimpleCommunicator) -> R) -> R {
        let c = self.comm.lock().unwrap_or_else(|p| p.into_inner());
        f(&c)
    }
}

impl Comm for MpiWorld {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_gather(&self, mine: &[u8]) -> Vec<Vec<u8>> {
        self.with(|c| {
            let n = i32::try_from(mine.len()).expect("a gathered block over 2 GiB");
            let mut counts = vec![0i32; self.size];
            c.all_gather_into(&n, &mut counts[..]);
            let displs: Vec<i32> = counts
                .iter()
                .scan(0i32, |acc, &x| {
                    let d = *acc;
                    *acc = acc.checked_add(x).expect("a gather over 2 GiB");
                    Some(d)
                })
                .collect();
            let total: usize = counts.iter().map(|&x| x as usize).sum();
            let mut buf = vec![0u8; total];
            {
                let mut part =
                    mpi::datatype::PartitionMut::new(&mut buf[..], &counts[..], &displs[..]);
                c.all_gather_varcount_into(mine, &mut part);
            }
            counts
                .iter()
                .zip(&displs)
                .map(|(&n, &d)| buf[d as usize..(d + n) as usize].to_vec())
                .collect()
        })
    }
    fn broadcast(&self, root: usize, bytes: &mut Vec<u8>) {
        self.with(|c| {
            let p = c.process_at_rank(root as i32);
            let mut n = bytes.len() as u64;
            p.broadcast_into(&mut n);
            bytes.resize(n as usize, 0);
            if n > 0 {
                p.broadcast_into(&mut bytes[..]);
            }
        })
    }
    fn send(&self, to: usize, tag: i32, bytes: &[u8]) {
        self.with(|c| c.process_at_rank(to as i32).send_with_tag(bytes, tag))
    }
    fn try_receive(&self) -> Option<Message> {
        self.with(|c| {
            let probed = c.any_process().immediate_matched_probe()?;
            let (bytes, status) = probed.matched_receive_vec::<u8>();
            Some(Message {
                from: status.source_rank() as usize,
                tag: status.tag(),
                bytes,
            })
        })
    }
    fn receive_from(&self, from: usize) -> Message {
        self.with(|c| {
            let (bytes, status) = c.process_at_rank(from as i32).receive_vec::<u8>();
            Message {
                from,
                tag: status.tag(),
                bytes,
            }
        })
    }
    fn abort(&self, code: i32) -> ! {
        // no lock: abort must work even while another thread holds it
        SimpleCommunicator::world().abort(code)
    }
    fn describe(&self) -> String {
        format!("MPI, {} ranks ({})", self.size, self.version)
    }
}
