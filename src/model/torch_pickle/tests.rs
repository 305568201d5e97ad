use super::*;
use crate::model::{ResnetCifar, Shortcut};
use crate::pickle::StorageRef;
use rand::{Rng, SeedableRng};

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/torch")
        .join(name)
}

fn values(sd: &StateDict, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = sd.get(name).unwrap_or_else(|| panic!("no {name}"));
    (t.shape.clone(), t.values.clone().unwrap_or_default())
}

#[test]
fn views_dtypes_and_shared_storages_in_both_formats() {
    for (f, format) in [("views.pt", "zip"), ("views_legacy.pt", "legacy")] {
        let (sd, _) = read(&fixture(f)).unwrap();
        assert_eq!(sd.format, format);
        let base: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(values(&sd, "base"), (vec![3, 4], base.clone()));
        let t: Vec<f32> = (0..4)
            .flat_map(|j| (0..3).map(move |i| (4 * i + j) as f32))
            .collect();
        assert_eq!(values(&sd, "t"), (vec![4, 3], t), "{f}");
        assert_eq!(
            values(&sd, "sub"),
            (vec![2, 2], vec![4.0, 6.0, 8.0, 10.0]),
            "{f}"
        );
        assert_eq!(
            values(&sd, "h"),
            (vec![2, 3], vec![0.0, 0.25, 0.5, 0.75, 1.0, 1.25])
        );
        assert_eq!(values(&sd, "bf"), (vec![2], vec![1.5, -2.0]));
        assert_eq!(values(&sd, "d"), (vec![2, 1], vec![0.25, 1e-3]));
        assert_eq!(values(&sd, "scalar"), (vec![], vec![2.5]));
        let n = sd.get("n").unwrap();
        assert_eq!(
            (n.elem, n.values.is_none(), n.shape.len()),
            (Elem::I64, true, 0)
        );
    }
}

#[test]
fn whole_module_is_refused_naming_the_class() {
    let e = read(&fixture("whole_module.pt")).unwrap_err().to_string();
    assert!(
        e.contains("torch.nn.modules.linear") && e.contains("not allowed"),
        "{e}"
    );
}

#[test]
fn truncated_and_corrupt_checkpoints_are_errors() {
    for f in ["views.pt", "views_legacy.pt", "resnet8_optionA.t7"] {
        let bytes = std::fs::read(fixture(f)).unwrap();
        let step = (bytes.len() / 97).max(1);
        for n in (0..bytes.len()).step_by(step) {
            assert!(read_bytes(&bytes[..n]).is_err(), "{f}: prefix of {n} bytes");
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..400 {
            let mut c = bytes.clone();
            let i = rng.random_range(0..c.len());
            c[i] = rng.random();
            let _ = read_bytes(&c); // must not panic
        }
    }
}

fn tref(numel: usize, offset: usize, size: Vec<usize>, stride: Vec<usize>) -> TensorRef {
    TensorRef {
        storage: StorageRef {
            key: "0".into(),
            elem: Elem::F32,
            numel,
            view: None,
        },
        offset,
        size,
        stride,
    }
}

#[test]
fn views_are_checked_against_the_storage_and_the_budget() {
    let bytes: Vec<u8> = (0..6).flat_map(|v| (v as f32).to_le_bytes()).collect();
    let mut budget = 100;
    assert_eq!(
        materialize(&tref(6, 1, vec![2, 2], vec![1, 2]), &bytes, &mut budget).unwrap(),
        vec![1.0, 3.0, 2.0, 4.0]
    );
    // reaches element 6 of 6
    assert!(
        materialize(&tref(6, 3, vec![2, 2], vec![2, 1]), &bytes, &mut budget)
            .unwrap_err()
            .contains("reaches element 6")
    );
    // a broadcast view (stride 0) of 2^40 elements: refused before allocating
    let e = materialize(&tref(6, 0, vec![1 << 40], vec![0]), &bytes, &mut budget).unwrap_err();
    assert!(e.contains("exceed"), "{e}");
    assert!(materialize(
        &tref(6, 0, vec![usize::MAX, 2], vec![1, 1]),
        &bytes,
        &mut budget
    )
    .is_err());
}

#[test]
fn checkpoints_load_with_inferred_architectures() {
    let m = load(&fixture("resnet8_proj.pth"), None).unwrap();
    assert_eq!(
        m.metadata.get("torch_state_dict_key").map(String::as_str),
        Some("state_dict")
    );
    assert_eq!(
        m.metadata.get("torch_prefix_stripped").map(String::as_str),
        Some("module.")
    );
    let Arch::ResnetCifar(r) = &m.arch else {
        panic!()
    };
    assert_eq!(
        (r.depth, r.width, r.shortcut, r.in_channels, r.num_classes),
        (8, 4, Shortcut::Projection, 3, 10)
    );
    let m = load(&fixture("resnet8_optionA.t7"), None).unwrap();
    assert!(matches!(
        m.arch,
        Arch::ResnetCifar(ResnetCifar {
            shortcut: Shortcut::OptionA,
            ..
        })
    ));
    assert_eq!(
        m.metadata.get("torch_format").map(String::as_str),
        Some("legacy")
    );
    // without the name's hint: ambiguous, both candidates listed
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("resnet8.t7");
    std::fs::copy(fixture("resnet8_optionA.t7"), &p).unwrap();
    let e = load(&p, None).unwrap_err().to_string();
    assert!(
        e.contains("shortcut=option-a") && e.contains("shortcut=none"),
        "{e}"
    );
    // an explicit architecture settles it
    let a: Arch = "resnet-cifar:depth=8,width=4,shortcut=none,in_channels=3"
        .parse()
        .unwrap();
    assert!(load(&p, Some(&a)).is_ok());
    // a wrong one names the tensor
    let a: Arch = "resnet-cifar:depth=14,width=4,shortcut=none,in_channels=3"
        .parse()
        .unwrap();
    assert!(matches!(
        load(&p, Some(&a)),
        Err(ModelError::MissingTensor { .. })
    ));
}
