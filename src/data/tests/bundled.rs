//! The datasets built into the binary.

use super::*;

#[test]
fn bundled_digits() {
    let tr = load("digits", &DataOptions::default()).unwrap();
    assert_eq!(tr.x.shape(), &[1437, 1, 8, 8]);
    assert_eq!(tr.name, "digits[train]");
    assert_eq!(tr.num_classes, 10);
    assert!(tr.x.iter().all(|v| (0.0..=1.0).contains(v)));
    assert!(tr.class_counts().iter().all(|&c| c > 100));
    let te = load("digits", &opts(Split::Test)).unwrap();
    assert_eq!(te.x.shape(), &[360, 1, 8, 8]);
    assert_eq!(te.y.len(), 360);
    assert_eq!(te.num_classes, 10);
}

#[test]
fn bundled_mnist1d() {
    let tr = load("mnist1d", &DataOptions::default()).unwrap();
    assert_eq!(tr.x.shape(), &[4000, 40]);
    assert_eq!(tr.num_classes, 10);
    let te = load(
        "mnist1d",
        &DataOptions {
            split: Split::Test,
            samples: Some(100),
            normalize: Some("0/2".parse().unwrap()),
        },
    )
    .unwrap();
    assert_eq!(te.x.shape(), &[100, 40]);
    assert_eq!(te.name, "mnist1d[test]");
    let full = load("mnist1d", &opts(Split::Test)).unwrap();
    assert_eq!(full.len(), 1000);
    let sub = full.random_subset(100, SAMPLE_SEED).unwrap();
    assert_eq!(sub.y, te.y);
    assert_eq!(sub.x.mapv(|v| v / 2.0), te.x);
    assert!(BUNDLED.contains(&"digits") && BUNDLED.contains(&"mnist1d"));
}
