//! `losscape run` on a tiny spec: every output exists, metrics.json is valid and complete,
//! report.html references only files that exist, a rerun is all "up to date", and bad
//! specs fail naming the key or file and the line.

mod common;

use std::path::Path;
use std::process::Output;

use common::{assert_success, bin, fails, ok, ok_json, stderr};

/// `losscape run SPEC --outputs OUTPUTS`.
fn run_spec(spec: &Path, outputs: &Path) -> Output {
    bin()
        .env("OPENBLAS_CORETYPE", "Haswell")
        .args(["run", spec.to_str().unwrap(), "--outputs"])
        .arg(outputs)
        .output()
        .unwrap()
}

const SPEC: &str = r#"
name = "tiny"
description = "CI check"
[data]
name = "mnist1d"
samples = 200
[grid]
x = "-1:1:5"
y = "-1:1:4"
[hessian]
top_k = 2
trace_probes = 4
max_iter = 20
[sharpness]
samples = 64
iters = 3
etas = [0.01, 0.1]
[[models]]
file = "fixtures/models/mlp-res-mnist1d.safetensors"
label = "res"
[[models]]
file = "fixtures/models/mlp-plain-mnist1d.safetensors"
label = "plain"
"#;

#[test]
fn tiny_spec_end_to_end() {
    let dir = common::tempdir();
    let spec = dir.path().join("tiny.toml");
    std::fs::write(&spec, SPEC).unwrap();
    let outputs = dir.path().join("out");
    assert_success("run", run_spec(&spec, &outputs));
    let out = outputs.join("tiny");
    for f in [
        "metrics.json",
        "report.md",
        "report.html",
        "surfaces.png",
        "gradient-flow.png",
        "activations.png",
        "res.surface.h5",
        "res.directions.h5",
        "res.eval.json",
        "res.hessian.json",
        "res.probe.json",
        "res.sharpness.json",
        "plain.surface.h5",
        "plain.hessian.json",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    let results = m["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        assert!(r["eval"]["train"]["accuracy"].as_f64().unwrap() > 50.0);
        assert_eq!(r["hessian"]["eigenvalues"].as_array().unwrap().len(), 2);
        assert!(r["hessian"]["trace"].as_f64().is_some());
        assert!(r["probe"]["grad_ratio_init"].as_f64().unwrap() > 0.0);
        // the ascent starts at θ, so the best loss in the box is never below L(θ)
        assert!(r["sharpness"]["eps_sharpness"].as_f64().unwrap() >= 0.0);
        assert!(r["sharpness"]["beta_max"].as_f64().unwrap() > 0.0);
        assert_eq!(r["sharpness"]["samples"].as_u64(), Some(64));
    }
    let missing =
        losscape::analysis::report::html_references_exist(&out.join("report.html")).unwrap();
    assert!(
        missing.is_empty(),
        "report.html references missing files: {missing:?}"
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("<table>")
            && html.contains("What the numbers show")
            && html.contains("surfaces.png")
            && html.contains("ε-sharpness")
    );
    // a rerun does nothing new
    let e = stderr(&assert_success("rerun", run_spec(&spec, &outputs)));
    assert!(!e.contains(" done "), "rerun recomputed something:\n{e}");
}

const CURVATURE_SPEC: &str = r#"
name = "curv"
[data]
name = "mnist1d"
samples = 96
[grid]
x = "-0.5:0.5:5"
y = "-0.5:0.5:4"
[directions]
kind = "both"
operator = "ggn"
eigen_max_iter = 30
[hessian]
operator = "ggn"
top_k = 2
trace_probes = 0
max_iter = 20
per_block = true
density = true
[probe]
enabled = false
[[models]]
file = "fixtures/models/mlp-res-mnist1d.safetensors"
label = "res"
[[models]]
file = "fixtures/models/mlp-plain-mnist1d.safetensors"
label = "plain"
"#;

/// Curvature options of a spec: the GGN for λmax (named in the table and the files), a
/// second surface along its top eigenvectors beside the random one (both panels in the
/// report), per-block spectra written and drawn per model; bad values name key and line.
#[test]
fn spec_curvature_operator_eigen_surfaces_and_block_spectra() {
    let dir = common::tempdir();
    let spec = dir.path().join("curv.toml");
    std::fs::write(&spec, CURVATURE_SPEC).unwrap();
    let outputs = dir.path().join("out");
    assert_success("run", run_spec(&spec, &outputs));
    let out = outputs.join("curv");
    for f in [
        "surfaces.png",
        "eigen-surfaces.png",
        "res.eigen-surface.h5",
        "res.eigen-directions.h5",
        "res.hessian.h5",
        "res.spectrum.png",
        "plain.spectrum.png",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    for r in m["results"].as_array().unwrap() {
        assert_eq!(r["hessian"]["operator"], "ggn");
        let blocks = r["hessian"]["blocks"].as_array().unwrap();
        let names: Vec<&str> = blocks.iter().map(|b| b["name"].as_str().unwrap()).collect();
        assert_eq!(names.first(), Some(&"fc_in"));
        assert_eq!(names.last(), Some(&"fc_out"));
        assert!(r["eigen_surface_file"]
            .as_str()
            .unwrap()
            .ends_with("eigen-surface.h5"));
    }
    let f = hdf5::File::open(out.join("res.eigen-surface.h5")).unwrap();
    let attr = |k: &str| {
        f.attr(k)
            .unwrap()
            .read_scalar::<hdf5::types::VarLenUnicode>()
            .unwrap()
            .to_string()
    };
    assert_eq!(attr("direction_kind"), "eigen");
    assert_eq!(attr("eigen_operator"), "ggn");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for needle in [
        "λmax (GGN)",
        "eigen-surfaces.png",
        "res.spectrum.png",
        "top-2 eigenvectors of the GGN",
    ] {
        assert!(html.contains(needle), "report lacks {needle}");
    }
    let missing =
        losscape::analysis::report::html_references_exist(&out.join("report.html")).unwrap();
    assert!(missing.is_empty(), "{missing:?}");
    let e = stderr(&assert_success("rerun", run_spec(&spec, &outputs)));
    assert!(!e.contains(" done "), "rerun recomputed something:\n{e}");

    let bad = |from: &str, to: &str| {
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, CURVATURE_SPEC.replace(from, to)).unwrap();
        common::assert_fails(&run_spec(&p, &dir.path().join("o")), 2, &[])
    };
    let e = bad("operator = \"ggn\"\ntop_k", "operator = \"gauss\"\ntop_k");
    assert!(e.contains("bad.toml:14") && e.contains("gauss"), "{e}");
    let e = bad("per_block = true", "per_block = true\nfisher_samples = 0");
    assert!(e.contains("hessian.fisher_samples"), "{e}");
    let e = bad("eigen_max_iter = 30", "eigen_max_iter = 0");
    assert!(e.contains("directions.eigen_max_iter"), "{e}");
}

#[test]
fn bad_specs_name_key_and_line() {
    let dir = common::tempdir();
    let run = |text: &str| {
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, text).unwrap();
        common::assert_fails(&run_spec(&p, &dir.path().join("o")), 2, &[])
    };
    let e = run(&SPEC.replace("samples = 200", "samples = 200\nsampels = 3"));
    assert!(e.contains("bad.toml:7") && e.contains("sampels"), "{e}");
    let e = run(&SPEC.replace("-1:1:5", "1:0:5"));
    assert!(e.contains("grid.x") && e.contains("MIN"), "{e}");
    let e = run(&SPEC.replace("iters = 3", "iters = 0"));
    assert!(e.contains("sharpness") && e.contains("iters"), "{e}");
    let e = run(&SPEC.replace("mlp-plain-mnist1d.safetensors", "nope.safetensors"));
    assert!(
        e.contains("models[1].file") && e.contains("nope.safetensors"),
        "{e}"
    );
}

#[test]
fn metrics_command_on_a_surface() {
    let dir = common::tempdir();
    let out = dir.path().join("s.h5");
    ok(&[
        "surface",
        "--model",
        "fixtures/models/mlp-res-mnist1d.safetensors",
        "--data",
        "mnist1d",
        "--samples",
        "200",
        "--x",
        "-1:1:9",
        "--y",
        "-1:1:9",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let m = ok_json(&["metrics", out.to_str().unwrap(), "--json"]);
    assert_eq!(m["center"][0].as_f64(), Some(0.0));
    assert!(m["basin_radius"]["mean"].as_f64().unwrap() > 0.0);
    assert!(m["roughness"].as_f64().is_some() && m["non_convex_fraction"].as_f64().is_some());
    let e = fails(
        &["metrics", out.to_str().unwrap(), "--surf-name", "test_loss"],
        2,
    );
    assert!(e.contains("test_loss"));
}

const TRAIN_SPEC: &str = r#"
name = "tiny-train"
[data]
name = "digits"
samples = 64
[grid]
x = "-1:1:3"
[hessian]
enabled = false
[probe]
enabled = false
[train]
epochs = 3
batch_size = 64
lr = 0.05
every = 1
[[models]]
arch = "resnet-cifar:depth=8,width=4,shortcut=none"
label = "plain"
[[models]]
arch = "resnet-cifar:depth=8,width=4"
label = "res"
"#;

/// Models given by arch are trained (in parallel), cached on rerun, retrained when the
/// recipe changes; the report gets the training curves.
#[test]
fn train_step_trains_caches_and_reports() {
    let dir = common::tempdir();
    let spec = dir.path().join("tiny-train.toml");
    std::fs::write(&spec, TRAIN_SPEC).unwrap();
    let outputs = dir.path().join("out");
    let run = || run_spec(&spec, &outputs);
    assert_success("run", run());
    let out = outputs.join("tiny-train");
    for f in [
        "plain.safetensors",
        "res.safetensors",
        "plain.history.csv",
        "res.history.h5",
        "plain.ckpt/model_3.safetensors",
        "training-curves.png",
        "training.json",
        "report.html",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let t: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("training.json")).unwrap()).unwrap();
    assert_eq!(t.as_array().unwrap().len(), 2);
    assert_eq!(t[0]["epochs"].as_u64(), Some(3));
    let err = stderr(&assert_success("rerun", run()));
    assert!(
        err.contains("plain: train") && !err.contains("plain: epoch"),
        "rerun must not retrain: {err}"
    );
    // a new recipe retrains
    std::fs::write(&spec, TRAIN_SPEC.replace("epochs = 3", "epochs = 2")).unwrap();
    let err = stderr(&assert_success("new recipe", run()));
    assert!(err.contains("plain: epoch   2"), "{err}");
    let h = losscape::train::checkpoint::read_history_csv(&out.join("plain.history.csv")).unwrap();
    assert_eq!(h.len(), 2);
}

const CHAOS_SPEC: &str = r#"
name = "chaos"
[data]
name = "mnist1d"
samples = 64
[grid]
x = "-1:1:7"
y = "-1:1:7"
[hessian]
enabled = false
[probe]
enabled = false
[[models]]
file = "fixtures/models/mlp-res-mnist1d.safetensors"
label = "res-4"
[[models]]
file = "fixtures/models/mlp-plain-mnist1d.safetensors"
label = "plain-4"
[[models]]
file = "fixtures/models/mlp8-res-mnist1d.safetensors"
label = "res-8"
[[models]]
file = "fixtures/models/mlp8-plain-mnist1d.safetensors"
label = "plain-8"
[[models]]
file = "fixtures/models/mlp16-res-mnist1d.safetensors"
label = "res-16"
[[models]]
file = "fixtures/models/mlp16-plain-mnist1d.safetensors"
label = "plain-16"
"#;

/// A depth sweep (the shape of analyses/mlp-depth.toml, tiny grid): the chaos figure is
/// drawn and the report's verdict is the one the measured minima give.
#[test]
fn depth_sweep_measures_chaos_against_depth() {
    let dir = common::tempdir();
    let spec = dir.path().join("chaos.toml");
    std::fs::write(&spec, CHAOS_SPEC).unwrap();
    let outputs = dir.path().join("out");
    assert_success("run", run_spec(&spec, &outputs));
    let out = outputs.join("chaos");
    for f in ["landscape-chaos.png", "depth-trends.png", "surfaces.png"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    let mut plain: Vec<(usize, usize)> = Vec::new();
    for r in m["results"].as_array().unwrap() {
        let s = &r["metrics"]["surface"];
        assert_eq!(s["points"].as_u64(), Some(49));
        let minima = s["local_minima"].as_u64().unwrap() as usize;
        assert!(
            minima <= 9,
            "at most one per 3 × 3 block of the 5 × 5 interior"
        );
        if !r["residual"].as_bool().unwrap() {
            plain.push((r["depth"].as_u64().unwrap() as usize, minima));
        }
    }
    plain.sort_unstable();
    assert_eq!(
        plain.iter().map(|p| p.0).collect::<Vec<_>>(),
        [6, 10, 18],
        "MLP depth counts linear layers"
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("Does the plain landscape turn chaotic with depth?"));
    assert!(report.contains("7 × 7 surface") && report.contains("landscape-chaos.png"));
    let listed = plain
        .iter()
        .map(|(d, n)| format!("{n} at depth {d}"))
        .collect::<Vec<_>>()
        .join(", ");
    assert!(report.contains(&format!("plain: {listed};")), "{report}");
    let verdict = match losscape::analysis::report::chaotic_from(&plain) {
        Some(6) => "no onset within this range".to_string(),
        Some(d) => format!("The plain family turns chaotic at depth {d}"),
        None if plain.iter().all(|p| p.1 <= 1) => {
            "The plain family never turns chaotic on these data".to_string()
        }
        None => "The plain family does not turn chaotic with depth".to_string(),
    };
    assert!(report.contains(&verdict), "{verdict}\n{report}");
}

/// The bundled depth-2 and depth-8 ViTs (pre-LN with and without residual connections,
/// post-LN) in one tiny spec: families are compared within themselves (the pre-LN pair,
/// never post-LN against the pre-LN plain one), the transformer sentences and figures are
/// written, and each sentence's verdict agrees with the numbers in metrics.json.
#[test]
fn transformer_spec_compares_variants_and_states_verdicts() {
    let dir = common::tempdir();
    let spec = dir.path().join("vit.toml");
    let mut text = String::from(
        r#"
name = "vit"
[data]
name = "digits"
samples = 64
[grid]
x = "-0.5:0.5:4"
y = "-0.5:0.5:3"
[hessian]
top_k = 1
trace_probes = 2
max_iter = 15
"#,
    );
    for (file, label) in [
        ("vit2-preln", "pre-2"),
        ("vit2-postln", "post-2"),
        ("vit2-preln-nores", "nores-2"),
        ("vit8-preln", "pre-8"),
        ("vit8-preln-nores", "nores-8"),
    ] {
        text.push_str(&format!(
            "[[models]]\nfile = \"fixtures/models/{file}-digits.safetensors\"\nlabel = \"{label}\"\n"
        ));
    }
    std::fs::write(&spec, text).unwrap();
    let outputs = dir.path().join("out");
    assert_success("run", run_spec(&spec, &outputs));
    let out = outputs.join("vit");
    for f in [
        "surfaces.png",
        "gradient-flow.png",
        "rank-collapse.png",
        "transformer-depth.png",
        "landscape-chaos.png",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    let by = |label: &str| {
        m["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["label"] == label)
            .unwrap()
            .clone()
    };
    assert_eq!(by("pre-2")["family"], "ViT (pre-LN)");
    assert_eq!(by("post-2")["family"], "ViT (post-LN)");
    assert_eq!(by("nores-8")["residual"], false);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    // the pre-LN pair is compared; post-LN has no plain twin, so no such sentence
    assert!(report.contains("ViT (pre-LN), depth 8: the plain network"));
    assert!(!report.contains("ViT (post-LN), depth 2: the plain network"));
    assert!(report.contains("Transformer, depth 2, pre-LN vs post-LN (both residual)"));
    // the rank-collapse verdict follows the last block's distance from rank one at init
    let last = |r: &serde_json::Value| {
        let v = r["probe"]["rank_residual_init"].as_array().unwrap();
        v.last().unwrap().as_f64().unwrap()
    };
    let line = report
        .lines()
        .find(|l| l.contains("Transformer, depth 8, ViT (pre-LN) with vs without"))
        .expect("depth-8 residual sentence");
    let collapsed = last(&by("nores-8")) * 10.0 < last(&by("pre-8"));
    assert_eq!(
        line.contains("The expected collapse of pure attention shows"),
        collapsed,
        "{line}"
    );
    assert_eq!(
        line.contains("The expected collapse does not show"),
        !collapsed,
        "{line}"
    );
    // the depth-8 plain ViT is bundled at chance: the report says so
    let nores = by("nores-8");
    let at_chance = (nores["eval"]["train"]["accuracy"].as_f64().unwrap() - 10.0).abs() <= 2.0;
    assert_eq!(line.contains("did not train"), at_chance, "{line}");
    assert!(
        report.contains("Transformers from depth 2 to 8"),
        "{report}"
    );
}
