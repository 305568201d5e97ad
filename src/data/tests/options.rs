//! `DataOptions` and `Dataset` helpers: subsets, normalization, splits, batches.

use super::*;

#[test]
fn samples_are_deterministic_sorted_subsets() {
    let ds = toy(50);
    let a = ds.random_subset(10, SAMPLE_SEED).unwrap();
    let b = ds.random_subset(10, SAMPLE_SEED).unwrap();
    assert_eq!(a.x, b.x);
    assert_eq!(a.len(), 10);
    let firsts: Vec<f32> = a.x.outer_iter().map(|s| s[[0, 0]] / 6.0).collect();
    assert!(firsts.windows(2).all(|w| w[0] < w[1]), "{firsts:?}");
    assert_ne!(firsts, (0..10).map(|i| i as f32).collect::<Vec<_>>());
    for (s, &l) in firsts.iter().zip(&a.y) {
        assert_eq!(*s as usize % 3, l);
    }
    assert_eq!(ds.random_subset(50, 0).unwrap().x, ds.x);
    for bad in [0, 51] {
        let e = ds.random_subset(bad, 0).unwrap_err();
        assert!(matches!(e, DataError::InvalidSamples { available: 50, .. }));
        assert!(e.to_string().contains("`samples`") && e.to_string().contains("50"));
    }
}

#[test]
fn load_applies_samples_then_normalize() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.npz");
    write_npz(&p, false, |w| {
        add(w, "x", &ramp(&[20, 2, 1]));
        add(w, "y", &Array1::from_iter((0..20i64).map(|i| i % 2)));
    });
    let o = DataOptions {
        split: Split::Train,
        samples: Some(5),
        normalize: Some("1,2/2,4".parse().unwrap()),
    };
    let a = load(p.to_str().unwrap(), &o).unwrap();
    let b = load(p.to_str().unwrap(), &o).unwrap();
    assert_eq!(a.x, b.x);
    assert_eq!(a.len(), 5);
    let raw = load_path_str(&p, Split::Train)
        .unwrap()
        .random_subset(5, SAMPLE_SEED)
        .unwrap();
    for (r, n) in raw.x.outer_iter().zip(a.x.outer_iter()) {
        assert_eq!(n[[0, 0]], (r[[0, 0]] - 1.0) / 2.0);
        assert_eq!(n[[1, 0]], (r[[1, 0]] - 2.0) / 4.0);
    }
    let e = load(
        p.to_str().unwrap(),
        &DataOptions {
            samples: Some(21),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains(&p.display().to_string()), "{e}");
}

#[test]
fn normalize_parsing_and_channels() {
    let n: Normalize = "0.5/0.25".parse().unwrap();
    let mut ds = toy(2);
    ds.normalize(&n).unwrap();
    assert_eq!(ds.x[[1, 1, 2]], (11.0 - 0.5) / 0.25);
    let n: Normalize = " 1 , 2 / 1,0.5".parse().unwrap();
    assert_eq!(n.mean, vec![1.0, 2.0]);
    let mut ds = toy(2);
    ds.normalize(&n).unwrap();
    assert_eq!(ds.x[[0, 1, 0]], (3.0 - 2.0) / 0.5);
    let three: Normalize = "1,2,3/1,1,1".parse().unwrap();
    assert!(matches!(
        toy(2).normalize(&three),
        Err(DataError::InvalidNormalize { .. })
    ));
    for bad in ["1,2", "a/1", "1/0", "1/-2", "1/nan", "1,2/1,2,3", "/1"] {
        assert!(
            matches!(
                bad.parse::<Normalize>(),
                Err(DataError::InvalidNormalize { .. })
            ),
            "{bad}"
        );
    }
    assert_eq!(n.to_string(), "1,2/1,0.5");
}

#[test]
fn split_parsing() {
    assert_eq!("train".parse::<Split>().unwrap(), Split::Train);
    assert_eq!("TEST".parse::<Split>().unwrap(), Split::Test);
    assert!(matches!(
        "val".parse::<Split>(),
        Err(DataError::UnknownSplit { .. })
    ));
    assert_eq!(Split::Test.to_string(), "test");
    assert_eq!(DataOptions::default().split, Split::Train);
}

#[test]
fn helpers() {
    let ds = toy(7);
    assert_eq!(ds.class_counts(), vec![3, 2, 2]);
    let s = ds.subset(&[6, 0]);
    assert_eq!(s.y, vec![0, 0]);
    assert_eq!(s.x[[0, 0, 0]], 36.0);
    let batches: Vec<_> = ds.batches(3).collect();
    assert_eq!(batches.len(), 3);
    assert_eq!(batches[2].0.shape(), &[1, 2, 3]);
    assert_eq!(batches[2].1, &[0]);
}

#[test]
fn nhwc_is_detected_or_told_and_presets_parse() {
    let mk = |shape: &[usize]| Dataset {
        name: "t".into(),
        x: ArrayD::from_shape_vec(
            IxDyn(shape),
            (0..shape.iter().product::<usize>())
                .map(|v| v as f32)
                .collect(),
        )
        .unwrap(),
        y: vec![0; shape[0]],
        num_classes: 1,
    };
    // [N, H, W, C] = [1, 2, 5, 3] → [1, 3, 2, 5]; element (h, w, c) moves to (c, h, w)
    let mut ds = mk(&[1, 2, 5, 3]);
    to_nchw(&mut ds, None).unwrap();
    assert_eq!(ds.x.shape(), &[1, 3, 2, 5]);
    assert_eq!(ds.x[[0, 2, 1, 4]], ((5 + 4) * 3 + 2) as f32);
    // NCHW stays
    let mut ds = mk(&[1, 3, 5, 5]);
    to_nchw(&mut ds, None).unwrap();
    assert_eq!(ds.x.shape(), &[1, 3, 5, 5]);
    // both axes look like channels: ambiguous unless told
    let mut ds = mk(&[2, 3, 7, 1]);
    assert!(matches!(
        to_nchw(&mut ds, None),
        Err(DataError::AmbiguousLayout { .. })
    ));
    to_nchw(&mut ds, Some(ImageLayout::Nhwc)).unwrap();
    assert_eq!(ds.x.shape(), &[2, 1, 3, 7]);
    let n: Normalize = "cifar10".parse().unwrap();
    assert_eq!((n.preset, n.mean.len()), (Some("cifar10"), 3));
    assert!((n.mean[0] - 125.3 / 255.0).abs() < 1e-7);
    assert_eq!(n.to_string().parse::<Normalize>().unwrap(), n);
    assert!(n.describe().starts_with("cifar10 = 0.49"));
    assert!("imagenet".parse::<Normalize>().is_ok() && "mnist".parse::<Normalize>().is_ok());
    assert!("cifar11".parse::<Normalize>().is_err());
}
