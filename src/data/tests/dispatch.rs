//! `load` choosing a loader: missing paths, unknown formats, sniffed contents.

use super::*;

#[test]
fn unknown_paths() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.npz");
    assert_err!(
        load_path_str(&missing, Split::Train),
        DataError::NotFound { .. },
        missing
    );
    let txt = dir.path().join("data.csv");
    fs::write(&txt, "1,2,3\n").unwrap();
    assert_err!(
        load_path_str(&txt, Split::Train),
        DataError::UnknownFormat { .. },
        txt
    );
    assert_err!(
        load_path_str(dir.path(), Split::Train),
        DataError::UnknownFormat { .. },
        dir.path()
    );
    // Contents are sniffed when the name says nothing.
    let noext = dir.path().join("archive");
    write_npz(&noext, false, |w| {
        add(w, "x", &ramp(&[2, 2]));
        add(w, "y", &array![0i64, 1]);
    });
    assert_eq!(load_path_str(&noext, Split::Train).unwrap().len(), 2);
}
