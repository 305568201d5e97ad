//! Contained HDF5 reads (`losscape::io::contain`) from many threads at once, while other
//! threads hold and wait on the `hdf5` crate's lock and panic: every read of a valid file
//! answers, none is taken for a hang. A forked child inherits the parent's locks in the
//! state they had at the fork; before the child kept the hdf5 lock for its whole life, a
//! release with waiters in the parent could hand the lock to a thread that does not exist
//! in the child, which then waited forever (CI saw `read_surface` of a seed file "hang").
//!
//! The busy threads call libhdf5 directly, so [`hdf5_init`] runs first, as in every
//! losscape entry point: with HDF5's file locks on, a child forked while a busy thread
//! had its file open for writing inherits that descriptor and its exclusive `flock`, and
//! the busy thread's `File::open` of the same file failed with "unable to lock file"
//! until the child exited (CI saw a busy thread's `unwrap` fail). Setting the variable before any thread
//! starts also keeps `set_var` from racing libhdf5's `getenv`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use losscape::io::contain::{set_containment, Containment};
use losscape::io::hdf5_init;
use losscape::io::surface::read_surface;

#[test]
fn contained_reads_answer_while_other_threads_contend_for_the_hdf5_lock() {
    hdf5_init();
    let deadline = Duration::from_secs(20);
    set_containment(Containment::Fork { deadline });
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus/surface/seed-2d.h5");
    let dir = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut busy = Vec::new();
    // threads that keep the hdf5 lock contended: in-process writes and reads
    for t in 0..3 {
        let stop = stop.clone();
        let p = dir.path().join(format!("busy{t}.h5"));
        busy.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let f = hdf5::File::create(&p).unwrap();
                let d = f.new_dataset::<f64>().shape([64]).create("v").unwrap();
                d.write_raw(&vec![n as f64; 64]).unwrap();
                drop(d);
                drop(f);
                let f = hdf5::File::open(&p).unwrap();
                let v: Vec<f64> = f.dataset("v").unwrap().read_raw().unwrap();
                assert_eq!(v[0], n as f64);
                n += 1;
            }
        }));
    }
    // a thread that panics (and is caught) over and over: it holds the panic hook's lock
    {
        let stop = stop.clone();
        busy.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = std::panic::catch_unwind(|| panic!("expected"));
            }
        }));
    }
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let src = seed.clone();
            let p = dir.path().join(format!("read{r}.h5"));
            std::fs::copy(&src, &p).unwrap();
            std::thread::spawn(move || {
                let mut slow = Duration::ZERO;
                for _ in 0..40 {
                    let t = Instant::now();
                    let s = read_surface(&p);
                    slow = slow.max(t.elapsed());
                    let s = s.unwrap_or_else(|e| panic!("a valid file was not read: {e}"));
                    assert_eq!(
                        s.x.len() * s.y.as_ref().map_or(1, |y| y.len()),
                        s.values.completed.len()
                    );
                }
                slow
            })
        })
        .collect();
    let slowest = readers
        .into_iter()
        .map(|h| h.join().unwrap())
        .max()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    for h in busy {
        h.join().unwrap();
    }
    assert!(slowest < deadline, "slowest read {slowest:?}");
}
