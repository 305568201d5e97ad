//! PyTorch reference values (fixtures/reference/*.safetensors, made by
//! fixtures/generate/make_reference.py): loss, correct predictions, gradient and H·v
//! (double backward) of zoo models on real data, in f64 and f32; and the full Hessian
//! spectrum of a tiny MLP.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::{assert_close, assert_close_at, tol, Dtype, Quantity};
use losscape::engine::{Graph, Loss, Mode, Scalar};
use losscape::model::Arch;
use ndarray::{Array1, Array2, ArrayD, IxDyn};
use ndarray_linalg::{Eigh, UPLO};
use safetensors::SafeTensors;

/// Fixture format this test understands; make_reference.py writes the same number.
const FIXTURE_VERSION: &str = "1";

struct Fixture {
    name: String,
    meta: HashMap<String, String>,
    tensors: common::Tensors,
}

fn read(path: &Path) -> Fixture {
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap_or_default();
    let version = meta
        .get("fixture_version")
        .map(String::as_str)
        .unwrap_or("none");
    assert_eq!(
        version,
        FIXTURE_VERSION,
        "{} has fixture version {version}, this test expects {FIXTURE_VERSION}. \
         HINT: regenerate with `fixtures/generate/regenerate.sh` (needs torch)",
        path.display()
    );
    let tensors = common::decode_f64(&bytes, path);
    Fixture {
        name: path.file_stem().unwrap().to_string_lossy().into(),
        meta,
        tensors,
    }
}

fn fixtures() -> Vec<PathBuf> {
    let dir = common::fixture("fixtures/reference");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    v.sort();
    v
}

impl Fixture {
    fn get(&self, key: &str) -> &(Vec<usize>, Vec<f64>) {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("{}: fixture lacks '{key}'", self.name))
    }

    fn graph(&self) -> Graph {
        let arch: Arch = self.meta["losscape_arch"].parse().unwrap();
        let mut g = arch.build();
        if self.meta.get("loss").map(String::as_str) == Some("mse") {
            g.loss = Loss::Mse;
        }
        g
    }

    fn mode(&self) -> Mode {
        match self.meta.get("mode").map(String::as_str) {
            Some("train") => Mode::Train,
            _ => Mode::Eval,
        }
    }

    /// A parameter-shaped vector from `prefix.<name>` tensors (zero where absent).
    fn vector(&self, g: &Graph, prefix: &str, all: bool) -> Array1<f64> {
        let mut out = Array1::zeros(g.layout.len());
        for t in g.layout.tensors() {
            let key = format!("{prefix}.{}", t.name);
            match self.tensors.get(&key) {
                Some((shape, v)) => {
                    assert_eq!(shape, &t.shape, "{}: {key} shape", self.name);
                    out.slice_mut(ndarray::s![t.range()])
                        .assign(&Array1::from(v.clone()));
                }
                None => assert!(
                    !all && !t.role.is_trainable(),
                    "{}: fixture lacks '{key}'",
                    self.name
                ),
            }
        }
        out
    }

    fn batch(&self) -> (ArrayD<f64>, Vec<usize>) {
        let (xs, xv) = self.get("x");
        let (_, yv) = self.get("y");
        (
            ArrayD::from_shape_vec(IxDyn(xs), xv.clone()).unwrap(),
            yv.iter().map(|&v| v as usize).collect(),
        )
    }
}

/// `common::assert_close` naming the worst element's tensor, with the observed difference
/// printed.
fn assert_vector_close(
    label: &str,
    g: &Graph,
    got: &Array1<f64>,
    want: &Array1<f64>,
    tol: common::Tol,
) {
    let tensor = |i: usize| {
        let name = g
            .layout
            .tensors()
            .iter()
            .find(|t| t.range().contains(&i))
            .map(|t| t.name.clone())
            .unwrap_or_default();
        format!("index {i} ({name})")
    };
    let c = assert_close_at(label, got, want, tol, tensor);
    eprintln!("{label}: max relative difference {:.2e}", c.relative());
}

fn scalar(f: &Fixture, key: &str) -> f64 {
    f.get(key).1[0]
}

fn run<T: Scalar>(f: &Fixture, prefix: &str, dtype: Dtype, check_vectors: bool) {
    let g = f.graph();
    let label = format!("{} [{prefix}]", f.name);
    let theta = f.vector(&g, "param", true).mapv(T::from_f);
    let v = f.vector(&g, "v", false).mapv(T::from_f);
    let (x, y) = f.batch();
    let x = x.mapv(T::from_f);
    let n = y.len() as f64;
    let mut grad = Array1::<T>::zeros(theta.len());
    let lv = g.grad_batch(theta.view(), &x, &y, f.mode(), grad.view_mut());
    let mut hv = Array1::<T>::zeros(theta.len());
    g.hvp_batch(theta.view(), v.view(), &x, &y, f.mode(), hv.view_mut());
    let loss = lv.sum / n;
    let want = scalar(f, &format!("{prefix}.loss"));
    let c = assert_close(
        &format!("{label}: loss"),
        loss,
        want,
        tol(dtype, Quantity::Loss),
    );
    eprintln!("{label} loss: relative difference {:.2e}", c.relative());
    assert_eq!(
        lv.correct as f64,
        scalar(f, &format!("{prefix}.correct")),
        "{label}: correct predictions"
    );
    if check_vectors {
        let grad = grad.mapv(|v| v.as_f64() / n);
        let hv = hv.mapv(|v| v.as_f64() / n);
        assert_vector_close(
            &format!("{label} gradient"),
            &g,
            &grad,
            &f.vector(&g, &format!("{prefix}.grad"), false),
            tol(dtype, Quantity::Gradient),
        );
        assert_vector_close(
            &format!("{label} H·v"),
            &g,
            &hv,
            &f.vector(&g, &format!("{prefix}.hv"), false),
            tol(dtype, Quantity::Hvp),
        );
    }
}

#[test]
fn every_fixture_matches_pytorch_in_f64_and_f32() {
    let files = fixtures();
    assert!(
        files.len() >= 10,
        "expected the reference fixtures in fixtures/reference (found {})",
        files.len()
    );
    for path in files {
        let f = read(&path);
        // other schemas in the folder (e.g. hessian-resnet8: eigenvalues only) are tested elsewhere
        if !f.tensors.keys().any(|k| k.starts_with("f64.grad.")) {
            continue;
        }
        run::<f64>(&f, "f64", Dtype::F64, true);
        let has_f32_vectors = f.tensors.keys().any(|k| k.starts_with("f32.grad."));
        run::<f32>(&f, "f32", Dtype::F32, has_f32_vectors);
    }
}

/// Symmetry ⟨u, Hv⟩ = ⟨v, Hu⟩ with the fixture's two random directions, f64.
#[test]
fn hessian_is_symmetric_on_fixtures() {
    for path in fixtures() {
        let f = read(&path);
        if !f.tensors.keys().any(|k| k.starts_with("u.")) {
            continue;
        }
        let g = f.graph();
        let theta = f.vector(&g, "param", true);
        let (u, v) = (f.vector(&g, "u", false), f.vector(&g, "v", false));
        let (x, y) = f.batch();
        let hvp = |d: &Array1<f64>| {
            let mut out = Array1::zeros(d.len());
            g.hvp_batch(theta.view(), d.view(), &x, &y, f.mode(), out.view_mut());
            out
        };
        let (a, b) = (u.dot(&hvp(&v)), v.dot(&hvp(&u)));
        assert_close(
            &format!("{}: ⟨u,Hv⟩ vs ⟨v,Hu⟩", f.name),
            a,
            b,
            tol(Dtype::F64, Quantity::HvpSymmetry),
        );
    }
}

/// The full Hessian of a tiny MLP, built column by column from exact H·v products and
/// eigendecomposed, equals PyTorch's `torch.autograd.functional.hessian` spectrum.
#[test]
fn full_hessian_spectrum_of_tiny_mlp() {
    let path = common::fixture("fixtures/reference/hessian-tiny.safetensors");
    let f = read(&path);
    let g = f.graph();
    let theta = f.vector(&g, "param", true);
    let (x, y) = f.batch();
    let trainable: Vec<usize> = g
        .layout
        .tensors()
        .iter()
        .filter(|t| t.role.is_trainable())
        .flat_map(|t| t.range())
        .collect();
    let p = trainable.len();
    let mut h = Array2::<f64>::zeros((p, p));
    for (j, &col) in trainable.iter().enumerate() {
        let mut e = Array1::zeros(theta.len());
        e[col] = 1.0;
        let mut out = Array1::zeros(theta.len());
        g.hvp_batch(theta.view(), e.view(), &x, &y, Mode::Eval, out.view_mut());
        for (i, &row) in trainable.iter().enumerate() {
            h[[i, j]] = out[row] / y.len() as f64;
        }
    }
    let asym = (&h - &h.t()).mapv(f64::abs).fold(0.0f64, |a, &b| a.max(b));
    let (mut eig, _) = h.eigh(UPLO::Lower).unwrap();
    eig.as_slice_mut().unwrap().sort_by(|a, b| a.total_cmp(b));
    let want = &f.get("f64.hessian_eigvals").1;
    assert_eq!(eig.len(), want.len());
    let scale = want.iter().fold(0.0f64, |a, &b| a.max(b.abs()));
    assert!(asym <= 1e-12 * scale, "Hessian asymmetry {asym}");
    assert_close(
        "eigenvalues vs PyTorch",
        &eig,
        want,
        tol(Dtype::F64, Quantity::Eigenvalue),
    );
}

/// The zoo's `vit` (every norm placement, residual on and off, class-token and mean
/// pooling, the 1-D `seq` variant) against its PyTorch twin (`zoo.Vit`): the same
/// parameter names and order, and loss, gradient and H·v in f64 and f32.
#[test]
fn vit_fixtures_match_pytorch() {
    let names = [
        "vit-pre-init",
        "vit-post-init",
        "vit-pre-nores-init",
        "vit-post-nores-init",
        "vit-seq-init",
    ];
    for name in names {
        let path = common::fixture(&format!("fixtures/reference/{name}.safetensors"));
        let f = read(&path);
        let g = f.graph();
        // parameter order = PyTorch's named_parameters() order
        let trainable: Vec<String> = g
            .layout
            .tensors()
            .iter()
            .filter(|t| t.role.is_trainable())
            .map(|t| t.name.clone())
            .collect();
        let order: Vec<String> = serde_json::from_str(&f.meta["param_order"]).unwrap();
        assert_eq!(trainable, order, "{name}: parameter names and order");
        run::<f64>(&f, "f64", Dtype::F64, true);
        run::<f32>(&f, "f32", Dtype::F32, true);
    }
}
