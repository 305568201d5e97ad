//! `.npy` input/label pairs: sibling names, loading, truncation.

use super::*;

#[test]
fn npy_sibling_names() {
    let s =
        |p: &str| crate::data::npz::sibling_labels(Path::new(p)).map(|p| p.display().to_string());
    assert_eq!(s("d/x.npy").as_deref(), Some("d/y.npy"));
    assert_eq!(s("x_train.npy").as_deref(), Some("y_train.npy"));
    assert_eq!(s("train_x.npy").as_deref(), Some("train_y.npy"));
    assert_eq!(s("mnist-X-test.npy").as_deref(), Some("mnist-Y-test.npy"));
    assert_eq!(s("xs.npy"), None);
    assert_eq!(s("images.npy"), None);
}

#[test]
fn npy_pair_loads_and_reports_missing_sibling() {
    let dir = tempfile::tempdir().unwrap();
    let xp = dir.path().join("x_train.npy");
    ramp(&[4, 3])
        .write_npy(fs::File::create(&xp).unwrap())
        .unwrap();
    let yp = dir.path().join("y_train.npy");
    let e = assert_err!(
        load_path_str(&xp, Split::Train),
        DataError::NotFound {
            needed_by: Some(_),
            ..
        },
        yp
    );
    assert!(e.to_string().contains(&xp.display().to_string()));
    array![1i16, 0, 3, 1]
        .write_npy(fs::File::create(&yp).unwrap())
        .unwrap();
    // The split does not apply to a single .npy pair.
    let ds = load_path_str(&xp, Split::Test).unwrap();
    assert_eq!(ds.x.shape(), &[4, 3]);
    assert_eq!(ds.y, vec![1, 0, 3, 1]);
    assert_eq!(ds.num_classes, 4);
    assert_eq!(ds.name, xp.display().to_string());

    let odd = dir.path().join("inputs.npy");
    fs::copy(&xp, &odd).unwrap();
    assert_err!(
        load_path_str(&odd, Split::Train),
        DataError::UnknownFormat { .. },
        odd
    );
}

#[test]
fn npy_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let xp = dir.path().join("x.npy");
    let yp = dir.path().join("y.npy");
    let b = npy_bytes(&ramp(&[4, 3]));
    fs::write(&xp, &b[..b.len() - 4]).unwrap();
    fs::write(&yp, npy_bytes(&array![0i64, 1, 0, 1])).unwrap();
    let e = assert_err!(
        load_path_str(&xp, Split::Train),
        DataError::Corrupt { .. },
        xp
    );
    assert!(e.to_string().contains("48 data bytes"), "{e}");
}
