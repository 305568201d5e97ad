//! Careless paths and hostile outputs, end to end: only a regular file (or nothing) is ever
//! replaced, a second writer fails at once naming the first one's pid, stale temporary
//! files of dead processes are removed, outputs are checked before any work, thread counts
//! and grid sizes are bounded, analysis outputs stay inside `--outputs`, a closed stdout
//! ends a command quietly, and NaN coordinates are refused by `plot`. No test writes to a
//! device: every path is inside a temporary folder.

mod common;

use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_bad_input, assert_success, bin, fixture, run, stderr};

const MLP: &str = "fixtures/models/mlp-res-mnist1d.safetensors";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(s(p)).unwrap();
    // SAFETY: mkfifo on a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

/// A symlink (to a file holding "keep"), a directory and a FIFO in `dir`, each named
/// `stem.ext`-like; with the kind each must be reported as.
fn hostile_paths(dir: &Path, ext: &str) -> Vec<(PathBuf, &'static str)> {
    let target = dir.join("target.txt");
    std::fs::write(&target, "keep").unwrap();
    let link = dir.join(format!("link.{ext}"));
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let sub = dir.join(format!("dir.{ext}"));
    std::fs::create_dir(&sub).unwrap();
    let fifo = dir.join(format!("fifo.{ext}"));
    mkfifo(&fifo);
    vec![(link, "symbolic link"), (sub, "directory"), (fifo, "FIFO")]
}

fn assert_untouched(dir: &Path, ext: &str) {
    assert_eq!(
        std::fs::read_to_string(dir.join("target.txt")).unwrap(),
        "keep"
    );
    let t = |n: &str| std::fs::symlink_metadata(dir.join(n)).unwrap().file_type();
    assert!(t(&format!("link.{ext}")).is_symlink());
    assert!(t(&format!("dir.{ext}")).is_dir());
    assert!(t(&format!("fifo.{ext}")).is_fifo());
    assert!(
        std::fs::read_dir(dir.join(format!("dir.{ext}")))
            .unwrap()
            .next()
            .is_none(),
        "nothing written into the directory"
    );
    // no temporary or lock file left behind
    for n in names(dir) {
        assert!(!n.contains(".tmp") && !n.ends_with(".lock"), "left {n}");
    }
}

#[test]
fn only_a_regular_file_is_replaced_by_any_command() {
    let m = fixture(MLP);
    let dir = common::tempdir();
    let d = dir.path();
    let h5 = hostile_paths(d, "h5");
    for (p, kind) in &h5 {
        // hessian: checked before the model is even loaded
        let o = run(&[
            "hessian",
            "--model",
            s(&m),
            "--data",
            "mnist1d",
            "--samples",
            "16",
            "--top-k",
            "1",
            "--out",
            s(p),
        ]);
        assert_bad_input(&o, &[s(p), kind, "--out"]);
        // surface: --out, and --dir-file
        let o = run(&[
            "surface",
            "--model",
            s(&m),
            "--data",
            "mnist1d",
            "--samples",
            "16",
            "--x",
            "-1:1:3",
            "--out",
            s(p),
            "--quiet",
        ]);
        assert_bad_input(&o, &[s(p), kind, "--out"]);
        let o = run(&[
            "surface",
            "--model",
            s(&m),
            "--data",
            "mnist1d",
            "--samples",
            "16",
            "--x",
            "-1:1:3",
            "--out",
            s(&d.join("ok.h5")),
            "--dir-file",
            s(p),
            "--quiet",
        ]);
        assert_bad_input(&o, &[s(p), kind, "--dir-file"]);
        assert!(!d.join("ok.h5").exists() && !d.join("ok.h5.journal").exists());
        // merge, trajectory
        let o = run(&["merge", s(&d.join("missing.h5")), "--out", s(p)]);
        assert_bad_input(&o, &[s(p), kind]);
        let o = run(&["trajectory", "--checkpoints", s(d), "--out", s(p)]);
        assert_bad_input(&o, &[s(p), kind]);
    }
    assert_untouched(d, "h5");

    let dir = common::tempdir();
    let d = dir.path();
    for (p, kind) in hostile_paths(d, "png") {
        let o = run(&["plot", s(&d.join("missing.h5")), "--out", s(&p)]);
        assert_bad_input(&o, &[s(&p), kind]);
    }
    assert_untouched(d, "png");

    let dir = common::tempdir();
    let d = dir.path();
    for (p, kind) in hostile_paths(d, "safetensors") {
        let o = run(&[
            "train",
            "--arch",
            "mlp:in_features=40,depth=1,width=8",
            "--data",
            "mnist1d",
            "--samples",
            "64",
            "--epochs",
            "1",
            "--quiet",
            "--out",
            s(&p),
        ]);
        assert_bad_input(&o, &[s(&p), kind]);
    }
    assert_untouched(d, "safetensors");

    let dir = common::tempdir();
    let d = dir.path();
    for (p, kind) in hostile_paths(d, "json") {
        let o = run(&[
            "probe",
            "--model",
            s(&m),
            "--data",
            "mnist1d",
            "--samples",
            "16",
            "--out",
            s(&p),
        ]);
        assert_bad_input(&o, &[s(&p), kind, "--out"]);
    }
    assert_untouched(d, "json");

    // a checkpoint "folder" that is a file
    let dir = common::tempdir();
    let ck = dir.path().join("ck");
    std::fs::write(&ck, "not a folder").unwrap();
    let o = run(&[
        "train",
        "--arch",
        "mlp:in_features=40,depth=1,width=8",
        "--data",
        "mnist1d",
        "--samples",
        "64",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        s(&dir.path().join("m.safetensors")),
        "--checkpoints",
        s(&ck),
    ]);
    assert_bad_input(&o, &[s(&ck), "not a directory"]);
    assert_eq!(std::fs::read_to_string(&ck).unwrap(), "not a folder");
}

/// Holds an exclusive `flock` on `lock` with our pid in it, as a running losscape would
/// (released when dropped).
struct HeldLock(#[allow(dead_code)] std::fs::File);

fn hold_lock(lock: &Path) -> HeldLock {
    use std::io::Write;
    use std::os::unix::io::AsRawFd;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(lock)
        .unwrap();
    // SAFETY: flock on a descriptor we own.
    assert_eq!(
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    writeln!(f, "{}", std::process::id()).unwrap();
    HeldLock(f)
}

#[test]
fn a_second_writer_fails_at_once_naming_the_first() {
    let m = fixture(MLP);
    let dir = common::tempdir();
    let out = dir.path().join("h.h5");
    std::fs::write(&out, "previous").unwrap();
    let held = hold_lock(&dir.path().join(".h.h5.lock"));
    let t = Instant::now();
    let o = run(&[
        "hessian",
        "--model",
        s(&m),
        "--data",
        "mnist1d",
        "--top-k",
        "1",
        "--out",
        s(&out),
    ]);
    let pid = format!("pid {}", std::process::id());
    assert_bad_input(&o, &[s(&out), "another losscape process", &pid]);
    assert!(t.elapsed() < Duration::from_secs(20), "it waited");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "previous");
    drop(held);

    // two real `train` runs into one checkpoint folder: the second fails with the
    // first's pid while the first is running
    let ck = dir.path().join("ck");
    let train = |out: &str| {
        vec![
            "train".to_string(),
            "--arch".into(),
            "mlp:in_features=40,depth=2,width=64".into(),
            "--data".into(),
            "mnist1d".into(),
            "--epochs".into(),
            "200".into(),
            "--quiet".into(),
            "--threads".into(),
            "1".into(),
            "--out".into(),
            s(&dir.path().join(out)).into(),
            "--checkpoints".into(),
            s(&ck).into(),
        ]
    };
    let mut first = bin()
        .args(train("a.safetensors"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = ck.join(".losscape.lock");
    let t = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|s| s.ends_with('\n')) {
        assert!(t.elapsed() < Duration::from_secs(60), "no lock taken");
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = bin().args(train("b.safetensors")).output().unwrap();
    let _ = first.kill();
    let _ = first.wait();
    assert_bad_input(&o, &[s(&ck), &format!("pid {}", first.id())]);
    assert!(!dir.path().join("b.safetensors").exists());
}

#[test]
fn stale_temporaries_of_dead_processes_are_cleaned_up() {
    let m = fixture(MLP);
    let dir = common::tempdir();
    let out = dir.path().join("p.json");
    // a pid above any pid_max: that process is surely dead
    let stale = dir.path().join(".p.json.tmp2000000000");
    std::fs::write(&stale, "half-written").unwrap();
    // one of a live process (this test) stays
    let live = dir
        .path()
        .join(format!(".p.json.tmp{}", std::process::id()));
    std::fs::write(&live, "in progress").unwrap();
    assert_success(
        "probe",
        run(&[
            "probe",
            "--model",
            s(&m),
            "--data",
            "mnist1d",
            "--samples",
            "16",
            "--out",
            s(&out),
            "--json",
        ]),
    );
    assert!(!stale.exists(), "stale temporary file kept");
    assert!(live.exists(), "a live process's temporary file was removed");
    assert_eq!(
        names(dir.path()),
        vec![
            format!(".p.json.tmp{}", std::process::id()),
            "p.json".to_string()
        ]
    );
}

#[test]
fn thread_counts_beyond_the_cores_are_refused_at_once() {
    let m = fixture(MLP);
    let t = Instant::now();
    for cmd in ["eval", "hessian", "probe", "surface"] {
        let mut a = vec![
            cmd,
            "--model",
            s(&m),
            "--data",
            "mnist1d",
            "--threads",
            "100000",
        ];
        if cmd != "eval" && cmd != "probe" {
            a.extend(["--out", "never-written.h5", "--x", "-1:1:3"]);
        }
        if cmd == "hessian" {
            a.truncate(a.len() - 2);
        }
        assert_bad_input(&run(&a), &["--threads", "100000", "cores", "use at most"]);
    }
    assert!(!Path::new("never-written.h5").exists());
    assert!(t.elapsed() < Duration::from_secs(30));
}

#[test]
fn huge_grids_are_refused_before_anything_is_written_and_the_override_works() {
    let m = fixture(MLP);
    let dir = common::tempdir();
    let out = dir.path().join("s.h5");
    let t = Instant::now();
    for (x, y) in [
        ("-1:1:100000000", None),
        ("-1:1:100000", Some("-1:1:100000")),
    ] {
        let mut a = vec![
            "surface",
            "--model",
            s(&m),
            "--data",
            "mnist1d",
            "--samples",
            "8",
            "--x",
            x,
            "--out",
            s(&out),
            "--quiet",
        ];
        if let Some(y) = y {
            a.extend(["--y", y]);
        }
        let e = assert_bad_input(&run(&a), &["--x", "points", "needs about", "memory"]);
        assert!(e.contains("GB") || e.contains("TB"), "{e}");
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
    }
    assert!(t.elapsed() < Duration::from_secs(30));
    // just over the limit, computing only a thousandth of the points (a shard)
    let a = [
        "surface",
        "--model",
        s(&m),
        "--data",
        "mnist1d",
        "--samples",
        "4",
        "--x",
        "-1:1:1001",
        "--y",
        "-1:1:1000",
        "--shard",
        "0/1000",
        "--threads",
        "1",
        "--out",
        s(&out),
        "--quiet",
    ];
    assert_bad_input(&run(&a), &["--large-grid", "1001000 points"]);
    let mut a = a.to_vec();
    a.push("--large-grid");
    let o = assert_success("large grid", run(&a));
    let e = stderr(&o);
    assert!(e.contains("large grid") && e.contains("MB"), "{e}");
    assert!(out.exists());
}

const SPEC: &str = r#"
name = "NAME"
[data]
name = "mnist1d"
samples = 16
[grid]
x = "-1:1:3"
[[models]]
file = "fixtures/models/mlp-res-mnist1d.safetensors"
label = "LABEL"
"#;

#[test]
fn analysis_outputs_stay_inside_the_outputs_folder() {
    let dir = common::tempdir();
    let outputs = dir.path().join("outputs");
    let spec = dir.path().join("spec.toml");
    let run_spec = |name: &str, label: &str| {
        std::fs::write(&spec, SPEC.replace("NAME", name).replace("LABEL", label)).unwrap();
        bin()
            .args(["run", s(&spec), "--outputs", s(&outputs), "--quiet"])
            .output()
            .unwrap()
    };
    for name in ["../escape", "/tmp/escape", "a/b", ".."] {
        assert_bad_input(&run_spec(name, "res"), &["name", "letters, digits"]);
    }
    for label in ["../escape", "..", "a b"] {
        assert_bad_input(&run_spec("ok", label), &["label", "letters, digits"]);
    }
    // a symlink inside --outputs that leads out of it
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::create_dir_all(&outputs).unwrap();
    std::os::unix::fs::symlink(&elsewhere, outputs.join("linked")).unwrap();
    assert_bad_input(&run_spec("linked", "res"), &["outside", s(&outputs)]);
    assert!(names(&elsewhere).is_empty());
    assert!(!dir.path().join("escape").exists());
}

#[test]
fn a_closed_stdout_ends_every_printing_command_quietly() {
    let m = fixture("fixtures/models/resnet20-digits.safetensors");
    let mlp = fixture(MLP);
    let cases: Vec<Vec<&str>> = vec![
        vec!["info", s(&m)],
        vec!["info", s(&m), "--json"],
        vec![
            "eval",
            "--model",
            s(&mlp),
            "--data",
            "mnist1d",
            "--samples",
            "16",
        ],
    ];
    for args in cases {
        let mut child = bin()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // the reader goes away before the command prints: every write gets EPIPE
        drop(child.stdout.take());
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{args:?}: {err}");
        assert!(err.trim().is_empty(), "{args:?} printed: {err}");
    }
    // `info | head -1`, as a shell runs it
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' info '{}' | head -1",
            env!("CARGO_BIN_EXE_losscape"),
            s(&m)
        ))
        .output()
        .unwrap();
    assert!(
        !stderr(&o).contains("panicked"),
        "info | head -1: {}",
        stderr(&o)
    );
}

#[test]
fn plot_refuses_nan_coordinates_and_leaves_nothing_behind() {
    let m = fixture(MLP);
    let dir = common::tempdir();
    let surf = dir.path().join("s.h5");
    assert_success(
        "surface",
        run(&[
            "surface",
            "--model",
            s(&m),
            "--data",
            "mnist1d",
            "--samples",
            "8",
            "--x",
            "-1:1:3",
            "--y",
            "-1:1:3",
            "--out",
            s(&surf),
            "--quiet",
            "--threads",
            "1",
        ]),
    );
    {
        let f = hdf5::File::open_rw(&surf).unwrap();
        f.dataset("xcoordinates")
            .unwrap()
            .write_raw(&[-1.0, f64::NAN, 1.0])
            .unwrap();
    }
    let png = dir.path().join("p.png");
    let o = run(&["plot", s(&surf), "--out", s(&png)]);
    assert_bad_input(&o, &["s.h5", "xcoordinates", "finite"]);
    assert!(!png.exists());
    for n in names(dir.path()) {
        assert!(!n.contains(".tmp") && !n.ends_with(".lock"), "left {n}");
    }
}
