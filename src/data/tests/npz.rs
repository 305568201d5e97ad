//! `.npz` archives: dtypes, splits, missing arrays, shapes and labels.

use super::*;

#[test]
fn npz_f32_train() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.npz");
    write_npz(&p, false, |w| {
        add(w, "x", &ramp(&[5, 1, 2, 2]));
        add(w, "y", &array![0i64, 1, 2, 1, 0]);
    });
    let ds = load_path_str(&p, Split::Train).unwrap();
    assert_eq!(ds.x.shape(), &[5, 1, 2, 2]);
    assert_eq!(ds.sample_shape(), &[1, 2, 2]);
    assert_eq!(ds.y, vec![0, 1, 2, 1, 0]);
    assert_eq!(ds.num_classes, 3);
    assert_eq!(ds.len(), 5);
    assert!(!ds.is_empty());
    assert_eq!(ds.x[[3, 0, 1, 0]], 14.0);
    assert_eq!(ds.name, format!("{}[train]", p.display()));
}

#[test]
fn npz_compressed_u8_with_test_split() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.npz");
    write_npz(&p, true, |w| {
        add(w, "x", &array![[0u8, 255], [51, 102], [1, 2]]);
        add(w, "y", &array![0u8, 2, 1]);
        add(w, "x_test", &array![[255u8, 0]]);
        add(w, "y_test", &array![4i32]);
    });
    let tr = load_path_str(&p, Split::Train).unwrap();
    assert_eq!(tr.x.shape(), &[3, 2]);
    assert_eq!(tr.x[[0, 1]], 1.0);
    assert!((tr.x[[1, 0]] - 0.2).abs() < 1e-7);
    assert_eq!(tr.num_classes, 5, "classes span both splits");
    let te = load_path_str(&p, Split::Test).unwrap();
    assert_eq!(te.x.shape(), &[1, 2]);
    assert_eq!(te.y, vec![4]);
    assert_eq!(te.num_classes, 5);
    assert!(te.name.ends_with("[test]"));
}

#[test]
fn npz_f64_inputs_and_fortran_order() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.npz");
    let x = array![[1.0f64, 2.0, 3.0], [4.0, 5.0, 6.0]];
    let xf = x.t().as_standard_layout().into_owned().reversed_axes(); // Fortran layout
    assert!(!xf.is_standard_layout());
    write_npz(&p, false, |w| {
        w.add_array("x", &xf).unwrap();
        add(w, "y", &array![1u64, 0]);
    });
    let ds = load_path_str(&p, Split::Train).unwrap();
    assert_eq!(
        ds.x.iter().copied().collect::<Vec<_>>(),
        [1., 2., 3., 4., 5., 6.]
    );
    assert_eq!(ds.num_classes, 2);
}

#[test]
fn npz_missing_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("noy.npz");
    write_npz(&p, false, |w| add(w, "x", &ramp(&[2, 2])));
    let e = assert_err!(
        load_path_str(&p, Split::Train),
        DataError::MissingArray { .. },
        p
    );
    assert!(e.to_string().contains("'y'"), "{e}");

    let p = dir.path().join("noytest.npz");
    write_npz(&p, false, |w| {
        add(w, "x", &ramp(&[2, 2]));
        add(w, "y", &array![0i64, 1]);
        add(w, "x_test", &ramp(&[2, 2]));
    });
    let e = assert_err!(
        load_path_str(&p, Split::Train),
        DataError::MissingArray { .. },
        p
    );
    assert!(e.to_string().contains("y_test"), "{e}");
}

#[test]
fn npz_without_test_split() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.npz");
    write_npz(&p, false, |w| {
        add(w, "x", &ramp(&[2, 2]));
        add(w, "y", &array![0i64, 1]);
    });
    let e = assert_err!(
        load_path_str(&p, Split::Test),
        DataError::NoTestSplit { .. },
        p
    );
    assert!(e.to_string().contains("x_test"));
}

#[test]
fn npz_length_mismatch_names_both_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.npz");
    write_npz(&p, false, |w| {
        add(w, "x", &ramp(&[3, 2]));
        add(w, "y", &array![0i64, 1]);
    });
    let e = assert_err!(
        load_path_str(&p, Split::Train),
        DataError::LengthMismatch {
            x_len: 3,
            y_len: 2,
            ..
        },
        p
    );
    let msg = e.to_string();
    assert!(
        msg.contains("'x' has 3") && msg.contains("'y' has 2"),
        "{msg}"
    );
}

#[test]
fn npz_bad_labels_and_dtypes() {
    let dir = tempfile::tempdir().unwrap();
    type Fill = Box<dyn Fn(&mut NpzWriter<fs::File>)>;
    let cases: Vec<(&str, Fill)> = vec![
        (
            "neg",
            Box::new(|w| {
                add(w, "x", &ramp(&[2, 2]));
                add(w, "y", &array![0i64, -1]);
            }),
        ),
        (
            "huge",
            Box::new(|w| {
                add(w, "x", &ramp(&[2, 2]));
                add(w, "y", &array![0i64, 1 << 40]);
            }),
        ),
        (
            "floaty",
            Box::new(|w| {
                add(w, "x", &ramp(&[2, 2]));
                add(w, "y", &array![0.0f32, 1.0]);
            }),
        ),
        (
            "intx",
            Box::new(|w| {
                add(w, "x", &array![[1i32, 2], [3, 4]]);
                add(w, "y", &array![0i64, 1]);
            }),
        ),
        (
            "y2d",
            Box::new(|w| {
                add(w, "x", &ramp(&[2, 2]));
                add(w, "y", &array![[0i64], [1]]);
            }),
        ),
        (
            "x1d",
            Box::new(|w| {
                add(w, "x", &array![1.0f32, 2.0]);
                add(w, "y", &array![0i64, 1]);
            }),
        ),
        (
            "empty",
            Box::new(|w| {
                add(w, "x", &ramp(&[0, 3]));
                add(w, "y", &Array1::<i64>::zeros(0));
            }),
        ),
    ];
    for (name, fill) in cases {
        let p = dir.path().join(format!("{name}.npz"));
        write_npz(&p, false, |w| fill(w));
        let r = load_path_str(&p, Split::Train);
        match name {
            "neg" => {
                let e = assert_err!(r, DataError::LabelOutOfRange { index: 1, .. }, p);
                assert!(e.to_string().contains("label -1"), "{e}");
            }
            "huge" => {
                assert_err!(r, DataError::LabelOutOfRange { index: 1, .. }, p);
            }
            "floaty" | "intx" => {
                assert_err!(r, DataError::WrongDtype { .. }, p);
            }
            "y2d" | "x1d" => {
                assert_err!(r, DataError::BadShape { .. }, p);
            }
            "empty" => {
                assert_err!(r, DataError::Empty { .. }, p);
            }
            _ => unreachable!(),
        }
    }
}

#[test]
fn non_finite_input_names_first_index() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nan.npz");
    let mut x = ramp(&[3, 2]);
    x[[1, 1]] = f32::NAN;
    x[[2, 0]] = f32::INFINITY;
    write_npz(&p, false, |w| {
        add(w, "x", &x);
        add(w, "y", &array![0i64, 1, 0]);
    });
    assert_err!(
        load_path_str(&p, Split::Train),
        DataError::NonFinite {
            index: 3,
            sample: 1,
            ..
        },
        p
    );
}
