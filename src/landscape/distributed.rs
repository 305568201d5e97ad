//! A surface over the ranks of an MPI job: a dynamic work queue. Rank 0 holds the queue of
//! pending grid points, hands each rank as many as it has threads whenever it asks (so a
//! slow or busy node simply asks less often), appends every finished point to the
//! journal, and computes points itself between messages; the other ranks only compute.
//! Rank 0 alone touches the journal and the files, so no parallel HDF5 and no file locks
//! are needed. A point's values do not depend on who computes it
//! ([`SurfaceRequest::point`]), so the surface equals the single-process one bit for bit.
//!
//! ```text
//! rank r > 0:  send (finished points, threads) ─► rank 0 ─► reply: next points | stop
//! rank 0:      coordinator thread: poll MPI, journal each point, reply
//!              its own pool: take points from the same queue, compute, hand to coordinator
//! ```
//! Killed at any moment, the journal holds every point rank 0 received; a rerun with any
//! number of ranks resumes from it. When mpirun stops the job (a rank died, or the job was
//! cancelled) rank 0 gets SIGTERM before SIGKILL: it syncs the journal and says which ranks
//! held unfinished points and how to resume.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use super::journal::{Journal, JournalError};
use super::surface::{finish_report, SurfaceReport, SurfaceRequest, SurfaceValues};
use crate::dist::{Comm, Wire, WireError};
use crate::progress::Progress;

/// Tag of a worker's message to rank 0: finished points and how many it wants next.
const TAG_RESULTS: i32 = 1;
/// Tag of rank 0's reply: the next points, none meaning stop.
const TAG_WORK: i32 = 2;

/// Why a distributed surface failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Wire(#[from] WireError),
    /// Occurs when mpirun/srun stops the job (a rank died, or the job was cancelled).
    #[error("the MPI job was stopped (SIGTERM from the launcher: a rank died or the job was cancelled) while ranks {ranks:?} held unfinished points; {done} of {total} points are safe in {journal}; rerun the same command, with any number of ranks, to resume")]
    Stopped {
        ranks: Vec<usize>,
        done: usize,
        total: usize,
        journal: String,
    },
}

static TERMINATED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigterm(_: libc::c_int) {
    TERMINATED.store(true, Ordering::SeqCst);
}

fn catch_sigterm() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            on_sigterm as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

type Results = Vec<(usize, Vec<f64>)>;

/// Rank 0: computes every pending point of the request's shard with the other ranks,
/// journaling each as it arrives; `done` holds points from an earlier run.
pub fn coordinate_surface(
    comm: &dyn Comm,
    req: &SurfaceRequest<'_>,
    mut journal: Journal,
    journal_path: &Path,
    done: BTreeMap<usize, Vec<f64>>,
    progress: &Progress,
) -> Result<(SurfaceReport, Journal), QueueError> {
    catch_sigterm();
    let start = Instant::now();
    let mut values = SurfaceValues::empty(req.grid, req.names());
    let mut resumed = 0;
    for (&k, v) in &done {
        if req.shard.contains(k) {
            values.set(k, v);
            resumed += 1;
        }
    }
    let pending: VecDeque<usize> = (0..req.grid.len())
        .filter(|&k| req.shard.contains(k) && !done.contains_key(&k))
        .collect();
    let total = pending.len() + resumed;
    progress.restart(total as u64, resumed as u64);
    let queue = Mutex::new(pending);
    let take = |n: usize| -> Vec<usize> {
        let mut q = queue.lock().expect("queue lock");
        let n = n.min(q.len());
        q.drain(..n).collect()
    };
    let local_chunk = rayon::current_num_threads().max(1);
    let (tx, rx) = mpsc::channel::<Results>();
    let mut computed = 0;
    let outcome = std::thread::scope(|s| {
        // the coordinator: the only thread that talks MPI or writes the journal
        let (journal, values, computed, queue, take) =
            (&mut journal, &mut values, &mut computed, &queue, &take);
        let coordinator = s.spawn(move || -> Result<(), QueueError> {
            let mut record = |r: Results, values: &mut SurfaceValues| -> Result<(), QueueError> {
                for (k, v) in r {
                    journal.append(k, &v)?;
                    values.set(k, &v);
                    *computed += 1;
                    progress.inc(1);
                }
                Ok(())
            };
            let mut running = comm.size() - 1;
            let mut held: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            let mut local_open = true;
            let mut failure: Option<QueueError> = None;
            while running > 0 || local_open {
                let mut idle = true;
                loop {
                    match rx.try_recv() {
                        Ok(r) => {
                            idle = false;
                            if failure.is_none() {
                                if let Err(e) = record(r, values) {
                                    failure = Some(e);
                                    queue.lock().expect("queue lock").clear();
                                }
                            }
                        }
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => {
                            local_open = false;
                            break;
                        }
                    }
                }
                if let Some(m) = comm.try_receive() {
                    idle = false;
                    let (results, want) = <(Results, usize)>::decode(&mut &m.bytes[..])?;
                    held.remove(&m.from);
                    if failure.is_none() {
                        if let Err(e) = record(results, values) {
                            failure = Some(e);
                            queue.lock().expect("queue lock").clear();
                        }
                    }
                    let next = take(want.max(1));
                    let mut bytes = Vec::new();
                    next.encode(&mut bytes);
                    comm.send(m.from, TAG_WORK, &bytes);
                    if next.is_empty() {
                        running -= 1;
                    } else {
                        held.insert(m.from, next);
                    }
                }
                if TERMINATED.load(Ordering::SeqCst) {
                    let _ = journal.sync();
                    queue.lock().expect("queue lock").clear();
                    return Err(QueueError::Stopped {
                        ranks: held.keys().copied().collect(),
                        done: values.completed_count(),
                        total: req.grid.len(),
                        journal: journal_path.display().to_string(),
                    });
                }
                if idle {
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
            match failure {
                Some(e) => Err(e),
                None => Ok(()),
            }
        });
        // rank 0's own share, on the job's pool
        loop {
            let chunk = take(local_chunk);
            if chunk.is_empty() || coordinator.is_finished() {
                break;
            }
            if tx.send(req.points(&chunk)).is_err() {
                break;
            }
        }
        drop(tx);
        coordinator.join().expect("coordinator thread")
    });
    outcome?;
    journal.sync()?;
    let report = finish_report(req, values, computed, resumed, start);
    Ok((report, journal))
}

/// Ranks > 0: asks rank 0 for points (as many as this rank has threads), computes them
/// on the current pool, sends them back, until rank 0 says stop. Returns the number of
/// points computed here.
pub fn serve_surface(comm: &dyn Comm, req: &SurfaceRequest<'_>) -> Result<usize, QueueError> {
    let want = rayon::current_num_threads().max(1);
    let mut results: Results = Vec::new();
    let mut computed = 0;
    loop {
        let mut bytes = Vec::new();
        (std::mem::take(&mut results), want).encode(&mut bytes);
        comm.send(0, TAG_RESULTS, &bytes);
        let reply = comm.receive_from(0);
        debug_assert_eq!(reply.tag, TAG_WORK);
        let points = Vec::<usize>::decode(&mut &reply.bytes[..])?;
        if points.is_empty() {
            return Ok(computed);
        }
        results = req.points(&points);
        computed += results.len();
    }
}
