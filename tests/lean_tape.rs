//! The lean tape (`tape=lean`, f32): conv → batch norm (eval) [→ ReLU] keeps only batch
//! norm's (or the ReLU's) output and forms x̂ = (y − β)/γ from it. Checked on the bundled
//! ResNets against the full tape and the f64 engine: the loss and every gradient entry
//! but batch norm's γ keep the full tape's bits, γ's gradient and H·v stay as close to
//! f64 as the full tape's, layers where x̂ cannot be recovered (γ = 0, |β| > 16|γ|) keep
//! the full tape, f64 and train mode never go lean, and the kept H·v state is smaller.

use std::path::PathBuf;

use losscape::engine::{EngineOptions, GnKind, Mode, Role, TapeLayout};
use losscape::model::Model;
use ndarray::{Array1, ArrayD};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Pseudo-random value in [−0.5, 0.5) from an index and a seed.
fn hashed(i: usize, seed: usize) -> f64 {
    (i.wrapping_add(seed * 7919).wrapping_mul(2654435761) % 1000) as f64 / 1000.0 - 0.5
}

/// A bundled digits model and 16 samples of the digits data set.
fn case(file: &str) -> (Model, ArrayD<f32>, Vec<usize>) {
    let model = Model::load(&root().join("fixtures/models").join(file), None)
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    let ds = losscape::data::load("digits", &Default::default()).unwrap();
    let idx: Vec<usize> = (0..16).map(|i| i * 7 % ds.len()).collect();
    let ds = ds.subset(&idx);
    (model, ds.x, ds.y)
}

/// ‖a − b‖ / ‖b‖.
fn rel_norm(a: &Array1<f32>, b: &Array1<f64>) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - y).powi(2)).sum();
    d.sqrt() / b.iter().map(|y| y * y).sum::<f64>().sqrt().max(1e-300)
}

fn with_tape(model: &Model, tape: TapeLayout) -> losscape::engine::Graph {
    model.graph.clone().with_options(EngineOptions {
        tape,
        ..Default::default()
    })
}

/// Gradient (and its loss) and H·v along `v` at θ, eval mode, f32.
fn grad_hvp(
    g: &losscape::engine::Graph,
    theta: &Array1<f32>,
    v: &Array1<f32>,
    x: &ArrayD<f32>,
    y: &[usize],
) -> (f64, Array1<f32>, Array1<f32>) {
    let mut grad = Array1::<f32>::zeros(theta.len());
    let loss = g.grad_batch(theta.view(), x, y, Mode::Eval, grad.view_mut());
    let mut hv = Array1::<f32>::zeros(theta.len());
    g.hvp_batch(theta.view(), v.view(), x, y, Mode::Eval, hv.view_mut());
    (loss.sum, grad, hv)
}

/// Whether entry `i` is a batch-norm γ.
fn gamma_entries(model: &Model) -> Vec<bool> {
    let mut is = vec![false; model.theta.data.len()];
    for t in model.graph.layout.tensors() {
        if t.role == Role::BnScale {
            is[t.range()].iter_mut().for_each(|b| *b = true);
        }
    }
    is
}

fn check(file: &str, model: &Model, x: &ArrayD<f32>, y: &[usize]) -> (f64, f64, f64, f64) {
    let theta = model.theta.data.clone();
    let v = Array1::from_shape_fn(theta.len(), |i| {
        (hashed(i, 2) * theta[i].abs() as f64) as f32
    });
    let (lf, gf, hf) = grad_hvp(&with_tape(model, TapeLayout::Full), &theta, &v, x, y);
    let (ll, gl, hl) = grad_hvp(&with_tape(model, TapeLayout::Lean), &theta, &v, x, y);
    assert_eq!(
        lf.to_bits(),
        ll.to_bits(),
        "{file}: the loss is the full tape's"
    );
    // dx never reads x̂: every entry but γ's has the full tape's bits
    let gamma = gamma_entries(model);
    for i in 0..theta.len() {
        if !gamma[i] {
            assert_eq!(
                gf[i].to_bits(),
                gl[i].to_bits(),
                "{file}: gradient entry {i}"
            );
        }
    }
    // f64 reference at the same (f32) point
    let g64 = model.graph.clone();
    let (t64, v64, x64) = (
        theta.mapv(|a| a as f64),
        v.mapv(|a| a as f64),
        x.mapv(|a| a as f64),
    );
    let mut gr = Array1::<f64>::zeros(theta.len());
    g64.grad_batch(t64.view(), &x64, y, Mode::Eval, gr.view_mut());
    let mut hr = Array1::<f64>::zeros(theta.len());
    g64.hvp_batch(t64.view(), v64.view(), &x64, y, Mode::Eval, hr.view_mut());
    let errs = (
        rel_norm(&gf, &gr),
        rel_norm(&gl, &gr),
        rel_norm(&hf, &hr),
        rel_norm(&hl, &hr),
    );
    eprintln!(
        "{file}: relative error vs f64, full / lean tape: gradient {:.2e} / {:.2e}, H·v {:.2e} / {:.2e}",
        errs.0, errs.1, errs.2, errs.3
    );
    // as close to f64 as the full tape, up to a small factor (or f32's resolution)
    assert!(
        errs.1 <= (2.0 * errs.0).max(1e-6),
        "{file}: gradient {errs:?}"
    );
    assert!(errs.3 <= (2.0 * errs.2).max(1e-6), "{file}: H·v {errs:?}");
    errs
}

#[test]
fn lean_tape_matches_the_full_tape_and_f64() {
    // resnet56-digits has layers with |β| > 16|γ|: those keep the full tape
    for file in [
        "resnet20-digits.safetensors",
        "resnet20-noshort-digits.safetensors",
        "resnet56-digits.safetensors",
    ] {
        let (model, x, y) = case(file);
        check(file, &model, &x, &y);
    }
}

#[test]
fn a_zero_gamma_keeps_that_layers_full_tape() {
    let (mut model, x, y) = case("resnet8-digits.safetensors");
    // one channel of the first batch norm with γ = 0: x̂ cannot come from its output
    let t = model
        .graph
        .layout
        .tensors()
        .iter()
        .find(|t| t.role == Role::BnScale)
        .unwrap()
        .clone();
    model.theta.data[t.offset + 1] = 0.0;
    let (_, _, _, lean_hv) = check("resnet8-digits (γ = 0)", &model, &x, &y);
    assert!(lean_hv.is_finite());
}

#[test]
fn f64_and_train_mode_never_go_lean_and_lean_state_is_smaller() {
    let (model, x, y) = case("resnet20-digits.safetensors");
    let (full, lean) = (
        with_tape(&model, TapeLayout::Full),
        with_tape(&model, TapeLayout::Lean),
    );
    let t64 = model.theta.data.mapv(|a| a as f64);
    let x64 = x.mapv(|a| a as f64);
    let mut a = Array1::<f64>::zeros(t64.len());
    let mut b = Array1::<f64>::zeros(t64.len());
    full.grad_batch(t64.view(), &x64, &y, Mode::Eval, a.view_mut());
    lean.grad_batch(t64.view(), &x64, &y, Mode::Eval, b.view_mut());
    assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
    let theta = &model.theta.data;
    // train mode (batch statistics) keeps the full tape too
    let mut a = Array1::<f32>::zeros(theta.len());
    let mut b = Array1::<f32>::zeros(theta.len());
    full.grad_batch(theta.view(), &x, &y, Mode::Train, a.view_mut());
    lean.grad_batch(theta.view(), &x, &y, Mode::Train, b.view_mut());
    assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
    let sf = full.hvp_prepare(theta.view(), &x, &y, Mode::Eval);
    let sl = lean.hvp_prepare(theta.view(), &x, &y, Mode::Eval);
    // every conv → batch norm pair drops the conv's output, and each residual block's
    // end its batch norm's: here ~32% of the state
    eprintln!("kept state: full {} B, lean {} B", sf.bytes(), sl.bytes());
    assert!(
        (sl.bytes() as f64) < 0.7 * sf.bytes() as f64,
        "lean {} vs full {}",
        sl.bytes(),
        sf.bytes()
    );
    // the kept-state product agrees with the cold one on the lean tape
    let v = Array1::from_shape_fn(theta.len(), |i| {
        (hashed(i, 5) * theta[i].abs() as f64) as f32
    });
    let mut h1 = Array1::<f32>::zeros(theta.len());
    let mut h2 = Array1::<f32>::zeros(theta.len());
    lean.hvp_prepared(theta.view(), v.view(), &sl, h1.view_mut());
    lean.hvp_batch(theta.view(), v.view(), &x, &y, Mode::Eval, h2.view_mut());
    assert!(h1.iter().zip(&h2).all(|(p, q)| p.to_bits() == q.to_bits()));
}

#[test]
fn gauss_newton_products_on_the_lean_tape_match_f64() {
    let (model, x, y) = case("resnet20-digits.safetensors");
    let theta = model.theta.data.clone();
    let v = Array1::from_shape_fn(theta.len(), |i| {
        (hashed(i, 7) * theta[i].abs() as f64) as f32
    });
    let gn = |tape: TapeLayout| {
        let mut out = Array1::<f32>::zeros(theta.len());
        let g = with_tape(&model, tape);
        g.gn_batch(
            theta.view(),
            v.view(),
            &x,
            &y,
            Mode::Eval,
            &GnKind::Ggn,
            out.view_mut(),
        );
        out
    };
    let (full, lean) = (gn(TapeLayout::Full), gn(TapeLayout::Lean));
    let mut want = Array1::<f64>::zeros(theta.len());
    let (t64, v64, x64) = (
        theta.mapv(|a| a as f64),
        v.mapv(|a| a as f64),
        x.mapv(|a| a as f64),
    );
    model.graph.gn_batch(
        t64.view(),
        v64.view(),
        &x64,
        &y,
        Mode::Eval,
        &GnKind::Ggn,
        want.view_mut(),
    );
    let (ef, el) = (rel_norm(&full, &want), rel_norm(&lean, &want));
    eprintln!("GGN·v relative error vs f64: full {ef:.2e}, lean {el:.2e}");
    assert!(el <= (2.0 * ef).max(1e-6), "full {ef:.2e}, lean {el:.2e}");
}
