//! The `losscape` binary end to end: info/eval on bundled models, JSON output, and bad
//! input (truncated or mis-shaped models, NaN weights, empty or mismatched data, unknown
//! architectures) giving one clear message and exit code 2, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use losscape::model::{Arch, Model};
use ndarray::{Array1, Array2};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_losscape"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code 2, no panic, and every `needle` in the message.
fn assert_bad_input(o: &Output, needles: &[&str]) {
    let e = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "expected exit code 2, stderr: {e}"
    );
    assert!(!e.contains("panicked"), "panicked: {e}");
    for n in needles {
        assert!(e.contains(n), "message lacks '{n}': {e}");
    }
}

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
    let m = root().join("fixtures/models/resnet20-digits.safetensors");
    let o = run(&["info", m.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("layer1.0.conv1.weight") && out.contains("trainable parameters"),
        "{out}"
    );
    let o = run(&[
        "eval",
        "--model",
        m.to_str().unwrap(),
        "--data",
        "digits",
        "--split",
        "test",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["samples"], 360);
    assert!(v["accuracy"].as_f64().unwrap() > 90.0, "{v}");
    assert!(v["loss"].as_f64().unwrap() > 0.0);
}

#[test]
fn eval_f64_equals_f32_to_tolerance_and_thread_count_does_not_matter() {
    let m = root().join("fixtures/models/mlp-res-mnist1d.safetensors");
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
        let o = run(&a);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["loss"]
            .as_f64()
            .unwrap()
    };
    let (a, b, c) = (
        get(&["--threads", "1"]),
        get(&["--threads", "2"]),
        get(&["--precision", "f64"]),
    );
    assert_eq!(a.to_bits(), b.to_bits());
    assert!((a - c).abs() < 1e-5 * c, "{a} vs {c}");
}

#[test]
fn truncated_model() {
    let dir = tempfile::tempdir().unwrap();
    let p = small_mlp(dir.path());
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let o = run(&["eval", "--model", p.to_str().unwrap(), "--data", "mnist1d"]);
    assert_bad_input(&o, &["mlp.safetensors", "not a valid safetensors"]);
}

#[test]
fn wrong_shape_and_unknown_architecture() {
    let dir = tempfile::tempdir().unwrap();
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
    let dir = tempfile::tempdir().unwrap();
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
    let dir = tempfile::tempdir().unwrap();
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
    let m = root().join("fixtures/models/resnet20-digits.safetensors");
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
    let o = run(&["eval", "--help"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(
        out.contains("--batch-size") && out.contains("--bn-mode") && out.contains("bundled"),
        "{out}"
    );
}
