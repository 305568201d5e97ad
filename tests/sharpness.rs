//! `losscape sharpness` and [`losscape::sharpness`] against oracles:
//! - a diagonal convex quadratic, where the box maximum is known in closed form (per
//!   coordinate, the farther face of the interval) and β(η) = ‖Hg‖/‖g‖ for every η;
//! - PyTorch (fixtures/reference/sharpness-mlp-res.json, made by
//!   fixtures/generate/make_sharpness_reference.py): the same ascent and η scan in f64 on
//!   the bundled residual MLP, every loss and norm to 1e-8 relative;
//! - the same bits for 1 and 2 threads;
//! - the CLI with --json, and bad input exiting 2 with a message naming the flag.

mod common;

use common::{assert_close, bin, fails, fixture, tol, Dtype, Quantity, Tol};
use losscape::data::{load, DataOptions, Split};
use losscape::model::Model;
use losscape::objective::{Objective, ObjectiveConfig};
use losscape::sharpness::{
    beta_smoothness, eps_sharpness, DiagonalQuadratic, EpsParams, LossGradient, ObjectiveOracle,
    PerturbedParams, DEFAULT_ETAS,
};
use ndarray::{s, Array1, Axis};

/// The quadratic oracle's closed-form losses.
fn quad_loss() -> Tol {
    tol(Dtype::F64, Quantity::QuadraticLoss)
}

/// The quadratic oracle's φ and β (a difference of losses, a ratio of norms).
fn quad_ratio() -> Tol {
    tol(Dtype::F64, Quantity::QuadraticRatio)
}

/// A deterministic quadratic with curvatures over four decades and minimizers on both
/// sides of θ (some inside the box, some outside), never exactly at θ (there the gradient is
/// 0 and an ascent from y = 0 cannot move: see `random_starts_leave_a_stationary_point`).
fn quadratic(n: usize) -> (DiagonalQuadratic, Array1<f64>) {
    let h = Array1::from_shape_fn(n, |i| 10f64.powf(-2.0 + 4.0 * i as f64 / n as f64));
    let theta = Array1::from_shape_fn(n, |i| ((i * 7 % 11) as f64 - 5.0) * 0.3);
    let c = Array1::from_shape_fn(n, |i| theta[i] + ((i * 5 % 13) as f64 - 6.5) * 2e-3);
    (DiagonalQuadratic { h, c }, theta)
}

#[test]
fn quadratic_box_maximum_is_reached() {
    let (q, theta) = quadratic(50);
    let mut mask = Array1::ones(50);
    mask.slice_mut(s![40..]).fill(0.0); // last 10 coordinates stay fixed
    for eps in [1e-3, 1e-2, 0.3] {
        let p = EpsParams {
            eps,
            ..Default::default()
        };
        let r = eps_sharpness(&q, theta.view(), mask.view(), &p).unwrap();
        // closed form: per coordinate the larger of the two faces
        let mut best = theta.clone();
        for i in 0..40 {
            let w = eps * (theta[i].abs() + 1.0);
            let lo = q.h[i] * (theta[i] - w - q.c[i]).powi(2);
            let hi = q.h[i] * (theta[i] + w - q.c[i]).powi(2);
            best[i] = if hi >= lo { theta[i] + w } else { theta[i] - w };
        }
        let want = q.loss(best.view());
        let l0 = q.loss(theta.view());
        assert_close(
            &format!("eps {eps}: max vs closed form"),
            r.max_loss,
            want,
            quad_loss(),
        );
        assert_close(&format!("eps {eps}: L(θ)"), r.loss, l0, quad_loss());
        let phi = 100.0 * (want - l0) / (1.0 + l0);
        assert_close(&format!("eps {eps}: φ"), r.sharpness, phi, quad_ratio());
        assert_eq!(r.traces[0].len(), p.iters + 1);
        assert_eq!(r.at_bound_fraction, 1.0);
        assert_eq!(r.perturbed, 40);
        // a face is reached after 1/step steps, and the loss never drops afterwards
        let t = &r.traces[0];
        assert!(t.windows(2).all(|w| w[1] >= w[0]), "{t:?}");
        assert_close(&format!("eps {eps}: trace[4]"), t[4], want, quad_loss());
    }
}

#[test]
fn random_starts_leave_a_stationary_point() {
    // θ is the minimizer: g = 0, so the ascent from y = 0 stays there (φ = 0), while an
    // ascent from a random point of the box moves away from θ to the faces (the maximum).
    let (mut q, theta) = quadratic(20);
    q.c = theta.clone();
    let mask = Array1::ones(20);
    let p = EpsParams {
        eps: 1e-2,
        random_starts: 1,
        seed: 3,
        ..Default::default()
    };
    let r = eps_sharpness(&q, theta.view(), mask.view(), &p).unwrap();
    assert!(r.traces[0].iter().all(|&l| l == 0.0));
    let w = theta.mapv(|t| 1e-2 * (t.abs() + 1.0));
    let want = 0.5 * (&q.h * &w * &w).sum();
    assert_eq!(r.best_start, 1);
    assert_close("max loss", r.max_loss, want, quad_loss());
}

#[test]
fn quadratic_beta_is_hg_over_g_for_every_eta() {
    let (q, theta) = quadratic(30);
    let mask = Array1::ones(30);
    let etas = [1e-4, 1e-2, 0.5, 3.0];
    let r = beta_smoothness(&q, theta.view(), mask.view(), &etas).unwrap();
    let (_, g) = q.loss_grad(theta.view());
    let hg = &q.h * &g;
    let want = hg.dot(&hg).sqrt() / g.dot(&g).sqrt();
    for row in &r.rows {
        let eta = row.eta;
        assert_close(
            &format!("η {eta}: β vs ‖Hg‖/‖g‖"),
            row.beta,
            want,
            quad_ratio(),
        );
        let l = q.loss((&theta - &(row.eta * &g)).view());
        assert_close(&format!("η {eta}: L(θ−ηg)"), row.loss, l, quad_loss());
    }
    assert_close("β max", r.beta_max, want, quad_ratio());
    assert_eq!(r.gradients, 1 + etas.len());
    let losses: Vec<f64> = r.rows.iter().map(|r| r.loss).collect();
    let range = losses.iter().cloned().fold(f64::MIN, f64::max)
        - losses.iter().cloned().fold(f64::MAX, f64::min);
    assert_eq!(r.loss_range, range);
}

fn mlp_objective_data() -> (Model, ndarray::ArrayD<f32>, Vec<usize>) {
    let model = Model::load(
        &fixture("fixtures/models/mlp-res-mnist1d.safetensors"),
        None,
    )
    .unwrap();
    let ds = load(
        "mnist1d",
        &DataOptions {
            split: Split::Train,
            samples: None,
            normalize: None,
        },
    )
    .unwrap();
    let x = ds.x.slice_axis(Axis(0), (0..256).into()).to_owned();
    let y = ds.y[..256].to_vec();
    (model, x, y)
}

#[test]
fn matches_pytorch_reference() {
    let path = fixture("fixtures/reference/sharpness-mlp-res.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let f: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        f["fixture_version"],
        "1",
        "{}: stale fixture. HINT: regenerate with \
         `/work/venv/bin/python fixtures/generate/make_sharpness_reference.py`",
        path.display()
    );
    let num = |v: &serde_json::Value| v.as_f64().unwrap();
    let etas: Vec<f64> = f["etas"].as_array().unwrap().iter().map(num).collect();
    assert_eq!(
        etas,
        DEFAULT_ETAS.to_vec(),
        "the fixture scans the default η"
    );

    let (model, x, y) = mlp_objective_data();
    let obj = Objective::new(&model.graph, x.view(), &y, ObjectiveConfig::default()).unwrap();
    let oracle = ObjectiveOracle {
        objective: &obj,
        double_precision: true,
    };
    let theta = model.theta.cast::<f64>().data;
    let mask = PerturbedParams::Weights.mask(&model.graph.layout);
    let p = EpsParams {
        eps: num(&f["eps"]),
        iters: f["iters"].as_u64().unwrap() as usize,
        step: num(&f["step"]),
        ..Default::default()
    };
    let mut worst: f64 = 0.0;
    let mut check = |label: &str, got: f64, want: f64| {
        let c = assert_close(
            &format!("{label}: losscape vs torch"),
            got,
            want,
            tol(Dtype::F64, Quantity::Sharpness),
        );
        worst = worst.max(c.relative());
    };

    let r = eps_sharpness(&oracle, theta.view(), mask.view(), &p).unwrap();
    let e = &f["eps_sharpness"];
    let trace: Vec<f64> = e["trace"].as_array().unwrap().iter().map(num).collect();
    assert_eq!(trace.len(), r.traces[0].len());
    for (k, (&got, &want)) in r.traces[0].iter().zip(&trace).enumerate() {
        check(&format!("ascent loss at step {k}"), got, want);
    }
    check("ε-sharpness φ", r.sharpness, num(&e["sharpness"]));
    check("max loss", r.max_loss, num(&e["max_loss"]));
    assert_eq!(
        r.best_iteration as u64,
        e["best_iteration"].as_u64().unwrap()
    );

    let b = beta_smoothness(&oracle, theta.view(), mask.view(), &etas).unwrap();
    let fb = &f["beta_smoothness"];
    check("L(θ)", b.loss, num(&fb["loss"]));
    check("‖g‖", b.grad_norm, num(&fb["grad_norm"]));
    for (row, want) in b.rows.iter().zip(fb["rows"].as_array().unwrap()) {
        let eta = row.eta;
        check(&format!("L(θ−ηg), η={eta}"), row.loss, num(&want["loss"]));
        check(
            &format!("‖∇L(θ−ηg)−g‖, η={eta}"),
            row.grad_change,
            num(&want["grad_change"]),
        );
        check(&format!("β, η={eta}"), row.beta, num(&want["beta"]));
    }
    check("β max", b.beta_max, num(&fb["beta_max"]));
    check("loss range", b.loss_range, num(&fb["loss_range"]));
    eprintln!("worst relative difference from PyTorch: {worst:.1e}");
}

#[test]
fn same_bits_for_any_thread_count() {
    let (model, x, y) = mlp_objective_data();
    let obj = Objective::new(&model.graph, x.view(), &y, ObjectiveConfig::default()).unwrap();
    let theta = model.theta.cast::<f64>().data;
    let mask = PerturbedParams::Trainable.mask(&model.graph.layout);
    let p = EpsParams {
        iters: 4,
        random_starts: 1,
        seed: 5,
        ..Default::default()
    };
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let oracle = ObjectiveOracle {
                objective: &obj,
                double_precision: false,
            };
            let e = eps_sharpness(&oracle, theta.view(), mask.view(), &p).unwrap();
            let b = beta_smoothness(&oracle, theta.view(), mask.view(), &[0.01, 0.1]).unwrap();
            (e.traces, b.rows.iter().map(|r| r.beta).collect::<Vec<_>>())
        })
    };
    let (a, b) = (run(1), run(2));
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(a.0.len(), 2);
    for (ta, tb) in a.0.iter().zip(&b.0) {
        assert_eq!(bits(ta), bits(tb));
    }
    assert_eq!(bits(&a.1), bits(&b.1));
}

const MODEL: &str = "fixtures/models/mlp-res-mnist1d.safetensors";

#[test]
fn cli_json() {
    let out = bin()
        .env("OPENBLAS_CORETYPE", "Haswell")
        .args(["sharpness", "-m", MODEL, "-d", "mnist1d", "--samples", "64"])
        .args([
            "--iters",
            "3",
            "--etas",
            "0.01,0.1",
            "--precision",
            "f64",
            "--json",
        ])
        .output()
        .unwrap();
    let v = common::json(&out);
    assert_eq!(v["samples"], 64);
    assert_eq!(v["params"], "weights");
    assert_eq!(v["precision"], "f64");
    let e = &v["eps_sharpness"];
    assert_eq!(e["traces"][0].as_array().unwrap().len(), 4);
    assert!(e["sharpness"].as_f64().unwrap() >= 0.0);
    assert!(e["max_loss"].as_f64().unwrap() >= e["loss"].as_f64().unwrap());
    let b = &v["beta_smoothness"];
    assert_eq!(b["rows"].as_array().unwrap().len(), 2);
    assert!(b["beta_max"].as_f64().unwrap() > 0.0);
    assert_eq!(b["gradients"], 3);

    // text output and --no-eps
    let out = bin()
        .env("OPENBLAS_CORETYPE", "Haswell")
        .args(["sharpness", "-m", MODEL, "-d", "mnist1d", "--samples", "32"])
        .args(["--no-eps", "--etas", "0.1"])
        .output()
        .unwrap();
    let text = common::stdout(&common::assert_success("sharpness --no-eps", out));
    assert!(
        text.contains("β-smoothness") && !text.contains("ε-sharpness"),
        "{text}"
    );
}

#[test]
fn cli_bad_input_exits_2_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["--eps", "0"], "--eps"),
        (&["--eps=-0.1"], "--eps"),
        (&["--eps", "nan"], "--eps"),
        (&["--iters", "0"], "--iters"),
        (&["--etas", "0.1,NaN"], "--etas"),
        (&["--etas", "0"], "--etas"),
        (&["--etas", ""], "--etas"),
        (&["--step", "0"], "--step"),
        (&["--split", "train,test"], "--split"),
    ];
    for (extra, flag) in cases {
        let mut args = vec!["sharpness", "-m", MODEL, "-d", "mnist1d"];
        args.extend_from_slice(extra);
        let stderr = fails(&args, 2);
        assert!(stderr.contains(flag), "{extra:?}: {stderr}");
    }
    let stderr = fails(
        &["sharpness", "-m", "no/such.safetensors", "-d", "mnist1d"],
        2,
    );
    assert!(stderr.contains("no/such.safetensors"));
}
