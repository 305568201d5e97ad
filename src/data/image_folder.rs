//! Image folders in torchvision's `ImageFolder` layout: `root/<class>/<image>`.
//!
//! As `torchvision.datasets.ImageFolder` with its default loader and `ToTensor()`:
//! - classes are the sorted names of `root`'s subfolders (symlinks followed), and a class's
//!   label is its position (`find_classes`);
//! - each class's samples are the files under its folder, recursively, whose names end in
//!   `.png`, `.jpg` or `.jpeg` in any case (other files are skipped), ordered as
//!   `sorted(os.walk(class_dir))` then sorted file names (`make_dataset`);
//! - a class folder without images is an error, as in torchvision;
//! - images are decoded to 8-bit RGB (`pil_loader`'s `convert("RGB")`: grayscale is
//!   replicated to three channels, alpha is dropped, 16-bit samples are scaled to 8 bits)
//!   and scaled by 1/255 into `[N, 3, H, W]`.
//!
//! All images must have one size, unless [`super::DataFormat::resize`] asks for `N×N`: then
//! each image is resized with a bilinear (triangle) filter that widens with the downscale
//! factor, as PIL's antialiased resize does — close to `transforms.Resize((N, N))` but not
//! bit-identical to it. JPEG decoding (the `jpeg-decoder` crate) may also differ from
//! libjpeg's by a few levels of 255.
//!
//! A decoder's allocation is bounded by the file's size (see [`pixel_limit`]), so a corrupt
//! or hostile header cannot make it allocate gigabytes.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};

use super::{assemble, read_file, Classes, DataError, Dataset};

/// File-name endings taken as images (compared lower-cased).
pub const EXTENSIONS: [&str; 3] = [".png", ".jpg", ".jpeg"];

/// Largest accepted `resize` side.
pub const MAX_RESIZE: u32 = 8192;

/// Deepest folder nesting searched below a class folder (guards against symlink loops).
const MAX_DEPTH: usize = 32;

/// Pixels any image may have, whatever its file size (4096×4096).
const MIN_PIXEL_LIMIT: u64 = 1 << 24;

/// Pixels allowed per byte of file beyond [`MIN_PIXEL_LIMIT`]: above deflate's largest
/// ratio (≈1032:1), so only degenerate files are refused.
const PIXELS_PER_BYTE: u64 = 1024;

/// Largest pixel count accepted for an image file of `file_len` bytes:
/// `max(2^24, 1024 · file_len)`.
pub fn pixel_limit(file_len: u64) -> u64 {
    MIN_PIXEL_LIMIT.max(file_len.saturating_mul(PIXELS_PER_BYTE))
}

/// Whether `path` looks like an image folder: it has a subfolder (checked after the other
/// folder formats).
pub(crate) fn is_image_folder(path: &Path) -> bool {
    std::fs::read_dir(path).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.is_dir()))
    })
}

fn is_image(name: &std::ffi::OsStr) -> bool {
    let lower = name.to_string_lossy().to_lowercase();
    EXTENSIONS.iter().any(|ext| lower.ends_with(ext))
}

fn key(p: &Path) -> &[u8] {
    p.as_os_str().as_encoded_bytes()
}

/// Class names, and each sample's path and label.
type Scan = (Vec<String>, Vec<(PathBuf, usize)>);

/// The classes (sorted subfolder names) and the samples (path, label) in torchvision's order.
pub(crate) fn scan(root: &Path) -> Result<Scan, DataError> {
    let io = |e| DataError::io(root, e);
    let mut dirs: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(root).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
            dirs.push(path);
        }
    }
    dirs.sort_by(|a, b| key(a).cmp(key(b)));
    if dirs.is_empty() {
        return Err(DataError::UnknownFormat {
            path: root.to_path_buf(),
            reason: "the folder has no subfolders (an image folder holds one per class)".into(),
        });
    }
    let mut classes = Vec::with_capacity(dirs.len());
    let mut samples = Vec::new();
    for (label, dir) in dirs.iter().enumerate() {
        // `sorted(os.walk(dir))` orders folders by their path string, then each folder's
        // files by name.
        let mut folders: Vec<(PathBuf, Vec<PathBuf>)> = Vec::new();
        walk(dir, 0, &mut folders)?;
        folders.sort_by(|a, b| key(&a.0).cmp(key(&b.0)));
        let before = samples.len();
        for (_, mut files) in folders {
            files.sort_by(|a, b| key(a).cmp(key(b)));
            samples.extend(files.into_iter().map(|f| (f, label)));
        }
        if samples.len() == before {
            return Err(DataError::EmptyClass {
                dir: dir.clone(),
                extensions: EXTENSIONS.join(" "),
            });
        }
        classes.push(
            dir.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        );
    }
    Ok((classes, samples))
}

/// Collects `dir` and its subfolders (symlinks followed, [`MAX_DEPTH`] deep) with their
/// image files.
fn walk(dir: &Path, depth: usize, out: &mut Vec<(PathBuf, Vec<PathBuf>)>) -> Result<(), DataError> {
    let io = |e| DataError::io(dir, e);
    let mut files = Vec::new();
    let mut subdirs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => subdirs.push(path),
            Ok(m) if m.is_file() && is_image(&entry.file_name()) => files.push(path),
            _ => {}
        }
    }
    out.push((dir.to_path_buf(), files));
    if depth < MAX_DEPTH {
        for d in subdirs {
            walk(&d, depth + 1, out)?;
        }
    }
    Ok(())
}

/// Decodes one image file to 8-bit RGB, bounding the decoder's allocation by the file size.
pub(crate) fn decode(path: &Path) -> Result<image::RgbImage, DataError> {
    let bytes = read_file(path, None)?;
    let limit = pixel_limit(bytes.len() as u64);
    let bad = |e: image::ImageError| DataError::corrupt(path, "image", e.to_string());
    let reader = || {
        image::io::Reader::new(Cursor::new(&bytes[..]))
            .with_guessed_format()
            .map_err(|e| DataError::io(path, e))
    };
    let (w, h) = reader()?.into_dimensions().map_err(bad)?;
    let pixels = u64::from(w) * u64::from(h);
    if pixels > limit {
        return Err(DataError::TooManyPixels {
            path: path.to_path_buf(),
            width: w,
            height: h,
            limit,
            bytes: bytes.len() as u64,
        });
    }
    let mut limits = image::io::Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    // At most 16 bytes per pixel (RGBA, 32-bit float) for the decoded buffer and again
    // for a conversion.
    limits.max_alloc = Some(limit.saturating_mul(32));
    let mut r = reader()?;
    r.limits(limits);
    Ok(r.decode().map_err(bad)?.to_rgb8())
}

/// Loads an image folder as `[N, 3, H, W]` in `[0, 1]`, resizing every image to
/// `resize × resize` when given.
pub(crate) fn load(root: &Path, resize: Option<u32>) -> Result<Dataset, DataError> {
    if let Some(n) = resize {
        if n == 0 || n > MAX_RESIZE {
            return Err(DataError::InvalidResize {
                given: n,
                max: MAX_RESIZE,
            });
        }
    }
    let (classes, samples) = scan(root)?;
    let mut first: Option<(PathBuf, u32, u32)> = None;
    let mut x: Vec<f32> = Vec::new();
    let mut y: Vec<i128> = Vec::with_capacity(samples.len());
    for (path, label) in &samples {
        let mut img = decode(path)?;
        if let Some(n) = resize {
            if img.dimensions() != (n, n) {
                img = image::imageops::resize(&img, n, n, image::imageops::FilterType::Triangle);
            }
        }
        let (w, h) = img.dimensions();
        match &first {
            Some((p, fw, fh)) if (*fw, *fh) != (w, h) => {
                return Err(DataError::ImageSizeMismatch {
                    first: p.clone(),
                    first_size: (*fw, *fh),
                    path: path.clone(),
                    size: (w, h),
                })
            }
            Some(_) => {}
            None => first = Some((path.clone(), w, h)),
        }
        let plane = w as usize * h as usize;
        if x.is_empty() {
            x.try_reserve_exact(3 * plane * samples.len())
                .map_err(|_| DataError::TooLarge {
                    path: root.to_path_buf(),
                    elements: (3 * plane * samples.len()) as u64,
                })?;
        }
        let raw = img.as_raw();
        for c in 0..3 {
            x.extend(raw[c..].iter().step_by(3).map(|&b| f32::from(b) / 255.0));
        }
        y.push(*label as i128);
    }
    let (w, h) = first.map_or((0, 0), |(_, w, h)| (w, h));
    let shape = IxDyn(&[samples.len(), 3, h as usize, w as usize]);
    let x = ArrayD::from_shape_vec(shape, x).expect("3·H·W values per sample");
    assemble(
        root,
        root.display().to_string(),
        ("images", x),
        ("class folders", &y),
        Classes::Fixed(classes.len()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, Rgb, RgbImage};

    /// `root/cat/{a,b}.png` (RGB, known pixels), `root/dog/c.PNG` (grayscale),
    /// `root/dog/sub/d.png`, and non-images that must be skipped.
    fn folder() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        for d in ["cat", "dog/sub", "zz_empty_ok_if_filled"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let rgb = |seed: u8| RgbImage::from_fn(4, 4, |i, j| Rgb([seed, (4 * j + i) as u8, 255]));
        rgb(10).save(root.join("cat/b.png")).unwrap();
        rgb(20).save(root.join("cat/a.png")).unwrap();
        GrayImage::from_fn(4, 4, |i, j| Luma([(16 * j + i) as u8]))
            .save(root.join("dog/c.PNG"))
            .unwrap();
        rgb(30).save(root.join("dog/sub/d.png")).unwrap();
        rgb(40)
            .save(root.join("zz_empty_ok_if_filled/e.png"))
            .unwrap();
        std::fs::write(root.join("cat/notes.txt"), b"not an image").unwrap();
        std::fs::write(root.join("readme.md"), b"top-level file").unwrap();
        t
    }

    #[test]
    fn classes_order_labels_and_values_match_torchvision() {
        let t = folder();
        let root = t.path();
        let (classes, samples) = scan(root).unwrap();
        assert_eq!(classes, ["cat", "dog", "zz_empty_ok_if_filled"]);
        let got: Vec<(String, usize)> = samples
            .iter()
            .map(|(p, l)| (p.strip_prefix(root).unwrap().display().to_string(), *l))
            .collect();
        let want = [
            ("cat/a.png", 0),
            ("cat/b.png", 0),
            ("dog/c.PNG", 1),
            ("dog/sub/d.png", 1),
            ("zz_empty_ok_if_filled/e.png", 2),
        ];
        let want: Vec<(String, usize)> = want.iter().map(|(p, l)| (p.to_string(), *l)).collect();
        assert_eq!(got, want);

        let ds = load(root, None).unwrap();
        assert_eq!(ds.x.shape(), &[5, 3, 4, 4]);
        assert_eq!(ds.y, [0, 0, 1, 1, 2]);
        assert_eq!(ds.num_classes, 3);
        // cat/a.png: R = 20, G = 4·row + col, B = 255.
        for r in 0..4 {
            for c in 0..4 {
                assert_eq!(ds.x[[0, 0, r, c]], 20.0 / 255.0);
                assert_eq!(ds.x[[0, 1, r, c]], (4 * r + c) as f32 / 255.0);
                assert_eq!(ds.x[[0, 2, r, c]], 1.0);
                assert_eq!(ds.x[[1, 0, r, c]], 10.0 / 255.0);
                // Grayscale is replicated to three channels.
                for ch in 0..3 {
                    assert_eq!(ds.x[[2, ch, r, c]], (16 * r + c) as f32 / 255.0);
                }
            }
        }
    }

    #[test]
    fn jpeg_decodes_within_two_levels() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("only")).unwrap();
        let p = t.path().join("only/x.JPG");
        RgbImage::from_pixel(8, 8, Rgb([200, 100, 50]))
            .save_with_format(&p, image::ImageFormat::Jpeg)
            .unwrap();
        let ds = load(t.path(), None).unwrap();
        assert_eq!(ds.x.shape(), &[1, 3, 8, 8]);
        for (ch, want) in [200.0f32, 100.0, 50.0].into_iter().enumerate() {
            for v in ds.x.slice(ndarray::s![0, ch, .., ..]) {
                assert!(
                    (v * 255.0 - want).abs() <= 2.0,
                    "channel {ch}: {}",
                    v * 255.0
                );
            }
        }
    }

    #[test]
    fn sizes_must_agree_unless_resized() {
        let t = folder();
        let odd = t.path().join("dog/z.png");
        RgbImage::from_pixel(2, 3, Rgb([0, 0, 0]))
            .save(&odd)
            .unwrap();
        let e = load(t.path(), None).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, DataError::ImageSizeMismatch { .. }), "{msg}");
        assert!(
            msg.contains("cat/a.png` is 4×4") && msg.contains("dog/z.png` is 2×3"),
            "{msg}"
        );
        assert!(msg.contains("--resize N"), "{msg}");

        let ds = load(t.path(), Some(6)).unwrap();
        assert_eq!(ds.x.shape(), &[6, 3, 6, 6]);
        // Order: cat/a, cat/b, dog/c.PNG, dog/z.png, dog/sub/d.png, zz…/e.png. Constant
        // images and channels stay constant under the bilinear filter.
        assert!(ds
            .x
            .slice(ndarray::s![3, .., .., ..])
            .iter()
            .all(|&v| v == 0.0));
        let a = ds.x.slice(ndarray::s![0, .., .., ..]);
        assert!(a
            .slice(ndarray::s![0, .., ..])
            .iter()
            .all(|&v| v == 20.0 / 255.0));
        assert!(a.slice(ndarray::s![2, .., ..]).iter().all(|&v| v == 1.0));
        assert_eq!(ds.y, [0, 0, 1, 1, 1, 2]);
        assert!(matches!(
            load(t.path(), Some(0)),
            Err(DataError::InvalidResize { .. })
        ));
    }

    #[test]
    fn corrupt_empty_and_oversized_files_are_named() {
        let t = folder();
        let bad = t.path().join("cat/broken.png");
        let mut bytes = std::fs::read(t.path().join("cat/a.png")).unwrap();
        bytes.truncate(bytes.len() / 2);
        std::fs::write(&bad, &bytes).unwrap();
        let msg = load(t.path(), None).unwrap_err().to_string();
        assert!(msg.contains("broken.png"), "{msg}");
        std::fs::remove_file(&bad).unwrap();

        std::fs::create_dir(t.path().join("empty")).unwrap();
        let e = load(t.path(), None).unwrap_err();
        assert!(matches!(e, DataError::EmptyClass { .. }), "{e}");
        assert!(e.to_string().contains("empty"), "{e}");
        std::fs::remove_dir(t.path().join("empty")).unwrap();

        // A PNG header claiming 65535×65535 pixels in a tiny file.
        let mut png = Vec::new();
        png.extend_from_slice(b"\x89PNG\r\n\x1a\n");
        let ihdr = [
            &65535u32.to_be_bytes()[..],
            &65535u32.to_be_bytes(),
            &[8, 2, 0, 0, 0],
        ]
        .concat();
        for (len, chunk) in [
            (13u32, [&b"IHDR"[..], &ihdr].concat()),
            (0, b"IDAT".to_vec()),
            (0, b"IEND".to_vec()),
        ] {
            png.extend_from_slice(&len.to_be_bytes());
            png.extend_from_slice(&chunk);
            png.extend_from_slice(&crc32(&chunk).to_be_bytes());
        }
        std::fs::write(t.path().join("cat/huge.png"), &png).unwrap();
        let e = load(t.path(), None).unwrap_err();
        assert!(matches!(e, DataError::TooManyPixels { .. }), "{e}");
        assert!(e.to_string().contains("huge.png"), "{e}");
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
