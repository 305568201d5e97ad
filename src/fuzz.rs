//! Robustness harness: every reader of untrusted bytes, run on one file in a child
//! process that is watched for panics, signals, hangs and memory.
//!
//! [`readers`] is the registry: one [`Reader`] per file format, calling the same library
//! function the CLI calls. The fuzzer (`make fuzz`, `src/bin/losscape-fuzz.rs`) mutates the
//! seed files of `tests/fuzz-corpus/<reader>/` and runs them through [`run_isolated`]; the
//! integration test `tests/fuzz_corpus.rs` replays every corpus file the same way.
//!
//! An execution passes when the reader returns — `Ok` or a typed error, including an HDF5
//! crash contained by [`crate::io::contain`]. It fails when the child panics, dies from a
//! signal (an allocation beyond the address-space limit aborts), or outlives the deadline.
//!
//! Adding a reader is one line in [`readers`]: a name (its corpus folder), the file name
//! the input is written under, and a function from that path to `Result<(), String>`.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::{Rng, RngCore};

use crate::model::{Arch, Model};

/// A reader of untrusted bytes, as the fuzzer and the corpus test see it.
#[derive(Clone, Copy)]
pub struct Reader {
    /// Its corpus folder under `tests/fuzz-corpus/`.
    pub name: &'static str,
    /// The name the input file gets (readers dispatch on names and extensions).
    pub file_name: &'static str,
    /// Reads the file at the path with the library's own code; a typed error is `Err`.
    pub read: fn(&Path) -> Result<(), String>,
}

/// The architecture of the small model the direction and checkpoint seeds belong to.
pub const TINY_ARCH: &str = "mlp:in_features=40,depth=1,width=4";

fn tiny_model() -> Model {
    let arch: Arch = TINY_ARCH.parse().expect("a valid architecture");
    Model::init(arch, 0, false)
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Every reader of untrusted bytes; adding one is one line.
pub fn readers() -> Vec<Reader> {
    vec![
        Reader {
            name: "surface",
            file_name: "in.h5",
            read: read_surface,
        },
        Reader {
            name: "shard",
            file_name: "in.h5",
            read: read_shard,
        },
        Reader {
            name: "directions",
            file_name: "in.h5",
            read: read_directions,
        },
        Reader {
            name: "hessian",
            file_name: "in.h5",
            read: read_hessian,
        },
        Reader {
            name: "trajectory",
            file_name: "in.h5",
            read: read_trajectory,
        },
        Reader {
            name: "safetensors",
            file_name: "in.safetensors",
            read: read_model,
        },
        Reader {
            name: "checkpoint",
            file_name: "state.safetensors",
            read: read_checkpoint,
        },
        Reader {
            name: "onnx",
            file_name: "in.onnx",
            read: read_model,
        },
        Reader {
            name: "npz",
            file_name: "in.npz",
            read: read_data,
        },
        Reader {
            name: "npy",
            file_name: "x.npy",
            read: read_npy,
        },
        Reader {
            name: "idx",
            file_name: "train-images-idx3-ubyte",
            read: read_idx,
        },
        Reader {
            name: "cifar",
            file_name: "data_batch_1.bin",
            read: read_data,
        },
        Reader {
            name: "torch",
            file_name: "in.pth",
            read: read_torch,
        },
        Reader {
            name: "cifar-py",
            file_name: "data_batch_1",
            read: read_cifar_py,
        },
        Reader {
            name: "png",
            file_name: "in.png",
            read: read_image,
        },
        Reader {
            name: "jpeg",
            file_name: "in.jpg",
            read: read_image,
        },
        Reader {
            name: "toml",
            file_name: "in.toml",
            read: read_spec,
        },
        Reader {
            name: "history",
            file_name: "in.history.csv",
            read: read_history,
        },
    ]
}

fn read_surface(p: &Path) -> Result<(), String> {
    let s = crate::io::surface::read_surface(p).map_err(err)?;
    let _ = s.grid();
    let params = crate::metrics::MetricParams::default();
    crate::metrics::surface_file_metrics(&s, "train_loss", &params).map_err(err)?;
    Ok(())
}

/// A shard merged with itself: the merge's checks of grids, attributes and masks.
fn read_shard(p: &Path) -> Result<(), String> {
    let out = p.with_file_name("merged.h5");
    crate::jobs::merge::merge_shards(&[p.to_path_buf()], &out).map_err(err)?;
    Ok(())
}

fn read_directions(p: &Path) -> Result<(), String> {
    let m = tiny_model();
    let dir_type = crate::landscape::directions::DirType::Weights;
    crate::io::directions::read_directions(p, &m.theta, dir_type).map_err(err)?;
    Ok(())
}

fn read_hessian(p: &Path) -> Result<(), String> {
    let is = crate::io::hessian::is_hessian_file(p);
    let spectra = crate::io::hessian::read_spectra(p).map_err(err);
    let vectors = crate::io::hessian::read_eigenvectors(p, None, 1).map_err(err);
    let plot = crate::plot::curve::load_spectrum(p, None).map_err(err);
    match (is, spectra, vectors, plot) {
        (_, Ok(_), Ok(_), Ok(_)) => Ok(()),
        (_, a, b, c) => Err([a.err(), b.err(), c.err()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; ")),
    }
}

fn read_trajectory(p: &Path) -> Result<(), String> {
    crate::plot::job::read_trajectory(p).map_err(err)?;
    Ok(())
}

fn read_model(p: &Path) -> Result<(), String> {
    Model::load(p, None).map_err(err)?;
    Ok(())
}

fn read_checkpoint(p: &Path) -> Result<(), String> {
    let m = tiny_model();
    let cfg = crate::train::TrainConfig::default();
    crate::train::checkpoint::load_state(p, &m.arch, &cfg, &m.theta).map_err(err)?;
    Ok(())
}

/// A torch.save checkpoint (zip or legacy format) through the restricted unpickler.
fn read_torch(p: &Path) -> Result<(), String> {
    crate::model::torch_pickle::read(p).map_err(err)?;
    Ok(())
}

/// One batch file of torchvision's CIFAR python download (a pickled dict of numpy arrays).
fn read_cifar_py(p: &Path) -> Result<(), String> {
    crate::data::cifar_py::load_file(p).map_err(err)?;
    Ok(())
}

/// One image of a torchvision ImageFolder (PNG or JPEG, by its name): placed as the only
/// sample of a one-class folder and loaded as `--data FOLDER --resize 3` loads it, so the
/// decoder (bounded by the file size), the RGB conversion and the resize all run.
fn read_image(p: &Path) -> Result<(), String> {
    let class = p.with_file_name("folder").join("c");
    std::fs::create_dir_all(&class).map_err(err)?;
    let name = p.file_name().ok_or("no file name")?;
    std::fs::copy(p, class.join(name)).map_err(err)?;
    let root = class.parent().ok_or("no folder")?;
    let spec = root.to_str().ok_or("non-UTF-8 path")?;
    let format = crate::data::DataFormat {
        resize: Some(3),
        ..Default::default()
    };
    crate::data::load_with(spec, &Default::default(), &format).map_err(err)?;
    Ok(())
}

fn read_data(p: &Path) -> Result<(), String> {
    let spec = p.to_str().ok_or("non-UTF-8 path")?;
    crate::data::load(spec, &Default::default()).map_err(err)?;
    Ok(())
}

/// The inputs `x.npy`, with valid labels `y.npy` beside them (the labels parse the same
/// way, through the same `npy` parser).
fn read_npy(p: &Path) -> Result<(), String> {
    let y = p.with_file_name("y.npy");
    if !y.exists() {
        std::fs::write(&y, npy_labels()).map_err(err)?;
    }
    read_data(p)
}

/// `numpy.save` of the int64 labels `[0, 1, 2, 0]` (format 1.0: the header padded with
/// spaces and a newline so that the data starts at a multiple of 64 bytes).
fn npy_labels() -> Vec<u8> {
    let mut head = "{'descr': '<i8', 'fortran_order': False, 'shape': (4,), }".to_string();
    while !(10 + head.len() + 1).is_multiple_of(64) {
        head.push(' ');
    }
    head.push('\n');
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend_from_slice(&(head.len() as u16).to_le_bytes());
    v.extend_from_slice(head.as_bytes());
    for l in [0i64, 1, 2, 0] {
        v.extend_from_slice(&l.to_le_bytes());
    }
    v
}

/// MNIST images, with 4 valid labels beside them.
fn read_idx(p: &Path) -> Result<(), String> {
    let y = p.with_file_name("train-labels-idx1-ubyte");
    if !y.exists() {
        std::fs::write(&y, [0, 0, 8, 1, 0, 0, 0, 4, 1, 2, 3, 4]).map_err(err)?;
    }
    read_data(p)
}

fn read_spec(p: &Path) -> Result<(), String> {
    crate::analysis::spec::load(p).map_err(err)?;
    Ok(())
}

fn read_history(p: &Path) -> Result<(), String> {
    crate::train::checkpoint::read_history_csv(p).map_err(err)?;
    Ok(())
}

/// Limits of one isolated execution.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Wall-clock deadline of the child.
    pub deadline: Duration,
    /// Address space the child may add: `base + per_byte × file size`.
    pub memory_base: u64,
    pub memory_per_byte: u64,
}

impl Default for Limits {
    /// 10 s; 256 MiB + 64 bytes per byte of input (a reader decodes, converts to f32 and
    /// copies; more than that from a small file is an unchecked size field).
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(10),
            memory_base: 256 << 20,
            memory_per_byte: 64,
        }
    }
}

/// How one execution ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The reader accepted the file.
    Accepted,
    /// The reader returned a typed error.
    Rejected(String),
    /// The reader panicked (the message, when it printed one).
    Panicked(String),
    /// The child died from a signal (an allocation past the limit aborts: `SIGABRT`).
    Signal(String),
    /// The child outlived the deadline and was killed.
    Hung,
}

impl Outcome {
    /// Whether this is a failure of the reader (panic, signal, hang).
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Outcome::Panicked(_) | Outcome::Signal(_) | Outcome::Hung
        )
    }

    /// Whether the reader rejected the file because libhdf5 crashed, hung or
    /// over-allocated in its contained child ([`crate::io::contain`]).
    pub fn is_contained(&self) -> bool {
        match self {
            Outcome::Rejected(why) => {
                why.contains("the HDF5 library crashed")
                    || why.contains("and was stopped (corrupt file?)")
                    || why.contains("MiB, the bound for a file of")
            }
            _ => false,
        }
    }
}

/// One execution's outcome, peak resident memory and duration.
#[derive(Clone, Debug)]
pub struct Execution {
    pub outcome: Outcome,
    /// Peak resident set of the child and its descendants, KiB.
    pub peak_rss_kib: u64,
    pub wall: Duration,
}

const EXIT_REJECTED: i32 = 3;
const EXIT_PANICKED: i32 = 101;

/// Runs `reader` on `path` in a forked child under `limits`.
///
/// The child's stderr goes to an in-memory file whose last line becomes the message of a
/// panic or a signal. The calling process should be single-threaded (the fuzzer is; a
/// test thread forking is fine too: the child only runs the reader).
pub fn run_isolated(reader: &Reader, path: &Path, limits: &Limits) -> std::io::Result<Execution> {
    use std::os::fd::AsRawFd;
    let size = std::fs::metadata(path)?.len();
    // SAFETY: a name and flags; the descriptor is owned right away.
    let fd = unsafe { libc::memfd_create(c"losscape-fuzz-stderr".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new descriptor.
    let errfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let started = Instant::now();
    // SAFETY: the child runs the reader and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: system calls on our own process.
        unsafe {
            libc::dup2(errfd.as_raw_fd(), 2);
            let limit = vm_size()
                .saturating_add(limits.memory_base)
                .saturating_add(size.saturating_mul(limits.memory_per_byte));
            let r = libc::rlimit {
                rlim_cur: limit,
                rlim_max: libc::RLIM_INFINITY,
            };
            libc::setrlimit(libc::RLIMIT_AS, &r);
            let core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &core);
        }
        let code = match std::panic::catch_unwind(|| (reader.read)(path)) {
            Ok(Ok(())) => 0,
            Ok(Err(why)) => {
                // straight to the descriptor: under `cargo test` eprintln! is captured
                let msg = format!("{why}\n");
                // SAFETY: a valid descriptor and a buffer of `msg.len()` bytes.
                unsafe { libc::write(errfd.as_raw_fd(), msg.as_ptr().cast(), msg.len()) };
                EXIT_REJECTED
            }
            Err(_) => EXIT_PANICKED,
        };
        // SAFETY: leaves without the parent's destructors.
        unsafe { libc::_exit(code) }
    }
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut hung = false;
    loop {
        // SAFETY: `pid` is our child; `status` and `usage` are valid out-parameters.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if started.elapsed() > limits.deadline && !hung {
            hung = true;
            // SAFETY: our child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let wall = started.elapsed();
    let stderr = {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::from(errfd);
        let mut buf = vec![0u8; 1 << 16];
        let n = f.read_at(&mut buf, 0).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let last = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(3)
        .collect::<Vec<_>>()
        .join(" | ");
    let outcome = if hung {
        Outcome::Hung
    } else if libc::WIFSIGNALED(status) {
        let sig = crate::io::contain::signal_name(libc::WTERMSIG(status));
        Outcome::Signal(if last.is_empty() {
            sig
        } else {
            format!("{sig}: {last}")
        })
    } else {
        match libc::WEXITSTATUS(status) {
            0 => Outcome::Accepted,
            EXIT_REJECTED => Outcome::Rejected(stderr.trim().to_string()),
            EXIT_PANICKED => Outcome::Panicked(last),
            c => Outcome::Signal(format!("exit status {c}: {last}")),
        }
    };
    Ok(Execution {
        outcome,
        peak_rss_kib: usage.ru_maxrss.max(0) as u64,
        wall,
    })
}

/// This process's virtual size in bytes, 0 when unknown.
fn vm_size() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|p| p.parse::<u64>().ok())
        })
        .unwrap_or(0);
    // SAFETY: no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    pages.saturating_mul(page)
}

/// Integers that break size arithmetic, written little- or big-endian over a field.
const INTERESTING: [u64; 16] = [
    0,
    1,
    2,
    0x7f,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 32,
    1 << 40,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
    4_000_000_000,
];

/// Numbers that break size fields in text formats (JSON headers, TOML, CSV).
const INTERESTING_TEXT: [&str; 10] = [
    "0",
    "-1",
    "4294967296",
    "1099511627776",
    "18446744073709551615",
    "4000000000",
    "600000000",
    "1e308",
    "NaN",
    "99999999999999999999999",
];

/// One mutant of `seed` (1 to 4 stacked mutations; `other` is spliced from): bit flips,
/// interesting integers at header-biased offsets, byte insertion and deletion, truncation,
/// splicing, and number replacement in text.
pub fn mutate(rng: &mut impl RngCore, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    let rounds = rng.random_range(1..=4);
    for _ in 0..rounds {
        if v.is_empty() {
            v.push(rng.random());
            continue;
        }
        // offsets biased to the first 1 KiB, where headers and size fields live
        let pos = if rng.random_bool(0.6) {
            rng.random_range(0..v.len().min(1024))
        } else {
            rng.random_range(0..v.len())
        };
        match rng.random_range(0..9) {
            0 => {
                let bit = rng.random_range(0..8);
                v[pos] ^= 1 << bit;
            }
            1 => v[pos] = rng.random(),
            2 => {
                let x = INTERESTING[rng.random_range(0..INTERESTING.len())];
                let width = [1usize, 2, 4, 8][rng.random_range(0..4)];
                let bytes = if rng.random_bool(0.8) {
                    x.to_le_bytes()
                } else {
                    x.to_be_bytes()
                };
                let bytes: Vec<u8> = if rng.random_bool(0.8) {
                    bytes[..width].to_vec()
                } else {
                    bytes[8 - width..].to_vec()
                };
                for (i, b) in bytes.into_iter().enumerate() {
                    if let Some(slot) = v.get_mut(pos + i) {
                        *slot = b;
                    }
                }
            }
            3 => {
                let n = rng.random_range(1..=16);
                let ins: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                v.splice(pos..pos, ins);
            }
            4 => {
                let n = rng.random_range(1..=64).min(v.len() - pos);
                v.drain(pos..pos + n);
            }
            5 => v.truncate(pos),
            6 if !other.is_empty() => {
                let from = rng.random_range(0..other.len());
                let n = rng.random_range(1..=256).min(other.len() - from);
                let end = (pos + n).min(v.len());
                v.splice(pos..end, other[from..from + n].iter().copied());
            }
            7 => {
                // a run of digits replaced by an extreme number
                if let Some(start) = (pos..v.len()).find(|&i| v[i].is_ascii_digit()) {
                    let end = (start..v.len())
                        .find(|&i| !v[i].is_ascii_digit())
                        .unwrap_or(v.len());
                    let t = INTERESTING_TEXT[rng.random_range(0..INTERESTING_TEXT.len())];
                    v.splice(start..end, t.bytes());
                }
            }
            _ => {
                // duplicate a block (repeated chunks, lists, records)
                let n = rng.random_range(1..=128).min(v.len() - pos);
                let block = v[pos..pos + n].to_vec();
                v.splice(pos..pos, block);
            }
        }
    }
    v
}

/// The corpus folder of `reader` under `root`.
pub fn corpus_dir(root: &Path, reader: &Reader) -> PathBuf {
    root.join(reader.name)
}

/// The corpus files of `reader` (sorted), skipping names starting with `.` or `README`.
pub fn corpus_files(root: &Path, reader: &Reader) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(root, reader))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            !n.starts_with('.') && !n.starts_with("README")
        })
        .collect();
    files.sort();
    files
}

/// Writes the seeds that are made by the library rather than the CLI (the resume state of
/// [`TINY_ARCH`] with the default recipe) into `root/<reader>/`.
pub fn write_library_seeds(root: &Path) -> Result<(), String> {
    let m = tiny_model();
    let cfg = crate::train::TrainConfig::default();
    let dir = root.join("checkpoint");
    std::fs::create_dir_all(&dir).map_err(err)?;
    let mut state = crate::train::TrainState::new(m.theta.clone());
    state.epoch = 1;
    crate::train::checkpoint::save_state(
        &dir.join("seed-state.safetensors"),
        &m.arch,
        &cfg,
        &state,
    )
    .map_err(err)?;
    let mut rng = rand::rng();
    state.momentum = Some(m.theta.data.mapv(|_| rng.random::<f32>()));
    crate::train::checkpoint::save_state(
        &dir.join("seed-state-momentum.safetensors"),
        &m.arch,
        &cfg,
        &state,
    )
    .map_err(err)
}
