//! CIFAR-10 binary batches: folders, single batches, damaged files.

use super::*;

#[test]
fn cifar_folder() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cifar-10-batches-bin");
    write_cifar(&dir);
    let tr = load_path_str(&dir, Split::Train).unwrap();
    assert_eq!(tr.x.shape(), &[10, 3, 32, 32]);
    assert_eq!(tr.y, vec![1, 0, 2, 1, 3, 2, 4, 3, 5, 4]);
    assert_eq!(tr.num_classes, 10);
    // Sample 3 is the second record of batch 2 (k = 5).
    assert!((tr.x[[3, 1, 5, 7]] - 51.0 / 255.0).abs() < 1e-7);
    assert!((tr.x[[3, 2, 31, 31]] - 52.0 / 255.0).abs() < 1e-7);
    assert!((tr.x[[3, 0, 0, 0]] - 50.0 / 255.0).abs() < 1e-7);
    // The parent folder works too.
    let te = load_path_str(root.path(), Split::Test).unwrap();
    assert_eq!(te.y, vec![9, 8]);
    assert_eq!(te.name, format!("{}[test]", dir.display()));
    // A single batch file.
    let one = load_path_str(&dir.join("data_batch_2.bin"), Split::Train).unwrap();
    assert_eq!(one.y, vec![2, 1]);
}

#[test]
fn cifar_bad_folders() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cifar-10-batches-bin");
    write_cifar(&dir);
    fs::remove_file(dir.join("test_batch.bin")).unwrap();
    assert_err!(
        load_path_str(&dir, Split::Test),
        DataError::NoTestSplit { .. },
        dir
    );
    let b3 = dir.join("data_batch_3.bin");
    fs::remove_file(&b3).unwrap();
    assert_err!(
        load_path_str(&dir, Split::Train),
        DataError::NotFound { .. },
        b3
    );
    fs::write(&b3, vec![0u8; 3073 + 100]).unwrap();
    assert_err!(
        load_path_str(&dir, Split::Train),
        DataError::Corrupt { .. },
        b3
    );
    fs::write(&b3, cifar_record(10, 0)).unwrap();
    assert_err!(
        load_path_str(&dir, Split::Train),
        DataError::LabelOutOfRange { .. },
        b3
    );
}
