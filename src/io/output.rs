//! Every file the tool writes goes through here, with four guarantees:
//!
//! 1. **Only a regular file, or nothing, is ever replaced.** A directory, symlink, FIFO,
//!    socket or device at an output path is an [`OutputError::NotRegular`] naming it;
//!    it is checked before any work ([`prepare_output`]) and again just before the rename.
//! 2. **Atomic and durable**: a file is written whole to a temporary sibling
//!    `.NAME.tmpPID` (created exclusively, never through a symlink), fsynced, renamed over
//!    the target, and the folder is fsynced. Every write, fsync and rename error is
//!    returned; on any error (or a panic while writing) the temporary file is removed.
//! 3. **Stale temporary files are cleaned up**: a `.NAME.tmpPID` left by a process that
//!    was killed is removed the next time `NAME` is written — only when process `PID` is
//!    no longer alive.
//! 4. **One writer at a time**: an advisory lock (`flock(2)`, exclusive, non-blocking) on
//!    `.NAME.lock` beside each output (or `FOLDER/.losscape.lock` for a folder such as
//!    training checkpoints), holding the writer's pid, so that a second writer fails at
//!    once with [`OutputError::Locked`] naming the other process. The lock is released
//!    and its file removed when the [`OutputLock`] is dropped; the kernel releases it if
//!    the process dies. Writers that do not hold a lock take one for the duration of the
//!    write.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Why an output path cannot be written.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// Occurs when something other than a regular file is at the output path.
    #[error("{} is a {kind}, not a regular file; only a regular file is ever replaced: remove it or choose another path", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    /// Occurs when an output folder is something else than a directory.
    #[error("{} is a {kind}, not a directory; remove it or choose another folder", path.display())]
    NotFolder { path: PathBuf, kind: &'static str },
    /// Occurs when the output's folder does not exist (or is not a folder).
    #[error("{}: folder {} does not exist", path.display(), folder.display())]
    NoFolder { path: PathBuf, folder: PathBuf },
    /// Occurs when another process holds the output's lock.
    #[error("{} is being written by another losscape process ({}, lock {}); wait for it to finish or choose another path", path.display(), match pid { Some(p) => format!("pid {p}"), None => "pid unknown".to_string() }, lock.display())]
    Locked {
        path: PathBuf,
        lock: PathBuf,
        pid: Option<u32>,
    },
    /// Occurs when an output would land outside the folder it must stay in.
    #[error("{} is outside {}: an output name must be one plain path component (no '/', '..' or absolute path, no symlink leading out)", path.display(), root.display())]
    Escapes { path: PathBuf, root: PathBuf },
    /// Occurs when an output folder or lock file cannot be created, or the lock taken.
    #[error("cannot prepare {} for writing", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl From<OutputError> for io::Error {
    fn from(e: OutputError) -> Self {
        let kind = match &e {
            OutputError::NotRegular { .. }
            | OutputError::NotFolder { .. }
            | OutputError::Escapes { .. } => io::ErrorKind::InvalidInput,
            OutputError::NoFolder { .. } => io::ErrorKind::NotFound,
            OutputError::Locked { .. } => io::ErrorKind::WouldBlock,
            OutputError::Lock { source, .. } => source.kind(),
        };
        io::Error::new(kind, e)
    }
}

/// The folder of `path` (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// What kind of thing a file type is, in words.
fn kind_of(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "symbolic link"
    } else if t.is_fifo() {
        "FIFO (named pipe)"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_file() {
        "regular file"
    } else {
        "special file"
    }
}

/// Checks that `path` can be written as an output file: its folder exists, and nothing
/// but a regular file is there (a symlink is not followed: it is refused).
pub fn check_output(path: &Path) -> Result<(), OutputError> {
    let folder = folder_of(path);
    if !folder.is_dir() || path.file_name().is_none() {
        return Err(OutputError::NoFolder {
            path: path.to_path_buf(),
            folder: folder.to_path_buf(),
        });
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_file() => Err(OutputError::NotRegular {
            path: path.to_path_buf(),
            kind: kind_of(m.file_type()),
        }),
        _ => Ok(()),
    }
}

/// Checks that `dir` exists and is a directory (a symlink to a directory is followed:
/// output folders are often links to scratch space).
pub fn check_output_folder(dir: &Path) -> Result<(), OutputError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(m) => Err(OutputError::NotFolder {
            path: dir.to_path_buf(),
            kind: kind_of(m.file_type()),
        }),
        Err(_) => Err(OutputError::NoFolder {
            path: dir.to_path_buf(),
            folder: dir.to_path_buf(),
        }),
    }
}

/// The folder `root/name` for outputs, created when missing (with `root`), confined to
/// `root`: `name` must be one plain path component, and if `root/name` exists its real
/// path (symlinks resolved) must lie inside the real path of `root`.
pub fn confined_folder(root: &Path, name: &str) -> Result<PathBuf, OutputError> {
    let dir = root.join(name);
    let escapes = || OutputError::Escapes {
        path: dir.clone(),
        root: root.to_path_buf(),
    };
    let mut parts = Path::new(name).components();
    match (parts.next(), parts.next()) {
        (Some(std::path::Component::Normal(_)), None) => {}
        _ => return Err(escapes()),
    }
    let io = |source| OutputError::Lock {
        path: dir.clone(),
        source,
    };
    std::fs::create_dir_all(root).map_err(io)?;
    check_output_folder(root)?;
    let real_root = std::fs::canonicalize(root).map_err(io)?;
    if std::fs::symlink_metadata(&dir).is_err() {
        std::fs::create_dir(&dir).map_err(io)?;
    }
    check_output_folder(&dir)?;
    let real = std::fs::canonicalize(&dir).map_err(io)?;
    if real.parent() != Some(real_root.as_path()) {
        return Err(escapes());
    }
    Ok(dir)
}

/// Validates `path` as an output, takes its lock and removes stale temporary files of it;
/// hold the returned lock until the output is written. Call before any computation.
pub fn prepare_output(path: &Path) -> Result<OutputLock, OutputError> {
    check_output(path)?;
    let lock = OutputLock::acquire(path)?;
    // a failed clean-up is not fatal: the files are only clutter
    let _ = clean_stale_temps(path);
    Ok(lock)
}

/// Locks held by this process, by lock file (a second `flock` on a new descriptor would
/// conflict with our own).
fn held() -> &'static Mutex<HashMap<PathBuf, usize>> {
    static HELD: OnceLock<Mutex<HashMap<PathBuf, usize>>> = OnceLock::new();
    HELD.get_or_init(|| Mutex::new(HashMap::new()))
}

fn lock_key(lock: &Path) -> PathBuf {
    let folder = folder_of(lock);
    std::fs::canonicalize(folder)
        .unwrap_or_else(|_| folder.to_path_buf())
        .join(lock.file_name().unwrap_or_default())
}

/// An advisory, exclusive lock on an output (see the module doc); released on drop.
#[derive(Debug)]
pub struct OutputLock {
    /// None when this process already held the lock (a nested guard).
    file: Option<File>,
    lock: PathBuf,
    key: PathBuf,
}

impl OutputLock {
    /// The lock file of an output file: `.NAME.lock` beside it.
    pub fn lock_path(path: &Path) -> PathBuf {
        folder_of(path).join(format!(".{}.lock", file_name(path)))
    }

    /// Locks the output file `path` (see [`OutputLock::lock_path`]).
    pub fn acquire(path: &Path) -> Result<OutputLock, OutputError> {
        Self::acquire_at(path, Self::lock_path(path))
    }

    /// Locks the folder `dir` as a whole (`dir/.losscape.lock`).
    pub fn acquire_folder(dir: &Path) -> Result<OutputLock, OutputError> {
        Self::acquire_at(dir, dir.join(".losscape.lock"))
    }

    fn acquire_at(path: &Path, lock: PathBuf) -> Result<OutputLock, OutputError> {
        let key = lock_key(&lock);
        {
            let mut h = held().lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = h.get_mut(&key) {
                *n += 1;
                return Ok(OutputLock {
                    file: None,
                    lock,
                    key,
                });
            }
        }
        let err = |source| OutputError::Lock {
            path: path.to_path_buf(),
            source,
        };
        // a holder may remove the lock file as we open it: retry on a replaced file
        for _ in 0..16 {
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .mode(0o644)
                .open(&lock)
                .map_err(err)?;
            // SAFETY: flock on a descriptor we own; no memory is shared.
            let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc != 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EWOULDBLOCK) => {
                        let mut s = String::new();
                        let _ = f.read_to_string(&mut s);
                        return Err(OutputError::Locked {
                            path: path.to_path_buf(),
                            lock,
                            pid: s.trim().parse().ok(),
                        });
                    }
                    // a file system without locks: go on unlocked
                    Some(libc::ENOLCK | libc::EOPNOTSUPP | libc::ENOSYS) => {
                        return Ok(Self::register(None, lock, key))
                    }
                    _ => return Err(err(e)),
                }
            }
            // the file we locked must still be the one at the path (not removed by a
            // holder that released it meanwhile)
            let same = match (f.metadata(), std::fs::symlink_metadata(&lock)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            if !same {
                continue;
            }
            f.set_len(0)
                .and_then(|()| f.rewind())
                .and_then(|()| writeln!(f, "{}", std::process::id()))
                .and_then(|()| f.flush())
                .map_err(err)?;
            return Ok(Self::register(Some(f), lock, key));
        }
        Err(err(io::Error::other("the lock file keeps being replaced")))
    }

    fn register(file: Option<File>, lock: PathBuf, key: PathBuf) -> OutputLock {
        held()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), 1);
        OutputLock { file, lock, key }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.lock
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        let mut h = held().lock().unwrap_or_else(|e| e.into_inner());
        let last = match h.get_mut(&self.key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                h.remove(&self.key);
                true
            }
        };
        if last {
            if let Some(f) = self.file.take() {
                // removed while still locked, so a waiting opener sees a replaced file
                let _ = std::fs::remove_file(&self.lock);
                drop(f);
            }
        }
    }
}

/// Whether process `pid` is alive (or exists under another user).
fn alive(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if p <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(p, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The pid in a temporary file name of `name`: `.NAME.tmpPID`, `.NAME.tmpPID.EXT`, or the
/// older plot form `.STEM.tmpPID.EXT`.
fn temp_pid(entry: &str, name: &str, stem: &str, ext: Option<&str>) -> Option<u32> {
    let rest = entry
        .strip_prefix(&format!(".{name}.tmp"))
        .or_else(|| ext.and_then(|_| entry.strip_prefix(&format!(".{stem}.tmp"))))?;
    let digits = match ext {
        Some(e) => rest.strip_suffix(&format!(".{e}")).unwrap_or(rest),
        None => rest,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Removes the temporary siblings of `path` left by processes that are no longer alive;
/// returns how many were removed. Linear in the size of the folder.
pub fn clean_stale_temps(path: &Path) -> io::Result<usize> {
    let name = file_name(path);
    let stem = path
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let ext = path.extension().map(|e| e.to_string_lossy().into_owned());
    let me = std::process::id();
    let mut removed = 0;
    for entry in std::fs::read_dir(folder_of(path))? {
        let entry = entry?;
        let entry_name = entry.file_name();
        let Some(s) = entry_name.to_str() else {
            continue;
        };
        let Some(pid) = temp_pid(s, &name, &stem, ext.as_deref()) else {
            continue;
        };
        if pid == me || alive(pid) {
            continue;
        }
        if entry
            .file_type()
            .is_ok_and(|t| t.is_file() || t.is_symlink())
            && std::fs::remove_file(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    Ok(removed)
}

/// The temporary sibling of `path` for this process: `.NAME.tmpPID`, or `.NAME.tmpPID.EXT`
/// with `keep_ext` (for writers that pick a format by extension).
pub fn temp_path(path: &Path, keep_ext: bool) -> PathBuf {
    let mut t = format!(".{}.tmp{}", file_name(path), std::process::id());
    if keep_ext {
        if let Some(e) = path.extension() {
            t.push('.');
            t.push_str(&e.to_string_lossy());
        }
    }
    folder_of(path).join(t)
}

/// Removes the temporary file on drop unless disarmed (so a panic leaves nothing behind).
struct TempGuard<'a>(Option<&'a Path>);

impl Drop for TempGuard<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// fsyncs a folder after a rename into it (some file systems refuse: EINVAL, ignored).
fn sync_folder(dir: &Path) -> io::Result<()> {
    match File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        r => r,
    }
}

/// Renames the finished temporary file over `path` after checking `path` again.
fn commit(tmp: &Path, path: &Path) -> io::Result<()> {
    check_output(path)?;
    std::fs::rename(tmp, path)?;
    sync_folder(folder_of(path))
}

/// Takes the lock of `path` unless this process holds it already.
fn lock_for_write(path: &Path) -> io::Result<OutputLock> {
    check_output(path)?;
    let lock = OutputLock::acquire(path)?;
    let _ = clean_stale_temps(path);
    Ok(lock)
}

/// Writes a file atomically: `write` fills a fresh temporary sibling, which is fsynced and
/// renamed over `path` (see the module doc). Errors name nothing: callers add the path.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let _lock = lock_for_write(path)?;
    let tmp = temp_path(path, false);
    let _ = std::fs::remove_file(&tmp);
    let mut guard = TempGuard(Some(&tmp));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)?;
    write(&mut f)?;
    f.flush()?;
    f.sync_all()?;
    drop(f);
    commit(&tmp, path)?;
    guard.0 = None;
    Ok(())
}

/// Produces a file through a temporary sibling: `write(tmp)` creates and fills it (e.g. an
/// HDF5 file or an image, which libraries open by path), then it is fsynced and renamed
/// over `path`; on any error or panic the temporary file is removed. `keep_ext` gives the
/// temporary file `path`'s extension; `io_err` converts I/O failures.
pub fn replace_atomically<E>(
    path: &Path,
    keep_ext: bool,
    io_err: impl Fn(io::Error) -> E,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let _lock = lock_for_write(path).map_err(&io_err)?;
    let tmp = temp_path(path, keep_ext);
    let _ = std::fs::remove_file(&tmp);
    let mut guard = TempGuard(Some(&tmp));
    write(&tmp)?;
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(&io_err)?;
    commit(&tmp, path).map_err(&io_err)?;
    guard.0 = None;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_a_regular_file_and_leaves_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.json");
        std::fs::write(&p, "old").unwrap();
        write_atomic(&p, |f| f.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(names(d.path()), vec!["a.json"]);
    }

    #[test]
    fn refuses_symlinks_directories_and_fifos_untouched() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let link = d.path().join("link.h5");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let dir = d.path().join("dir.h5");
        std::fs::create_dir(&dir).unwrap();
        let fifo = d.path().join("fifo.h5");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        for (p, kind) in [
            (&link, "symbolic link"),
            (&dir, "directory"),
            (&fifo, "FIFO"),
        ] {
            let e = write_atomic(p, |f| f.write_all(b"x")).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains(kind) && msg.contains(p.to_str().unwrap()),
                "{msg}"
            );
            let e = prepare_output(p).unwrap_err();
            assert!(matches!(e, OutputError::NotRegular { .. }), "{e}");
        }
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            names(d.path()),
            vec!["dir.h5", "fifo.h5", "link.h5", "target"]
        );
    }

    /// A writer that fails after `ok` bytes, as a full disk does.
    struct Full {
        ok: usize,
    }
    impl Write for Full {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.ok == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = b.len().min(self.ok);
            self.ok -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_write_is_reported_and_the_old_file_kept() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.bin");
        std::fs::write(&p, "old").unwrap();
        let e = write_atomic(&p, |_| {
            let mut full = Full { ok: 5 };
            full.write_all(&[0u8; 100])
        })
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old");
        assert_eq!(names(d.path()), vec!["a.bin"]);
        // and a panic in the writer leaves no temporary file either
        let r = std::panic::catch_unwind(|| {
            let _ = replace_atomically(
                &p,
                true,
                |e| e,
                |tmp| {
                    std::fs::write(tmp, "half").unwrap();
                    panic!("drawing failed")
                },
            );
        });
        assert!(r.is_err());
        assert_eq!(names(d.path()), vec!["a.bin"]);
    }

    #[test]
    fn stale_temporaries_of_dead_processes_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.h5");
        // a pid far above any pid_max is never alive
        let dead = 2_000_000_000u32;
        for n in [
            format!(".s.h5.tmp{dead}"),
            format!(".s.tmp{dead}.h5"),
            format!(".s.h5.tmp{dead}.h5"),
            ".s.h5.tmp1".to_string(),       // pid 1 is alive: kept
            format!(".other.h5.tmp{dead}"), // another output: kept
            format!(".s.h5.tmpx{dead}"),    // not ours: kept
        ] {
            std::fs::write(d.path().join(n), "x").unwrap();
        }
        assert_eq!(clean_stale_temps(&p).unwrap(), 3);
        assert_eq!(
            names(d.path()),
            vec![
                format!(".other.h5.tmp{dead}"),
                ".s.h5.tmp1".to_string(),
                format!(".s.h5.tmpx{dead}")
            ]
        );
    }

    #[test]
    fn output_folders_stay_inside_their_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("outputs");
        let ok = confined_folder(&root, "run_1").unwrap();
        assert!(ok.is_dir() && ok.starts_with(&root));
        for bad in ["../x", "/tmp/x", "a/b", "..", ".", ""] {
            let e = confined_folder(&root, bad).unwrap_err();
            assert!(matches!(e, OutputError::Escapes { .. }), "{bad}: {e}");
        }
        // a symlink inside the root that leads out of it
        let outside = d.path().join("elsewhere");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let e = confined_folder(&root, "link").unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
        assert!(!d.path().join("x").exists());
    }

    #[test]
    fn lock_names_the_holder_and_nests_in_one_process() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("o.h5");
        let lock = OutputLock::acquire(&p).unwrap();
        let lp = OutputLock::lock_path(&p);
        assert_eq!(
            std::fs::read_to_string(&lp).unwrap().trim(),
            std::process::id().to_string()
        );
        // a second descriptor (as another process would open) is refused at once
        let f = File::open(&lp).unwrap();
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_ne!(rc, 0);
        // the same process writing the output nests
        write_atomic(&p, |f| f.write_all(b"1")).unwrap();
        drop(lock);
        assert!(!lp.exists());
        assert_eq!(names(d.path()), vec!["o.h5"]);
    }
}
