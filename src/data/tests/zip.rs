//! The zip reader under `.npz`: truncation and CRC errors, NumPy's Zip64 layout.

use super::*;

#[test]
fn truncated_and_corrupt_npz() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.npz");
    write_npz(&good, false, |w| {
        add(w, "x", &ramp(&[4, 3]));
        add(w, "y", &array![0i64, 1, 0, 1]);
    });
    let bytes = fs::read(&good).unwrap();

    let cut = dir.path().join("cut.npz");
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert_err!(
        load_path_str(&cut, Split::Train),
        DataError::Corrupt { .. },
        cut
    );

    // Flip one byte of x's data (stored entry): the CRC catches it.
    let flipped = dir.path().join("flip.npz");
    let mut b = bytes.clone();
    let pos = b.windows(6).position(|w| w == b"\x93NUMPY").unwrap() + 140;
    b[pos] ^= 0x55;
    fs::write(&flipped, &b).unwrap();
    assert_err!(
        load_path_str(&flipped, Split::Train),
        DataError::Corrupt { .. },
        flipped
    );

    let junk = dir.path().join("junk.npz");
    fs::write(
        &junk,
        b"this is not a zip file at all, just some text padding",
    )
    .unwrap();
    assert_err!(
        load_path_str(&junk, Split::Train),
        DataError::Corrupt { .. },
        junk
    );
}
#[test]
fn npz_zip64_as_numpy_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("np.npz");
    let zip = numpy_style_zip(&[
        ("x.npy", npy_bytes(&ramp(&[3, 1, 2, 2]))),
        ("y.npy", npy_bytes(&array![2i64, 0, 1])),
    ]);
    fs::write(&p, zip).unwrap();
    let ds = load_path_str(&p, Split::Train).unwrap();
    assert_eq!(ds.x.shape(), &[3, 1, 2, 2]);
    assert_eq!(ds.y, vec![2, 0, 1]);
    assert_eq!(ds.x[[2, 0, 1, 1]], 11.0);
}
