//! Small shared helpers.

use std::fs::File;
use std::io;
use std::path::Path;

/// Writes a file atomically: into a temporary sibling, fsync, then rename over `path`, so a
/// reader (or a crash) never sees a half-written file.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        write(&mut f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Produces a file through a temporary sibling: `write(tmp)` creates and fills it (e.g. an
/// HDF5 file, which libraries want to open by path), then it is fsynced and renamed over
/// `path`; on any error the temporary file is removed. `io_err` converts I/O failures.
pub fn replace_atomically<E>(
    path: &Path,
    io_err: impl Fn(io::Error) -> E,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = write(&tmp)
        .and_then(|()| File::open(&tmp).and_then(|f| f.sync_all()).map_err(&io_err))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(&io_err));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Occurs when a thread pool cannot be made: a count of 0, or the OS refused the threads.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ThreadsError {
    /// Occurs when 0 threads are asked for.
    #[error("`threads` must be at least 1")]
    Zero,
    /// Occurs when rayon cannot start the pool.
    #[error("starting the thread pool")]
    Start(#[source] rayon::ThreadPoolBuildError),
}

/// Runs `f` on a rayon pool of `threads` threads (all cores when None).
pub fn with_threads<R: Send>(
    threads: Option<usize>,
    f: impl FnOnce() -> R + Send,
) -> Result<R, ThreadsError> {
    match threads {
        None => Ok(f()),
        Some(0) => Err(ThreadsError::Zero),
        Some(n) => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(ThreadsError::Start)?;
            Ok(pool.install(f))
        }
    }
}
