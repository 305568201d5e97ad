//! `losscape hessian` end to end, and the Hessian operator against oracles:
//! - a tiny MLP whose full Hessian is built column by column from the operator (f64) and
//!   eigendecomposed: Lanczos top-5 and bottom eigenvalues agree to 1e-6 relative, the
//!   Hutchinson trace lies within 3 standard errors of the exact trace, weight decay
//!   shifts eigenvalues by λ, parameter subsets and per-block groups, the HDF5 layout;
//! - PyTorch (fixtures/reference/hessian-resnet8.safetensors, made by
//!   fixtures/generate/make_hessian_reference.py): top-3 eigenvalues of a trained ResNet-8
//!   to 1e-4 relative, Hutchinson trace within 4 combined standard errors;
//! - bad input exits 2 with a message naming the flag.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::{assert_close, fails, ok, ok_json, tol, Dtype, Quantity};

use losscape::data::{load, DataOptions};
use losscape::hessian::{
    hutchinson, top_eigenpairs, HessianOperator, HessianOptions, LanczosParams, LinearOperator,
    ParamSubset, TraceParams, Which,
};
use losscape::model::{Arch, Model};
use losscape::objective::{Objective, ObjectiveConfig};
use ndarray::{Array1, Array2, ArrayD, IxDyn};
use ndarray_linalg::{Eigh, UPLO};

/// Lanczos against the dense spectrum, relative to |λ1| (`scale`).
fn assert_lanczos(label: &str, got: f64, want: f64, scale: f64) {
    let t = tol(Dtype::F64, Quantity::LanczosEigenvalue).relative_to(scale);
    assert_close(label, got, want, t);
}

fn tiny(dir: &Path) -> (PathBuf, Model) {
    let arch: Arch = "mlp:in_features=40,depth=1,width=6,residual=true,num_classes=10"
        .parse()
        .unwrap();
    let m = Model::init(arch, 4, false);
    let p = dir.join("tiny.safetensors");
    m.save(&p).unwrap();
    (p, m)
}

fn f64_options(shift: f64) -> HessianOptions {
    HessianOptions {
        double_precision: true,
        weight_decay: shift,
        ..Default::default()
    }
}

/// Eigenvalues (decreasing) and trace of the operator, from its dense matrix.
fn dense_spectrum(op: &dyn LinearOperator) -> (Vec<f64>, f64) {
    let n = op.dim();
    let mut h = Array2::<f64>::zeros((n, n));
    for j in 0..n {
        let mut e = Array1::zeros(n);
        e[j] = 1.0;
        op.apply(e.view(), h.column_mut(j));
    }
    let asym = (&h - &h.t()).iter().fold(0.0_f64, |a, v| a.max(v.abs()));
    let scale = h.iter().fold(0.0_f64, |a, v| a.max(v.abs()));
    assert!(asym <= 1e-10 * scale, "dense Hessian asymmetric by {asym}");
    let (mut eig, _) = h.eigh(UPLO::Lower).unwrap();
    eig.as_slice_mut().unwrap().sort_by(|a, b| b.total_cmp(a));
    (eig.to_vec(), h.diag().sum())
}

fn tiny_spectrum(m: &Model, samples: usize, shift: f64) -> (Vec<f64>, f64) {
    let ds = load(
        "mnist1d",
        &DataOptions {
            samples: Some(samples),
            ..Default::default()
        },
    )
    .unwrap();
    let o = Objective::new(&m.graph, ds.x.view(), &ds.y, ObjectiveConfig::default()).unwrap();
    let op = HessianOperator::new(&o, &m.theta, &ParamSubset::Trainable, f64_options(shift));
    dense_spectrum(&op)
}

#[test]
fn lanczos_and_trace_match_the_dense_hessian() {
    let dir = common::tempdir();
    let (p, m) = tiny(dir.path());
    let (eig, trace) = tiny_spectrum(&m, 128, 0.0);
    let out = dir.path().join("h.h5");
    let v = ok_json(&[
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
        "--save-vectors",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    let scale = eig[0].abs();
    for (i, p) in v["eigenvalues"].as_array().unwrap().iter().enumerate() {
        let got = p["value"].as_f64().unwrap();
        assert_lanczos(&format!("λ{}", i + 1), got, eig[i], scale);
        assert!(p["converged"].as_bool().unwrap());
        assert!(p["residual"].as_f64().unwrap() <= 1e-9);
    }
    let bottom = v["bottom"][0]["value"].as_f64().unwrap();
    assert_lanczos("λmin", bottom, eig[eig.len() - 1], scale);
    let (est, se) = (
        v["trace"]["estimate"].as_f64().unwrap(),
        v["trace"]["stderr"].as_f64().unwrap(),
    );
    assert!(
        (est - trace).abs() <= 3.0 * se,
        "trace {est} ± {se} vs exact {trace}"
    );
    assert_eq!(v["trace"]["probes"].as_u64(), Some(400));
    assert_eq!(v["density"]["steps"].as_u64(), Some(40));
    assert_eq!(v["density"]["nodes"][0].as_array().unwrap().len(), 40);
    assert!(v["hvps"].as_u64().unwrap() >= 400 + 40);
    assert_eq!(v["params_dim"].as_u64().unwrap() as usize, eig.len());
    assert!(v["hvp_normalization"]
        .as_str()
        .unwrap()
        .starts_with("per-sample mean"));

    // the HDF5 file holds it all
    let f = hdf5::File::open(&out).unwrap();
    for d in [
        "eigenvalues",
        "residuals",
        "converged",
        "eigenvectors",
        "bottom_eigenvalues",
        "bottom_residuals",
        "bottom_converged",
        "bottom_eigenvectors",
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
    let vecs = f.dataset("eigenvectors").unwrap();
    assert_eq!(vecs.shape(), [eig.len(), 5]);
    let names: Vec<hdf5::types::VarLenUnicode> = vecs.attr("tensors").unwrap().read_raw().unwrap();
    assert_eq!(names.len(), 6);
    assert_eq!(names[0].as_str(), "fc_in.weight");
    let ts: Vec<f64> = f.dataset("trace_samples").unwrap().read_raw().unwrap();
    assert_eq!(ts.len(), 400);
    let attr_str = |k: &str| {
        f.attr(k)
            .unwrap()
            .read_scalar::<hdf5::types::VarLenUnicode>()
            .unwrap()
            .to_string()
    };
    assert_eq!(attr_str("precision"), "f64");
    assert_eq!(attr_str("params"), "trainable");
    assert_eq!(attr_str("method"), "lanczos");
    assert_eq!(attr_str("model_sha256").len(), 64);
    assert!(attr_str("hvp_normalization").contains("PyHessian"));
    assert_eq!(
        f.attr("samples").unwrap().read_scalar::<i64>().unwrap(),
        128
    );
    assert!(f.attr("hvps").unwrap().read_scalar::<i64>().unwrap() >= 440);
}

/// Keeping the θ-only half of the products (the default) changes speed, not results:
/// eigenvalues, residuals, H·v counts and traces equal those with `--hvp-cache-mb 0`
/// exactly, whole network and per block (where the blocks share one cache), f32.
#[test]
fn hvp_cache_changes_no_result() {
    let dir = common::tempdir();
    let (p, _) = tiny(dir.path());
    let out = dir.path().join("h.h5");
    let run = |cache: &str| {
        let (p, out) = (p.to_str().unwrap(), out.to_str().unwrap());
        let flags = "--top-k 3 --bottom --trace --probes 10 --per-block --json";
        let mut a = vec!["hessian", "-m", p, "-d", "mnist1d", "--samples", "80"];
        a.extend(flags.split(' '));
        a.extend(["--hvp-cache-mb", cache, "--out", out]);
        ok_json(&a)
    };
    let (kept, cold) = (run("2048"), run("0"));
    // 80 samples in batches of 32: all three kept, or none
    assert_eq!(
        kept["hvp_cache"]["kept_batches"], 3,
        "{}",
        kept["hvp_cache"]
    );
    assert_eq!(kept["hvp_cache"]["batches"], 3);
    assert!(kept["hvp_cache"]["mb"].as_f64().unwrap() > 0.0);
    assert_eq!(cold["hvp_cache"]["kept_batches"], 0);
    let strip = |v: &serde_json::Value| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove("hvp_cache");
        let seconds = |o: &mut serde_json::Value| {
            o.as_object_mut().unwrap().remove("seconds");
        };
        seconds(&mut v);
        for b in v["blocks"].as_array_mut().into_iter().flatten() {
            seconds(b);
        }
        v
    };
    assert!(kept["eigenvalues"][0]["value"].as_f64().unwrap() > 0.0);
    assert!(!kept["blocks"].as_array().unwrap().is_empty());
    assert_eq!(strip(&kept), strip(&cold));
}

#[test]
fn weight_decay_subsets_and_blocks() {
    let dir = common::tempdir();
    let (p, m) = tiny(dir.path());
    let (eig, _) = tiny_spectrum(&m, 64, 0.0);
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
    let v = ok_json(&a);
    let got = v["eigenvalues"][0]["value"].as_f64().unwrap();
    assert_lanczos("λ1 + 0.5", got, eig[0] + 0.5, eig[0]);
    // weights subset: only the >1-D tensors
    let mut a = base.to_vec();
    a.extend(["--params", "weights"]);
    let v = ok_json(&a);
    let want: usize = m
        .graph
        .layout
        .tensors()
        .iter()
        .filter(|t| t.shape.len() > 1)
        .map(|t| t.len())
        .sum();
    assert_eq!(v["params_dim"].as_u64().unwrap() as usize, want);
    assert_eq!(v["params"].as_str(), Some("weights"));
    // regex subset and per-block groups
    let mut a = base.to_vec();
    a.extend(["--params-regex", "^fc_out\\.", "--per-block"]);
    let v = ok_json(&a);
    assert_eq!(v["params_dim"].as_u64().unwrap(), 6 * 10 + 10);
    assert_eq!(v["blocks"].as_array().unwrap().len(), 1);
    let mut a = base.to_vec();
    a.extend(["--per-block", "--top-k", "2", "--trace", "--probes", "20"]);
    let v = ok_json(&a);
    let names: Vec<&str> = v["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fc_in", "blocks.0", "fc_out"]);
    let dims: u64 = v["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["params_dim"].as_u64().unwrap())
        .sum();
    assert_eq!(dims, v["params_dim"].as_u64().unwrap());
    let f = hdf5::File::open(&out).unwrap();
    for b in names {
        for d in ["eigenvalues", "residuals", "converged", "trace_samples"] {
            assert!(
                f.dataset(&format!("blocks/{b}/{d}")).is_ok(),
                "blocks/{b}/{d} missing"
            );
        }
    }
    // the fc_out block's top eigenvalue equals the dense one of its principal submatrix
    let ds = load(
        "mnist1d",
        &DataOptions {
            samples: Some(64),
            ..Default::default()
        },
    )
    .unwrap();
    let o = Objective::new(&m.graph, ds.x.view(), &ds.y, ObjectiveConfig::default()).unwrap();
    let sub = ParamSubset::Regex(regex::Regex::new("^fc_out\\.").unwrap());
    let op = HessianOperator::new(&o, &m.theta, &sub, f64_options(0.0));
    let (sub_eig, _) = dense_spectrum(&op);
    let got: Vec<f64> = f
        .dataset("blocks/fc_out/eigenvalues")
        .unwrap()
        .read_raw()
        .unwrap();
    assert_lanczos("fc_out λ1", got[0], sub_eig[0], sub_eig[0]);
}

/// Every operator through the whole command: the JSON and the HDF5 file name it; the
/// GGN's top and bottom eigenvalues are the dense GGN's (built from its products), the
/// PSD operators have no negative eigenvalue, per-block groups are written for each, and
/// the Fisher's result depends on its seed and label count only through the labels.
#[test]
fn operators_end_to_end() {
    use losscape::objective::Curvature;
    let dir = common::tempdir();
    let (p, m) = tiny(dir.path());
    let ds = load(
        "mnist1d",
        &DataOptions {
            samples: Some(64),
            ..Default::default()
        },
    )
    .unwrap();
    let o = Objective::new(&m.graph, ds.x.view(), &ds.y, ObjectiveConfig::default()).unwrap();
    let ggn = HessianOperator::new(
        &o,
        &m.theta,
        &ParamSubset::Trainable,
        HessianOptions {
            curvature: Curvature::Ggn,
            ..f64_options(0.0)
        },
    );
    let (eig, trace) = dense_spectrum(&ggn);
    assert!(*eig.last().unwrap() >= -1e-12 * eig[0], "GGN not PSD");
    for op in ["hessian", "ggn", "fisher", "empirical-fisher"] {
        let out = dir.path().join(format!("{op}.h5"));
        let o = ok(&[
            "hessian",
            "-m",
            p.to_str().unwrap(),
            "-d",
            "mnist1d",
            "--samples",
            "64",
            "--operator",
            op,
            "--fisher-samples",
            "4",
            "--precision",
            "f64",
            "--top-k",
            "3",
            "--bottom",
            "--tol",
            "1e-9",
            "--max-iter",
            "200",
            "--trace",
            "--probes",
            "300",
            "--per-block",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ]);
        let v = common::json(&o);
        assert_eq!(v["operator"], op);
        assert_eq!(v["fisher_samples"].as_u64(), (op == "fisher").then_some(4));
        let stderr = common::stderr(&o);
        let unit = match op {
            "hessian" => "H·v",
            "ggn" => "G·v",
            "fisher" => "F·v",
            _ => "F_emp·v",
        };
        let stage = match op {
            "hessian" => "hessian: top-3 (lanczos):".to_string(),
            _ => format!("hessian: {op} top-3 (lanczos):"),
        };
        assert!(stderr.contains(&stage) && stderr.contains(unit), "{stderr}");
        let top: Vec<f64> = v["eigenvalues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["value"].as_f64().unwrap())
            .collect();
        let bottom = v["bottom"][0]["value"].as_f64().unwrap();
        if op != "hessian" {
            assert!(bottom >= -1e-8 * top[0], "{op}: λmin {bottom} < 0");
        }
        if op == "ggn" {
            for (i, &got) in top.iter().enumerate() {
                assert_lanczos(&format!("GGN λ{}", i + 1), got, eig[i], eig[0]);
            }
            assert_lanczos("GGN λmin", bottom, eig[eig.len() - 1], eig[0]);
            let (est, se) = (
                v["trace"]["estimate"].as_f64().unwrap(),
                v["trace"]["stderr"].as_f64().unwrap(),
            );
            assert!(
                (est - trace).abs() <= 3.0 * se,
                "trace {est} ± {se} vs {trace}"
            );
        }
        assert_eq!(v["blocks"].as_array().unwrap().len(), 3, "{op}");
        let f = hdf5::File::open(&out).unwrap();
        let attr = |k: &str| {
            f.attr(k)
                .unwrap()
                .read_scalar::<hdf5::types::VarLenUnicode>()
                .unwrap()
                .to_string()
        };
        assert_eq!(attr("operator"), op);
        assert!(!attr("operator_definition").is_empty());
        assert!(f.dataset("blocks/blocks.0/eigenvalues").is_ok());
    }
}

/// Text output (no --json) and the stage lines on stderr.
#[test]
fn text_output_and_progress_lines() {
    let dir = common::tempdir();
    let (p, _) = tiny(dir.path());
    let out = dir.path().join("h.h5");
    let o = ok(&[
        "hessian",
        "-m",
        p.to_str().unwrap(),
        "-d",
        "mnist1d",
        "--samples",
        "32",
        "--top-k",
        "2",
        "--trace",
        "--probes",
        "10",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (stdout, stderr) = (common::stdout(&o), common::stderr(&o));
    assert!(stdout.contains("λ1"), "{stdout}");
    assert!(stdout.contains("trace"), "{stdout}");
    assert!(stderr.contains("hessian: top-2 (lanczos):"), "{stderr}");
    assert!(
        stderr.contains("hessian: trace (hutchinson): 10 H·v"),
        "{stderr}"
    );
    assert!(out.exists());
}

#[test]
fn bad_input() {
    let dir = common::tempdir();
    let (p, _) = tiny(dir.path());
    let out = dir.path().join("h.h5");
    for (extra, needle) in [
        (vec!["--top-k", "0"], "--top-k"),
        (vec!["--top-k", "100000"], "--top-k"),
        (vec!["--trace", "--probes", "0"], "--probes"),
        (vec!["--density", "--slq-runs", "0"], "--slq-runs"),
        (vec!["--params-regex", "^nothing$"], "--params"),
        (
            vec!["--operator", "fisher", "--fisher-samples", "0"],
            "--fisher-samples",
        ),
        (vec!["--operator", "gauss-newton"], "ggn"),
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
        a.extend(extra.iter().copied());
        let stderr = fails(&a, 2);
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
        assert!(
            !stderr.contains("H·v"),
            "{extra:?} ran an analysis: {stderr}"
        );
        assert!(!out.exists());
    }
    let stderr = fails(
        &[
            "hessian",
            "-m",
            "/nonexistent.safetensors",
            "-d",
            "mnist1d",
            "--out",
            out.to_str().unwrap(),
        ],
        2,
    );
    assert!(stderr.contains("/nonexistent.safetensors"));
}

// ---- PyTorch reference ---------------------------------------------------------------

/// Fixture format this test understands; make_hessian_reference.py writes the same number.
const FIXTURE_VERSION: &str = "1";

struct Reference {
    meta: HashMap<String, String>,
    tensors: common::Tensors,
}

fn read_reference(path: &Path) -> Reference {
    let bytes = std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}. HINT: run `/work/venv/bin/python fixtures/generate/make_hessian_reference.py`",
            path.display()
        )
    });
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap_or_default();
    let version = meta.get("fixture_version").map(String::as_str);
    assert_eq!(
        version,
        Some(FIXTURE_VERSION),
        "{} has fixture version {version:?}, this test expects {FIXTURE_VERSION}. \
         HINT: regenerate with `python fixtures/generate/make_hessian_reference.py` (needs torch)",
        path.display()
    );
    let tensors = common::decode_f64(&bytes, path);
    Reference { meta, tensors }
}

#[test]
fn top_eigenvalues_and_trace_match_pytorch_on_resnet8() {
    let path = common::fixture("fixtures/reference/hessian-resnet8.safetensors");
    let r = read_reference(&path);
    let get = |k: &str| {
        r.tensors
            .get(k)
            .unwrap_or_else(|| panic!("fixture lacks '{k}'"))
    };
    let arch: Arch = r.meta["losscape_arch"].parse().unwrap();
    let mut m = Model::init(arch, 0, false);
    for t in m.graph.layout.tensors().to_vec() {
        let (shape, v) = get(&format!("param.{}", t.name));
        assert_eq!(shape, &t.shape, "param.{}", t.name);
        for (dst, &src) in m
            .theta
            .data
            .slice_mut(ndarray::s![t.range()])
            .iter_mut()
            .zip(v)
        {
            *dst = src as f32;
        }
    }
    let (xs, xv) = get("x");
    let x = ArrayD::from_shape_vec(IxDyn(xs), xv.iter().map(|&v| v as f32).collect()).unwrap();
    let y: Vec<usize> = get("y").1.iter().map(|&v| v as usize).collect();
    let o = Objective::new(&m.graph, x.view(), &y, ObjectiveConfig::default()).unwrap();
    let op = HessianOperator::new(&o, &m.theta, &ParamSubset::Trainable, f64_options(0.0));

    let want = &get("eigenvalues").1;
    let top = top_eigenpairs(
        &op,
        &LanczosParams {
            k: want.len(),
            max_iter: 200,
            tol: 1e-8,
            seed: 1,
            which: Which::Largest,
            keep_vectors: false,
        },
    )
    .unwrap();
    eprintln!(
        "resnet8: ours {:?} (residuals {:?}), PyTorch {want:?}",
        top.values, top.residuals
    );
    for (i, (&got, &w)) in top.values.iter().zip(want).enumerate() {
        assert_close(
            &format!("λ{}", i + 1),
            got,
            w,
            tol(Dtype::F64, Quantity::Eigenvalue),
        );
    }

    let trace = hutchinson(
        &op,
        &TraceParams {
            probes: 200,
            seed: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let (t_ref, se_ref) = (get("trace").1[0], get("trace_stderr").1[0]);
    let se = (trace.stderr.powi(2) + se_ref.powi(2)).sqrt();
    eprintln!(
        "resnet8 trace: ours {} ± {}, PyTorch {t_ref} ± {se_ref}",
        trace.estimate, trace.stderr
    );
    assert!(
        (trace.estimate - t_ref).abs() <= 4.0 * se,
        "trace {} ± {} vs PyTorch {t_ref} ± {se_ref}",
        trace.estimate,
        trace.stderr
    );
}
