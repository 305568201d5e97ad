//! `losscape metrics` end to end: a synthetic surface written with `write_surface`, its
//! metrics read back as JSON and text, and bad input exiting 2 with the file and dataset
//! named.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{fails, json, ok, run};
use losscape::io::surface::write_surface;
use losscape::landscape::grid::GridAxis;
use losscape::landscape::surface::{SurfaceGrid, SurfaceValues};

fn axis(min: f64, max: f64, num: usize) -> GridAxis {
    GridAxis { min, max, num }
}

/// Writes `f` (train_loss) and `1 − f` (train_acc) over the grid.
fn write(path: &Path, x: GridAxis, y: Option<GridAxis>, f: impl Fn(f64, f64) -> f64) {
    let grid = SurfaceGrid { x, y };
    let mut v = SurfaceValues::empty(&grid, vec!["train_loss".into(), "train_acc".into()]);
    for k in 0..grid.len() {
        let (a, b) = grid.coordinates(k);
        let z = f(a, b);
        if !z.is_nan() {
            v.set(k, &[z, 1.0 - z]);
        }
    }
    write_surface(path, &grid, &v, None, &BTreeMap::new()).unwrap();
}

#[test]
fn metrics_of_a_bowl_as_json_and_text() {
    let dir = common::tempdir();
    let p = dir.path().join("bowl.h5");
    // a = 2, δ = 0.5: basin radius sqrt(δ/a) = 0.5; one point not computed
    write(
        &p,
        axis(-1.0, 1.0, 41),
        Some(axis(-1.0, 1.0, 41)),
        |a, b| {
            if (a - 0.9).abs() < 1e-9 && (b + 0.9).abs() < 1e-9 {
                f64::NAN
            } else {
                2.0 * (a * a + b * b)
            }
        },
    );
    let ps = p.to_str().unwrap();
    let v = json(&run(&[
        "metrics", ps, "--json", "--delta", "0.5", "--rays", "8",
    ]));
    assert_eq!(v["dataset"], "train_loss");
    assert_eq!(v["dims"], 2);
    assert_eq!(v["finite_points"], 41 * 41 - 1);
    assert_eq!(v["center_loss"], 0.0);
    assert_eq!(v["min_loss"], 0.0);
    assert_eq!(v["local_minima"], 1);
    assert_eq!(v["non_convex_fraction"], 0.0);
    assert_eq!(
        (v["delta"].as_f64(), v["rays"].as_u64()),
        (Some(0.5), Some(8))
    );
    let b = &v["basin_radius"];
    assert_eq!(b["rays"], 8);
    assert_eq!(b["censored"], 0);
    assert!((b["min"].as_f64().unwrap() - 0.5).abs() < 5e-3, "{b}");
    assert!(v["roughness"].as_f64().unwrap() < 1e-10);
    assert!((v["curvature_x"].as_f64().unwrap() - 4.0).abs() < 1e-9);
    assert!((v["curvature_y"].as_f64().unwrap() - 4.0).abs() < 1e-9);
    assert_eq!(v["undefined"], serde_json::json!({}));

    // another dataset and the radius option
    let v = json(&run(&[
        "metrics",
        ps,
        "--json",
        "--surf-name",
        "train_acc",
        "--radius",
        "0.3",
    ]));
    assert_eq!(v["radius"], 0.3);
    assert_eq!(v["center_loss"], 1.0);
    assert_eq!(v["non_convex_fraction"], 1.0, "1 − bowl is a cap");

    let text = String::from_utf8(ok(&["metrics", ps]).stdout).unwrap();
    for want in [
        "basin radius",
        "roughness",
        "non-convex fraction",
        "strict local minima",
        "along β",
    ] {
        assert!(text.contains(want), "{want} missing in\n{text}");
    }
}

#[test]
fn one_dimensional_and_one_point_surfaces() {
    let dir = common::tempdir();
    let p = dir.path().join("line.h5");
    write(&p, axis(-1.0, 1.0, 21), None, |a, _| 3.0 * a * a);
    let v = json(&run(&[
        "metrics",
        p.to_str().unwrap(),
        "--json",
        "--delta",
        "0.75",
    ]));
    assert_eq!(v["dims"], 1);
    assert_eq!(v["basin_radius"]["rays"], 2);
    assert!((v["basin_radius"]["mean"].as_f64().unwrap() - 0.5).abs() < 1e-2);
    assert!((v["curvature_x"].as_f64().unwrap() - 6.0).abs() < 1e-9);
    assert!(v["curvature_y"].is_null());

    // a 1-point grid: the metrics that need neighbours are null with a reason
    let p = dir.path().join("point.h5");
    write(&p, axis(0.0, 0.0, 1), None, |_, _| 2.5);
    let v = json(&run(&["metrics", p.to_str().unwrap(), "--json"]));
    assert_eq!(v["center_loss"], 2.5);
    for k in [
        "basin_radius",
        "roughness",
        "non_convex_fraction",
        "curvature_x",
    ] {
        assert!(v[k].is_null(), "{k}: {v}");
        assert!(v["undefined"][k].is_string(), "{k}: {v}");
    }
    ok(&["metrics", p.to_str().unwrap()]);
}

#[test]
fn bad_input_exits_2_naming_file_and_dataset() {
    let dir = common::tempdir();
    let p = dir.path().join("bowl.h5");
    write(&p, axis(-1.0, 1.0, 5), Some(axis(-1.0, 1.0, 5)), |a, b| {
        a * a + b * b
    });
    let ps = p.to_str().unwrap();
    let err = fails(&["metrics", ps, "--surf-name", "test_loss"], 2);
    assert!(
        err.contains("bowl.h5") && err.contains("test_loss") && err.contains("train_loss"),
        "{err}"
    );

    let missing = dir.path().join("nope.h5");
    assert!(fails(&["metrics", missing.to_str().unwrap()], 2).contains("nope.h5"));

    for bad in [["--delta", "0"], ["--radius", "-1"], ["--rays", "0"]] {
        fails(&["metrics", ps, bad[0], bad[1]], 2);
    }
}
