//! Containment of the HDF5 C library while it reads a file of unknown origin.
//!
//! libhdf5 is not robust against crafted or corrupt files: it dereferences wild pointers
//! (`H5HG_read` on variable-length strings), frees invalid ones (`H5A__close`), loops on
//! cyclic B-trees and allocates what a header claims. None of that can be caught inside the
//! process, so every read of an HDF5 file goes through [`contain`]:
//!
//! ```text
//! parent ── fork ──► child: rlimit(address space = now + bound), run the reader,
//!    │                       serialize its plain-data result (bincode) into a pipe, _exit
//!    └─ read the pipe (deadline) ─► waitpid ─► Ok(result) | ContainError
//! ```
//!
//! A signal in the child becomes [`ContainError::Crashed`] ("the HDF5 library crashed
//! reading it (corrupt file?)"), a child past its deadline is killed and becomes
//! [`ContainError::Hung`], and one that needs more memory than
//! [`memory_bound`]`(file size)` fails its allocation inside the child and becomes
//! [`ContainError::Memory`]. The parent never touches the file through libhdf5, so the
//! data it receives is only what the child validated and copied out; every reader then
//! checks shapes and sizes again against its own expectations.
//!
//! Alternatives considered: re-executing the binary with a hidden subcommand (works only
//! from the binary, needs every reader's arguments serialized, costs an exec per read) and
//! validating the file format ourselves before calling libhdf5 (a second HDF5 parser).
//! `fork` works identically from the CLI, the library and its tests. Its hazards and how
//! they are met: the child has only the forking thread, so any lock another thread held at
//! the fork stays held there forever. Hence [`contain`] forks while holding the `hdf5`
//! crate's global lock (no other thread is inside libhdf5 at that instant) and the child
//! never releases it (its reads re-enter it); glibc's `fork` resets the allocator's locks;
//! the child sets no panic hook (a wrapper installed in the parent keeps it quiet); the
//! reader closures never use rayon or other threads; the answer is length-prefixed, so a
//! sibling child holding a copy of the pipe cannot delay it; the child leaves with
//! `_exit`, running no destructors or `atexit` handlers of the parent's state.
//!
//! **Global state (documented):** the [`Containment`] mode, set once by a program (the
//! default is [`Containment::Fork`] with [`DEFAULT_DEADLINE`]); the fuzzer shortens the
//! deadline. The first contained read wraps the process's panic hook (see above); a hook
//! set after it replaces the wrapper, and a contained child's panic then also goes
//! through that hook.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// How HDF5 reads are isolated from this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Containment {
    /// Read in this process: a corrupt file can crash it. For callers that only read files
    /// they wrote themselves and cannot afford a `fork`.
    InProcess,
    /// Read in a forked child, killed after `deadline` plus [`DEADLINE_PER_MIB`] per MiB
    /// of file.
    Fork { deadline: Duration },
}

/// The fixed part of a child's deadline: opening and reading a valid file of ours takes
/// milliseconds; a minute is far beyond any honest read and still short for a user.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

/// Extra deadline per MiB of file: reading from a slow disk at 1 MiB/s still finishes.
pub const DEADLINE_PER_MIB: Duration = Duration::from_secs(1);

/// The address space a child may add to its parent's: a fixed allowance for libhdf5's
/// caches and our copies, plus this many bytes per byte of file (datasets are decoded,
/// converted from f32 to f64 and copied into the pipe buffer: 16× covers uncompressed
/// data with room; compressed foreign files expanding further are refused, not read).
pub const MEMORY_PER_FILE_BYTE: u64 = 16;
/// See [`MEMORY_PER_FILE_BYTE`].
pub const MEMORY_BASE: u64 = 512 << 20;

/// Encoded mode: 0 = fork with the default deadline, 1 = in process, else 2 + deadline ms.
static MODE: AtomicU64 = AtomicU64::new(0);

/// Sets how HDF5 reads are isolated, for the whole process.
pub fn set_containment(c: Containment) {
    let v = match c {
        Containment::InProcess => 1,
        Containment::Fork { deadline } => 2 + deadline.as_millis().min(u64::MAX as u128 / 2) as u64,
    };
    MODE.store(v, Ordering::SeqCst);
}

/// The current [`Containment`].
pub fn containment() -> Containment {
    match MODE.load(Ordering::SeqCst) {
        0 => Containment::Fork {
            deadline: DEFAULT_DEADLINE,
        },
        1 => Containment::InProcess,
        v => Containment::Fork {
            deadline: Duration::from_millis(v - 2),
        },
    }
}

/// The address-space allowance of a child reading a file of `file_size` bytes.
pub fn memory_bound(file_size: u64) -> u64 {
    MEMORY_BASE.saturating_add(file_size.saturating_mul(MEMORY_PER_FILE_BYTE))
}

/// Why a contained read produced no result.
#[derive(Clone, Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ContainError {
    /// Occurs when the reading child dies from a signal (a crash inside libhdf5).
    #[error("{path}: the HDF5 library crashed reading it (corrupt file?): {signal}")]
    Crashed { path: PathBuf, signal: String },
    /// Occurs when the reading child panics (a bug in losscape's reader).
    #[error("{path}: reading it failed unexpectedly ({message}); please report this file")]
    Panicked { path: PathBuf, message: String },
    /// Occurs when the reading child runs past its deadline (libhdf5 looping on a corrupt file).
    #[error("{path}: reading it took more than {seconds:.0} s and was stopped (corrupt file?)")]
    Hung { path: PathBuf, seconds: f64 },
    /// Occurs when the reading child needs more memory than the file's size justifies.
    #[error("{path}: reading it needed more than {bound_mib} MiB, the bound for a file of {file_bytes} bytes (corrupt file, or a compressed one expanding more than {MEMORY_PER_FILE_BYTE}×?)")]
    Memory {
        path: PathBuf,
        bound_mib: u64,
        file_bytes: u64,
    },
    /// Occurs when the child cannot be started or its answer cannot be read.
    #[error("{path}: cannot run the isolated HDF5 reader: {why}")]
    System { path: PathBuf, why: String },
}

/// What the child writes into the pipe.
#[derive(Serialize, Deserialize)]
enum Frame<T> {
    Done(T),
    Panicked(String),
}

/// Exit status of a child that could not write its answer.
const EXIT_WRITE_FAILED: i32 = 70;

/// Runs `read` (which reads `path` through libhdf5) isolated as the current
/// [`Containment`] says, and returns its result.
///
/// `read` must be self-contained: no threads, no rayon, no writes to shared state (in a
/// forked child they would be lost). Its result crosses a pipe, so it is plain data.
///
/// # Errors
/// [`ContainError`] when the child crashed, hung, ran out of its memory bound or could not
/// be run; the reader's own errors are inside `T`.
pub fn contain<T, F>(path: &Path, read: F) -> Result<T, ContainError>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> T,
{
    let deadline = match containment() {
        Containment::InProcess => return Ok(read()),
        Containment::Fork { deadline } => deadline,
    };
    let file_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let deadline = deadline + DEADLINE_PER_MIB.saturating_mul((file_bytes >> 20) as u32);
    let bound = memory_bound(file_bytes);
    let system = |why: String| ContainError::System {
        path: path.into(),
        why,
    };
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(system(format!("pipe: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    let (rx, tx) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // The child's stderr goes to an in-memory file, read back to tell an allocation failure
    // (Rust prints "memory allocation of N bytes failed") from glibc's heap checks.
    // SAFETY: a name and flags; the descriptor is owned right away.
    let errfd = unsafe { libc::memfd_create(c"losscape-hdf5-stderr".as_ptr(), libc::MFD_CLOEXEC) };
    let errfd = (errfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(errfd) });
    crate::io::hdf5_init();
    install_child_quiet_hook();
    let err_raw = errfd.as_ref().map(|f| f.as_raw_fd());
    let mut parts = Some((tx, read));
    // Fork while holding the hdf5 crate's lock: no other thread is inside libhdf5, so the
    // child's copy of the library is in a consistent state. The child runs its whole life
    // inside this lock scope and never releases it: releasing a lock that other threads of
    // the parent were waiting on would go through parking_lot's slow path (its global
    // tables, possibly locked by a thread that does not exist in the child, and a fair
    // hand-off to such a thread, which leaves the lock held forever). Held, the reader's
    // own `sync` calls are re-entrant increments and touch no shared state.
    // SAFETY: the child only runs `read` (single-threaded by contract), writes to the pipe
    // and leaves with `_exit`.
    let pid = hdf5::sync::sync(|| {
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let (tx, read) = parts.take().expect("forked once");
            child(tx, err_raw, bound, read);
        }
        pid
    });
    if pid < 0 {
        return Err(system(format!("fork: {}", std::io::Error::last_os_error())));
    }
    drop(parts);
    let started = Instant::now();
    let bytes = match read_until(rx, started + deadline) {
        Ok(Some(b)) => b,
        Ok(None) => {
            // SAFETY: `pid` is our child; killing and reaping it is ours to do.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            wait(pid);
            return Err(ContainError::Hung {
                path: path.into(),
                seconds: deadline.as_secs_f64(),
            });
        }
        Err(e) => {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            wait(pid);
            return Err(system(format!("reading the child's answer: {e}")));
        }
    };
    let status = wait(pid);
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // Rust aborts (SIGABRT) when an allocation fails, which under the address-space
        // limit means the file asked for more than its bound.
        let stderr = errfd.map(child_stderr).unwrap_or_default();
        if sig == libc::SIGABRT && stderr.contains("memory allocation of") {
            return Err(ContainError::Memory {
                path: path.into(),
                bound_mib: bound >> 20,
                file_bytes,
            });
        }
        let said = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(ContainError::Crashed {
            path: path.into(),
            signal: if said.is_empty() {
                signal_name(sig)
            } else {
                format!("{}; it said '{}'", signal_name(sig), said.trim())
            },
        });
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(system(format!(
            "the child exited with status {}",
            libc::WEXITSTATUS(status)
        )));
    }
    let Some(body) = unframe(&bytes) else {
        return Err(system(format!(
            "a truncated answer ({} bytes)",
            bytes.len()
        )));
    };
    match bincode::deserialize::<Frame<T>>(body) {
        Ok(Frame::Done(v)) => Ok(v),
        Ok(Frame::Panicked(message)) => Err(ContainError::Panicked {
            path: path.into(),
            message,
        }),
        Err(e) => Err(system(format!("undecodable answer: {e}"))),
    }
}

/// The child's side: limit memory, run, answer, `_exit`.
fn child<T: Serialize, F: FnOnce() -> T>(
    tx: OwnedFd,
    errfd: Option<std::os::fd::RawFd>,
    bound: u64,
    read: F,
) -> ! {
    IN_CHILD.store(true, Ordering::SeqCst);
    // SAFETY: plain system calls on our own process.
    unsafe {
        let core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &core);
        let limit = vm_size().saturating_add(bound);
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_AS, &mut old);
        let cur = if old.rlim_max == libc::RLIM_INFINITY {
            limit
        } else {
            limit.min(old.rlim_max)
        };
        let new = libc::rlimit {
            rlim_cur: cur,
            rlim_max: old.rlim_max,
        };
        libc::setrlimit(libc::RLIMIT_AS, &new);
        // glibc's heap-corruption messages would interleave with the parent's output: they
        // go to the in-memory file (at most STDERR_LIMIT bytes), which the parent reads.
        let fsize = libc::rlimit {
            rlim_cur: STDERR_LIMIT,
            rlim_max: STDERR_LIMIT,
        };
        libc::setrlimit(libc::RLIMIT_FSIZE, &fsize);
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        match errfd {
            Some(fd) => libc::dup2(fd, 2),
            None => libc::close(2),
        };
    }
    let frame = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)) {
        Ok(v) => Frame::Done(v),
        Err(p) => Frame::Panicked(
            p.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into()),
        ),
    };
    // Length-prefixed: the parent stops reading at the answer's end rather than at the
    // pipe's end of file, which a sibling child forked meanwhile (holding a copy of this
    // pipe's write end) would delay.
    let code = match bincode::serialize(&frame) {
        Ok(bytes) => {
            let mut f = std::fs::File::from(tx);
            let len = (bytes.len() as u64).to_le_bytes();
            match std::io::Write::write_all(&mut f, &len)
                .and_then(|()| std::io::Write::write_all(&mut f, &bytes))
            {
                Ok(()) => 0,
                Err(_) => EXIT_WRITE_FAILED,
            }
        }
        Err(_) => EXIT_WRITE_FAILED,
    };
    // SAFETY: leaves without running the parent's destructors or atexit handlers.
    unsafe { libc::_exit(code) }
}

/// Set in a forked child: its panics are answered through the pipe, not printed.
static IN_CHILD: AtomicBool = AtomicBool::new(false);

/// Wraps the process's panic hook (once, in the parent) so that it stays silent in a
/// contained child. Setting a hook in the child instead would take the hook's write lock,
/// which a thread of the parent that was panicking at the fork holds forever there; the
/// default hook would take the backtrace lock, likewise.
fn install_child_quiet_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_CHILD.load(Ordering::Relaxed) {
                previous(info);
            }
        }));
    });
}

/// The most a child writes to its stderr file.
const STDERR_LIMIT: u64 = 64 << 10;

/// What a child wrote to its stderr (lossy UTF-8).
fn child_stderr(fd: OwnedFd) -> String {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::from(fd);
    let mut buf = vec![0u8; STDERR_LIMIT as usize];
    let n = f.read_at(&mut buf, 0).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Reads the pipe to its end; `None` past `until`.
fn read_until(rx: OwnedFd, until: Instant) -> std::io::Result<Option<Vec<u8>>> {
    let mut f = std::fs::File::from(rx);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let mut pfd = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            continue;
        }
        match f.read(&mut buf) {
            Ok(0) => return Ok(Some(out)),
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if unframe(&out).is_some() {
                    return Ok(Some(out));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A child's answer without its 8-byte length prefix; `None` until all of it is there.
fn unframe(bytes: &[u8]) -> Option<&[u8]> {
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    bytes.get(8..8usize.checked_add(usize::try_from(len).ok()?)?)
}

/// Reaps `pid`, returning its wait status.
fn wait(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: `pid` is our child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return status;
        }
    }
}

/// This process's virtual size in bytes (`/proc/self/statm`), 0 when unknown.
fn vm_size() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|p| p.parse::<u64>().ok())
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    pages.saturating_mul(page)
}

/// `SIGSEGV (segmentation fault)` and the like.
pub fn signal_name(sig: i32) -> String {
    let what = match sig {
        libc::SIGSEGV => "SIGSEGV, segmentation fault",
        libc::SIGABRT => "SIGABRT, aborted",
        libc::SIGBUS => "SIGBUS, bus error",
        libc::SIGFPE => "SIGFPE, arithmetic fault",
        libc::SIGILL => "SIGILL, illegal instruction",
        libc::SIGKILL => "SIGKILL, killed",
        _ => return format!("signal {sig}"),
    };
    what.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_and_panics_cross_the_pipe() {
        let p = Path::new("/dev/null");
        let v: Result<Vec<f64>, String> = contain(p, || Ok(vec![1.0, f64::NAN])).unwrap();
        let v = v.unwrap();
        assert_eq!(v[0], 1.0);
        assert!(v[1].is_nan());
        let e = contain(p, || -> u8 { panic!("boom") }).unwrap_err();
        assert!(matches!(e, ContainError::Panicked { ref message, .. } if message == "boom"));
    }

    #[test]
    fn a_crash_becomes_an_error() {
        let p = Path::new("/dev/null");
        let e = contain(p, || -> u8 {
            // SAFETY: deliberately crashes the (child) process, past Rust's own SIGSEGV
            // handler (which only reports stack overflows).
            unsafe {
                libc::signal(libc::SIGSEGV, libc::SIG_DFL);
                libc::raise(libc::SIGSEGV);
            }
            0
        })
        .unwrap_err();
        assert!(e.to_string().contains("crashed"), "{e}");
        assert!(matches!(e, ContainError::Crashed { .. }));
    }

    #[test]
    fn an_allocation_past_the_bound_fails_in_the_child() {
        let p = Path::new("/dev/null");
        let e = contain(p, || -> usize {
            let v = vec![1u8; (MEMORY_BASE as usize) * 4];
            v.iter().map(|&b| b as usize).sum()
        })
        .unwrap_err();
        assert!(matches!(e, ContainError::Memory { .. }), "{e}");
    }
}
