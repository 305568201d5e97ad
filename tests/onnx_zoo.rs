//! Real architectures as both of PyTorch's exporters write them (fixtures/onnx/zoo15, made
//! by fixtures/generate/export_onnx_zoo15.py): ResNet-18, MobileNetV2, a ViT, an
//! `nn.TransformerEncoder` classifier, a GroupNorm CNN, a GELU/LayerNorm MLP, VGG-9 with
//! ceil-mode pooling and a model of the remaining ops. Every file loads; its loss equals
//! PyTorch's (≤ 1e-5 relative, f32 and f64); where the exporter kept the parameters as
//! PyTorch has them, gradient and H·v equal PyTorch's double backward in f64 (≤ 1e-9
//! relative); the tiny transformer's top Hessian eigenvalue equals the eigenvalue of its
//! full f64 Hessian (≤ 1e-6 relative).

mod common;

use std::path::{Path, PathBuf};

use common::{assert_close, root, tol, Dtype, Quantity, Tensors};
use losscape::engine::{Graph, Mode, Scalar};
use losscape::model::{Arch, Model};
use ndarray::{Array1, ArrayD, IxDyn};

fn dir() -> PathBuf {
    root().join("fixtures/onnx/zoo15")
}

fn read(path: &Path) -> Tensors {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    common::decode_f64(&bytes, path)
}

/// A parameter-shaped vector from `prefix.<name>` entries; `None` when one is missing
/// (buffers, which have no direction or gradient, are zero outside `param`).
fn vector(f: &Tensors, g: &Graph, prefix: &str) -> Option<Array1<f64>> {
    let mut out = Array1::zeros(g.layout.len());
    for t in g.layout.tensors() {
        if prefix != "param" && !t.role.is_trainable() {
            continue;
        }
        let (shape, v) = f.get(&format!("{prefix}.{}", t.name))?;
        if shape != &t.shape {
            return None;
        }
        out.slice_mut(ndarray::s![t.range()])
            .assign(&Array1::from(v.clone()));
    }
    Some(out)
}

fn batch(f: &Tensors) -> (ArrayD<f64>, Vec<usize>) {
    let (xs, xv) = &f["x"];
    (
        ArrayD::from_shape_vec(IxDyn(xs), xv.clone()).unwrap(),
        f["y"].1.iter().map(|&v| v as usize).collect(),
    )
}

/// Mean loss, and gradient and H·v along `v` when given, in precision T.
fn compute<T: Scalar>(
    m: &Model,
    f: &Tensors,
    v: Option<&Array1<f64>>,
) -> (f64, Option<(Array1<f64>, Array1<f64>)>) {
    let g = &m.graph;
    let theta = m.theta.data.mapv(|v| T::from_f(v as f64));
    let (x, y) = batch(f);
    let x = x.mapv(T::from_f);
    let n = y.len() as f64;
    let mut grad = Array1::<T>::zeros(theta.len());
    let lv = g.grad_batch(theta.view(), &x, &y, Mode::Eval, grad.view_mut());
    let Some(v) = v else {
        return (lv.sum / n, None);
    };
    let v = v.mapv(T::from_f);
    let mut hv = Array1::<T>::zeros(theta.len());
    g.hvp_batch(theta.view(), v.view(), &x, &y, Mode::Eval, hv.view_mut());
    (
        lv.sum / n,
        Some((grad.mapv(|v| v.as_f64() / n), hv.mapv(|v| v.as_f64() / n))),
    )
}

/// Relative tolerance of f64 gradients and H·v against PyTorch's. The current exporter
/// stores attention's scale as two f32 constants √(1/√d) (rounded by ≤ 6e-8 relative),
/// which PyTorch's f64 reference computes exactly; the legacy exporter computes the scale
/// in the graph, so its files are held to the f64 tolerance of every other op.
fn f64_tolerance(file: &str) -> common::Tol {
    let t = tol(Dtype::F64, Quantity::Gradient);
    if file.contains("transformer.dynamo") || file.starts_with("vit.dynamo") {
        common::Tol { rtol: 2e-7, ..t }
    } else {
        t
    }
}

/// Every export in the folder, with its model's name.
fn exports() -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(dir())
        .expect("fixtures/onnx/zoo15")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .map(|p| {
            let file = p.file_name().unwrap().to_string_lossy().into_owned();
            (file.split('.').next().unwrap().to_string(), p)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_export_of_both_exporters_matches_pytorch() {
    let list = exports();
    assert!(list.len() >= 14, "{} exports", list.len());
    let mut failures = vec![];
    for (model, path) in &list {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let m = match Model::load(path, None) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{file}: {e}"));
                continue;
            }
        };
        let f = read(&dir().join(format!("{model}.ref.safetensors")));
        let params = vector(&f, &m.graph, "param");
        // every PyTorch tensor present, each with PyTorch's values (not tied, not folded)
        let tensors = f.keys().filter(|k| k.starts_with("param.")).count();
        let exact = tensors == m.graph.layout.tensors().len()
            && params
                .as_ref()
                .is_some_and(|p| *p == m.theta.data.mapv(|v| v as f64));
        let v = if exact {
            vector(&f, &m.graph, "v")
        } else {
            None
        };
        let want = f["f64.loss"].1[0];
        for dtype in [Dtype::F64, Dtype::F32] {
            let (loss, gh) = match dtype {
                Dtype::F64 => compute::<f64>(&m, &f, v.as_ref()),
                Dtype::F32 => compute::<f32>(&m, &f, None),
            };
            let rel = (loss - want).abs() / want.abs().max(1e-12);
            if rel > 1e-5 || !loss.is_finite() {
                failures.push(format!(
                    "{file} [{dtype:?}]: loss {loss} vs PyTorch {want} ({rel:.2e} relative)"
                ));
                continue;
            }
            eprintln!(
                "{file} [{dtype:?}]: loss {rel:.2e} relative{}",
                if exact {
                    ""
                } else {
                    " (parameters renamed or folded: loss only)"
                }
            );
            if let Some((grad, hv)) = gh {
                let label = format!("{file} [f64]");
                let wg = vector(&f, &m.graph, "f64.grad").expect("f64.grad");
                let wh = vector(&f, &m.graph, "f64.hv").expect("f64.hv");
                let eg = assert_close(
                    &format!("{label}: gradient"),
                    &grad,
                    wg,
                    f64_tolerance(&file),
                )
                .relative();
                let eh = assert_close(&format!("{label}: H·v"), &hv, wh, f64_tolerance(&file))
                    .relative();
                eprintln!("{label}: gradient {eg:.2e}, H·v {eh:.2e} (relative)");
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Exports that keep BatchNorm (and the transformers) carry exactly PyTorch's
/// parameters, so gradients and H·v are compared; the folded ones say so.
#[test]
fn parameters_keep_pytorch_names_and_folded_batchnorm_is_reported() {
    for (file, exact) in [
        ("resnet18.legacy-keepbn.onnx", true),
        ("resnet18.dynamo-noopt.onnx", true),
        ("vit.dynamo.onnx", true),
        ("vit.legacy.onnx", true),
        ("resnet18.dynamo.onnx", false),
        ("resnet18.legacy.onnx", false),
    ] {
        let m = Model::load(&dir().join(file), None).unwrap_or_else(|e| panic!("{file}: {e}"));
        let model = file.split('.').next().unwrap();
        let f = read(&dir().join(format!("{model}.ref.safetensors")));
        let names_match = vector(&f, &m.graph, "param").is_some();
        assert_eq!(names_match, exact, "{file}: parameters named as PyTorch's");
        let Arch::Onnx(a) = &m.arch else {
            panic!("{file}: not ONNX")
        };
        let has_bn = f.keys().any(|k| k.ends_with("running_mean"));
        if has_bn {
            assert_eq!(a.bn_folded, !exact, "{file}: {a:?}");
        }
        if a.bn_folded {
            let w = m.parameterization_warning().expect("a warning");
            assert!(w.contains("do_constant_folding=False"), "{w}");
            assert!(w.contains("trainable parameters"), "{w}");
        }
    }
}

/// The largest Hessian eigenvalue of the tiny transformer (f64, Lanczos on exact H·v)
/// equals the largest eigenvalue of its full Hessian from PyTorch's double backward.
#[test]
fn tiny_transformer_top_eigenvalue_matches_pytorch() {
    use losscape::hessian::{top_eigenpairs, LanczosParams, LinearOperator};
    let f = read(&dir().join("tiny-transformer.ref.safetensors"));
    let eig = &f["f64.hessian_eigvals"].1;
    let want = eig.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    for exporter in ["legacy", "dynamo"] {
        let path = dir().join(format!("tiny-transformer.{exporter}.onnx"));
        let m = Model::load(&path, None).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (x, y) = batch(&f);
        let g = &m.graph;
        let theta = m.theta.data.mapv(|v| v as f64);
        struct H<'a> {
            g: &'a Graph,
            theta: Array1<f64>,
            x: ArrayD<f64>,
            y: Vec<usize>,
        }
        impl LinearOperator for H<'_> {
            fn dim(&self) -> usize {
                self.theta.len()
            }
            fn apply(&self, v: ndarray::ArrayView1<f64>, mut out: ndarray::ArrayViewMut1<f64>) {
                out.fill(0.0);
                self.g.hvp_batch(
                    self.theta.view(),
                    v,
                    &self.x,
                    &self.y,
                    Mode::Eval,
                    out.view_mut(),
                );
                let n = self.y.len() as f64;
                out.mapv_inplace(|v| v / n);
            }
        }
        let h = H { g, theta, x, y };
        let params = LanczosParams {
            k: 1,
            max_iter: 300,
            tol: 1e-10,
            ..Default::default()
        };
        let got = top_eigenpairs(&h, &params).expect("lanczos").values[0];
        let rel = (got - want).abs() / want.abs();
        eprintln!("tiny-transformer.{exporter}: λmax {got} vs PyTorch {want} ({rel:.2e} relative)");
        assert!(rel <= 1e-6, "λmax {got} vs {want}");
    }
}
