//! `losscape surface` and `losscape merge` end to end: HDF5 layout, the center point equals
//! `eval`, thread-count determinism, shards merging into the single-run file, kill -9 at
//! random moments then resume, and bad input leaving no partial output.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{assert_close, bin, fails, fixture, ok, ok_json, s, tol, Dtype, Quantity};
use losscape::io::surface::read_surface;
use ndarray::ArrayD;

const MLP: &str = "fixtures/models/mlp-res-mnist1d.safetensors";

fn surface_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "surface",
        "--model",
        MLP,
        "--data",
        "mnist1d",
        "--samples",
        "300",
        "--x",
        "-1:1:5",
        "--y",
        "-0.5:0.5:4",
        "--quiet",
        "--out",
        out,
    ];
    v.extend_from_slice(extra);
    v
}

fn arrays(p: &Path) -> Vec<(String, ArrayD<f64>)> {
    let f = read_surface(p).unwrap();
    let mut v: Vec<(String, ArrayD<f64>)> = f
        .values
        .names
        .iter()
        .cloned()
        .zip(f.values.arrays.iter().cloned())
        .collect();
    v.push(("completed".into(), f.values.completed.mapv(|c| c as f64)));
    v
}

fn bits_equal(a: &[(String, ArrayD<f64>)], b: &[(String, ArrayD<f64>)]) {
    assert_eq!(a.len(), b.len());
    for ((na, xa), (nb, xb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        assert_eq!(xa.shape(), xb.shape(), "{na}");
        for (i, (p, q)) in xa.iter().zip(xb.iter()).enumerate() {
            assert_eq!(p.to_bits(), q.to_bits(), "{na}[{i}]: {p} vs {q}");
        }
    }
}

#[test]
fn layout_center_and_thread_determinism() {
    let dir = common::tempdir();
    let a = dir.path().join("a.h5");
    let b = dir.path().join("b.h5");
    ok(&surface_args(
        s(&a),
        &["--threads", "1", "--split", "train,test"],
    ));
    ok(&surface_args(
        s(&b),
        &["--threads", "2", "--split", "train,test"],
    ));
    bits_equal(&arrays(&a), &arrays(&b));
    let f = read_surface(&a).unwrap();
    assert_eq!(f.x, vec![-1.0, -0.5, 0.0, 0.5, 1.0]);
    assert_eq!(f.y.as_ref().unwrap().len(), 4);
    assert_eq!(
        f.values.names,
        vec!["train_loss", "train_acc", "test_loss", "test_acc"]
    );
    assert_eq!(f.values.arrays[0].shape(), &[4, 5], "stored [iy, ix]");
    assert!(f.values.completed.iter().all(|&c| c == 1));
    assert_eq!(f.attrs["axis_order"].to_string(), "iy,ix");
    assert_eq!(f.attrs["direction_norm"].to_string(), "filter");
    assert!(Path::new(f.dir_file.as_deref().unwrap()).exists());

    // a 1-D surface through the center equals `eval` on the same samples
    let c = dir.path().join("c.h5");
    ok(&[
        "surface",
        "--model",
        MLP,
        "--data",
        "mnist1d",
        "--samples",
        "300",
        "--x",
        "-1:1:3",
        "--quiet",
        "--out",
        s(&c),
    ]);
    let f = read_surface(&c).unwrap();
    assert_eq!(f.values.arrays[0].shape(), &[3]);
    let e = ok_json(&[
        "eval",
        "--model",
        MLP,
        "--data",
        "mnist1d",
        "--samples",
        "300",
        "--json",
    ]);
    assert_eq!(f.values.arrays[0][[1]], e["loss"].as_f64().unwrap());
    assert_eq!(f.values.arrays[1][[1]], e["accuracy"].as_f64().unwrap());
    // away from the center the loss rises
    assert!(f.values.arrays[0][[0]] > f.values.arrays[0][[1]]);
}

#[test]
fn shards_merge_into_the_single_run() {
    let dir = common::tempdir();
    let whole = dir.path().join("whole.h5");
    ok(&surface_args(s(&whole), &[]));
    let shards: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("s{i}.h5")))
        .collect();
    for (i, p) in shards.iter().enumerate() {
        let sh = format!("{i}/3");
        ok(&surface_args(s(p), &["--shard", &sh]));
    }
    let merged = dir.path().join("merged.h5");
    // a missing shard is an error
    let e = fails(
        &["merge", s(&shards[0]), s(&shards[1]), "--out", s(&merged)],
        2,
    );
    assert!(e.contains("2/3"));
    assert!(!merged.exists());
    ok(&[
        "merge",
        s(&shards[0]),
        s(&shards[1]),
        s(&shards[2]),
        "--out",
        s(&merged),
    ]);
    bits_equal(&arrays(&whole), &arrays(&merged));
    // a shard of another surface does not belong
    let other = dir.path().join("other.h5");
    ok(&surface_args(s(&other), &["--shard", "2/3", "--seed", "5"]));
    let e = fails(
        &[
            "merge",
            s(&shards[0]),
            s(&shards[1]),
            s(&other),
            "--out",
            s(&dir.path().join("bad.h5")),
        ],
        2,
    );
    assert!(e.contains("does not belong"));
}

#[test]
fn killed_runs_resume_to_the_same_file() {
    let dir = common::tempdir();
    let reference = dir.path().join("ref.h5");
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
            "-1:1:9",
            "--quiet",
            "--threads",
            "2",
            "--out",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([out.to_str().unwrap().to_string()])
        .collect()
    };
    ok(&args(&reference)
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    let want = arrays(&reference);
    let out = dir.path().join("killed.h5");
    // kill at several moments (deterministic pseudo-random delays), then finish
    let mut killed_mid_run = 0;
    for (attempt, delay_ms) in [150u64, 40, 400, 90, 700].into_iter().enumerate() {
        let mut child = bin()
            .args(args(&out))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed_mid_run += 1;
        }
        child.wait().unwrap();
        // whatever the moment, no readable-but-wrong output exists
        if out.exists() {
            assert!(
                read_surface(&out).is_ok(),
                "attempt {attempt}: output unreadable"
            );
        }
    }
    ok(&args(&out).iter().map(String::as_str).collect::<Vec<_>>());
    bits_equal(&want, &arrays(&out));
    assert!(
        killed_mid_run >= 1,
        "no run was killed mid-way; the grid is too small for this machine"
    );
    assert!(!Path::new(&format!("{}.journal", out.display())).exists());
}

#[test]
fn bad_input_leaves_no_output() {
    let dir = common::tempdir();
    let out = dir.path().join("o.h5");
    for (x, needle) in [
        ("1:0:5", "MIN"),
        ("-1:1:0", "NUM"),
        ("a:b:c", "MIN:MAX:NUM"),
    ] {
        let e = fails(
            &[
                "surface",
                "--model",
                MLP,
                "--data",
                "mnist1d",
                "--x",
                x,
                "--out",
                s(&out),
            ],
            2,
        );
        assert!(e.contains(needle) && e.contains("--x"), "{x}: {e}");
    }
    // a direction file for another model
    let other = dir.path().join("other.h5");
    ok(&[
        "surface",
        "--model",
        "fixtures/models/resnet20-digits.safetensors",
        "--data",
        "digits",
        "--samples",
        "16",
        "--x",
        "0:0:1",
        "--quiet",
        "--out",
        s(&other),
    ]);
    let dirs = dir.path().join("other.directions.h5");
    assert!(dirs.exists());
    let e = fails(
        &[
            "surface",
            "--model",
            MLP,
            "--data",
            "mnist1d",
            "--x",
            "-1:1:3",
            "--directions",
            s(&dirs),
            "--out",
            s(&out),
        ],
        2,
    );
    assert!(
        e.contains("other.directions.h5") && e.contains("another model"),
        "{e}"
    );
    // an unwritable output path
    let e = fails(
        &[
            "surface",
            "--model",
            MLP,
            "--data",
            "mnist1d",
            "--x",
            "-1:1:3",
            "--out",
            "/nonexistent/dir/o.h5",
        ],
        2,
    );
    assert!(e.contains("/nonexistent/dir"));
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        left.iter().all(|n| n.starts_with("other")),
        "partial output left behind: {left:?}"
    );
}

/// A surface evaluated by PyTorch with loss-landscape's semantics and file layouts
/// (fixtures/generate/make_surface_reference.py): our surface, given their direction file,
/// matches to f32 tolerance, and their (nx, ny)-declared surface file reads correctly.
#[test]
fn matches_pytorch_surface_from_loss_landscape_files() {
    let dir = common::tempdir();
    let out = dir.path().join("ours.h5");
    ok(&[
        "surface",
        "--model",
        "fixtures/models/resnet20-digits.safetensors",
        "--data",
        "digits",
        "--split",
        "test",
        "--directions",
        "fixtures/reference/surface-resnet20-dirs.h5",
        "--x",
        "-0.5:0.5:3",
        "--y",
        "-0.25:0.25:2",
        "--quiet",
        "--out",
        s(&out),
    ]);
    let ours = read_surface(&out).unwrap();
    let theirs = read_surface(&fixture("fixtures/reference/surface-resnet20.h5")).unwrap();
    assert!(
        theirs.attrs.contains_key("reinterpreted_axes"),
        "their (nx, ny) declaration is detected"
    );
    assert_eq!(ours.x, theirs.x);
    assert_eq!(ours.y, theirs.y);
    let (l1, l2) = (
        ours.values.get("test_loss").unwrap(),
        theirs.values.get("test_loss").unwrap(),
    );
    // point by point, each relative to its own loss
    assert_eq!(l1.len(), l2.len());
    for (i, (&a, &b)) in l1.iter().zip(l2.iter()).enumerate() {
        let label = format!("test_loss[{i}]: ours vs PyTorch");
        assert_close(&label, a, b, tol(Dtype::F32, Quantity::Loss));
    }
    assert_eq!(ours.values.get("test_acc"), theirs.values.get("test_acc"));
}

/// `--model2` interpolation with `--dir-type states`: α = 0 is model 1, α = 1 is model 2.
#[test]
fn interpolation_between_two_models() {
    let dir = common::tempdir();
    let arch: losscape::model::Arch =
        "mlp:in_features=40,depth=2,width=16,residual=true,batchnorm=true"
            .parse()
            .unwrap();
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    losscape::model::Model::init(arch.clone(), 1, false)
        .save(&a)
        .unwrap();
    losscape::model::Model::init(arch, 2, false)
        .save(&b)
        .unwrap();
    let out = dir.path().join("i.h5");
    ok(&[
        "surface",
        "--model",
        s(&a),
        "--model2",
        s(&b),
        "--dir-type",
        "states",
        "--data",
        "mnist1d",
        "--samples",
        "100",
        "--x",
        "0:1:3",
        "--quiet",
        "--out",
        s(&out),
    ]);
    let f = read_surface(&out).unwrap();
    assert_eq!(f.attrs["direction_kind"].to_string(), "interpolation");
    let loss = f.values.get("train_loss").unwrap();
    let eval = |m: &Path| {
        ok_json(&[
            "eval",
            "--model",
            s(m),
            "--data",
            "mnist1d",
            "--samples",
            "100",
            "--json",
        ])["loss"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(loss[[0]], eval(&a));
    assert_close(
        "α = 1 vs eval of model 2",
        loss[[2]],
        eval(&b),
        tol(Dtype::F32, Quantity::Loss),
    );
}

/// A grid so far out that the loss overflows: stored as non-finite, reported, no crash.
#[test]
fn overflowing_points_are_stored_not_fatal() {
    let dir = common::tempdir();
    let out = dir.path().join("far.h5");
    let o = ok(&[
        "surface",
        "--model",
        MLP,
        "--data",
        "mnist1d",
        "--samples",
        "50",
        "--norm",
        "none",
        "--x",
        "-1e30:1e30:3",
        "--quiet",
        "--out",
        s(&out),
    ]);
    let e = common::stderr(&o);
    assert!(e.contains("NaN or infinite"), "{e}");
    let f = read_surface(&out).unwrap();
    let loss = f.values.get("train_loss").unwrap();
    assert!(!loss[[0]].is_finite() && loss[[1]].is_finite());
    assert!(f
        .values
        .get("train_acc")
        .unwrap()
        .iter()
        .all(|a| a.is_finite()));
    assert!(f.values.completed.iter().all(|&c| c == 1));
}

/// `--hessian`: λmax and λmin at every point as `max_eig`/`min_eig`; at the center they equal
/// the `hessian` command's on the weights with more than one dimension; shards merge them.
#[test]
fn curvature_maps() {
    let dir = common::tempdir();
    let out = dir.path().join("c.h5");
    let args = [
        "--model",
        MLP,
        "--data",
        "mnist1d",
        "--samples",
        "200",
        "--x",
        "-0.5:0.5:3",
        "--y",
        "-0.5:0.5:3",
        "--quiet",
    ];
    let mut a = vec!["surface"];
    a.extend(args);
    a.extend([
        "--hessian",
        "--hessian-tol",
        "1e-6",
        "--hessian-max-iter",
        "200",
        "--out",
        s(&out),
    ]);
    ok(&a);
    let f = read_surface(&out).unwrap();
    let (mx, mn) = (
        f.values.get("max_eig").unwrap(),
        f.values.get("min_eig").unwrap(),
    );
    assert!(mx
        .iter()
        .zip(mn.iter())
        .all(|(a, b)| a.is_finite() && b.is_finite() && a > b));
    let h = dir.path().join("h.h5");
    let v = ok_json(&[
        "hessian",
        "--model",
        MLP,
        "--data",
        "mnist1d",
        "--samples",
        "200",
        "--params",
        "weights",
        "--bottom",
        "--tol",
        "1e-6",
        "--max-iter",
        "200",
        "--out",
        s(&h),
        "--json",
    ]);
    let (top, bottom) = (
        v["eigenvalues"][0]["value"].as_f64().unwrap(),
        v["bottom"][0]["value"].as_f64().unwrap(),
    );
    assert_close(
        "max_eig at the center vs hessian",
        mx[[1, 1]],
        top,
        tol(Dtype::F32, Quantity::MapMaxEigenvalue),
    );
    assert_close(
        "min_eig at the center vs hessian",
        mn[[1, 1]],
        bottom,
        tol(Dtype::F32, Quantity::MapMinEigenvalue).relative_to(top),
    );
    // shards carry the maps too
    let parts: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("p{i}.h5")))
        .collect();
    for (i, p) in parts.iter().enumerate() {
        let sh = format!("{i}/2");
        let mut a = vec!["surface"];
        a.extend(args);
        a.extend([
            "--hessian",
            "--hessian-tol",
            "1e-6",
            "--hessian-max-iter",
            "200",
            "--shard",
            &sh,
            "--out",
            s(p),
        ]);
        ok(&a);
    }
    let merged = dir.path().join("m.h5");
    ok(&["merge", s(&parts[0]), s(&parts[1]), "--out", s(&merged)]);
    bits_equal(&arrays(&out), &arrays(&merged));
}

/// Engine options that change result bits are explicit, recorded in the file and part of
/// the fingerprint: a default-engine output is not taken for an `--conv im2col` run.
#[test]
fn engine_options_are_recorded_and_fingerprinted() {
    let dir = common::tempdir();
    let conv_net = "fixtures/models/resnet20-digits.safetensors";
    let args = |out: &str, extra: &[&str]| {
        let mut v = vec![
            "surface",
            "--model",
            conv_net,
            "--data",
            "digits",
            "--samples",
            "16",
            "--x",
            "-0.5:0.5:3",
            "--quiet",
            "--out",
        ];
        v.push(out);
        v.extend_from_slice(extra);
        v.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let out = dir.path().join("s.h5");
    let o = s(&out).to_string();
    let run = |extra: &[&str]| args(&o, extra);
    ok(&run(&[]).iter().map(String::as_str).collect::<Vec<_>>());
    let attr = |p: &Path| {
        read_surface(p).unwrap().attrs["engine"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(attr(&out), "conv=auto,gemm=blas,simd=native");
    let e = fails(
        &run(&["--conv", "im2col"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        2,
    );
    assert!(
        e.contains("--out") && e.contains("different surface"),
        "{e}"
    );
    let out2 = dir.path().join("s2.h5");
    let o2 = s(&out2).to_string();
    let a2 = args(&o2, &["--conv", "im2col", "--gemm", "matrixmultiply"]);
    ok(&a2.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(attr(&out2), "conv=im2col,gemm=matrixmultiply,simd=native");
    // the same mathematics: equal to rounding
    let (a, b) = (arrays(&out), arrays(&out2));
    assert_close(
        "train_loss",
        a[0].1.as_slice().unwrap(),
        b[0].1.as_slice().unwrap(),
        tol(Dtype::F32, Quantity::Loss),
    );
}
