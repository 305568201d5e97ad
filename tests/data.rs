//! Public API of `losscape::data`: bundled sets, options and errors.

use losscape::data::{load, DataError, DataOptions, Normalize, Split, BUNDLED};

#[test]
fn bundled_sets_load_by_name() {
    let expect = [
        ("digits", Split::Train, vec![1437, 1, 8, 8]),
        ("digits", Split::Test, vec![360, 1, 8, 8]),
        ("mnist1d", Split::Train, vec![4000, 40]),
        ("mnist1d", Split::Test, vec![1000, 40]),
    ];
    for (name, split, shape) in expect {
        assert!(BUNDLED.contains(&name));
        let opts = DataOptions {
            split,
            ..Default::default()
        };
        let ds = load(name, &opts).unwrap();
        assert_eq!(ds.x.shape(), &shape[..]);
        assert_eq!(ds.len(), shape[0]);
        assert_eq!(ds.num_classes, 10);
        assert_eq!(ds.name, format!("{name}[{split}]"));
    }
}

#[test]
fn options_and_errors() {
    let opts = DataOptions {
        split: "test".parse().unwrap(),
        samples: Some(32),
        normalize: Some("0.5/0.25".parse::<Normalize>().unwrap()),
    };
    let a = load("digits", &opts).unwrap();
    assert_eq!(a.len(), 32);
    assert_eq!(a.x, load("digits", &opts).unwrap().x);

    let e = load(
        "digits",
        &DataOptions {
            samples: Some(5000),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            DataError::InvalidSamples {
                available: 1437,
                ..
            }
        ),
        "{e}"
    );

    let e = load("no/such/file.npz", &DataOptions::default()).unwrap_err();
    assert!(matches!(e, DataError::NotFound { .. }));
    assert!(e.to_string().contains("no/such/file.npz"));
}
