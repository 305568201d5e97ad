//! Gauss–Newton and empirical-Fisher products against PyTorch (torch.func jvp/vjp and
//! vmap(grad) in float64; fixtures/reference/curvature/*.safetensors, made by
//! fixtures/generate/make_curvature_reference.py): f64 within 1e-9 relative, f32 within
//! f32 accuracy, and the whole spectra of a tiny MLP's GGN and empirical Fisher.

mod common;

use std::collections::HashMap;
use std::path::Path;

use losscape::engine::{GnKind, Graph, Loss, Mode, Scalar};
use losscape::model::Arch;
use ndarray::{Array1, Array2, ArrayD, IxDyn};
use ndarray_linalg::{Eigh, UPLO};
use safetensors::SafeTensors;

const FIXTURE_VERSION: &str = "1";

struct Fixture {
    name: String,
    meta: HashMap<String, String>,
    t: common::Tensors,
}

fn fixtures() -> Vec<Fixture> {
    let dir = common::fixture("fixtures/reference/curvature");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 5, "expected the five curvature fixtures");
    paths.iter().map(|p| read(p)).collect()
}

fn read(path: &Path) -> Fixture {
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap_or_default();
    assert_eq!(
        meta.get("fixture_version").map(String::as_str),
        Some(FIXTURE_VERSION),
        "{}: regenerate with fixtures/generate/make_curvature_reference.py",
        path.display()
    );
    Fixture {
        name: path.file_stem().unwrap().to_string_lossy().into(),
        meta,
        t: common::decode_f64(&bytes, path),
    }
}

impl Fixture {
    fn graph(&self) -> Graph {
        let arch: Arch = self.meta["losscape_arch"].parse().unwrap();
        let mut g = arch.build();
        if self.meta["loss"] == "mse" {
            g.loss = Loss::Mse;
        }
        g
    }

    /// A parameter-shaped vector from `prefix.<name>` (zero where absent: running stats of
    /// a direction).
    fn vector(&self, g: &Graph, prefix: &str) -> Array1<f64> {
        let mut out = Array1::zeros(g.layout.len());
        for t in g.layout.tensors() {
            if let Some((shape, v)) = self.t.get(&format!("{prefix}.{}", t.name)) {
                assert_eq!(shape, &t.shape, "{}: {prefix}.{}", self.name, t.name);
                out.slice_mut(ndarray::s![t.range()])
                    .assign(&Array1::from(v.clone()));
            } else {
                assert!(
                    !t.role.is_trainable(),
                    "{}: lacks {prefix}.{}",
                    self.name,
                    t.name
                );
            }
        }
        out
    }

    fn batch(&self) -> (ArrayD<f64>, Vec<usize>) {
        let (xs, xv) = &self.t["x"];
        let y = self.t["y"].1.iter().map(|&v| v as usize).collect();
        (ArrayD::from_shape_vec(IxDyn(xs), xv.clone()).unwrap(), y)
    }
}

/// (1/N) Σₙ Jₙᵀ Mₙ Jₙ v on the fixture's batch, in precision `T`.
fn product<T: Scalar>(g: &Graph, f: &Fixture, kind: &GnKind, v: &Array1<f64>) -> Array1<f64> {
    let (x, y) = f.batch();
    let theta = f.vector(g, "param").mapv(T::from_f);
    let mut out = Array1::<T>::zeros(theta.len());
    g.gn_batch(
        theta.view(),
        v.mapv(T::from_f).view(),
        &x.mapv(T::from_f),
        &y,
        Mode::Eval,
        kind,
        out.view_mut(),
    );
    out.mapv(|a| a.as_f64() / y.len() as f64)
}

/// max |got − want| / max |want| over the trainable entries.
fn rel(g: &Graph, got: &Array1<f64>, want: &Array1<f64>) -> f64 {
    let mut d: f64 = 0.0;
    let mut s: f64 = 0.0;
    for t in g.layout.tensors().iter().filter(|t| t.role.is_trainable()) {
        for i in t.range() {
            d = d.max((got[i] - want[i]).abs());
            s = s.max(want[i].abs());
        }
    }
    d / s
}

#[test]
fn ggn_and_empirical_fisher_products_match_torch_func() {
    for f in fixtures() {
        let g = f.graph();
        let v = f.vector(&g, "v");
        for (kind, key) in [
            (GnKind::Ggn, "f64.ggn_v"),
            (GnKind::EmpiricalFisher, "f64.efisher_v"),
        ] {
            let want = f.vector(&g, key);
            let r64 = rel(&g, &product::<f64>(&g, &f, &kind, &v), &want);
            assert!(r64 <= 1e-9, "{} {key} f64: {r64:e}", f.name);
            let r32 = rel(&g, &product::<f32>(&g, &f, &kind, &v), &want);
            assert!(r32 <= 2e-4, "{} {key} f32: {r32:e}", f.name);
        }
    }
}

/// The dense GGN and empirical Fisher of the tiny MLP, column by column from products,
/// have PyTorch's spectra (jacrev Jacobians, stacked per-sample gradients).
#[test]
fn dense_spectra_of_the_tiny_mlp_match_torch() {
    let f = read(&common::fixture(
        "fixtures/reference/curvature/ggn-tiny.safetensors",
    ));
    let g = f.graph();
    let idx: Vec<usize> = g
        .layout
        .tensors()
        .iter()
        .filter(|t| t.role.is_trainable())
        .flat_map(|t| t.range())
        .collect();
    for (kind, key) in [
        (GnKind::Ggn, "f64.ggn_eigvals"),
        (GnKind::EmpiricalFisher, "f64.efisher_eigvals"),
    ] {
        let p = idx.len();
        let mut a = Array2::<f64>::zeros((p, p));
        for (c, &i) in idx.iter().enumerate() {
            let mut e = Array1::zeros(g.layout.len());
            e[i] = 1.0;
            let col = product::<f64>(&g, &f, &kind, &e);
            for (r, &j) in idx.iter().enumerate() {
                a[[r, c]] = col[j];
            }
        }
        let (ev, _) = a.eigh(UPLO::Lower).unwrap();
        let want = &f.t[key].1;
        assert_eq!(ev.len(), want.len());
        let top = want[want.len() - 1];
        let worst = ev
            .iter()
            .zip(want)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= 1e-10 * top,
            "{key}: worst |Δλ| {worst:e} of λmax {top}"
        );
        assert!(ev[0] >= -1e-12 * top, "{key}: λmin {} is negative", ev[0]);
    }
}
