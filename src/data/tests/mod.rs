//! Unit tests of the loaders on small synthetic files, one file per loader; the builders
//! of those files (npz, NumPy-style zip, idx, CIFAR records) are here.

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

mod bundled;
mod cifar;
mod dispatch;
mod idx;
mod npy;
mod npz;
mod options;
mod robustness;
mod zip;

// ---------------------------------------------------------------- zip, npy

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

// ---------------------------------------------------------------- datasets

fn toy(n: usize) -> Dataset {
    Dataset {
        name: "toy".into(),
        x: ramp(&[n, 2, 3]),
        y: (0..n).map(|i| i % 3).collect(),
        num_classes: 3,
    }
}
