//! Small shared helpers.

/// Occurs when a thread pool cannot be made: a count of 0, or the OS refused the threads.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ThreadsError {
    /// Occurs when 0 threads are asked for.
    #[error("`threads` must be at least 1")]
    Zero,
    /// Occurs when far more threads are asked for than the machine has cores.
    #[error("`threads` {asked} is more than {limit} ({OVERSUBSCRIPTION}× the {cores} cores of this machine); threads beyond the cores only add overhead: use at most {cores}")]
    TooMany {
        asked: usize,
        cores: usize,
        limit: usize,
    },
    /// Occurs when rayon cannot start the pool.
    #[error("starting the thread pool")]
    Start(#[source] rayon::ThreadPoolBuildError),
}

/// Memory available to new allocations (Linux `MemAvailable`), None when unknown.
pub fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// A byte count for people: `1.5 GB` (powers of 1000).
pub fn human_bytes(b: u128) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// How many threads per core [`check_threads`] accepts (at least [`MIN_THREAD_LIMIT`]).
pub const OVERSUBSCRIPTION: usize = 4;
/// The thread count always accepted, whatever the core count.
pub const MIN_THREAD_LIMIT: usize = 8;

/// The cores this process may run on (1 when unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Checks a thread count before any work: at least 1, at most
/// max([`OVERSUBSCRIPTION`] × cores, [`MIN_THREAD_LIMIT`]) (a pool of 100 000 threads
/// takes minutes to start and gigabytes of stacks).
pub fn check_threads(threads: Option<usize>) -> Result<(), ThreadsError> {
    match threads {
        None => Ok(()),
        Some(0) => Err(ThreadsError::Zero),
        Some(n) => {
            let cores = cores();
            let limit = (OVERSUBSCRIPTION * cores).max(MIN_THREAD_LIMIT);
            if n > limit {
                Err(ThreadsError::TooMany {
                    asked: n,
                    cores,
                    limit,
                })
            } else {
                Ok(())
            }
        }
    }
}

/// Runs `f` on a rayon pool of `threads` threads (all cores when None).
pub fn with_threads<R: Send>(
    threads: Option<usize>,
    f: impl FnOnce() -> R + Send,
) -> Result<R, ThreadsError> {
    match threads {
        None => Ok(f()),
        Some(n) => {
            check_threads(Some(n))?;
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(ThreadsError::Start)?;
            Ok(pool.install(f))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_counts_are_bounded_by_the_cores() {
        assert!(check_threads(None).is_ok());
        assert!(check_threads(Some(1)).is_ok());
        assert!(check_threads(Some(MIN_THREAD_LIMIT)).is_ok());
        assert!(matches!(check_threads(Some(0)), Err(ThreadsError::Zero)));
        let limit = (OVERSUBSCRIPTION * cores()).max(MIN_THREAD_LIMIT);
        assert!(check_threads(Some(limit)).is_ok());
        let e = check_threads(Some(limit + 1)).unwrap_err();
        assert!(
            e.to_string().contains(&format!("use at most {}", cores())),
            "{e}"
        );
        assert!(with_threads(Some(100_000), || ()).is_err());
    }
}
