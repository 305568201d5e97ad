//! Directions (Li et al. 2018, arXiv:1712.09913): normalizations on a trained ResNet-20,
//! determinism, direction files round trip bit for bit, loss-landscape's own files (written
//! by `fixtures/generate/make_ll_directions.py`) load, wrong files fail with a clear error,
//! and `GridAxis` parsing.

mod common;

use std::sync::Arc;

use common::{assert_close, fixture, tol, Dtype, Quantity};

use losscape::engine::{Layout, ParamVec, Role};
use losscape::io::directions::{read_directions, write_directions, DirectionFileError};
use losscape::landscape::directions::{
    cosine, difference_direction, orthogonalize, random_direction, DirType, DirectionAxis,
    DirectionConfig, DirectionKind, DirectionNorm, Directions,
};
use losscape::landscape::grid::GridAxis;
use losscape::model::{Arch, Model};
use ndarray::Array1;

const RESNET20: &str = "fixtures/models/resnet20-digits.safetensors";
const LL_JSON: &str = "fixtures/reference/ll-directions.json";
/// The version `make_ll_directions.py` writes into `ll-directions.json`.
const LL_FIXTURE_VERSION: u64 = 1;

fn resnet20() -> Model {
    Model::load(&fixture(RESNET20), None).expect("bundled model loads")
}

fn init(arch: &str) -> Model {
    Model::init(arch.parse::<Arch>().unwrap(), 5, false)
}

fn l2(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

/// Norms of the slices along dim 0 of tensor `i`.
fn filter_norms(v: &ParamVec<f32>, i: usize) -> Vec<f64> {
    let t = v.tensor(i);
    let s = t.as_slice().unwrap();
    s.chunks(s.len() / t.shape()[0]).map(l2).collect()
}

/// A norm of an f32 direction against the norm it should have.
fn assert_norm(got: f64, want: f64, label: &str) {
    assert_close(label, got, want, tol(Dtype::F32, Quantity::DirectionNorm));
}

fn cfg(norm: DirectionNorm) -> DirectionConfig {
    DirectionConfig {
        norm,
        seed: 17,
        ..Default::default()
    }
}

#[test]
fn filter_normalization_matches_every_weight_filter() {
    let m = resnet20();
    let d = random_direction(&m.theta, &cfg(DirectionNorm::Filter), DirectionAxis::X);
    let mut checked = 0;
    for (i, t) in m.theta.layout.tensors().iter().enumerate() {
        if t.shape.len() < 2 {
            continue;
        }
        for (k, (a, b)) in filter_norms(&d, i)
            .into_iter()
            .zip(filter_norms(&m.theta, i))
            .enumerate()
        {
            assert_norm(a, b, &format!("{} filter {k}", t.name));
            checked += 1;
        }
    }
    assert!(checked > 500, "only {checked} filters checked");
}

#[test]
fn layer_dfilter_dlayer_weight_none() {
    let m = resnet20();
    let dir = |n| random_direction(&m.theta, &cfg(n), DirectionAxis::X);
    let (layer, dfilter, dlayer) = (
        dir(DirectionNorm::Layer),
        dir(DirectionNorm::Dfilter),
        dir(DirectionNorm::Dlayer),
    );
    let (weight, none) = (dir(DirectionNorm::Weight), dir(DirectionNorm::None));
    for (i, t) in m.theta.layout.tensors().iter().enumerate() {
        if t.shape.len() < 2 {
            continue;
        }
        let w = m.theta.tensor(i);
        let w = w.as_slice().unwrap();
        assert_norm(
            l2(layer.tensor(i).as_slice().unwrap()),
            l2(w),
            &format!("layer {}", t.name),
        );
        assert_norm(
            l2(dlayer.tensor(i).as_slice().unwrap()),
            1.0,
            &format!("dlayer {}", t.name),
        );
        for (k, n) in filter_norms(&dfilter, i).into_iter().enumerate() {
            assert_norm(n, 1.0, &format!("dfilter {} filter {k}", t.name));
        }
        // weight: the raw Gaussian (same seed, same stream) times θ, elementwise
        let (dw, dn) = (weight.tensor(i), none.tensor(i));
        for ((&a, &g), &wv) in dw.iter().zip(dn.iter()).zip(w) {
            assert_eq!(a, g * wv, "weight norm on {}", t.name);
        }
    }
}

#[test]
fn one_dim_tensors_and_running_stats() {
    let m = resnet20();
    let tensors = m.theta.layout.tensors();
    for dir_type in [DirType::Weights, DirType::States] {
        for perturb_biasbn in [false, true] {
            let c = DirectionConfig {
                dir_type,
                perturb_biasbn,
                ..cfg(DirectionNorm::Filter)
            };
            let d = random_direction(&m.theta, &c, DirectionAxis::Y);
            for (i, t) in tensors.iter().enumerate() {
                if t.shape.len() > 1 {
                    continue;
                }
                let moved = dir_type == DirType::States || t.role.is_trainable();
                let label = format!("{} ({dir_type}, perturb_biasbn {perturb_biasbn})", t.name);
                if moved && perturb_biasbn {
                    assert_eq!(d.tensor(i), m.theta.tensor(i), "{label}: copy of θ");
                } else {
                    assert!(d.tensor(i).iter().all(|&v| v == 0.0), "{label}: zero");
                }
            }
        }
    }
    assert!(tensors.iter().any(|t| t.role == Role::RunningVar));
}

#[test]
fn deterministic_and_independent_of_other_tensors() {
    let m = resnet20();
    let c = cfg(DirectionNorm::Filter);
    let a = random_direction(&m.theta, &c, DirectionAxis::X);
    let b = random_direction(&m.theta, &c, DirectionAxis::X);
    assert!(a
        .data
        .iter()
        .zip(b.data.iter())
        .all(|(p, q)| p.to_bits() == q.to_bits()));
    let other_seed = random_direction(
        &m.theta,
        &DirectionConfig { seed: 18, ..c },
        DirectionAxis::X,
    );
    assert_ne!(a.data, other_seed.data);
    let y = random_direction(&m.theta, &c, DirectionAxis::Y);
    assert_ne!(a.data, y.data);
    assert!(
        cosine(&a, &y).abs() < 0.05,
        "cos(x, y) = {}",
        cosine(&a, &y)
    );

    // ResNet-8 and ResNet-14 (width 16) share conv1 and layer1.0.*, with the same shapes
    // but different neighbours: the raw streams of those tensors are identical
    let none = cfg(DirectionNorm::None);
    let (r8, r14) = (
        init("resnet-cifar:depth=8,width=16,in_channels=1,input_size=8"),
        init("resnet-cifar:depth=14,width=16,in_channels=1,input_size=8,num_classes=3"),
    );
    let (p, q) = (
        random_direction(&r8.theta, &none, DirectionAxis::X),
        random_direction(&r14.theta, &none, DirectionAxis::X),
    );
    for name in [
        "conv1.weight",
        "layer1.0.conv1.weight",
        "layer1.0.conv2.weight",
    ] {
        let (u, v) = (p.by_name(name).unwrap(), q.by_name(name).unwrap());
        assert_eq!(u.shape(), v.shape(), "{name}");
        assert_eq!(u, v, "{name} depends on the other tensors");
    }
}

#[test]
fn orthogonalize_and_difference() {
    let m = resnet20();
    let x = random_direction(&m.theta, &cfg(DirectionNorm::Filter), DirectionAxis::X);
    let mut y = random_direction(&m.theta, &cfg(DirectionNorm::Filter), DirectionAxis::Y);
    y.axpy(0.7, &x);
    assert!(cosine(&x, &y) > 0.5);
    orthogonalize(&mut y, &x);
    assert!(cosine(&x, &y).abs() < 1e-6, "cos = {}", cosine(&x, &y));

    let mut other = m.theta.clone();
    other.data.mapv_inplace(|v| v * 3.0);
    for dir_type in [DirType::Weights, DirType::States] {
        let d = difference_direction(&m.theta, &other, dir_type).unwrap();
        let rv = d.by_name("bn1.running_var").unwrap();
        if dir_type == DirType::States {
            let want = m
                .theta
                .by_name("bn1.running_var")
                .unwrap()
                .mapv(|v| v * 3.0 - v);
            assert_eq!(rv, want);
        } else {
            assert!(rv.iter().all(|&v| v == 0.0));
        }
    }
    let wide = init("resnet-cifar:depth=20,width=8,in_channels=1,input_size=8");
    let err = difference_direction(&m.theta, &wide.theta, DirType::Weights)
        .unwrap_err()
        .to_string();
    assert!(err.contains("'conv1.weight'"), "{err}");
}

fn directions(m: &Model, c: DirectionConfig, y: bool) -> Directions {
    Directions {
        x: random_direction(&m.theta, &c, DirectionAxis::X),
        y: y.then(|| random_direction(&m.theta, &c, DirectionAxis::Y)),
        config: c,
        kind: DirectionKind::Random,
        pca: None,
    }
}

fn same_bits(a: &ParamVec<f32>, b: &ParamVec<f32>) -> bool {
    a.layout == b.layout
        && a.data.len() == b.data.len()
        && a.data
            .iter()
            .zip(b.data.iter())
            .all(|(p, q)| p.to_bits() == q.to_bits())
}

#[test]
fn write_read_round_trip_is_bit_exact() {
    let m = resnet20();
    let tmp = common::tempdir();
    for (c, with_y) in [
        (cfg(DirectionNorm::Filter), true),
        (
            DirectionConfig {
                dir_type: DirType::States,
                perturb_biasbn: true,
                norm: DirectionNorm::Layer,
                seed: u64::MAX - 3,
            },
            false,
        ),
    ] {
        let dirs = directions(&m, c, with_y);
        let path = tmp.path().join(format!("{}.h5", c.dir_type));
        write_directions(&path, &dirs, Some("abc123")).unwrap();
        // the dir_type argument is overridden by the file's attribute
        let back = read_directions(&path, &m.theta, DirType::Weights).unwrap();
        assert_eq!(back.config, c);
        assert!(same_bits(&back.x, &dirs.x), "x differs ({})", c.dir_type);
        assert_eq!(back.y.is_some(), with_y);
        if let (Some(a), Some(b)) = (&back.y, &dirs.y) {
            assert!(same_bits(a, b), "y differs");
            assert_eq!(back.cosine(), dirs.cosine());
        }
        assert_eq!(back.kind, DirectionKind::File(path.display().to_string()));
        assert!(back.pca.is_none());
        // loss-landscape's layout: only /xdirection, /ydirection at the root, datasets 0..P-1
        let f = hdf5::File::open(&path).unwrap();
        let count = m
            .theta
            .layout
            .tensors()
            .iter()
            .filter(|t| c.dir_type == DirType::States || t.role.is_trainable())
            .count();
        assert_eq!(
            f.group("xdirection").unwrap().member_names().unwrap().len(),
            count
        );
        let ds = f.dataset("xdirection/0").unwrap();
        assert_eq!(ds.shape(), vec![16, 1, 3, 3]);
        assert!(ds.dtype().unwrap().is::<f32>());
    }
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

fn ll_json() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(LL_JSON)).unwrap();
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        j["fixture_version"].as_u64(),
        Some(LL_FIXTURE_VERSION),
        "{LL_JSON} is stale; HINT: re-run /work/venv/bin/python fixtures/generate/make_ll_directions.py"
    );
    j
}

#[test]
fn loss_landscape_files_load() {
    let j = ll_json();
    let m = resnet20();
    for (key, dir_type) in [("weights", DirType::Weights), ("states", DirType::States)] {
        let rec = &j["files"][key];
        let path = fixture(&format!(
            "fixtures/reference/{}",
            rec["file"].as_str().unwrap()
        ));
        let d = read_directions(&path, &m.theta, dir_type).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert!(d.y.is_none());
        assert_eq!(d.config.dir_type, dir_type);
        let mut seen = 0;
        for t in rec["tensors"].as_array().unwrap() {
            let name = t["name"].as_str().unwrap();
            let Some(v) = d.x.by_name(name) else {
                assert!(
                    name.ends_with("num_batches_tracked"),
                    "{key}: {name} unmapped"
                );
                continue;
            };
            let shape: Vec<usize> = t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(v.shape(), shape.as_slice(), "{key}: {name}");
            let norm = l2(v.to_owned().as_slice().unwrap());
            let want = t["norm"].as_f64().unwrap();
            if want == 0.0 {
                assert_eq!(norm, 0.0, "{key}: {name}");
            } else {
                // the norm is computed in f64 on both sides
                assert_close(
                    &format!("{key}: {name}"),
                    norm,
                    want,
                    tol(Dtype::F64, Quantity::DirectionNorm),
                );
            }
            seen += 1;
        }
        let expected = m
            .theta
            .layout
            .tensors()
            .iter()
            .filter(|t| dir_type == DirType::States || t.role.is_trainable())
            .count();
        assert_eq!(seen, expected, "{key}");
        // filter normalization, as our own directions: mapped onto the right tensors
        for (i, t) in m.theta.layout.tensors().iter().enumerate() {
            if t.shape.len() >= 2 {
                for (a, b) in filter_norms(&d.x, i)
                    .into_iter()
                    .zip(filter_norms(&m.theta, i))
                {
                    assert_norm(a, b, &format!("{key}: {}", t.name));
                }
            }
        }
    }
    // the surface fixture's direction file holds x and y (weights)
    let d = read_directions(
        &fixture("fixtures/reference/surface-resnet20-dirs.h5"),
        &m.theta,
        DirType::Weights,
    )
    .unwrap();
    assert!(d.y.is_some());
}

#[test]
fn wrong_files_fail_clearly() {
    let m = resnet20();
    let weights = fixture("fixtures/reference/ll-directions-weights.h5");
    let states = fixture("fixtures/reference/ll-directions-states.h5");

    // another model, same tensor count: the first shape differs
    let rgb = init("resnet-cifar:depth=20,width=16,in_channels=3,input_size=8");
    let err = read_directions(&weights, &rgb.theta, DirType::Weights).unwrap_err();
    assert!(
        matches!(&err, DirectionFileError::Shape { position: 0, name, expected, got, .. }
            if name == "conv1.weight" && expected == &[16, 3, 3, 3] && got == &[16, 1, 3, 3]),
        "{err:?}"
    );
    let msg = err.to_string();
    for part in [
        "/xdirection/0",
        "'conv1.weight'",
        "[16, 1, 3, 3]",
        "[16, 3, 3, 3]",
    ] {
        assert!(msg.contains(part), "'{part}' missing in: {msg}");
    }
    // another model with another count; and a states file read as weights
    let r56 = init("resnet-cifar:depth=56,width=16,in_channels=1,input_size=8");
    let msg = read_directions(&weights, &r56.theta, DirType::Weights)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("holds 65 tensors") && msg.contains("'weights'"),
        "{msg}"
    );
    let msg = read_directions(&states, &m.theta, DirType::Weights)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("holds 128 tensors"), "{msg}");
    let msg = read_directions(&weights, &m.theta, DirType::States)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("num_batches_tracked"), "{msg}");

    // missing, not HDF5, truncated, not a direction file
    let tmp = common::tempdir();
    let missing = tmp.path().join("nope.h5");
    let err = read_directions(&missing, &m.theta, DirType::Weights).unwrap_err();
    assert!(
        matches!(err, DirectionFileError::NotFound { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("nope.h5"));
    let text = tmp.path().join("text.h5");
    std::fs::write(&text, "not hdf5").unwrap();
    let truncated = tmp.path().join("truncated.h5");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    for p in [&text, &truncated] {
        let err = read_directions(p, &m.theta, DirType::Weights).unwrap_err();
        assert!(err.to_string().contains(&*p.display().to_string()), "{err}");
        assert!(!matches!(err, DirectionFileError::NotFound { .. }));
    }
    let err = read_directions(
        &fixture("fixtures/reference/surface-resnet20.h5"),
        &m.theta,
        DirType::Weights,
    )
    .unwrap_err();
    assert!(
        matches!(err, DirectionFileError::NotDirections { .. }),
        "{err:?}"
    );
}

/// A hand-made layout: our name attributes are checked, 0-d tensors round trip.
#[test]
fn names_are_checked_and_scalars_round_trip() {
    let layout = |names: [&str; 3]| {
        let mut l = Layout::new();
        l.push(names[0], &[2, 3], Role::Weight);
        l.push(names[1], &[], Role::BnScale);
        l.push(names[2], &[3], Role::Bias);
        Arc::new(l)
    };
    let a = layout(["a.weight", "a.scale", "a.bias"]);
    let b = layout(["a.weight", "b.scale", "a.bias"]);
    let x = ParamVec::from_data(
        a.clone(),
        Array1::from_iter((0..10).map(|i| i as f32 - 4.5)),
    );
    let dirs = Directions {
        x: x.clone(),
        y: None,
        config: DirectionConfig::default(),
        kind: DirectionKind::Interpolation,
        pca: None,
    };
    let tmp = common::tempdir();
    let path = tmp.path().join("d.h5");
    write_directions(&path, &dirs, None).unwrap();
    let back = read_directions(&path, &x, DirType::Weights).unwrap();
    assert!(same_bits(&back.x, &x));
    let other = ParamVec::<f32>::zeros(b);
    let err = read_directions(&path, &other, DirType::Weights).unwrap_err();
    assert!(
        matches!(&err, DirectionFileError::Name { position: 1, expected, got, .. }
            if expected == "b.scale" && got == "a.scale"),
        "{err:?}"
    );
}

#[test]
fn grid_axis_parsing_and_linspace() {
    let a: GridAxis = "-1:1:51".parse().unwrap();
    assert_eq!((a.min, a.max, a.num), (-1.0, 1.0, 51));
    assert_eq!(a.to_string(), "-1:1:51");
    assert_eq!(a.to_string().parse::<GridAxis>().unwrap(), a);
    for (bad, why) in [
        ("1:0:5", "MIN must be below MAX"),
        ("-1:1:0", "NUM must be at least 1"),
        ("a:b:c", "MIN is not a number"),
        ("-1:1", "three fields"),
        ("-1:inf:3", "finite"),
    ] {
        let err = bad.parse::<GridAxis>().unwrap_err().to_string();
        assert!(err.contains(why) && err.contains(bad), "{bad}: {err}");
        assert!(err.contains("MIN:MAX:NUM, e.g. -1:1:51"), "{bad}: {err}");
    }
    // numpy.linspace, bit for bit (values recorded by make_ll_directions.py)
    for case in ll_json()["numpy_linspace"].as_array().unwrap() {
        let axis = GridAxis {
            min: case["min"].as_f64().unwrap(),
            max: case["max"].as_f64().unwrap(),
            num: case["num"].as_u64().unwrap() as usize,
        };
        let want: Vec<f64> = case["bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| f64::from_bits(v.as_u64().unwrap()))
            .collect();
        assert_eq!(axis.coordinates(), want, "{axis}");
    }
}
