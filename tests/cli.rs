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

/// `info --model M` and `info -m M` print what `info M` prints; neither is an error.
#[test]
fn info_takes_model_as_flag_or_positional() {
    let m = fixture("fixtures/models/resnet20-digits.safetensors");
    let m = m.to_str().unwrap();
    let positional = common::stdout(&ok(&["info", m]));
    assert_eq!(common::stdout(&ok(&["info", "--model", m])), positional);
    assert_eq!(common::stdout(&ok(&["info", "-m", m])), positional);
    let o = run(&["info"]);
    assert_bad_input(&o, &["MODEL"]);
    let o = run(&["info", m, "--model", m]);
    assert_bad_input(&o, &["cannot be used with"]);
}

/// A small surface run: negative grid bounds parse; `-q` silences stderr; a complete rerun
/// says "already complete" and prints no rate.
#[test]
fn surface_quiet_and_complete_rerun() {
    let dir = common::tempdir();
    let m = small_mlp(dir.path());
    let out = dir.path().join("s.h5");
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "surface",
            "--model",
            m.to_str().unwrap(),
            "--data",
            "mnist1d",
            "--samples",
            "16",
            "--x",
            "-1:1:3",
            "--y",
            "-0.5:0.5:3",
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let first = args(&["-q"]);
    let o = ok(&first.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(common::stderr(&o).is_empty(), "{}", common::stderr(&o));
    let line = common::stdout(&o);
    assert!(line.contains("9 points (9 computed, 0 resumed)"), "{line}");
    // the rate has three significant digits: "N.NN", "NN.N" or "NNN…" points/s
    let rate = line
        .split(" points/s")
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap();
    let significant = rate
        .trim_start_matches(['0', '.'])
        .chars()
        .filter(char::is_ascii_digit)
        .count();
    let three = if rate.contains('.') {
        significant == 3
    } else {
        significant >= 3
    };
    assert!(three, "{line}");

    let again = args(&[]);
    let o = ok(&again.iter().map(String::as_str).collect::<Vec<_>>());
    let (so, se) = (common::stdout(&o), common::stderr(&o));
    assert!(so.contains("already complete (9 points)"), "{so}");
    assert!(
        !so.contains("points/s") && !se.contains("points/s"),
        "{so}{se}"
    );
    assert!(se.contains("already complete"), "{se}");
    let o = ok(&args(&["-q", "--json"])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["already_complete"], true);
    assert!(v["points_per_second"].is_null(), "{v}");
    assert!(common::stderr(&o).is_empty());
}

/// `-q` is accepted by every command with progress output and silences its stderr.
#[test]
fn quiet_on_long_commands() {
    let dir = common::tempdir();
    let m = small_mlp(dir.path());
    let m = m.to_str().unwrap();
    let h = dir.path().join("h.h5");
    let data = ["--data", "mnist1d", "--samples", "16"];
    let hessian = [
        &["hessian", "-q", "--model", m][..],
        &data,
        &["--out", h.to_str().unwrap()],
    ]
    .concat();
    let o = ok(&hessian);
    assert!(common::stderr(&o).is_empty(), "{}", common::stderr(&o));
    let sharp = [
        &["sharpness", "--quiet", "--model", m][..],
        &data,
        &["--iters", "2", "--etas", "0.1"],
    ]
    .concat();
    let o = ok(&sharp);
    assert!(common::stderr(&o).is_empty(), "{}", common::stderr(&o));
    // without -q the stages report on stderr
    let o = ok(&[
        &["sharpness", "--model", m][..],
        &data,
        &["--iters", "2", "--etas", "0.1"],
    ]
    .concat());
    assert!(
        common::stderr(&o).contains("sharpness"),
        "{}",
        common::stderr(&o)
    );
    // eval, probe and trajectory: a bar on a terminal, nothing on a pipe, -q accepted
    for cmd in [
        &["eval", "-q", "--model", m][..],
        &["probe", "--quiet", "--model", m],
    ] {
        let o = ok(&[cmd, &data[..]].concat());
        assert!(common::stderr(&o).is_empty(), "{}", common::stderr(&o));
    }
    let ck = dir.path().join("ck");
    ok(&[
        "train",
        "--arch",
        "mlp:in_features=40,depth=1,width=4",
        "--data",
        "mnist1d",
        "--samples",
        "32",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "-q",
        "--checkpoints",
        common::s(&ck),
        "--out",
        common::s(&dir.path().join("t.safetensors")),
    ]);
    let o = ok(&[
        "trajectory",
        "-q",
        "--checkpoints",
        common::s(&ck),
        "--out",
        common::s(&dir.path().join("pca.h5")),
    ]);
    assert!(common::stderr(&o).is_empty(), "{}", common::stderr(&o));
    for cmd in [
        "surface",
        "hessian",
        "sharpness",
        "train",
        "run",
        "eval",
        "probe",
        "trajectory",
    ] {
        let help = common::stdout(&ok(&[cmd, "--help"]));
        assert!(help.contains("-q, --quiet"), "{cmd}: {help}");
    }
}

#[test]
fn completions_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef losscape"),
        ("fish", "complete -c losscape"),
    ] {
        let script = common::stdout(&ok(&["completions", shell]));
        assert!(
            script.contains(marker),
            "{shell}: {}",
            &script[..script.len().min(300)]
        );
        assert!(
            script.contains("export-vtp") && script.contains("sharpness"),
            "{shell}"
        );
    }
    let o = run(&["completions", "tcsh"]);
    assert_bad_input(&o, &["tcsh", "bash"]);
}

/// Negative numbers reach the flags' parsers: out-of-range counts are range errors (not
/// "unexpected argument"), and flags where a negative value means something take it.
#[test]
fn negative_numbers_are_values() {
    let m = fixture("fixtures/models/resnet20-digits.safetensors");
    let m = m.to_str().unwrap();
    for (flag, value) in [
        ("--samples", "-1"),
        ("--batch-size", "-4"),
        ("--threads", "-2"),
    ] {
        let o = run(&["eval", "--model", m, "--data", "digits", flag, value]);
        let err = assert_bad_input(&o, &[flag, "out of range"]);
        assert!(!err.contains("unexpected argument"), "{err}");
    }
    let o = run(&[
        "hessian", "--model", m, "--data", "digits", "--top-k", "-3", "--out", "x.h5",
    ]);
    assert_bad_input(&o, &["--top-k", "-3", "at least 0"]);
    let o = run(&[
        "hessian", "--model", m, "--data", "digits", "--seed", "-1", "--out", "x.h5",
    ]);
    assert_bad_input(&o, &["--seed", "out of range"]);
    // a negative weight decay parses and is refused by the job, naming the flag
    let o = run(&[
        "hessian",
        "--model",
        m,
        "--data",
        "digits",
        "--weight-decay",
        "-0.5",
        "--out",
        "x.h5",
    ]);
    let err = assert_bad_input(&o, &["--weight-decay", "≥ 0"]);
    assert!(!err.contains("unexpected argument"), "{err}");
    // an exponent's minus too (clap's own test refuses `-1e-3`): real-valued flags take it
    let dir = common::tempdir();
    let surf = dir.path().join("s.h5");
    let mlp = small_mlp(dir.path());
    ok(&[
        "surface",
        "--model",
        common::s(&mlp),
        "--data",
        "mnist1d",
        "--samples",
        "8",
        "--x",
        "-1e-3:1e-3:3",
        "--y",
        "-1e-3:1e-3:3",
        "-q",
        "--out",
        common::s(&surf),
    ]);
    let png = dir.path().join("p.png");
    for vmin in [&["--vmin", "-1e-3"][..], &["--vmin=-1e-3"]] {
        ok(&[
            &["plot", common::s(&surf)][..],
            vmin,
            &["--out", common::s(&png)],
        ]
        .concat());
    }
    // and flags where a negative value means nothing are range errors, named
    let train = ["train", "--arch", "mlp:in_features=40,depth=1,width=4"];
    let surface = ["surface", "--model", m, "--x", "-1:1:3"];
    for (cmd, flag, value, needle) in [
        (&train[..], "--lr", "-1e-3", "at least 0"),
        (&train, "--momentum", "-0.9", "at least 0"),
        (&train, "--eps", "-1e-8", "above 0"),
        (&surface, "--hessian-tol", "-1e-3", "above 0"),
        (&surface, "--eigen-tol", "0", "above 0"),
    ] {
        let o = run(&[cmd, &[flag, value, "--data", "mnist1d", "--out", "x"]].concat());
        let err = assert_bad_input(&o, &[flag, value, needle]);
        assert!(!err.contains("unexpected argument"), "{err}");
    }
}

#[test]
fn help_names_formats_and_parameter_sets() {
    let eval = common::stdout(&ok(&["eval", "--help"]));
    assert!(eval.contains(".onnx") && eval.contains(".pt"), "{eval}");
    let info = common::stdout(&ok(&["info", "--help"]));
    assert!(info.contains("--model") && info.contains(".onnx"), "{info}");
    let hessian = common::stdout(&ok(&["hessian", "--help"]));
    assert!(
        hessian.contains("surface --hessian") && hessian.contains("--params weights"),
        "{hessian}"
    );
    let surface = common::stdout(&ok(&["surface", "--help"]));
    assert!(
        surface.contains("--params weights") && surface.contains("more than"),
        "{surface}"
    );
    let sharp = common::stdout(&ok(&["sharpness", "--help"]));
    assert!(
        sharp.contains("surface --hessian") && sharp.contains("trainable"),
        "{sharp}"
    );
}

/// `--data DIR` with torchvision's ImageFolder layout, end to end through `eval`.
#[test]
fn eval_on_an_image_folder() {
    use image::{Rgb, RgbImage};
    let dir = common::tempdir();
    let root = dir.path().join("imgs");
    for (class, shades) in [("ants", [10u8, 60]), ("bees", [200, 250])] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for (i, s) in shades.into_iter().enumerate() {
            RgbImage::from_fn(4, 4, |x, y| Rgb([s, (x * 16) as u8, (y * 16) as u8]))
                .save(root.join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
    let arch: Arch = "resnet-cifar:depth=8,in_channels=3,input_size=4,num_classes=2"
        .parse()
        .unwrap();
    let m = dir.path().join("r8.safetensors");
    Model::init(arch, 1, false).save(&m).unwrap();
    let eval = |extra: &[&str]| {
        let mut a = vec!["eval", "--model", common::s(&m), "--data", common::s(&root)];
        a.extend_from_slice(extra);
        a.push("--json");
        ok_json(&a)
    };
    let plain = eval(&[]);
    assert_eq!(plain["samples"], 4);
    let loss = plain["loss"].as_f64().unwrap();
    assert!(loss.is_finite() && loss > 0.0, "{plain}");
    // Resizing 4×4 images to 4×4 changes nothing; normalizing changes the inputs.
    assert_eq!(eval(&["--resize", "4"])["loss"].as_f64().unwrap(), loss);
    let normalized = eval(&["--normalize", "0.5/0.25"])["loss"].as_f64().unwrap();
    assert_ne!(normalized, loss);

    // A 6×6 image: an error naming both files without --resize, fine with it.
    RgbImage::from_pixel(6, 6, Rgb([1, 2, 3]))
        .save(root.join("bees/2.png"))
        .unwrap();
    let a = ["eval", "--model", common::s(&m), "--data", common::s(&root)];
    assert_bad_input(
        &run(&a),
        &["ants/0.png` is 4×4", "bees/2.png` is 6×6", "--resize N"],
    );
    assert_eq!(eval(&["--resize", "4"])["samples"], 5);
    // --resize on data that is not an image folder is refused, not ignored.
    assert_bad_input(
        &run(&[
            "eval",
            "--model",
            common::s(&m),
            "--data",
            "digits",
            "--resize",
            "4",
        ]),
        &["digits", "not an image folder"],
    );
}

/// A ViT safetensors file without `losscape_arch` metadata (as
/// `safetensors.torch.save_file(model.state_dict())` writes it): `info` infers it from the
/// tensors and the file name's hints, `convert` writes the self-describing file, and `eval`
/// of both gives the original's loss; without hints the candidates are listed.
#[test]
fn vit_without_metadata_is_inferred_converted_and_evaluated() {
    use safetensors::SafeTensors;
    let dir = common::tempdir();
    let original = fixture("fixtures/models/vit2-postln-digits.safetensors");
    let bytes = std::fs::read(&original).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let stripped = safetensors::serialize(st.iter(), None).unwrap();
    let named = dir.path().join("vit2-postln-h4-res-digits.safetensors");
    let bare = dir.path().join("model.safetensors");
    std::fs::write(&named, &stripped).unwrap();
    std::fs::write(&bare, &stripped).unwrap();
    let out = common::stdout(&ok(&["info", common::s(&named)]));
    assert!(
        out.contains("inferred from the tensors")
            && out.contains("says 4 heads")
            && out.contains("post-LN")
            && out.contains("1×8×8 inputs"),
        "{out}"
    );
    let converted = dir.path().join("converted.safetensors");
    let o = ok(&["convert", common::s(&named), "--out", common::s(&converted)]);
    assert!(
        common::stdout(&o).contains("vit-2x32-postln"),
        "{}",
        common::stdout(&o)
    );
    let want = Model::load(&original, None).unwrap();
    let got = Model::load(&converted, None).unwrap();
    assert_eq!(got.arch, want.arch);
    assert!(
        got.inference.is_none(),
        "the converted file describes itself"
    );
    assert_eq!(got.theta.data, want.theta.data);
    let loss = |m: &Path| {
        ok_json(&[
            "eval",
            "--model",
            common::s(m),
            "--data",
            "digits",
            "--samples",
            "64",
            "--json",
        ])["loss"]
            .as_f64()
            .unwrap()
    };
    let reference = loss(&original);
    assert_eq!(loss(&converted), reference);
    assert_eq!(loss(&named), reference);
    // no hint: the candidates, as `--arch` strings, and one of them works
    let err = assert_bad_input(
        &run(&["info", common::s(&bare)]),
        &[
            "heads=1",
            "heads=2",
            "heads=4",
            "residual=false",
            "norm=post",
        ],
    );
    let line = err
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("vit:") && l.contains("heads=4") && l.contains("residual=true"))
        .unwrap_or_else(|| panic!("{err}"));
    let v = ok_json(&[
        "eval",
        "--model",
        common::s(&bare),
        "--arch",
        line,
        "--data",
        "digits",
        "--samples",
        "64",
        "--json",
    ]);
    assert_eq!(v["loss"].as_f64().unwrap(), reference);
    // the data must have the input size the position embedding fixes
    assert_bad_input(
        &run(&["eval", "--model", common::s(&named), "--data", "mnist1d"]),
        &[
            "[40]",
            "[1, 8, 8]",
            "pos_embed fixes its input: 17 tokens = 4×4 patches of 2×2 + the class token",
        ],
    );
}

/// `losscape train --arch vit` through the binary, with AdamW and with SGD: a tiny ViT
/// (depth 1, width 16, mean pooling) on 512 digits for 6 epochs. The full-subset training
/// loss after the last epoch must fall clearly below the first epoch's (and below ln 10,
/// uniform predictions); the written file must load with `eval`, give the same loss on the
/// same subset, and record the optimizer in its recipe.
#[test]
fn train_vit_with_adamw_and_sgd_through_the_binary() {
    let dir = common::tempdir();
    for (name, opts, margin) in [
        (
            "adamw",
            &[
                "--optimizer",
                "adamw",
                "--lr",
                "0.01",
                "--weight-decay",
                "0.05",
            ][..],
            0.5,
        ),
        (
            "sgd",
            &[
                "--optimizer",
                "sgd",
                "--lr",
                "0.1",
                "--momentum",
                "0.9",
                "--weight-decay",
                "0",
            ][..],
            0.15,
        ),
    ] {
        let out = dir.path().join(format!("vit-{name}.safetensors"));
        let out_s = out.to_str().unwrap();
        let mut args = vec![
            "train",
            "--arch",
            "vit:patch=2,depth=1,width=16,heads=2,mlp_ratio=2,pool=mean",
            "--data",
            "digits",
            "--samples",
            "512",
            "--epochs",
            "6",
            "--batch-size",
            "16",
            "--schedule",
            "constant",
            "--seed",
            "0",
            "--out",
            out_s,
            "--json",
            "-q",
        ];
        args.extend_from_slice(opts);
        let h = ok_json(&args);
        let epochs = h.as_array().unwrap();
        assert_eq!(epochs.len(), 6, "{name}: {h}");
        let loss = |e: &serde_json::Value| e["train_loss"].as_f64().unwrap();
        let (first, last) = (loss(&epochs[0]), loss(&epochs[5]));
        assert!(
            last < first - margin && last < 10f64.ln() - margin,
            "{name}: train loss {first} → {last} did not fall by {margin}"
        );
        let ev = ok_json(&[
            "eval",
            "--model",
            out_s,
            "--data",
            "digits",
            "--samples",
            "512",
            "--json",
        ]);
        let eval_loss = ev["loss"].as_f64().unwrap();
        assert!(
            (eval_loss - last).abs() <= 1e-6 * last,
            "{name}: eval of the trained file gives {eval_loss}, the last epoch {last}"
        );
        let m = Model::load(&out, None).unwrap();
        assert!(matches!(m.arch, Arch::Vit(_)), "{name}: {}", m.arch);
        let recipe = &m.metadata["losscape_train_recipe"];
        assert!(
            recipe.contains(&format!("\"kind\":\"{name}\"")),
            "{name}: {recipe}"
        );
    }
}
