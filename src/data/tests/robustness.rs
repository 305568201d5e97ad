//! Every loader on truncated and byte-flipped files: errors, never panics.

use super::*;

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
