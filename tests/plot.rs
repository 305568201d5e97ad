//! `losscape plot` and `losscape export-vtp` end to end on synthetic surfaces (a bowl, a
//! saddle, NaN holes): every kind renders, colourbars carry a gradient, masked points stay
//! background, SVG is well formed, output is byte-identical across runs, and bad input
//! exits with 2 naming the file and the dataset.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use common::{fails, ok};

use losscape::io::surface::{write_surface, Attr};
use losscape::landscape::grid::GridAxis;
use losscape::landscape::surface::{SurfaceGrid, SurfaceValues};
use losscape::plot::{render_rgb, LevelSpec, PlotConfig, PlotKind, RgbImage};
use ndarray::{Array1, ArrayD, IxDyn};

const N: usize = 41;
const WHITE: [u8; 3] = [255, 255, 255];

fn coords() -> Vec<f64> {
    (0..N)
        .map(|i| -1.0 + 2.0 * i as f64 / (N - 1) as f64)
        .collect()
}

/// A quantity as a function of (α, β).
type Field = dyn Fn(f64, f64) -> f64;

/// Writes a 2-D surface with the given datasets, each f(x, y); NaN marks pending points.
fn surface2d(path: &Path, sets: &[(&str, &Field)]) -> PathBuf {
    let c = coords();
    let axis = GridAxis {
        min: -1.0,
        max: 1.0,
        num: N,
    };
    let grid = SurfaceGrid {
        x: axis.clone(),
        y: Some(axis),
    };
    let mut arrays = Vec::new();
    for (_, f) in sets {
        arrays.push(ArrayD::from_shape_fn(IxDyn(&[N, N]), |i| {
            f(c[i[1]], c[i[0]])
        }));
    }
    let completed = arrays[0].mapv(|v| u8::from(v.is_finite()));
    let values = SurfaceValues {
        names: sets.iter().map(|(n, _)| n.to_string()).collect(),
        arrays,
        completed,
    };
    let mut attrs = BTreeMap::new();
    attrs.insert("direction_norm".into(), Attr::from("filter"));
    attrs.insert("model".into(), Attr::from("models/bowl-net.safetensors"));
    attrs.insert("data".into(), Attr::from("digits"));
    write_surface(path, &grid, &values, None, &attrs).unwrap();
    path.to_path_buf()
}

fn bowl(x: f64, y: f64) -> f64 {
    0.05 + 2.0 * (x * x + y * y)
}

fn saddle(x: f64, y: f64) -> f64 {
    1.5 + x * x - y * y
}

/// The bowl with a disc of pending points around (0.5, 0.5).
fn holed(x: f64, y: f64) -> f64 {
    if (x - 0.5).hypot(y - 0.5) < 0.25 {
        f64::NAN
    } else {
        bowl(x, y)
    }
}

fn cfg(inputs: Vec<PathBuf>, kind: PlotKind) -> PlotConfig {
    PlotConfig {
        inputs,
        kind,
        surf_name: "train_loss".into(),
        levels: LevelSpec {
            vmin: None,
            vmax: None,
            vlevel: None,
        },
        log: false,
        zmax: None,
        size: None,
        title: None,
        trajectory: None,
        out: "unused.png".into(),
    }
}

fn non_background_fraction(img: &RgbImage) -> f64 {
    let n = img.pixels.chunks(3).filter(|p| *p != WHITE).count();
    n as f64 / (img.width * img.height) as f64
}

/// The most distinct colours in one pixel column of the right-hand strip (the colourbar).
fn colorbar_colors(img: &RgbImage) -> usize {
    (img.width * 4 / 5..img.width)
        .map(|x| {
            (0..img.height)
                .map(|y| img.pixel(x, y))
                .collect::<HashSet<_>>()
                .len()
        })
        .max()
        .unwrap()
}

fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(
        &b[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

struct Files {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Files {
    fn new() -> Self {
        let d = common::tempdir();
        Self {
            root: d.path().to_path_buf(),
            _dir: d,
        }
    }
    fn p(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
    fn s(&self, name: &str) -> String {
        self.p(name).display().to_string()
    }
}

#[test]
fn every_kind_renders_a_png_of_the_asked_size() {
    let t = Files::new();
    let acc = |x: f64, y: f64| 100.0 - 20.0 * (x * x + y * y);
    surface2d(
        &t.p("bowl.h5"),
        &[("train_loss", &bowl), ("train_acc", &acc)],
    );
    surface2d(&t.p("saddle.h5"), &[("train_loss", &saddle)]);
    for kind in ["contour", "filled", "heat", "surface3d", "curve"] {
        for (file, out) in [("bowl.h5", "b"), ("saddle.h5", "s")] {
            let png = t.s(&format!("{out}-{kind}.png"));
            ok(&[
                "plot",
                &t.s(file),
                "--kind",
                kind,
                "--width",
                "640",
                "--height",
                "480",
                "--out",
                &png,
            ]);
            assert_eq!(png_size(Path::new(&png)), (640, 480), "{kind}");
        }
    }
    // explicit loss-landscape levels, log scale
    ok(&[
        "plot",
        &t.s("bowl.h5"),
        "--kind",
        "filled",
        "--vmin",
        "0.1",
        "--vmax",
        "4",
        "--vlevel",
        "0.5",
        "--log",
        "--out",
        &t.s("levels.png"),
    ]);
}

#[test]
fn pixels_are_sane_and_colourbars_have_gradients() {
    let t = Files::new();
    let f = surface2d(&t.p("bowl.h5"), &[("train_loss", &bowl)]);
    for (kind, lo, hi, bar) in [
        (PlotKind::Contour, 0.02, 0.5, None),
        (PlotKind::Filled, 0.5, 0.95, Some(10)),
        (PlotKind::Heat, 0.5, 0.95, Some(50)),
        (PlotKind::Surface3d, 0.2, 0.9, Some(50)),
    ] {
        let (img, _) = render_rgb(&cfg(vec![f.clone()], kind)).unwrap();
        let frac = non_background_fraction(&img);
        assert!(
            frac > lo && frac < hi,
            "{kind}: {frac:.3} of pixels drawn, expected {lo}..{hi}"
        );
        if let Some(min) = bar {
            let n = colorbar_colors(&img);
            assert!(
                n >= min,
                "{kind}: colourbar has {n} colours, expected ≥ {min}"
            );
        }
    }
}

#[test]
fn masked_points_stay_background() {
    let t = Files::new();
    let full = surface2d(&t.p("full.h5"), &[("train_loss", &bowl)]);
    let hole = surface2d(&t.p("hole.h5"), &[("train_loss", &holed)]);
    for kind in [PlotKind::Heat, PlotKind::Filled, PlotKind::Contour] {
        let mut c = cfg(vec![full.clone()], kind);
        // one scale for both, so only the hole differs
        c.levels = LevelSpec {
            vmin: Some(0.05),
            vmax: Some(4.0),
            vlevel: Some(0.25),
        };
        let (a, _) = render_rgb(&c).unwrap();
        c.inputs = vec![hole.clone()];
        let (b, rep) = render_rgb(&c).unwrap();
        assert!(
            rep.warnings.iter().any(|w| w.contains("not computed")),
            "{:?}",
            rep.warnings
        );
        // where the holed plot differs, it is white
        let mut diff = Vec::new();
        for y in 0..a.height {
            for x in 0..a.width {
                if a.pixel(x, y) != b.pixel(x, y) {
                    diff.push((x, y));
                }
            }
        }
        assert!(
            diff.len() > 100,
            "{kind}: the hole changed {} pixels",
            diff.len()
        );
        let white = diff
            .iter()
            .filter(|&&(x, y)| b.pixel(x, y) == WHITE)
            .count();
        let share = white as f64 / diff.len() as f64;
        if kind != PlotKind::Contour {
            assert!(
                share > 0.8,
                "{kind}: only {share:.2} of changed pixels are background"
            );
        }
        // the centre of the change is background in the holed plot, drawn in the full one
        let cx = diff.iter().map(|p| p.0 as f64).sum::<f64>() / diff.len() as f64;
        let cy = diff.iter().map(|p| p.1 as f64).sum::<f64>() / diff.len() as f64;
        let (cx, cy) = (cx.round() as u32, cy.round() as u32);
        assert_eq!(b.pixel(cx, cy), WHITE, "{kind}: hole centre is drawn");
        if kind != PlotKind::Contour {
            assert_ne!(
                a.pixel(cx, cy),
                WHITE,
                "{kind}: the full surface is blank there"
            );
        }
        // and no isoline crosses the hole: a disc around its centre is all white
        for dy in -8i32..=8 {
            for dx in -8i32..=8 {
                let (x, y) = ((cx as i32 + dx) as u32, (cy as i32 + dy) as u32);
                assert_eq!(
                    b.pixel(x, y),
                    WHITE,
                    "{kind}: pixel ({x}, {y}) drawn in the hole"
                );
            }
        }
    }
}

fn assert_balanced_xml(s: &str) {
    assert!(
        s.starts_with("<svg") || s.starts_with("<?xml"),
        "{}",
        &s[..40]
    );
    let mut stack: Vec<String> = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('<') {
        let end = rest[i..].find('>').expect("unclosed tag") + i;
        let tag = &rest[i + 1..end];
        let skip = tag.starts_with('?') || tag.starts_with('!') || tag.ends_with('/');
        if skip {
            // declarations and self-closing tags open nothing
        } else if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "mismatched </{name}>"
            );
        } else {
            let name = tag.split_whitespace().next().unwrap_or("").to_string();
            stack.push(name);
        }
        rest = &rest[end + 1..];
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}

#[test]
fn svg_output_is_well_formed() {
    let t = Files::new();
    surface2d(&t.p("bowl.h5"), &[("train_loss", &holed)]);
    for kind in ["contour", "filled", "heat", "surface3d"] {
        let out = t.s(&format!("{kind}.svg"));
        ok(&["plot", &t.s("bowl.h5"), "--kind", kind, "--out", &out]);
        let s = std::fs::read_to_string(&out).unwrap();
        assert_balanced_xml(&s);
        assert!(s.len() < 4_000_000, "{kind}: {} bytes of SVG", s.len());
    }
}

#[test]
fn the_same_command_gives_the_same_bytes() {
    let t = Files::new();
    surface2d(&t.p("bowl.h5"), &[("train_loss", &holed)]);
    for kind in ["filled", "surface3d"] {
        let (a, b) = (t.s(&format!("{kind}-a.png")), t.s(&format!("{kind}-b.png")));
        ok(&["plot", &t.s("bowl.h5"), "--kind", kind, "--out", &a]);
        ok(&["plot", &t.s("bowl.h5"), "--kind", kind, "--out", &b]);
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "{kind}: two runs differ"
        );
    }
}

#[test]
fn panels_of_two_to_six_surfaces() {
    let t = Files::new();
    let shifted = |x: f64, y: f64| bowl(x - 0.3, y) * 2.0;
    surface2d(&t.p("a.h5"), &[("train_loss", &bowl)]);
    surface2d(&t.p("b.h5"), &[("train_loss", &saddle)]);
    surface2d(&t.p("c.h5"), &[("train_loss", &holed)]);
    surface2d(&t.p("d.h5"), &[("train_loss", &shifted)]);
    let files = [t.s("a.h5"), t.s("b.h5"), t.s("c.h5"), t.s("d.h5")];
    for n in 2..=4 {
        let out = t.s(&format!("panel{n}.png"));
        let mut args = vec!["plot".to_string()];
        args.extend(files[..n].iter().cloned());
        args.extend(["--kind", "panel", "--out", &out].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&args);
        let (w, h) = png_size(Path::new(&out));
        assert!(w > 400 * n as u32 && h >= 400, "{n} panels in {w}×{h}");
    }
    // more than four maps wrap onto two rows: 6 → 2 × 3
    let out = t.s("panel6.png");
    let mut args = vec!["plot".to_string()];
    args.extend(files.iter().chain(&files[..2]).cloned());
    args.extend(["--kind", "panel", "--out", &out].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&args);
    let (w, h) = png_size(Path::new(&out));
    assert!(
        w > 3 * 400 && w < 4 * 420 && h > 2 * 400,
        "6 panels in {w}×{h}"
    );
    let (img, _) = render_rgb(&cfg(
        files[..3].iter().map(PathBuf::from).collect(),
        PlotKind::Panel,
    ))
    .unwrap();
    assert!(colorbar_colors(&img) >= 10);
    let frac = non_background_fraction(&img);
    assert!(frac > 0.4 && frac < 0.95, "{frac}");
}

#[test]
fn one_dimensional_curve_ratio_spectrum_and_trajectory() {
    let t = Files::new();
    // a 1-D surface with train and test loss and accuracy, one point pending
    let c = coords();
    let grid = SurfaceGrid {
        x: GridAxis {
            min: -1.0,
            max: 1.0,
            num: N,
        },
        y: None,
    };
    let f = |s: f64, k: usize| -> ArrayD<f64> {
        Array1::from_shape_fn(N, |i| {
            if i == 7 {
                f64::NAN
            } else if k < 2 {
                s * (0.1 + c[i] * c[i])
            } else {
                100.0 - s * 40.0 * c[i] * c[i]
            }
        })
        .into_dyn()
    };
    let values = SurfaceValues {
        names: ["train_loss", "test_loss", "train_acc", "test_acc"]
            .map(String::from)
            .to_vec(),
        arrays: vec![f(1.0, 0), f(1.3, 1), f(1.0, 2), f(1.3, 3)],
        completed: f(1.0, 0).mapv(|v| u8::from(v.is_finite())),
    };
    write_surface(&t.p("line.h5"), &grid, &values, None, &BTreeMap::new()).unwrap();
    ok(&[
        "plot",
        &t.s("line.h5"),
        "--kind",
        "curve",
        "--out",
        &t.s("c.png"),
    ]);
    ok(&[
        "plot",
        &t.s("line.h5"),
        "--kind",
        "curve",
        "--log",
        "--out",
        &t.s("cl.png"),
    ]);
    let (img, _) = render_rgb(&cfg(vec![t.p("line.h5")], PlotKind::Curve)).unwrap();
    let frac = non_background_fraction(&img);
    assert!(frac > 0.02 && frac < 0.5, "{frac}");

    // ratio from max_eig / min_eig
    let max_eig = |x: f64, y: f64| 10.0 + x + y;
    let min_eig = |x: f64, y: f64| -(x * x + y * y);
    surface2d(
        &t.p("eig.h5"),
        &[
            ("train_loss", &bowl),
            ("max_eig", &max_eig),
            ("min_eig", &min_eig),
        ],
    );
    ok(&[
        "plot",
        &t.s("eig.h5"),
        "--kind",
        "ratio",
        "--out",
        &t.s("r.png"),
    ]);
    let (img, _) = render_rgb(&cfg(vec![t.p("eig.h5")], PlotKind::Ratio)).unwrap();
    assert!(colorbar_colors(&img) >= 50);

    // spectrum from a Hessian file
    let h = hdf5::File::create(t.p("hess.h5")).unwrap();
    let g: Vec<f64> = (0..200).map(|i| -5.0 + 0.25 * i as f64).collect();
    let d: Vec<f64> = g
        .iter()
        .map(|x| (-x * x / 2.0).exp() + 0.01 * (-(x - 40.0f64).powi(2)).exp())
        .collect();
    h.new_dataset_builder()
        .with_data(&Array1::from(g))
        .create("density_grid")
        .unwrap();
    h.new_dataset_builder()
        .with_data(&Array1::from(d))
        .create("density")
        .unwrap();
    h.new_dataset_builder()
        .with_data(&Array1::from(vec![40.0, 3.0]))
        .create("eigenvalues")
        .unwrap();
    drop(h);
    ok(&[
        "plot",
        &t.s("hess.h5"),
        "--kind",
        "spectrum",
        "--out",
        &t.s("sp.png"),
    ]);

    // a trajectory over a contour plot
    let p = hdf5::File::create(t.p("proj.h5")).unwrap();
    let xs: Vec<f64> = (0..20).map(|i| 0.8 - 0.04 * i as f64).collect();
    let ys: Vec<f64> = (0..20).map(|i| -0.6 + 0.03 * i as f64).collect();
    p.new_dataset_builder()
        .with_data(&Array1::from(xs))
        .create("proj_xcoord")
        .unwrap();
    p.new_dataset_builder()
        .with_data(&Array1::from(ys))
        .create("proj_ycoord")
        .unwrap();
    drop(p);
    ok(&[
        "plot",
        &t.s("eig.h5"),
        "--trajectory",
        &t.s("proj.h5"),
        "--out",
        &t.s("traj.png"),
    ]);
    let mut c = cfg(vec![t.p("eig.h5")], PlotKind::Contour);
    c.trajectory = Some(t.p("proj.h5"));
    let (img, _) = render_rgb(&c).unwrap();
    let red = img
        .pixels
        .chunks(3)
        .filter(|p| p[0] > 200 && p[1] < 80 && p[2] < 80)
        .count();
    assert!(red > 200, "{red} red trajectory pixels");
}

/// Exit code 2 with every `needle` in the message.
fn bad_input(args: &[&str], needles: &[&str]) {
    let err = fails(args, 2);
    for n in needles {
        assert!(err.contains(n), "{args:?}: '{n}' not in: {err}");
    }
}

#[test]
fn bad_input_exits_2_naming_file_and_dataset() {
    let t = Files::new();
    let bowl_h5 = t.s("bowl.h5");
    surface2d(&t.p("bowl.h5"), &[("train_loss", &bowl)]);
    let out = t.s("o.png");
    bad_input(
        &["plot", &bowl_h5, "--surf-name", "test_loss", "--out", &out],
        &[&bowl_h5, "test_loss"],
    );
    bad_input(
        &["plot", &bowl_h5, "--kind", "ratio", "--out", &out],
        &[&bowl_h5, "max_eig", "min_eig"],
    );
    bad_input(
        &["plot", &bowl_h5, "--kind", "spectrum", "--out", &out],
        &[&bowl_h5, "density_grid"],
    );
    bad_input(
        &["plot", &bowl_h5, "--out", &t.s("o.jpg")],
        &["o.jpg", "jpg"],
    );
    // an HDF5 file that is not a surface
    let other = hdf5::File::create(t.p("other.h5")).unwrap();
    other
        .new_dataset_builder()
        .with_data(&Array1::from(vec![1.0, 2.0]))
        .create("weights")
        .unwrap();
    drop(other);
    bad_input(
        &["plot", &t.s("other.h5"), "--out", &out],
        &[&t.s("other.h5"), "xcoordinates"],
    );
    bad_input(
        &["plot", "Cargo.toml", "--out", &out],
        &["Cargo.toml", "HDF5"],
    );
    bad_input(
        &["plot", &bowl_h5, "--trajectory", &bowl_h5, "--out", &out],
        &[&bowl_h5, "proj_xcoord"],
    );
    bad_input(
        &["plot", &bowl_h5, &bowl_h5, "--kind", "heat", "--out", &out],
        &["panel"],
    );
    bad_input(
        &["export-vtp", &t.s("other.h5"), "--out", &t.s("o.vtp")],
        &[&t.s("other.h5"), "xcoordinates"],
    );
    assert!(!t.p("o.png").exists() && !t.p("o.vtp").exists());
    let leftovers: Vec<_> = std::fs::read_dir(&t.root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A `.vtp` file as parsed XML: points, the point scalar, and the polygons (or lines).
struct Vtp {
    n_points: usize,
    n_polys: usize,
    scalar_name: String,
    points: Vec<[f64; 3]>,
    scalars: Vec<f64>,
    cells: Vec<Vec<usize>>,
}

fn read_vtp(path: &Path) -> Vtp {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "VTKFile");
    assert_eq!(root.attribute("type"), Some("PolyData"));
    let piece = root
        .descendants()
        .find(|n| n.has_tag_name("Piece"))
        .unwrap();
    let count = |a: &str| piece.attribute(a).unwrap().parse::<usize>().unwrap();
    let numbers = |n: roxmltree::Node| -> Vec<f64> {
        n.text()
            .unwrap_or("")
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    };
    let child = |parent: &str| {
        piece
            .children()
            .find(|n| n.has_tag_name(parent))
            .unwrap_or_else(|| panic!("no <{parent}>"))
    };
    let array = |parent: &str, name: &str| {
        child(parent)
            .children()
            .find(|n| n.has_tag_name("DataArray") && n.attribute("Name") == Some(name))
            .unwrap_or_else(|| panic!("no {parent}/{name}"))
    };
    let point_data = child("PointData")
        .children()
        .find(|n| n.has_tag_name("DataArray"))
        .unwrap();
    let cells_tag = if count("NumberOfPolys") > 0 {
        "Polys"
    } else {
        "Lines"
    };
    let conn: Vec<usize> = numbers(array(cells_tag, "connectivity"))
        .iter()
        .map(|&v| v as usize)
        .collect();
    let offsets: Vec<usize> = numbers(array(cells_tag, "offsets"))
        .iter()
        .map(|&v| v as usize)
        .collect();
    let mut cells = Vec::new();
    let mut start = 0;
    for o in offsets {
        cells.push(conn[start..o].to_vec());
        start = o;
    }
    assert_eq!(
        start,
        conn.len(),
        "offsets end at the connectivity's length"
    );
    Vtp {
        n_points: count("NumberOfPoints"),
        n_polys: count("NumberOfPolys"),
        scalar_name: point_data.attribute("Name").unwrap().to_string(),
        points: numbers(array("Points", "Points"))
            .chunks(3)
            .map(|c| [c[0], c[1], c[2]])
            .collect(),
        scalars: numbers(point_data),
        cells,
    }
}

/// VTK's cell type of a PolyData polygon: VTK_TRIANGLE (5) for 3 points, VTK_QUAD (9) for
/// 4 points spanning a convex, non-degenerate quadrilateral (vtkPolyData::GetCellType).
fn vtk_cell_type(v: &Vtp, cell: &[usize]) -> u8 {
    match cell.len() {
        3 => 5,
        4 => {
            let p: Vec<[f64; 2]> = cell
                .iter()
                .map(|&i| [v.points[i][0], v.points[i][1]])
                .collect();
            let turns: Vec<f64> = (0..4)
                .map(|k| {
                    let (a, b, c) = (p[k], p[(k + 1) % 4], p[(k + 2) % 4]);
                    (b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0])
                })
                .collect();
            assert!(
                turns.iter().all(|&t| t > 0.0),
                "convex, counter-clockwise: {p:?}"
            );
            9
        }
        n => panic!("a polygon of {n} points"),
    }
}

#[test]
fn export_vtp_writes_one_quad_per_cell() {
    let t = Files::new();
    surface2d(&t.p("bowl.h5"), &[("train_loss", &bowl)]);
    let o = ok(&["export-vtp", &t.s("bowl.h5"), "--out", &t.s("b.vtp")]);
    let v = read_vtp(&t.p("b.vtp"));
    assert_eq!(
        (v.n_points, v.points.len(), v.scalars.len()),
        (N * N, N * N, N * N)
    );
    assert_eq!(v.n_polys, (N - 1) * (N - 1));
    assert_eq!(v.cells.len(), v.n_polys);
    assert!(v.cells.iter().all(|c| vtk_cell_type(&v, c) == 9));
    assert_eq!(v.scalar_name, "train_loss");
    let c = coords();
    // each quad is one grid cell: corners (ix, iy), (ix+1, iy), (ix+1, iy+1), (ix, iy+1)
    for (k, cell) in v.cells.iter().enumerate() {
        let (ix, iy) = (k % (N - 1), k / (N - 1));
        let want = [(ix, iy), (ix + 1, iy), (ix + 1, iy + 1), (ix, iy + 1)];
        for (&p, (jx, jy)) in cell.iter().zip(want) {
            let [x, y, z] = v.points[p];
            assert!(
                (x - c[jx]).abs() < 1e-12 && (y - c[jy]).abs() < 1e-12,
                "cell {k}"
            );
            assert!((z - bowl(c[jx], c[jy])).abs() < 1e-12);
            assert_eq!(v.scalars[p], z);
        }
    }
    assert!(common::stderr(&o).contains(&format!("{} quads, 0 triangles", (N - 1) * (N - 1))));
}

#[test]
fn export_vtp_skips_masked_points_with_triangles() {
    let t = Files::new();
    surface2d(&t.p("bowl.h5"), &[("train_loss", &holed)]);
    let o = ok(&[
        "export-vtp",
        &t.s("bowl.h5"),
        "--zmax",
        "2",
        "--out",
        &t.s("b.vtp"),
    ]);
    assert!(!std::fs::read_to_string(t.p("b.vtp"))
        .unwrap()
        .to_lowercase()
        .contains("nan"));
    let v = read_vtp(&t.p("b.vtp"));
    let finite = coords()
        .iter()
        .flat_map(|&y| coords().into_iter().map(move |x| holed(x, y)))
        .filter(|z| z.is_finite())
        .count();
    assert_eq!(v.n_points, finite);
    let types: Vec<u8> = v.cells.iter().map(|c| vtk_cell_type(&v, c)).collect();
    let quads = types.iter().filter(|&&t| t == 9).count();
    let triangles = types.iter().filter(|&&t| t == 5).count();
    assert!(
        quads > (N - 1) * (N - 1) * 3 / 4 && quads < (N - 1) * (N - 1),
        "{quads}"
    );
    assert!(
        triangles > 0,
        "cells with one masked corner become triangles"
    );
    assert!(common::stderr(&o).contains("not computed"));
    // clipped at zmax
    assert!(v.scalars.iter().all(|&z| z <= 2.0));
    assert!(v.scalars.contains(&2.0));
}

/// `--h52vtp-log` writes ln(min(z, zmax) + 0.1), as loss-landscape's h52vtp.py `--log`;
/// `--log` writes log10 z.
#[test]
fn export_vtp_log_conventions() {
    let t = Files::new();
    surface2d(&t.p("bowl.h5"), &[("train_loss", &bowl)]);
    ok(&[
        "export-vtp",
        &t.s("bowl.h5"),
        "--zmax",
        "3",
        "--h52vtp-log",
        "--out",
        &t.s("ln.vtp"),
    ]);
    let v = read_vtp(&t.p("ln.vtp"));
    assert_eq!(v.scalar_name, "ln(train_loss+0.1)");
    assert_eq!(v.n_points, N * N);
    for (p, &s) in v.points.iter().zip(&v.scalars) {
        let want = (bowl(p[0], p[1]).min(3.0) + 0.1).ln();
        assert!((s - want).abs() <= 1e-9, "{s} vs {want}");
        assert_eq!(p[2], s);
    }
    // the centre: ln(0.05 + 0.1)
    let centre = v
        .points
        .iter()
        .position(|p| p[0].abs() < 1e-12 && p[1].abs() < 1e-12)
        .unwrap();
    assert!((v.scalars[centre] - 0.15f64.ln()).abs() < 1e-12);
    ok(&[
        "export-vtp",
        &t.s("bowl.h5"),
        "--log",
        "--out",
        &t.s("l10.vtp"),
    ]);
    let v = read_vtp(&t.p("l10.vtp"));
    assert_eq!(v.scalar_name, "log10_train_loss");
    for (p, &s) in v.points.iter().zip(&v.scalars) {
        assert!((s - bowl(p[0], p[1]).log10()).abs() < 1e-9);
    }
    // a zmax outside the logarithm's domain is refused; the two logs exclude each other
    let e = fails(
        &[
            "export-vtp",
            &t.s("bowl.h5"),
            "--zmax",
            "-0.5",
            "--h52vtp-log",
            "--out",
            &t.s("x.vtp"),
        ],
        2,
    );
    assert!(e.contains("--zmax") && e.contains("-0.1"), "{e}");
    fails(
        &[
            "export-vtp",
            &t.s("bowl.h5"),
            "--log",
            "--h52vtp-log",
            "--out",
            &t.s("x.vtp"),
        ],
        2,
    );
}

/// Golden images: the bowl's contour and filled plots equal committed PNGs
/// (tests/golden/) up to a tolerance, so a change in how plots look is a visible diff.
/// After an intended change, regenerate with `BLESS_GOLDEN=1 cargo test --test plot golden`.
#[test]
fn golden_images() {
    let dir = common::tempdir();
    let f = surface2d(&dir.path().join("bowl.h5"), &[("train_loss", &bowl)]);
    for (kind, name) in [
        (PlotKind::Contour, "bowl-contour.png"),
        (PlotKind::Filled, "bowl-filled.png"),
    ] {
        let (img, _) = render_rgb(&cfg(vec![f.clone()], kind)).unwrap();
        let golden = common::fixture("tests/golden").join(name);
        if std::env::var_os("BLESS_GOLDEN").is_some() {
            image::RgbImage::from_raw(img.width, img.height, img.pixels.clone())
                .unwrap()
                .save(&golden)
                .unwrap();
        }
        let want = image::open(&golden)
            .unwrap_or_else(|e| panic!("{}: {e}; regenerate with BLESS_GOLDEN=1", golden.display()))
            .to_rgb8();
        assert_eq!(
            (want.width(), want.height()),
            (img.width, img.height),
            "{name}: size"
        );
        let differing = want
            .as_raw()
            .chunks(3)
            .zip(img.pixels.chunks(3))
            .filter(|(a, b)| a.iter().zip(b.iter()).any(|(x, y)| x.abs_diff(*y) > 16))
            .count();
        let share = differing as f64 / (img.width * img.height) as f64;
        assert!(
            share <= 0.005,
            "{name}: {:.2}% of pixels differ from the golden image",
            100.0 * share
        );
    }
}

/// A Hessian file with three blocks (named out of alphabetical order), each with top-3
/// eigenvalues and, optionally, a density.
fn block_hessian(path: &Path, density: bool) {
    use losscape::io::hessian::{write_hessian, DensityData, EigenData, HessianGroup};
    let group = |scale: f64| {
        let grid: Vec<f64> = (0..400).map(|i| -0.5 + i as f64 * 0.05 * scale).collect();
        let dens: Vec<f64> = grid
            .iter()
            .map(|x| (-(x - 2.0 * scale).powi(2) / scale).exp() + 1e-3)
            .collect();
        HessianGroup {
            params_dim: 10,
            top: Some(EigenData {
                values: vec![4.0 * scale, 2.0 * scale, 1.0 * scale],
                residuals: vec![1e-6; 3],
                converged: vec![true; 3],
                vectors: None,
            }),
            density: density.then(|| DensityData {
                grid,
                density: dens,
                // one SLQ run of three Ritz values, from which the figure draws
                nodes: ndarray::Array2::from_shape_vec((1, 3), vec![0.0, 2.0 * scale, 4.0 * scale])
                    .unwrap(),
                weights: ndarray::Array2::from_shape_vec((1, 3), vec![0.8, 0.15, 0.05]).unwrap(),
            }),
            ..Default::default()
        }
    };
    let blocks = vec![
        ("zeta".to_string(), group(1.0)),
        ("alpha".to_string(), group(3.0)),
        ("mid".to_string(), group(0.5)),
    ];
    let mut attrs = std::collections::BTreeMap::new();
    attrs.insert("operator".to_string(), "ggn".into());
    write_hessian(path, &group(4.0), &blocks, &attrs).unwrap();
}

/// `--kind spectrum` on a `--per-block` file: one figure with every block's density (one
/// colour per block, by depth) and the top eigenvalues per block against depth; blocks keep
/// the network's order; without densities the figure is the depth panel alone.
#[test]
fn per_block_spectra_in_one_figure() {
    use plotters::style::colors::colormaps::ViridisRGB;
    let t = Files::new();
    block_hessian(&t.p("blocks.h5"), true);
    let spectra = losscape::io::hessian::read_spectra(&t.p("blocks.h5")).unwrap();
    let (blocks, attrs) = (&spectra.blocks, &spectra.attrs);
    let names: Vec<&str> = blocks.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["zeta", "alpha", "mid"]);
    assert_eq!(blocks[1].top, [12.0, 6.0, 3.0]);
    assert!(blocks[2].density.is_some());
    assert_eq!(attrs["operator"].to_string(), "ggn");

    let (img, _) = render_rgb(&cfg(vec![t.p("blocks.h5")], PlotKind::Spectrum)).unwrap();
    assert_eq!((img.width, img.height), (1400, 600));
    let count = |c: [u8; 3], x0: u32, x1: u32| {
        (x0..x1)
            .flat_map(|x| (0..img.height).map(move |y| (x, y)))
            .filter(|&(x, y)| {
                let p = img.pixel(x, y);
                (0..3).all(|i| (p[i] as i32 - c[i] as i32).abs() <= 6)
            })
            .count()
    };
    for (i, t) in [0.0, 0.45, 0.9].iter().enumerate() {
        let v = ViridisRGB::get_color(*t);
        let c = [v.0, v.1, v.2];
        // a density curve on the left, a λmax dot on the right, in each block's colour
        assert!(count(c, 0, 700) > 100, "block {i}: density curve missing");
        assert!(count(c, 700, 1400) > 40, "block {i}: λmax marker missing");
    }
    // the whole network's λmax, dashed red across the depth panel
    assert!(count([214, 39, 40], 700, 1400) > 300);

    ok(&[
        "plot",
        &t.s("blocks.h5"),
        "--kind",
        "spectrum",
        "--out",
        &t.s("blocks.png"),
    ]);
    assert_eq!(png_size(&t.p("blocks.png")), (1400, 600));
    block_hessian(&t.p("tops.h5"), false);
    ok(&[
        "plot",
        &t.s("tops.h5"),
        "--kind",
        "spectrum",
        "--out",
        &t.s("tops.png"),
    ]);
    assert_eq!(png_size(&t.p("tops.png")), (900, 560));
}
