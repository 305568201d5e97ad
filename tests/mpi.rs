//! MPI runs (`mpirun -n 3`, oversubscribed) against one process, bit for bit: a surface
//! killed mid-run (one rank SIGKILLed) and resumed with another rank count, a Hessian
//! (Lanczos, trace, density, per block, kept H·v state) and an evaluation. Built only with
//! the `mpi` feature (`make test`); needs `mpirun` on the PATH.
#![cfg(feature = "mpi")]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// The pid of rank `rank` among mpirun's children (read from their environment).
fn rank_pid(mpirun_pid: u32, rank: usize) -> Option<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{mpirun_pid}/task/{mpirun_pid}/children")).ok()?;
    children.split_whitespace().find_map(|p| {
        let env = std::fs::read(format!("/proc/{p}/environ")).ok()?;
        let want = format!("OMPI_COMM_WORLD_RANK={rank}");
        env.split(|&b| b == 0)
            .any(|kv| kv == want.as_bytes())
            .then(|| p.parse().ok())
            .flatten()
    })
}

#[test]
fn surface_killed_rank_then_resumed_with_other_rank_count_is_bit_identical() {
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
    let a = args(&out);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    // three ranks; rank 2 is killed once the journal has some points
    let mut child = mpirun(3, &a)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut killed = false;
    while start.elapsed() < Duration::from_secs(120) {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        let journaled = std::fs::metadata(&journal).map(|m| m.len()).unwrap_or(0);
        if journaled > 2048 {
            if let Some(pid) = rank_pid(child.id(), 2) {
                // SAFETY: kill(2) on a process this test started (through mpirun)
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                killed = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    if killed {
        assert!(
            !o.status.success(),
            "the job went on after rank 2 died:\n{err}"
        );
        assert!(
            err.contains("rank 2"),
            "the message does not name rank 2:\n{err}"
        );
        assert!(!out.exists(), "a partial surface file was written");
        assert!(Path::new(&journal).exists(), "the journal is gone");
    } else {
        assert!(o.status.success(), "{err}");
    }
    // resume with two ranks: the journal's points are kept, the rest computed
    let o = mpi_ok(2, &a);
    assert!(o.status.success());
    same_surface(&reference, &out);
    assert!(!Path::new(&journal).exists());
    assert!(
        killed,
        "rank 2 finished before it could be killed; the grid is too small for this machine"
    );
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
        // kept H·v state is per rank: only the budget is the same
        if let Some(c) = v.get_mut("hvp_cache").and_then(|c| c.as_object_mut()) {
            c.retain(|k, _| k == "budget_mb" || k == "batches");
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
