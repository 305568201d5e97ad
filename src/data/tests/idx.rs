//! MNIST idx files: raw and gzipped, folder splits, bad headers and labels.

use super::*;

#[test]
fn mnist_files_raw_and_gz() {
    for gzip in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let images = write_mnist(dir.path(), "train", gzip, &[3, 9, 0]);
        let ds = load_path_str(&images, Split::Train).unwrap();
        assert_eq!(ds.x.shape(), &[3, 1, 4, 5]);
        assert_eq!(ds.y, vec![3, 9, 0]);
        assert_eq!(ds.num_classes, 10);
        assert!((ds.x[[1, 0, 0, 1]] - 21.0 / 255.0).abs() < 1e-7);
    }
}

#[test]
fn mnist_folder_splits() {
    let dir = tempfile::tempdir().unwrap();
    write_mnist(dir.path(), "train", true, &[1, 2, 3]);
    let e = assert_err!(
        load_path_str(dir.path(), Split::Test),
        DataError::NoTestSplit { .. },
        dir.path()
    );
    assert!(e.to_string().contains("t10k"));
    write_mnist(dir.path(), "t10k", false, &[4, 5]);
    let tr = load_path_str(dir.path(), Split::Train).unwrap();
    let te = load_path_str(dir.path(), Split::Test).unwrap();
    assert_eq!((tr.len(), te.len()), (3, 2));
    assert_eq!(te.y, vec![4, 5]);
    assert_eq!(te.name, format!("{}[test]", dir.path().display()));
}

#[test]
fn mnist_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let labels = d.join("a-labels-idx1-ubyte");
    fs::write(&labels, idx(&[2], &[1, 2])).unwrap();
    let images = d.join("a-images-idx3-ubyte");

    // Header claims 3 images, data holds 2.
    fs::write(&images, idx(&[3, 4, 5], &[0; 40])).unwrap();
    let e = assert_err!(
        load_path_str(&images, Split::Train),
        DataError::Corrupt { .. },
        images
    );
    assert!(e.to_string().contains("60 data bytes"), "{e}");

    // Absurd sizes are rejected, never allocated.
    fs::write(&images, idx(&[u32::MAX, u32::MAX, u32::MAX], &[0; 40])).unwrap();
    assert_err!(
        load_path_str(&images, Split::Train),
        DataError::Corrupt { .. },
        images
    );

    // Sizes whose product is exactly u64::MAX.
    fs::write(&images, idx(&[u32::MAX, 641, 6_700_417], &[0; 40])).unwrap();
    assert_err!(
        load_path_str(&images, Split::Train),
        DataError::Corrupt { .. },
        images
    );

    // Bad magic, wrong type code.
    fs::write(&images, b"\x12\x34\x08\x03rest").unwrap();
    assert_err!(
        load_path_str(&images, Split::Train),
        DataError::Corrupt { .. },
        images
    );
    let mut f32_idx = idx(&[2, 4, 5], &[0; 160]);
    f32_idx[2] = 0x0D;
    fs::write(&images, f32_idx).unwrap();
    assert_err!(
        load_path_str(&images, Split::Train),
        DataError::WrongDtype { .. },
        images
    );

    // Label 10 is out of range for MNIST; lengths must agree.
    fs::write(&images, idx(&[2, 4, 5], &[0; 40])).unwrap();
    fs::write(&labels, idx(&[2], &[1, 10])).unwrap();
    assert_err!(
        load_path_str(&images, Split::Train),
        DataError::LabelOutOfRange { index: 1, .. },
        labels
    );
    fs::write(&labels, idx(&[3], &[1, 2, 3])).unwrap();
    assert_err!(
        load_path_str(&images, Split::Train),
        DataError::LengthMismatch { .. },
        labels
    );

    // Damaged gzip.
    let gzp = d.join("b-images-idx3-ubyte.gz");
    let mut g = gz(&idx(&[2, 4, 5], &[7; 40]));
    let l = g.len();
    g.truncate(l - 12);
    fs::write(&gzp, g).unwrap();
    fs::write(d.join("b-labels-idx1-ubyte.gz"), gz(&idx(&[2], &[1, 2]))).unwrap();
    assert_err!(
        load_path_str(&gzp, Split::Train),
        DataError::Corrupt { .. },
        gzp
    );

    // Missing labels; labels passed instead of images.
    let lone = d.join("c-images-idx3-ubyte");
    fs::write(&lone, idx(&[2, 4, 5], &[0; 40])).unwrap();
    assert_err!(
        load_path_str(&lone, Split::Train),
        DataError::NotFound { .. },
        d.join("c-labels-idx1-ubyte")
    );
    assert_err!(
        load_path_str(&labels, Split::Train),
        DataError::UnknownFormat { .. },
        labels
    );
}
