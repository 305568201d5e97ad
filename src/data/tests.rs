//! Unit tests of the loaders on small synthetic files.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ndarray::{array, Array1, ArrayD, IxDyn};
use ndarray_npy::{NpzWriter, WritableElement, WriteNpyExt};

use super::*;

fn opts(split: Split) -> DataOptions {
    DataOptions {
        split,
        ..Default::default()
    }
}

fn load_path_str(p: &Path, split: Split) -> Result<Dataset, DataError> {
    load(p.to_str().unwrap(), &opts(split))
}

/// Writes an `.npz` with the given arrays (uncompressed or deflated).
fn write_npz<F>(path: &Path, compressed: bool, fill: F)
where
    F: FnOnce(&mut NpzWriter<fs::File>),
{
    let f = fs::File::create(path).unwrap();
    let mut w = if compressed {
        NpzWriter::new_compressed(f)
    } else {
        NpzWriter::new(f)
    };
    fill(&mut w);
    w.finish().unwrap();
}

fn add<A: WritableElement, D: ndarray::Dimension>(
    w: &mut NpzWriter<fs::File>,
    name: &str,
    a: &ndarray::Array<A, D>,
) {
    w.add_array(name, a).unwrap();
}

fn ramp(shape: &[usize]) -> ArrayD<f32> {
    let n = shape.iter().product::<usize>();
    ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|i| i as f32).collect()).unwrap()
}

/// Asserts the error's variant and that its message names `path`.
macro_rules! assert_err {
    ($res:expr, $pat:pat, $path:expr) => {{
        let e = $res.expect_err("expected an error");
        assert!(matches!(e, $pat), "wrong variant: {e:?}");
        let msg = e.to_string();
        let p = $path.display().to_string();
        assert!(msg.contains(&p), "message `{msg}` does not name `{p}`");
        e
    }};
}

// ---------------------------------------------------------------- npz

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

/// Builds a stored zip the way NumPy does (Zip64 extra fields, sizes 0xFFFFFFFF in the
/// local header, Zip64 end records).
fn numpy_style_zip(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let mut crc = flate2::Crc::new();
        crc.update(data);
        let offset = out.len() as u64;
        let size = data.len() as u64;
        // Local header with a Zip64 extra (sizes).
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&[45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&crc.sum().to_le_bytes());
        out.extend_from_slice(&u32::MAX.to_le_bytes());
        out.extend_from_slice(&u32::MAX.to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&20u16.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&[1, 0, 16, 0]);
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(data);
        // Central entry with every 64-bit field in the extra.
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&[45, 3, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        central.extend_from_slice(&crc.sum().to_le_bytes());
        central.extend_from_slice(&u32::MAX.to_le_bytes());
        central.extend_from_slice(&u32::MAX.to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&28u16.to_le_bytes());
        central.extend_from_slice(&[0; 6]); // comment length, disk, internal attributes
        central.extend_from_slice(&[0; 4]); // external attributes
        central.extend_from_slice(&u32::MAX.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
        central.extend_from_slice(&[1, 0, 24, 0]);
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
    }
    let cd_offset = out.len() as u64;
    out.extend_from_slice(&central);
    let z64 = out.len() as u64;
    let n = entries.len() as u64;
    out.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
    out.extend_from_slice(&44u64.to_le_bytes());
    out.extend_from_slice(&[45, 3, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&(central.len() as u64).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&z64.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
    out.extend_from_slice(&[0xFF; 8]);
    out.extend_from_slice(&[0, 0]);
    out
}

fn npy_bytes<A: WritableElement, D: ndarray::Dimension>(a: &ndarray::Array<A, D>) -> Vec<u8> {
    let mut v = Vec::new();
    a.write_npy(&mut v).unwrap();
    v
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

// ---------------------------------------------------------------- npy pairs

#[test]
fn npy_sibling_names() {
    let s = |p: &str| npz::sibling_labels(Path::new(p)).map(|p| p.display().to_string());
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

// ---------------------------------------------------------------- MNIST idx

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Writes `{prefix}-images-idx3-ubyte` (3 images of 4×5) and labels, optionally gzipped.
fn write_mnist(dir: &Path, prefix: &str, gzip: bool, labels: &[u8]) -> PathBuf {
    let n = labels.len();
    let pixels: Vec<u8> = (0..n * 20).map(|i| (i % 256) as u8).collect();
    let ext = if gzip { ".gz" } else { "" };
    let wrap = |d: &[u8]| if gzip { gz(d) } else { d.to_vec() };
    let images = dir.join(format!("{prefix}-images-idx3-ubyte{ext}"));
    fs::write(&images, wrap(&idx(&[n as u32, 4, 5], &pixels))).unwrap();
    let lab = dir.join(format!("{prefix}-labels-idx1-ubyte{ext}"));
    fs::write(lab, wrap(&idx(&[n as u32], labels))).unwrap();
    images
}

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

// ---------------------------------------------------------------- CIFAR-10

/// A record whose pixels encode (sample, channel): red = 10·k, green = 10·k + 1, blue = 10·k + 2.
fn cifar_record(label: u8, k: u8) -> Vec<u8> {
    let mut r = vec![label];
    for c in 0..3 {
        r.extend(std::iter::repeat_n(10 * k + c, 1024));
    }
    r
}

fn write_cifar(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    for b in 1..=5u8 {
        let mut bytes = cifar_record(b, 2 * b);
        bytes.extend(cifar_record(b - 1, 2 * b + 1));
        fs::write(dir.join(format!("data_batch_{b}.bin")), bytes).unwrap();
    }
    let mut t = cifar_record(9, 0);
    t.extend(cifar_record(8, 1));
    fs::write(dir.join("test_batch.bin"), t).unwrap();
}

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

// ---------------------------------------------------------------- dispatch

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

// ---------------------------------------------------------------- options

fn toy(n: usize) -> Dataset {
    Dataset {
        name: "toy".into(),
        x: ramp(&[n, 2, 3]),
        y: (0..n).map(|i| i % 3).collect(),
        num_classes: 3,
    }
}

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

// ---------------------------------------------------------------- bundled sets

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

// ---------------------------------------------------------------- robustness

/// Truncations and random byte flips of valid files must give errors, never panics.
#[test]
fn mangled_files_never_panic() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut files = Vec::new();
    for (name, compressed) in [("plain.npz", false), ("deflated.npz", true)] {
        let p = d.join(name);
        write_npz(&p, compressed, |w| {
            add(w, "x", &ramp(&[3, 2]));
            add(w, "y", &array![0i64, 1, 2]);
            add(w, "x_test", &array![[1u8, 2]]);
            add(w, "y_test", &array![1i32]);
        });
        files.push(p);
    }
    let z64 = d.join("z64.npz");
    fs::write(
        &z64,
        numpy_style_zip(&[
            ("x.npy", npy_bytes(&ramp(&[2, 2]))),
            ("y.npy", npy_bytes(&array![0i64, 1])),
        ]),
    )
    .unwrap();
    files.push(z64);
    files.push(write_mnist(d, "train", true, &[1, 2]));
    fs::create_dir(d.join("raw")).unwrap();
    let raw = write_mnist(&d.join("raw"), "t10k", false, &[1, 2]);
    files.push(raw);
    let xp = d.join("x.npy");
    fs::write(&xp, npy_bytes(&ramp(&[2, 3]))).unwrap();
    fs::write(d.join("y.npy"), npy_bytes(&array![0u8, 1])).unwrap();
    files.push(xp);
    let bin = d.join("batch.bin");
    fs::write(&bin, [cifar_record(1, 0), cifar_record(2, 1)].concat()).unwrap();
    files.push(bin);

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for f in &files {
        let good = fs::read(f).unwrap();
        for split in [Split::Train, Split::Test] {
            load_path_str(f, split).map(|_| ()).unwrap_or(());
        }
        let step = (good.len() / 97).max(1);
        for cut in (0..good.len()).step_by(step) {
            fs::write(f, &good[..cut]).unwrap();
            assert!(
                load_path_str(f, Split::Train).is_err(),
                "{f:?} cut at {cut}"
            );
        }
        for _ in 0..100 {
            let mut b = good.clone();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..b.len());
                b[i] = rng.random();
            }
            fs::write(f, &b).unwrap();
            let _ = load_path_str(f, Split::Train);
            let _ = load_path_str(f, Split::Test);
        }
        fs::write(f, &good).unwrap();
    }
}
