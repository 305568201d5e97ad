//! MPI runs (`mpirun -n 3`, oversubscribed) against one process, bit for bit: a surface
//! whose rank 2 dies mid-run (the `LOSSCAPE_TEST_RANK_DIES` hook) and is resumed with
//! another rank count, a whole analysis (`losscape run`) killed the same way and resumed,
//! a Hessian (Lanczos, trace, density, per block, kept H·v state), sharpness, probes and an
//! evaluation. Built only with the `mpi` feature (`make test`); needs `mpirun` on the PATH.
#![cfg(feature = "mpi")]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{ok, s};
use losscape::io::surface::read_surface;

const MLP: &str = "fixtures/models/mlp-res-mnist1d.safetensors";

/// `mpirun … -n N losscape ARGS`.
fn mpirun(n: usize, args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.current_dir(common::root())
        .args([
            "--allow-run-as-root",
            "--oversubscribe",
            "-n",
            &n.to_string(),
        ])
        .args(["--mca", "btl", "self,vader,tcp"])
        .arg(env!("CARGO_BIN_EXE_losscape"))
        .args(args)
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1");
    c
}

fn mpi_ok(n: usize, args: &[&str]) -> Output {
    let o = mpirun(n, args).output().expect("mpirun runs");
    assert!(
        o.status.success(),
        "mpirun -n {n} {args:?} failed ({}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON value ({e}):\n{}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

/// Drops what legitimately differs between runs (timings, the output path).
fn strip(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|k, _| !k.contains("seconds") && k != "out");
            m.values_mut().for_each(strip);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
        _ => {}
    }
}

/// Every number of both surface files, bit for bit.
fn same_surface(a: &Path, b: &Path) {
    let (fa, fb) = (read_surface(a).unwrap(), read_surface(b).unwrap());
    assert_eq!(fa.values.names, fb.values.names);
    assert_eq!(fa.values.completed, fb.values.completed);
    assert!(fa.values.completed.iter().all(|&c| c == 1));
    for ((n, xa), xb) in fa
        .values
        .names
        .iter()
        .zip(&fa.values.arrays)
        .zip(&fb.values.arrays)
    {
        for (i, (p, q)) in xa.iter().zip(xb.iter()).enumerate() {
            assert_eq!(p.to_bits(), q.to_bits(), "{n}[{i}]: {p} vs {q}");
        }
    }
}

/// What rank 0 says when rank 2 of 3 dies, on stderr and in the stop log.
fn assert_death_reported(o: &Output, logs: &[std::path::PathBuf]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "the job went on after rank 2 died:\n{err}"
    );
    for want in ["rank 2 of 3 died", "rerun the same command", "to resume"] {
        assert!(
            err.contains(want),
            "stderr lacks {want:?} (rank 0's message was lost):\n{err}"
        );
    }
    let logged: Vec<String> = logs
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    assert!(
        logged.iter().any(|l| l.contains("rank 2 of 3 died")),
        "no stop log names rank 2: {logs:?} {logged:?}"
    );
}

/// Files under `dir` whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(suffix))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn surface_with_a_dead_rank_then_resumed_with_other_rank_count_is_bit_identical() {
    let dir = common::tempdir();
    let args = |out: &Path| -> Vec<String> {
        [
            "surface",
            "--model",
            MLP,
            "--data",
            "mnist1d",
            "--x",
            "-1:1:9",
            "--y",
            "-1:1:7",
            "--split",
            "train,test",
            "--threads",
            "1",
            "--quiet",
            "--out",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([s(out).to_string()])
        .collect()
    };
    let reference = dir.path().join("ref.h5");
    let a = args(&reference);
    ok(&a.iter().map(String::as_str).collect::<Vec<_>>());

    let out = dir.path().join("mpi.h5");
    let journal = format!("{}.journal", out.display());
    let log = format!("{journal}.log");
    let a = args(&out);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    // three ranks; rank 2 dies (SIGKILL) after its first of the 63 points (not a later
    // one: points go to ranks as they ask, so a slow-starting rank may get only a few)
    let o = mpirun(3, &a)
        .env("LOSSCAPE_TEST_RANK_DIES", "2:1")
        .output()
        .unwrap();
    assert_death_reported(&o, &[log.clone().into()]);
    assert!(!out.exists(), "a partial surface file was written");
    assert!(
        std::fs::metadata(&journal).is_ok_and(|m| m.len() > 0),
        "the journal is gone"
    );
    // resume with two ranks: the journal's points are kept, the rest computed
    let o = mpi_ok(2, &a);
    assert!(o.status.success());
    same_surface(&reference, &out);
    assert!(!Path::new(&journal).exists());
    assert!(
        !Path::new(&log).exists(),
        "the stop log outlived the surface"
    );
}

const RUN_SPEC: &str = r#"
name = "mpi"
[data]
name = "mnist1d"
samples = 160
[grid]
x = "-1:1:7"
y = "-1:1:5"
[directions]
kind = "both"
eigen_max_iter = 10
[hessian]
top_k = 2
trace_probes = 4
max_iter = 12
per_block = true
[sharpness]
samples = 64
iters = 3
etas = [0.01, 0.1]
[run]
threads = 1
[[models]]
file = "fixtures/models/mlp-res-mnist1d.safetensors"
label = "res"
[[models]]
file = "fixtures/models/mlp-plain-mnist1d.safetensors"
label = "plain"
"#;

/// `losscape run` over three ranks, rank 2 dying in a surface step, resumed with two ranks:
/// every surface file and every number of the report equal one process's, bit for bit.
#[test]
fn run_with_a_dead_rank_then_resumed_equals_one_process_bit_for_bit() {
    let dir = common::tempdir();
    let spec = dir.path().join("mpi.toml");
    std::fs::write(&spec, RUN_SPEC).unwrap();
    let (one, many) = (dir.path().join("one"), dir.path().join("many"));
    ok(&["run", s(&spec), "--outputs", s(&one), "-q"]);
    let args = ["run", s(&spec), "--outputs", s(&many), "-q"];
    // rank 2 dies after its first point: rank 0 hands points out as ranks ask, and these
    // MLP points take milliseconds, so on a loaded machine a slow-starting rank 2 once got
    // fewer than 6 of the run's 140 points and the job finished without a death
    let o = mpirun(3, &args)
        .env("LOSSCAPE_TEST_RANK_DIES", "2:1")
        .output()
        .unwrap();
    let out = many.join("mpi");
    assert_death_reported(&o, &files_ending(&out, ".journal.log"));
    assert!(
        !out.join("metrics.json").exists(),
        "the stopped run wrote a report"
    );
    mpi_ok(2, &args);
    assert!(files_ending(&out, ".journal").is_empty());
    assert!(files_ending(&out, ".journal.log").is_empty());
    let ref_dir = one.join("mpi");
    for f in [
        "res.surface.h5",
        "res.eigen-surface.h5",
        "plain.surface.h5",
        "plain.eigen-surface.h5",
    ] {
        same_surface(&ref_dir.join(f), &out.join(f));
    }
    let report = |d: &Path| -> serde_json::Value {
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("metrics.json")).unwrap()).unwrap();
        strip(&mut v);
        v["results"].take()
    };
    let (a, b) = (report(&ref_dir), report(&out));
    assert_eq!(a, b, "one process:\n{a:#}\nMPI:\n{b:#}");
    let r = &a[0];
    assert!(r["hessian"]["blocks"]
        .as_array()
        .is_some_and(|b| b.len() > 1));
    assert!(r["sharpness"]["beta_max"].as_f64().is_some());
    assert!(r["probe"]["grad_ratio_init"].as_f64().is_some());
    assert!(r["metrics"]["exact_curvature_y"].as_f64().is_some());
    for f in ["report.html", "surfaces.png", "res.hessian.h5"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
}

#[test]
fn hessian_on_three_ranks_equals_one_process_bit_for_bit() {
    let dir = common::tempdir();
    let run = |n: usize| -> serde_json::Value {
        let out = dir.path().join(format!("h{n}.h5"));
        let args = [
            "hessian",
            "-m",
            MLP,
            "-d",
            "mnist1d",
            "--samples",
            "300",
            "--top-k",
            "2",
            "--max-iter",
            "12",
            "--trace",
            "--probes",
            "4",
            "--min-probes",
            "4",
            "--density",
            "--slq-runs",
            "1",
            "--slq-steps",
            "8",
            "--per-block",
            "--hvp-cache-mb",
            "8",
            "--threads",
            "1",
            "--json",
            "--out",
            s(&out),
        ];
        let o = if n == 1 { ok(&args) } else { mpi_ok(n, &args) };
        let mut v = json(&o);
        strip(&mut v);
        // every rank keeps its own batches' states: the kept count is a total over the
        // ranks (all of them within this budget); only the memory differs
        if let Some(c) = v.get_mut("hvp_cache").and_then(|c| c.as_object_mut()) {
            c.remove("mb");
        }
        v
    };
    let one = run(1);
    let three = run(3);
    assert_eq!(one, three, "one process:\n{one:#}\nthree ranks:\n{three:#}");
    assert!(one["eigenvalues"][0]["value"].as_f64().is_some(), "{one:#}");
    assert!(one["trace"]["estimate"].as_f64().is_some(), "{one:#}");
    assert!(
        one["blocks"].as_array().is_some_and(|b| b.len() > 1),
        "{one:#}"
    );
    let cache = &one["hvp_cache"];
    assert_eq!(cache["kept_batches"], cache["batches"], "{cache:#}");
}

/// `sharpness` and `probe` over three ranks equal one process, bit for bit.
#[test]
fn sharpness_and_probe_on_three_ranks_equal_one_process_bit_for_bit() {
    let sharp = [
        "sharpness",
        "-m",
        MLP,
        "-d",
        "mnist1d",
        "--samples",
        "96",
        "--iters",
        "3",
        "--random-starts",
        "1",
        "--etas",
        "0.01,0.1,1",
        "--threads",
        "1",
        "--quiet",
        "--json",
    ];
    let probe = [
        "probe",
        "-m",
        MLP,
        "-d",
        "mnist1d",
        "--samples",
        "150",
        "--threads",
        "1",
        "--json",
    ];
    for args in [&sharp[..], &probe[..]] {
        let mut one = json(&ok(args));
        let mut three = json(&mpi_ok(3, args));
        strip(&mut one);
        strip(&mut three);
        assert_eq!(
            one, three,
            "{}: one process:\n{one:#}\nthree ranks:\n{three:#}",
            args[0]
        );
    }
}

#[test]
fn eval_on_three_ranks_equals_one_process_bit_for_bit() {
    let args = [
        "eval",
        "-m",
        MLP,
        "-d",
        "mnist1d",
        "--split",
        "train,test",
        "--threads",
        "1",
        "--json",
    ];
    let mut one = json(&ok(&args));
    let mut three = json(&mpi_ok(3, &args));
    strip(&mut one);
    strip(&mut three);
    assert_eq!(one, three);
    // rank 0 alone prints
    let o = mpi_ok(2, &args);
    let mut two = json(&o);
    strip(&mut two);
    assert_eq!(one, two);
}
