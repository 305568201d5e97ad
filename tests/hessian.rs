//! `losscape hessian` on a tiny MLP whose full Hessian is built column by column from exact
//! H·v and eigendecomposed: Lanczos top-5 and bottom eigenvalues agree to 1e-6 relative in
//! f64, the Hutchinson trace lies within 4 standard errors of the exact trace, weight decay
//! shifts eigenvalues by λ, parameter subsets and per-block groups, and bad input.

use std::path::Path;
use std::process::Command;

use losscape::data::{load, DataOptions};
use losscape::hessian::{LinearOperator, ObjectiveHessian};
use losscape::model::{Arch, Model};
use losscape::objective::{Objective, ObjectiveConfig};
use ndarray::{Array1, Array2};
use ndarray_linalg::{Eigh, UPLO};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_losscape"))
}

fn tiny(dir: &Path) -> (std::path::PathBuf, Model) {
    let arch: Arch = "mlp:in_features=40,depth=1,width=6,residual=true,num_classes=10"
        .parse()
        .unwrap();
    let m = Model::init(arch, 4, false);
    let p = dir.join("tiny.safetensors");
    m.save(&p).unwrap();
    (p, m)
}

fn dense_spectrum(m: &Model, samples: usize, shift: f64) -> (Vec<f64>, f64) {
    let ds = load(
        "mnist1d",
        &DataOptions {
            samples: Some(samples),
            ..Default::default()
        },
    )
    .unwrap();
    let o = Objective::new(&m.graph, ds.x.view(), &ds.y, ObjectiveConfig::default()).unwrap();
    let op = ObjectiveHessian::new(&o, &m.theta, |t| t.role.is_trainable())
        .with_f64(true)
        .with_shift(shift);
    let n = op.dim();
    let mut h = Array2::<f64>::zeros((n, n));
    for j in 0..n {
        let mut e = Array1::zeros(n);
        e[j] = 1.0;
        let mut col = Array1::zeros(n);
        op.apply(e.view(), col.view_mut());
        h.column_mut(j).assign(&col);
    }
    let (mut eig, _) = h.eigh(UPLO::Lower).unwrap();
    eig.as_slice_mut().unwrap().sort_by(|a, b| b.total_cmp(a));
    (eig.to_vec(), h.diag().sum())
}

fn json(args: &[&str]) -> serde_json::Value {
    let o = bin().args(args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn lanczos_and_trace_match_the_dense_hessian() {
    let dir = tempfile::tempdir().unwrap();
    let (p, m) = tiny(dir.path());
    let (eig, trace) = dense_spectrum(&m, 128, 0.0);
    let out = dir.path().join("h.h5");
    let v = json(&[
        "hessian",
        "-m",
        p.to_str().unwrap(),
        "-d",
        "mnist1d",
        "--samples",
        "128",
        "--precision",
        "f64",
        "--top-k",
        "5",
        "--bottom",
        "--tol",
        "1e-9",
        "--max-iter",
        "300",
        "--trace",
        "--probes",
        "400",
        "--density",
        "--slq-steps",
        "40",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    let scale = eig[0].abs();
    for (i, p) in v["eigenvalues"].as_array().unwrap().iter().enumerate() {
        let got = p["value"].as_f64().unwrap();
        assert!(
            (got - eig[i]).abs() <= 1e-6 * scale,
            "λ{}: {got} vs dense {}",
            i + 1,
            eig[i]
        );
        assert!(p["converged"].as_bool().unwrap());
    }
    let bottom = v["bottom"][0]["value"].as_f64().unwrap();
    assert!(
        (bottom - eig[eig.len() - 1]).abs() <= 1e-6 * scale,
        "λmin {bottom} vs {}",
        eig[eig.len() - 1]
    );
    let (est, se) = (
        v["trace"]["estimate"].as_f64().unwrap(),
        v["trace"]["stderr"].as_f64().unwrap(),
    );
    assert!(
        (est - trace).abs() <= 4.0 * se,
        "trace {est} ± {se} vs exact {trace}"
    );
    // the HDF5 file holds it all
    let f = hdf5::File::open(&out).unwrap();
    for d in [
        "eigenvalues",
        "residuals",
        "converged",
        "bottom_eigenvalues",
        "trace_samples",
        "slq_nodes",
        "slq_weights",
        "density_grid",
        "density",
    ] {
        assert!(f.dataset(d).is_ok(), "{d} missing");
    }
    let ev: Vec<f64> = f.dataset("eigenvalues").unwrap().read_raw().unwrap();
    assert_eq!(ev.len(), 5);
}

#[test]
fn weight_decay_subsets_and_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let (p, m) = tiny(dir.path());
    let (eig, _) = dense_spectrum(&m, 64, 0.0);
    let out = dir.path().join("h.h5");
    let base = [
        "hessian",
        "-m",
        p.to_str().unwrap(),
        "-d",
        "mnist1d",
        "--samples",
        "64",
        "--precision",
        "f64",
        "--tol",
        "1e-9",
        "--max-iter",
        "300",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ];
    let mut a = base.to_vec();
    a.extend(["--weight-decay", "0.5"]);
    let v = json(&a);
    let got = v["eigenvalues"][0]["value"].as_f64().unwrap();
    assert!(
        (got - (eig[0] + 0.5)).abs() <= 1e-6 * eig[0],
        "{got} vs {}",
        eig[0] + 0.5
    );
    // weights subset: only the >1-D tensors
    let mut a = base.to_vec();
    a.extend(["--params", "weights"]);
    let v = json(&a);
    let want: usize = m
        .graph
        .layout
        .tensors()
        .iter()
        .filter(|t| t.shape.len() > 1)
        .map(|t| t.len())
        .sum();
    assert_eq!(v["params_dim"].as_u64().unwrap() as usize, want);
    // regex subset and per-block groups
    let mut a = base.to_vec();
    a.extend(["--params-regex", "^fc_out\\.", "--per-block"]);
    let v = json(&a);
    assert_eq!(v["params_dim"].as_u64().unwrap(), 6 * 10 + 10);
    assert_eq!(v["blocks"].as_array().unwrap().len(), 1);
    let mut a = base.to_vec();
    a.push("--per-block");
    let v = json(&a);
    let names: Vec<&str> = v["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fc_in", "blocks", "fc_out"]);
    let f = hdf5::File::open(&out).unwrap();
    assert!(f.dataset("blocks/fc_out/eigenvalues").is_ok());
}

#[test]
fn bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = tiny(dir.path());
    let out = dir.path().join("h.h5");
    for (extra, needle) in [
        (vec!["--top-k", "0"], "--top-k"),
        (vec!["--top-k", "100000"], "--top-k"),
    ] {
        let mut a = vec![
            "hessian",
            "-m",
            p.to_str().unwrap(),
            "-d",
            "mnist1d",
            "--samples",
            "32",
            "--out",
            out.to_str().unwrap(),
        ];
        a.extend(extra);
        let o = bin().args(&a).output().unwrap();
        assert_eq!(o.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(needle),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!out.exists());
    }
    let o = bin()
        .args([
            "hessian",
            "-m",
            "/nonexistent.safetensors",
            "-d",
            "mnist1d",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent.safetensors"));
}
