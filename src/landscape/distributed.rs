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
//! number of ranks resumes from it.
//!
//! A rank that dies: mpirun/srun then stops the job, sending every surviving rank SIGCONT,
//! about a second later SIGTERM and a few milliseconds after that SIGKILL (Open MPI 4), and
//! forwards little of what ranks print once it has begun. So the ranks act on the SIGCONT:
//! each worker tells rank 0 it is alive (`TAG_ALIVE`), rank 0 waits up to
//! `ROLL_CALL` for them, and the ranks that did not answer are the dead. Rank 0 then
//! writes the message (which ranks died, how many points are safe, how to resume) to
//! stderr and to `<journal>.log` beside the journal, and ends the job (MPI_Abort). A
//! SIGTERM without a dead rank (the job was cancelled) gets the same message at once.
//! ```text
//! rank r dies ─► launcher: SIGCONT to all ─► workers: "alive" ─► rank 0: dead = silent
//!            ─► stderr + <out>.journal.log: "rank r died … rerun to resume" ─► MPI_Abort
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
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
/// Tag of a worker's notice, on SIGCONT, that it is alive (no payload).
const TAG_ALIVE: i32 = 3;
/// How long rank 0 waits for the workers' notices after SIGCONT (the launcher sends
/// SIGTERM about a second after it).
const ROLL_CALL: Duration = Duration::from_millis(600);

/// Why a distributed surface failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Wire(#[from] WireError),
    /// Occurs when mpirun/srun stops the job: a rank died (`dead`), or the job was
    /// cancelled (`dead` empty).
    #[error("{}; {done} of {total} points are safe in {journal}; rerun the same command, with any number of ranks, to resume (finished points are kept)", stop_cause(dead, ranks, *size))]
    Stopped {
        /// Ranks that did not answer when the launcher began to stop the job.
        dead: Vec<usize>,
        /// Ranks that held unfinished points.
        ranks: Vec<usize>,
        size: usize,
        done: usize,
        total: usize,
        journal: String,
    },
}

fn stop_cause(dead: &[usize], held: &[usize], size: usize) -> String {
    let list = |r: &[usize]| {
        r.iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match dead {
        [] => format!(
            "the MPI job was stopped by the launcher (SIGTERM: cancelled, or a rank died) while ranks [{}] of {size} held unfinished points",
            list(held)
        ),
        [r] => format!("rank {r} of {size} died (it did not answer when mpirun/srun began to stop the job), so the job was stopped"),
        rs => format!(
            "ranks {} of {size} died (they did not answer when mpirun/srun began to stop the job), so the job was stopped",
            list(rs)
        ),
    }
}

/// Where rank 0 writes why a distributed surface stopped: beside its journal.
pub fn stop_log_path(journal: &Path) -> PathBuf {
    let mut s = journal.as_os_str().to_owned();
    s.push(".log");
    PathBuf::from(s)
}

static TERMINATED: AtomicBool = AtomicBool::new(false);
static CONTINUED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGTERM {
        TERMINATED.store(true, Ordering::SeqCst);
    } else {
        CONTINUED.store(true, Ordering::SeqCst);
    }
}

/// SIGTERM and SIGCONT set flags while the queue runs; their default actions return when
/// it is dropped (a later step of `losscape run` dies on SIGTERM as usual).
struct Signals;

impl Signals {
    fn catch() -> Self {
        TERMINATED.store(false, Ordering::SeqCst);
        CONTINUED.store(false, Ordering::SeqCst);
        // SAFETY: the handler only stores to atomics, which is async-signal-safe.
        unsafe {
            for sig in [libc::SIGTERM, libc::SIGCONT] {
                libc::signal(
                    sig,
                    on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
                );
            }
        }
        Signals
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        // SAFETY: restores the default dispositions.
        unsafe {
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            libc::signal(libc::SIGCONT, libc::SIG_DFL);
        }
    }
}

/// Rank 0's last word when the job is being stopped: the message on stderr (one write,
/// unbuffered, before anything slow), then in `<journal>.log`, and the job ended with
/// MPI_Abort (the launcher would SIGKILL it moments later anyway). Every journal record
/// is already written (one `write` each), so no finished point is lost.
fn stop_job(comm: &dyn Comm, journal_path: &Path, e: QueueError) -> ! {
    let line = format!("error (rank 0 of {}): {e}\n", comm.size());
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(line.as_bytes());
    let _ = err.flush();
    drop(err);
    let _ = std::fs::write(stop_log_path(journal_path), &line);
    comm.abort(3)
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
    let _signals = Signals::catch();
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
            // the launcher is stopping the job (SIGCONT): since when, who answered, and
            // the ranks already told to stop (they have left the queue and cannot answer)
            let mut roll_call: Option<Instant> = None;
            let mut alive: BTreeSet<usize> = BTreeSet::new();
            let mut finished: BTreeSet<usize> = BTreeSet::new();
            let stopped =
                |dead: Vec<usize>, held: &BTreeMap<usize, Vec<usize>>, done| QueueError::Stopped {
                    dead,
                    ranks: held.keys().copied().collect(),
                    size: comm.size(),
                    done,
                    total: req.grid.len(),
                    journal: journal_path.display().to_string(),
                };
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
                if let Some(m) = comm.try_receive().filter(|m| {
                    if m.tag == TAG_ALIVE {
                        alive.insert(m.from);
                    }
                    m.tag != TAG_ALIVE
                }) {
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
                        finished.insert(m.from);
                    } else {
                        held.insert(m.from, next);
                    }
                }
                if CONTINUED.swap(false, Ordering::SeqCst) {
                    roll_call = Some(Instant::now());
                    alive.clear();
                }
                let silent = || -> Vec<usize> {
                    (1..comm.size())
                        .filter(|r| !alive.contains(r) && !finished.contains(r))
                        .collect()
                };
                if let Some(t0) = roll_call {
                    let dead = silent();
                    if dead.is_empty() {
                        // everyone answered: a cancellation (SIGTERM follows) or a resume
                        roll_call = None;
                    } else if t0.elapsed() >= ROLL_CALL {
                        stop_job(
                            comm,
                            journal_path,
                            stopped(dead, &held, values.completed_count()),
                        );
                    }
                }
                if TERMINATED.load(Ordering::SeqCst) {
                    let dead = if roll_call.is_some() {
                        silent()
                    } else {
                        Vec::new()
                    };
                    stop_job(
                        comm,
                        journal_path,
                        stopped(dead, &held, values.completed_count()),
                    );
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
/// points computed here. A watcher thread answers the launcher's SIGCONT with
/// `TAG_ALIVE`, so rank 0 can tell the living ranks from a dead one.
pub fn serve_surface(comm: &dyn Comm, req: &SurfaceRequest<'_>) -> Result<usize, QueueError> {
    let _signals = Signals::catch();
    let want = rayon::current_num_threads().max(1);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                if CONTINUED.swap(false, Ordering::SeqCst) {
                    comm.send(0, TAG_ALIVE, &[]);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let served = serve(comm, req, want);
        done.store(true, Ordering::SeqCst);
        served
    })
}

fn serve(comm: &dyn Comm, req: &SurfaceRequest<'_>, want: usize) -> Result<usize, QueueError> {
    let mut results: Results = Vec::new();
    let mut computed = 0;
    loop {
        let mut bytes = Vec::new();
        (std::mem::take(&mut results), want).encode(&mut bytes);
        comm.send(0, TAG_RESULTS, &bytes);
        // poll rather than block in MPI: the watcher thread must be able to send, and an
        // idle rank should not spin on a shared node
        let reply = loop {
            if let Some(m) = comm.try_receive() {
                break m;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        debug_assert_eq!(reply.tag, TAG_WORK);
        let points = Vec::<usize>::decode(&mut &reply.bytes[..])?;
        if points.is_empty() {
            return Ok(computed);
        }
        results = req.points(&points);
        computed += results.len();
        #[cfg(feature = "mpi")]
        die_for_test(results.len());
    }
}

/// Points computed by this process, for [`die_for_test`].
#[cfg(feature = "mpi")]
static COMPUTED_HERE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Test hook, compiled only with the `mpi` feature: with `LOSSCAPE_TEST_RANK_DIES=R:K` in
/// the environment, rank R kills itself (SIGKILL, as a crashed node would vanish) once it
/// has computed K surface points, so the tests can check what a dead rank does to a job.
/// Not meant for anything but tests; without the variable it does nothing.
#[cfg(feature = "mpi")]
fn die_for_test(points: usize) {
    let total = COMPUTED_HERE.fetch_add(points, Ordering::SeqCst) + points;
    let Ok(v) = std::env::var("LOSSCAPE_TEST_RANK_DIES") else {
        return;
    };
    let Some((r, k)) = v.split_once(':') else {
        return;
    };
    let (Ok(r), Ok(k)) = (r.trim().parse::<usize>(), k.trim().parse::<usize>()) else {
        return;
    };
    if crate::dist::world().rank() == r && total >= k {
        // SAFETY: raise(2) on this process.
        unsafe {
            libc::raise(libc::SIGKILL);
        }
    }
}
