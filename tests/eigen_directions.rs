//! Surfaces along the top eigenvectors of a curvature operator: `hessian --save-vectors`
//! files as `surface --directions`, and `surface --dir-type eigen` computing them at θ.
//! The second difference of the loss along the unit top eigenvector at the centre is λmax
//! (PyHessian's plot, Yao et al. 2020): (L(h) − 2L(0) + L(−h))/h² = vᵀHv + O(h²).
//!
//! That identity needs a loss that is twice differentiable along the line. A ReLU network's
//! loss is only piecewise smooth: every activation that changes sign between −h and h adds
//! a kink the Hessian (the second derivative almost everywhere) does not see, and their
//! density does not shrink with h. So the check runs on an MLP whose ReLUs all stay active
//! (large positive biases: the network is multilinear in its weights, its Hessian is not
//! the GGN), where the identity holds to O(h²) and Richardson extrapolation to O(h⁴).

mod common;

use common::{assert_bad_input, ok, ok_json, run, s};

const MODEL: &str = "fixtures/models/mlp-plain-mnist1d.safetensors";

/// An MLP (40-16×1-10) whose ReLUs are active on every mnist1d sample and nearby θ: its
/// loss is smooth. Saved in `dir`.
fn smooth_mlp(dir: &std::path::Path) -> std::path::PathBuf {
    use losscape::model::{Arch, Model};
    let arch: Arch = "mlp:in_features=40,depth=1,width=16,num_classes=10"
        .parse()
        .unwrap();
    let mut m = Model::init(arch, 5, false);
    let layout = m.theta.layout.clone();
    for (i, t) in layout.tensors().iter().enumerate() {
        let mut a = m.theta.tensor_mut(i);
        match t.name.as_str() {
            "fc_in.bias" | "blocks.0.fc.bias" => a.fill(8.0),
            "fc_out.weight" => a.mapv_inplace(|w| 0.2 * w),
            _ => {}
        }
    }
    let p = dir.join("smooth.safetensors");
    m.save(&p).unwrap();
    p
}

fn read(path: &std::path::Path) -> hdf5::File {
    losscape::io::hdf5_init();
    hdf5::File::open(path).unwrap()
}

fn vec(f: &hdf5::File, name: &str) -> Vec<f64> {
    f.dataset(name).unwrap().read_raw().unwrap()
}

fn attr_f64(f: &hdf5::File, name: &str) -> f64 {
    f.attr(name).unwrap().read_scalar().unwrap()
}

fn attr_str(f: &hdf5::File, name: &str) -> String {
    f.attr(name)
        .unwrap()
        .read_scalar::<hdf5::types::VarLenUnicode>()
        .unwrap()
        .to_string()
}

/// Central second differences at the centre of a 1-D loss line with spacing h: at steps
/// h and 2h, and their Richardson extrapolation (error O(h⁴)).
fn second_differences(loss: &[f64], h: f64) -> (f64, f64, f64) {
    let c = loss.len() / 2;
    let d = |k: usize| (loss[c + k] - 2.0 * loss[c] + loss[c - k]) / (k as f64 * h).powi(2);
    let (d1, d2) = (d(1), d(2));
    (d1, d2, (4.0 * d1 - d2) / 3.0)
}

/// The loss along the saved unit top eigenvector curves by λmax at the centre, for the
/// Hessian and the GGN (along whose eigenvector the loss curves by vᵀHv, from an exact H·v).
#[test]
fn second_difference_along_the_top_eigenvector_is_lambda_max() {
    let dir = common::tempdir();
    let model = smooth_mlp(dir.path());
    let model = s(&model);
    for op in ["hessian", "ggn"] {
        let h5 = dir.path().join(format!("{op}.h5"));
        let v = ok_json(&[
            "hessian",
            "-m",
            model,
            "-d",
            "mnist1d",
            "--samples",
            "256",
            "--operator",
            op,
            "--top-k",
            "2",
            "--precision",
            "f64",
            "--tol",
            "1e-9",
            "--max-iter",
            "300",
            "--save-vectors",
            "--out",
            s(&h5),
            "--json",
        ]);
        let lambda = v["eigenvalues"][0]["value"].as_f64().unwrap();
        // a step where ½λh² ≈ 0.005: well inside the quadratic region, far above f32 noise
        let h = 0.1 / lambda.sqrt();
        let surf = dir.path().join(format!("{op}-line.h5"));
        let x = format!("--x={}:{}:5", -2.0 * h, 2.0 * h);
        ok(&[
            "surface",
            "-m",
            model,
            "-d",
            "mnist1d",
            "--samples",
            "256",
            "--directions",
            s(&h5),
            &x,
            "--out",
            s(&surf),
            "-q",
        ]);
        let f = read(&surf);
        assert_eq!(attr_str(&f, "direction_kind"), "eigen");
        assert_eq!(attr_str(&f, "eigen_operator"), op);
        assert_eq!(attr_str(&f, "direction_norm"), "none");
        assert_eq!(attr_f64(&f, "eigenvalue_x"), lambda);
        let loss = vec(&f, "train_loss");
        let (d1, d2, rich) = second_differences(&loss, h);
        // the surface is the Hessian's: along the GGN's eigenvector it curves by vᵀHv,
        // which the exact H·v of the saved vector gives (the Hessian's own Rayleigh
        // quotient = λmax for `hessian`)
        let want = rayleigh_hessian(std::path::Path::new(model), &h5);
        if op == "hessian" {
            assert!(
                (want - lambda).abs() <= 1e-6 * lambda,
                "{want} vs λ {lambda}"
            );
        }
        let err = (rich - want).abs() / want;
        assert!(
            err < 1e-4,
            "{op}: second differences {d1} (h), {d2} (2h), extrapolated {rich} vs {want}"
        );
        assert!((d1 - want).abs() / want < 5e-3, "{op}: {d1} vs {want}");
        // the direction file written beside the surface holds the unit eigenvector
        let dirs = read(&dir.path().join(format!("{op}-line.directions.h5")));
        assert_eq!(attr_str(&dirs, "kind"), "eigen");
        let norm2: f64 = dirs
            .group("xdirection")
            .unwrap()
            .member_names()
            .unwrap()
            .iter()
            .map(|m| {
                let d: Vec<f32> = dirs
                    .dataset(&format!("xdirection/{m}"))
                    .unwrap()
                    .read_raw()
                    .unwrap();
                d.iter().map(|&x| (x as f64).powi(2)).sum::<f64>()
            })
            .sum();
        assert!((norm2 - 1.0).abs() < 1e-5, "‖v‖² = {norm2}");
    }
}

/// vᵀHv of the top eigenvector stored in a Hessian file, by one exact f64 H·v.
fn rayleigh_hessian(model: &std::path::Path, h5: &std::path::Path) -> f64 {
    use losscape::data::{load, DataOptions};
    use losscape::model::Model;
    use losscape::objective::{Objective, ObjectiveConfig};
    let m = Model::load(&common::root().join(model), None).unwrap();
    let ds = load(
        "mnist1d",
        &DataOptions {
            samples: Some(256),
            ..Default::default()
        },
    )
    .unwrap();
    let o = Objective::new(&m.graph, ds.x.view(), &ds.y, ObjectiveConfig::default()).unwrap();
    let e = losscape::io::hessian::read_eigenvectors(h5, None, 1).unwrap();
    let col: Vec<f32> = e.vectors.column(0).to_vec();
    let d = losscape::landscape::directions::subset_direction(&m.theta, &e.tensors, col).unwrap();
    let theta = m.theta.data.mapv(|v| v as f64);
    let v = d.data.mapv(|v| v as f64);
    let hv = o.hvp(theta.view(), v.view());
    v.dot(&hv) / v.dot(&v)
}

/// `--dir-type eigen` computes the same directions as `hessian --save-vectors` with the
/// same settings (one code path), so the surfaces agree bit for bit; x and y are the
/// orthogonal top-2 eigenvectors; `--norm filter` rescales each filter to θ's.
#[test]
fn on_the_fly_eigenvectors_equal_saved_ones() {
    let dir = common::tempdir();
    let h5 = dir.path().join("h.h5");
    ok(&[
        "hessian",
        "-m",
        MODEL,
        "-d",
        "mnist1d",
        "--samples",
        "128",
        "--top-k",
        "2",
        "--operator",
        "ggn",
        "--tol",
        "1e-4",
        "--max-iter",
        "100",
        "--seed",
        "3",
        "--save-vectors",
        "--out",
        s(&h5),
    ]);
    let grid = ["--x=-0.5:0.5:5", "--y=-0.5:0.5:5"];
    let common_args = [
        "surface",
        "-m",
        MODEL,
        "-d",
        "mnist1d",
        "--samples",
        "128",
        "-q",
    ];
    let from_file = dir.path().join("file.h5");
    let mut a: Vec<&str> = common_args.to_vec();
    a.extend(grid);
    a.extend(["--directions", s(&h5), "--out", s(&from_file)]);
    ok(&a);
    let computed = dir.path().join("computed.h5");
    let mut a: Vec<&str> = common_args.to_vec();
    a.extend(grid);
    a.extend([
        "--dir-type",
        "eigen",
        "--operator",
        "ggn",
        "--eigen-tol",
        "1e-4",
        "--eigen-max-iter",
        "100",
        "--seed",
        "3",
        "--out",
        s(&computed),
        "--json",
    ]);
    let j = common::json(&ok(&a));
    // the eigenvectors are recomputed bit for bit: a rerun finds the surface complete
    let again = common::json(&ok(&a));
    assert_eq!(again["computed"], 0, "{again}");
    assert!(j["xy_cosine"].as_f64().unwrap().abs() < 1e-5, "{j}");
    let (a, b) = (read(&from_file), read(&computed));
    assert_eq!(vec(&a, "train_loss"), vec(&b, "train_loss"));
    assert!(attr_f64(&b, "eigenvalue_x") >= attr_f64(&b, "eigenvalue_y"));
    assert!(b.attr("eigen_file").is_err());

    // filter-normalized eigenvectors: every filter of a weight gets θ's filter norm
    let filtered = dir.path().join("filtered.h5");
    ok(&[
        "surface",
        "-m",
        MODEL,
        "-d",
        "mnist1d",
        "--samples",
        "128",
        "-q",
        "--x=-0.5:0.5:3",
        "--directions",
        s(&h5),
        "--norm",
        "filter",
        "--out",
        s(&filtered),
    ]);
    let f = read(&filtered);
    assert_eq!(attr_str(&f, "direction_norm"), "filter");
    let d = read(&dir.path().join("filtered.directions.h5"));
    let raw = read(&dir.path().join("file.directions.h5"));
    let m = losscape::model::Model::load(&common::fixture(MODEL), None).unwrap();
    let (mut filters, mut matched) = (0, 0);
    let norm = |v: &[f32]| v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    for (i, t) in m.theta.layout.tensors().iter().enumerate() {
        let got: Vec<f32> = d
            .dataset(&format!("xdirection/{i}"))
            .unwrap()
            .read_raw()
            .unwrap();
        let v: Vec<f32> = raw
            .dataset(&format!("xdirection/{i}"))
            .unwrap()
            .read_raw()
            .unwrap();
        let w = m.theta.tensor(i);
        let w = w.as_slice().unwrap();
        if t.shape.len() < 2 {
            assert!(
                got.iter().all(|&v| v == 0.0),
                "{}: 1-D tensors are held fixed",
                t.name
            );
            assert!(
                v.iter().any(|&v| v != 0.0),
                "{}: unit eigenvectors keep them",
                t.name
            );
            continue;
        }
        let n = t.len() / t.shape[0];
        for ((gi, vi), wi) in got.chunks(n).zip(v.chunks(n)).zip(w.chunks(n)) {
            // ‖wᵢ‖ ‖vᵢ‖ / (‖vᵢ‖ + 1e-10): θ's filter norm, except for near-zero filters of
            // the eigenvector (units that are nearly dead), which the 1e-10 guard keeps small
            let want = norm(wi) * norm(vi) / (norm(vi) + 1e-10);
            let g = norm(gi);
            assert!(
                (g - want).abs() <= 1e-5 * norm(wi),
                "{}: {g} vs {want}",
                t.name
            );
            filters += 1;
            matched += usize::from((g - norm(wi)).abs() <= 1e-5 * norm(wi));
        }
    }
    assert!(
        matched * 10 >= filters * 9,
        "{matched} of {filters} filters rescaled"
    );
}

#[test]
fn bad_eigen_input() {
    let dir = common::tempdir();
    let out = dir.path().join("s.h5");
    let base = [
        "surface",
        "-m",
        MODEL,
        "-d",
        "mnist1d",
        "--samples",
        "32",
        "-q",
    ];
    let with = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        a.extend(["--out", s(&out)]);
        run(&a)
    };
    let e = assert_bad_input(
        &with(&["--x=-1:1:3", "--dir-type", "eigen", "--model2", MODEL]),
        &["--dir-type", "--model2"],
    );
    assert!(!e.contains("H·v"), "ran Lanczos first: {e}");
    // a Hessian file without vectors, and one with too few for a 2-D surface
    let h5 = dir.path().join("h.h5");
    ok(&[
        "hessian",
        "-m",
        MODEL,
        "-d",
        "mnist1d",
        "--samples",
        "32",
        "--out",
        s(&h5),
    ]);
    assert_bad_input(
        &with(&["--x=-1:1:3", "--directions", s(&h5)]),
        &["--save-vectors"],
    );
    ok(&[
        "hessian",
        "-m",
        MODEL,
        "-d",
        "mnist1d",
        "--samples",
        "32",
        "--save-vectors",
        "--out",
        s(&h5),
    ]);
    assert_bad_input(
        &with(&["--x=-1:1:3", "--y=-1:1:3", "--directions", s(&h5)]),
        &["1 eigenvector", "--top-k 2"],
    );
    // eigenvectors of another architecture
    let other = dir.path().join("other.h5");
    ok(&[
        "hessian",
        "-m",
        "fixtures/models/resnet8-digits.safetensors",
        "-d",
        "digits",
        "--samples",
        "32",
        "--save-vectors",
        "--max-iter",
        "5",
        "--out",
        s(&other),
    ]);
    assert_bad_input(
        &with(&["--x=-1:1:3", "--directions", s(&other)]),
        &["eigenvectors", "another model"],
    );
    assert!(!out.exists());
}
