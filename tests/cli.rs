//! The `losscape` binary end to end: info/eval on bundled models, JSON output, and bad
//! input (truncated or mis-shaped models, NaN weights, empty or mismatched data, unknown
//! architectures) giving one clear message and exit code 2, never a panic.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_bad_input, assert_close, fixture, ok, ok_json, run, tol, Dtype, Quantity};
use losscape::model::{Arch, Model};
use ndarray::{Array1, Array2};

fn small_mlp(dir: &Path) -> PathBuf {
    let arch: Arch = "mlp:in_features=40,depth=1,width=8,residual=true,num_classes=10"
        .parse()
        .unwrap();
    let p = dir.join("mlp.safetensors");
    Model::init(arch, 1, false).save(&p).unwrap();
    p
}

#[test]
fn info_and_eval_on_bundled_model() {
    let m = fixture("fixtures/models/resnet20-digits.safetensors");
    let out = common::stdout(&ok(&["info", m.to_str().unwrap()]));
    assert!(
        out.contains("layer1.0.conv1.weight") && out.contains("trainable parameters"),
        "{out}"
    );
    let v = ok_json(&[
        "eval",
        "--model",
        m.to_str().unwrap(),
        "--data",
        "digits",
        "--split",
        "test",
        "--json",
    ]);
    assert_eq!(v["samples"], 360);
    assert!(v["accuracy"].as_f64().unwrap() > 90.0, "{v}");
    assert!(v["loss"].as_f64().unwrap() > 0.0);
}

#[test]
fn eval_f64_equals_f32_to_tolerance_and_thread_count_does_not_matter() {
    let m = fixture("fixtures/models/mlp-res-mnist1d.safetensors");
    let get = |extra: &[&str]| {
        let mut a = vec![
            "eval",
            "--model",
            m.to_str().unwrap(),
            "--data",
            "mnist1d",
            "--json",
        ];
        a.extend_from_slice(extra);
        ok_json(&a)["loss"].as_f64().unwrap()
    };
    let (a, b, c) = (
        get(&["--threads", "1"]),
        get(&["--threads", "2"]),
        get(&["--precision", "f64"]),
    );
    assert_eq!(a.to_bits(), b.to_bits());
    assert_close(
        "eval: f32 loss vs f64",
        a,
        c,
        tol(Dtype::F32, Quantity::Loss),
    );
}

#[test]
fn truncated_model() {
    let dir = common::tempdir();
    let p = small_mlp(dir.path());
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let o = run(&["eval", "--model", p.to_str().unwrap(), "--data", "mnist1d"]);
    assert_bad_input(&o, &["mlp.safetensors", "not a valid safetensors"]);
}

#[test]
fn wrong_shape_and_unknown_architecture() {
    let dir = common::tempdir();
    let p = small_mlp(dir.path());
    let o = run(&[
        "info",
        p.to_str().unwrap(),
        "--arch",
        "mlp:in_features=40,depth=1,width=9,residual=true",
    ]);
    assert_bad_input(&o, &["fc_in.weight", "[9, 40]", "[8, 40]"]);
    let o = run(&["info", p.to_str().unwrap(), "--arch", "vgg:depth=16"]);
    assert_bad_input(&o, &["vgg"]);
    let o = run(&[
        "info",
        p.to_str().unwrap(),
        "--arch",
        "resnet-cifar:depth=21",
    ]);
    assert_bad_input(&o, &["6n+2"]);
}

#[test]
fn nan_weights() {
    let dir = common::tempdir();
    let arch: Arch = "mlp:in_features=40,depth=1,width=8,residual=true"
        .parse()
        .unwrap();
    let mut m = Model::init(arch, 1, false);
    m.theta.data[5] = f32::NAN;
    let p = dir.path().join("nan.safetensors");
    m.save(&p).unwrap();
    let o = run(&["eval", "--model", p.to_str().unwrap(), "--data", "mnist1d"]);
    assert_bad_input(&o, &["nan.safetensors", "fc_in.weight", "NaN"]);
}

#[test]
fn empty_and_mismatched_data() {
    let dir = common::tempdir();
    let m = small_mlp(dir.path());
    let empty = dir.path().join("empty.npz");
    let mut w = ndarray_npy::NpzWriter::new(std::fs::File::create(&empty).unwrap());
    w.add_array("x", &Array2::<f32>::zeros((0, 40))).unwrap();
    w.add_array("y", &Array1::<i64>::zeros(0)).unwrap();
    w.finish().unwrap();
    let o = run(&[
        "eval",
        "--model",
        m.to_str().unwrap(),
        "--data",
        empty.to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["empty.npz"]);

    let bad = dir.path().join("mismatch.npz");
    let mut w = ndarray_npy::NpzWriter::new(std::fs::File::create(&bad).unwrap());
    w.add_array("x", &Array2::<f32>::zeros((10, 40))).unwrap();
    w.add_array("y", &Array1::<i64>::zeros(9)).unwrap();
    w.finish().unwrap();
    let o = run(&[
        "eval",
        "--model",
        m.to_str().unwrap(),
        "--data",
        bad.to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["mismatch.npz", "10", "9"]);

    // data of the wrong shape for the model
    let o = run(&["eval", "--model", m.to_str().unwrap(), "--data", "digits"]);
    assert_bad_input(&o, &["[1, 8, 8]", "[40]"]);
}

#[test]
fn missing_model_file_and_bad_options() {
    let o = run(&[
        "eval",
        "--model",
        "/nonexistent/m.safetensors",
        "--data",
        "digits",
    ]);
    assert_bad_input(&o, &["/nonexistent/m.safetensors"]);
    let m = fixture("fixtures/models/resnet20-digits.safetensors");
    let o = run(&[
        "eval",
        "--model",
        m.to_str().unwrap(),
        "--data",
        "digits",
        "--samples",
        "100000",
    ]);
    assert_bad_input(&o, &["--samples"]);
    let o = run(&[
        "eval",
        "--model",
        m.to_str().unwrap(),
        "--data",
        "digits",
        "--threads",
        "0",
    ]);
    assert_bad_input(&o, &["--threads"]);
}

#[test]
fn help_explains() {
    let out = common::stdout(&ok(&["eval", "--help"]));
    assert!(
        out.contains("--batch-size") && out.contains("--bn-mode") && out.contains("bundled"),
        "{out}"
    );
}
