//! Winograd F(2×2, 3×3) (`conv=winograd`) and F(4×4, 3×3) (`conv=winograd4`) on the
//! bundled ResNets: loss-surface values
//! (eval-mode mean loss at points θ + α·d₁ + β·d₂ of a 3×3 grid) within 1e-5 relative of
//! the f64 engine, and the gradient and H·v close to f64 too. The default direct path is
//! measured alongside, so a regression of either shows.

use std::path::PathBuf;

use losscape::engine::{ConvAlgorithm, EngineOptions, Mode};
use losscape::model::Model;
use ndarray::{Array1, ArrayD, IxDyn};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Pseudo-random value in [−0.5, 0.5) from an index and a seed.
fn hashed(i: usize, seed: usize) -> f64 {
    (i.wrapping_add(seed * 7919).wrapping_mul(2654435761) % 1000) as f64 / 1000.0 - 0.5
}

/// A model and a batch: the digits data set for the digits ResNets, a fixed pattern in
/// [−1, 1) of the model's input shape otherwise.
fn case(file: &str, digits: bool) -> (Model, ArrayD<f32>, Vec<usize>) {
    let model = Model::load(&root().join("fixtures").join(file), None)
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    let n = 16;
    if digits {
        let ds = losscape::data::load("digits", &Default::default()).unwrap();
        let idx: Vec<usize> = (0..n).map(|i| i * 7 % ds.len()).collect();
        let ds = ds.subset(&idx);
        return (model, ds.x, ds.y);
    }
    let mut shape = vec![n];
    shape.extend(&model.graph.input_shape);
    let len: usize = shape.iter().product();
    let x = ArrayD::from_shape_vec(
        IxDyn(&shape),
        (0..len).map(|i| 2.0 * hashed(i, 1) as f32).collect(),
    )
    .unwrap();
    let k = model.graph.num_classes;
    (model, x, (0..n).map(|i| i * 3 % k).collect())
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-30)
}

/// ‖a − b‖ / ‖b‖.
fn rel_norm(a: &Array1<f32>, b: &Array1<f64>) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - y).powi(2)).sum();
    d.sqrt() / b.iter().map(|y| y * y).sum::<f64>().sqrt().max(1e-300)
}

/// The direct path, F(2×2) and F(4×4).
const CONVS: [ConvAlgorithm; 3] = [
    ConvAlgorithm::Auto,
    ConvAlgorithm::Winograd,
    ConvAlgorithm::Winograd4,
];

#[test]
fn winograd_surface_values_match_f64() {
    for (file, digits) in [
        ("models/resnet20-digits.safetensors", true),
        ("models/resnet56-noshort-digits.safetensors", true),
        ("onnx/resnet20.onnx", false),
    ] {
        let (model, x, y) = case(file, digits);
        let n = y.len() as f64;
        let theta = model.theta.data.mapv(|v| v as f64);
        // two directions of the parameters' own scale (as filter normalization gives)
        let d1 = Array1::from_shape_fn(theta.len(), |i| hashed(i, 2) * theta[i].abs());
        let d2 = Array1::from_shape_fn(theta.len(), |i| hashed(i, 3) * theta[i].abs());
        let x64 = x.mapv(|v| v as f64);
        let f64_graph = model.graph.clone();
        let mut worst = [0.0f64; 3];
        for (k, conv) in CONVS.into_iter().enumerate() {
            let g = model.graph.clone().with_options(EngineOptions {
                conv,
                ..Default::default()
            });
            for a in [-0.5, 0.0, 0.5] {
                for b in [-0.5, 0.0, 0.5] {
                    let p = &theta + &(&d1 * a) + &(&d2 * b);
                    // both precisions see the same (f32) point
                    let p32 = p.mapv(|v| v as f32);
                    let p64 = p32.mapv(|v| v as f64);
                    let l32 = g.loss_batch(p32.view(), &x, &y, Mode::Eval).sum / n;
                    let l64 = f64_graph.loss_batch(p64.view(), &x64, &y, Mode::Eval).sum / n;
                    let e = rel(l32, l64);
                    worst[k] = worst[k].max(e);
                    assert!(
                        e <= 1e-5,
                        "{file} {conv} at ({a}, {b}): {l32} vs f64 {l64} (relative {e:.2e})"
                    );
                }
            }
        }
        // gradient and H·v at θ (train mode, as the Hessian jobs run)
        let t32 = theta.mapv(|v| v as f32);
        let t64 = t32.mapv(|v| v as f64);
        let v32 = d1.mapv(|v| v as f32);
        let v64 = v32.mapv(|v| v as f64);
        let mut g64 = Array1::<f64>::zeros(theta.len());
        f64_graph.grad_batch(t64.view(), &x64, &y, Mode::Train, g64.view_mut());
        let mut h64 = Array1::<f64>::zeros(theta.len());
        f64_graph.hvp_batch(
            t64.view(),
            v64.view(),
            &x64,
            &y,
            Mode::Train,
            h64.view_mut(),
        );
        let mut errs = Vec::new();
        for conv in CONVS {
            let g = model.graph.clone().with_options(EngineOptions {
                conv,
                ..Default::default()
            });
            let mut g32 = Array1::<f32>::zeros(theta.len());
            g.grad_batch(t32.view(), &x, &y, Mode::Train, g32.view_mut());
            let mut h32 = Array1::<f32>::zeros(theta.len());
            g.hvp_batch(t32.view(), v32.view(), &x, &y, Mode::Train, h32.view_mut());
            let (eg, eh) = (rel_norm(&g32, &g64), rel_norm(&h32, &h64));
            assert!(
                eg <= 1e-4 && eh <= 1e-4,
                "{file} {conv}: gradient {eg:.2e}, H·v {eh:.2e}"
            );
            errs.push((eg, eh));
        }
        eprintln!(
            "{file}: surface max relative error vs f64: direct {:.2e}, winograd {:.2e}, \
             winograd4 {:.2e}; gradient/H·v relative norm error: direct {:.2e}/{:.2e}, \
             winograd {:.2e}/{:.2e}, winograd4 {:.2e}/{:.2e}",
            worst[0],
            worst[1],
            worst[2],
            errs[0].0,
            errs[0].1,
            errs[1].0,
            errs[1].1,
            errs[2].0,
            errs[2].1
        );
    }
}
