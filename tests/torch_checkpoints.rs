//! Issue #17 end to end: a PyTorch user's `torch.save` checkpoint and torchvision's
//! `cifar-10-batches-py` folder give a surface in one command, whose centre equals
//! PyTorch's loss (fixtures made by fixtures/generate/make_torch_checkpoints.py).

mod common;

use common::{assert_bad_input, fixture, ok, ok_json, run, stdout};
use losscape::io::surface::{read_surface, Attr};

fn reference(file: &str) -> (f64, f64) {
    let text =
        std::fs::read_to_string(fixture("fixtures/reference/torch_checkpoints.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    (
        v[file]["train_loss"].as_f64().unwrap(),
        v[file]["train_acc"].as_f64().unwrap(),
    )
}

const DATA: &str = "fixtures/data/cifar-10-batches-py";

#[test]
fn surface_of_a_torch_checkpoint_on_cifar_python_batches_in_one_command() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["resnet8_proj.pth", "resnet8_optionA.t7"] {
        let (loss, acc) = reference(file);
        let model = fixture(&format!("fixtures/torch/{file}"));
        let out = dir.path().join(format!("{file}.h5"));
        ok(&[
            "surface",
            "--model",
            model.to_str().unwrap(),
            "--data",
            DATA,
            "--normalize",
            "cifar10",
            "--x",
            "-0.5:0.5:3",
            "--out",
            out.to_str().unwrap(),
        ]);
        let f = read_surface(&out).unwrap();
        let i = f
            .values
            .names
            .iter()
            .position(|n| n == "train_loss")
            .unwrap();
        let centre = f.values.arrays[i].iter().copied().nth(1).unwrap();
        assert!(
            (centre - loss).abs() <= 2e-5 * loss,
            "{file}: losscape {centre} vs PyTorch {loss}"
        );
        let j = f
            .values
            .names
            .iter()
            .position(|n| n == "train_acc")
            .unwrap();
        assert_eq!(
            f.values.arrays[j].iter().copied().nth(1).unwrap(),
            acc,
            "{file}"
        );
        match f.attrs.get("normalize") {
            Some(Attr::Str(s)) => assert!(s.starts_with("cifar10 = 0.49"), "{s}"),
            other => panic!("normalize attribute: {other:?}"),
        }
    }
}

#[test]
fn info_explains_the_inference_and_convert_writes_a_self_describing_file() {
    let model = fixture("fixtures/torch/resnet8_proj.pth");
    let out = stdout(&ok(&["info", model.to_str().unwrap()]));
    assert!(
        out.contains("inferred from the tensors")
            && out.contains("depth 6·1+2 = 8")
            && out.contains("projection"),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("r.safetensors");
    ok(&[
        "convert",
        model.to_str().unwrap(),
        "--out",
        st.to_str().unwrap(),
    ]);
    let v = ok_json(&[
        "eval",
        "--model",
        st.to_str().unwrap(),
        "--data",
        DATA,
        "--normalize",
        "cifar10",
        "--json",
    ]);
    let (loss, _) = reference("resnet8_proj.pth");
    let got = v["loss"].as_f64().unwrap();
    assert!((got - loss).abs() <= 2e-5 * loss, "{got} vs {loss}");
    // a forbidden global: one message naming it, exit code 2
    let bad = fixture("fixtures/torch/whole_module.pt");
    assert_bad_input(
        &run(&["info", bad.to_str().unwrap()]),
        &["torch.nn.modules.linear", "not allowed"],
    );
}

/// A `torch.save`d ViT (`{'epoch', 'config', 'model'}`): the heads come from the stored
/// `config` string, the skips from `_res` in the name; eval equals PyTorch's loss.
#[test]
fn a_torch_saved_vit_is_inferred_and_equals_pytorch() {
    let model = fixture("fixtures/torch/vit2_res_cifar.pth");
    let m = model.to_str().unwrap();
    let out = stdout(&ok(&["info", m]));
    assert!(
        out.contains("says 2 heads")
            && out.contains("pool=mean")
            && out.contains("norm=pre")
            && out.contains("3×32×32 inputs"),
        "{out}"
    );
    let v = ok_json(&[
        "eval",
        "--model",
        m,
        "--data",
        DATA,
        "--normalize",
        "cifar10",
        "--json",
    ]);
    let (loss, acc) = reference("vit2_res_cifar.pth");
    let got = v["loss"].as_f64().unwrap();
    assert!((got - loss).abs() <= 2e-5 * loss, "{got} vs PyTorch {loss}");
    assert_eq!(v["accuracy"].as_f64().unwrap(), acc);
}
