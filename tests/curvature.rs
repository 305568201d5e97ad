//! Gauss–Newton-type curvature operators (GGN, Fisher, empirical Fisher) against dense
//! matrices built independently: the Jacobian of the logits by central differences (exact
//! to rounding where the logits are multilinear in each parameter: eval mode), the loss's output
//! Hessian written out, and per-sample gradients from batches of one. Also: PSD, Lanczos on
//! the operator equals the dense spectrum, blocks are principal submatrices, and the
//! sampled Fisher tends to the GGN (cross-entropy) as labels per sample grow.

use losscape::engine::curvature::{label_seed, sample_labels};
use losscape::engine::{Graph, Loss, Mode, ParamVec, Role};
use losscape::hessian::{
    top_eigenpairs, HessianOperator, HessianOptions, LanczosParams, LinearOperator, ParamSubset,
    Which,
};
use losscape::model::{Arch, Model};
use losscape::objective::{Curvature, Objective, ObjectiveConfig};
use ndarray::{s, Array1, Array2, ArrayD, Axis, IxDyn};
use ndarray_linalg::{Eigh, UPLO};

/// A zoo model with non-trivial batch-norm statistics and affine parameters.
fn model(arch: &str, seed: u64) -> Model {
    let arch: Arch = arch.parse().unwrap();
    let mut m = Model::init(arch, seed, false);
    let layout = m.theta.layout.clone();
    for (i, t) in layout.tensors().iter().enumerate() {
        let mut a = m.theta.tensor_mut(i);
        for (k, v) in a.iter_mut().enumerate() {
            let wobble = ((k * 7 + i * 3) % 11) as f32 / 11.0 - 0.5;
            match t.role {
                Role::RunningMean => *v = 0.2 * wobble,
                Role::RunningVar => *v = 1.0 + 0.6 * wobble,
                Role::BnScale => *v = 1.0 + 0.3 * wobble,
                Role::BnShift | Role::Bias => *v = 0.2 * wobble,
                Role::Weight => {}
            }
        }
    }
    m
}

fn batch(shape: &[usize], classes: usize) -> (ArrayD<f32>, Vec<usize>) {
    let n = shape[0];
    let x = ArrayD::from_shape_fn(IxDyn(shape), |i: IxDyn| {
        let h: usize = ndarray::Dimension::slice(&i)
            .iter()
            .enumerate()
            .map(|(k, &v)| v * (5 + 4 * k))
            .sum();
        ((h * 37) % 23) as f32 / 23.0 - 0.5
    });
    (x, (0..n).map(|i| (i * 2 + 1) % classes).collect())
}

/// The dense matrix of an operator, column by column.
fn dense(op: &dyn LinearOperator) -> Array2<f64> {
    let n = op.dim();
    let mut a = Array2::zeros((n, n));
    for j in 0..n {
        let mut e = Array1::zeros(n);
        e[j] = 1.0;
        op.apply(e.view(), a.column_mut(j));
    }
    a
}

fn f64_options(c: Curvature) -> HessianOptions {
    HessianOptions {
        double_precision: true,
        curvature: c,
        ..Default::default()
    }
}

/// Flat indices of the trainable scalars (the operator's order).
fn trainable(theta: &ParamVec<f32>) -> Vec<usize> {
    let l = &theta.layout;
    l.tensors()
        .iter()
        .filter(|t| t.role.is_trainable())
        .flat_map(|t| t.range())
        .collect()
}

/// Jₙ = ∂zₙ/∂θ over the trainable scalars, `[N, K, P]`, by central differences in f64.
fn jacobian(
    g: &Graph,
    theta: &Array1<f64>,
    idx: &[usize],
    x: &ArrayD<f64>,
    mode: Mode,
    h: f64,
) -> ndarray::Array3<f64> {
    let z0 = g.logits(theta.view(), x, mode);
    let (n, k) = (z0.shape()[0], z0.shape()[1]);
    let mut j = ndarray::Array3::zeros((n, k, idx.len()));
    for (p, &i) in idx.iter().enumerate() {
        let mut tp = theta.clone();
        tp[i] += h;
        let mut tm = theta.clone();
        tm[i] -= h;
        let d = (g.logits(tp.view(), x, mode) - g.logits(tm.view(), x, mode)) / (2.0 * h);
        j.slice_mut(s![.., .., p])
            .assign(&d.into_dimensionality::<ndarray::Ix2>().unwrap());
    }
    j
}

/// Softmax probabilities of the logits at θ (`[N, K]`).
fn probs(g: &Graph, theta: &Array1<f64>, x: &ArrayD<f64>, y: &[usize], mode: Mode) -> Array2<f64> {
    let z = g.logits(theta.view(), x, mode);
    g.loss.forward(&z, y).1.probs
}

/// (1/N) Σₙ Jₙᵀ Mₙ Jₙ.
fn sandwich(j: &ndarray::Array3<f64>, m: &[Array2<f64>]) -> Array2<f64> {
    let n = j.shape()[0];
    let p = j.shape()[2];
    let mut out = Array2::zeros((p, p));
    for (jn, mn) in j.axis_iter(Axis(0)).zip(m) {
        out += &jn.t().dot(&mn.dot(&jn));
    }
    out / n as f64
}

/// The loss's GGN factor of each sample: CE diag(p) − ppᵀ; MSE (2/K) S S with S that.
fn loss_factor(loss: Loss, p: &Array2<f64>) -> Vec<Array2<f64>> {
    p.rows()
        .into_iter()
        .map(|pr| {
            let k = pr.len();
            let s = Array2::from_diag(&pr) - outer(&pr.to_owned(), &pr.to_owned());
            match loss {
                Loss::CrossEntropy => s,
                Loss::Mse => s.dot(&s) * (2.0 / k as f64),
            }
        })
        .collect()
}

fn outer(a: &Array1<f64>, b: &Array1<f64>) -> Array2<f64> {
    let (n, m) = (a.len(), b.len());
    Array2::from_shape_fn((n, m), |(i, j)| a[i] * b[j])
}

/// ∇_z ℓ(zₙ, labelₙ) rows (d ℓ/dz of the loss, as the engine's backward pass states it).
fn loss_grads(loss: Loss, p: &Array2<f64>, labels: &[usize]) -> Array2<f64> {
    let k = p.ncols();
    let mut u = p.clone();
    for (mut r, &l) in u.rows_mut().into_iter().zip(labels) {
        match loss {
            Loss::CrossEntropy => r[l] -= 1.0,
            Loss::Mse => {
                let pr = r.to_owned();
                let mut t = Array1::<f64>::zeros(k);
                t[l] = 1.0;
                let d = (&pr - &t) * (2.0 / k as f64);
                let pd = pr.dot(&d);
                r.assign(&(&pr * &(d - pd)));
            }
        }
    }
    u
}

fn rel_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    (a - b).iter().fold(0.0f64, |m, v| m.max(v.abs())) / scale
}

fn assert_psd(a: &Array2<f64>, what: &str) -> Array1<f64> {
    let asym = rel_diff(a, &a.t().to_owned());
    assert!(asym < 1e-12, "{what}: asymmetric by {asym:e}");
    let (ev, _) = a.eigh(UPLO::Lower).unwrap();
    let top = ev[ev.len() - 1];
    assert!(top > 0.0, "{what}: no positive eigenvalue");
    assert!(ev[0] > -1e-10 * top, "{what}: λmin {} of λmax {top}", ev[0]);
    ev
}

struct Case {
    arch: &'static str,
    shape: &'static [usize],
    loss: Loss,
    mode: Mode,
    /// Finite-difference step: central differences are exact (to rounding) where the logits
    /// are multilinear in each parameter and no ReLU changes side, hence a small step.
    h: f64,
    tol: f64,
}

const CASES: &[Case] = &[
    Case {
        arch: "mlp:in_features=5,depth=2,width=4,residual=true,num_classes=3",
        shape: &[7, 5],
        loss: Loss::CrossEntropy,
        mode: Mode::Eval,
        h: 1e-6,
        tol: 1e-8,
    },
    Case {
        arch: "resnet-cifar:depth=8,width=1,in_channels=1,input_size=4,num_classes=3",
        shape: &[5, 1, 4, 4],
        loss: Loss::CrossEntropy,
        mode: Mode::Eval,
        h: 1e-6,
        tol: 1e-8,
    },
    Case {
        arch: "mlp:in_features=5,depth=1,width=4,num_classes=4",
        shape: &[6, 5],
        loss: Loss::Mse,
        mode: Mode::Eval,
        h: 1e-6,
        tol: 1e-8,
    },
    // batch statistics make the logits non-multilinear: O(h²) differences
    Case {
        arch: "mlp:in_features=5,depth=2,width=4,batchnorm=true,num_classes=3",
        shape: &[6, 5],
        loss: Loss::CrossEntropy,
        mode: Mode::Train,
        h: 1e-5,
        tol: 1e-6,
    },
];

/// GGN, empirical and sampled Fisher operators equal (1/N) Σₙ Jₙᵀ Mₙ Jₙ built from the
/// finite-difference Jacobian and the output factors written out here; all are PSD.
#[test]
fn operators_equal_explicit_jacobian_sandwiches() {
    for c in CASES {
        let mut m = model(c.arch, 1);
        m.graph.loss = c.loss;
        let (x, y) = batch(c.shape, m.graph.num_classes);
        let cfg = ObjectiveConfig {
            batch_size: 64,
            mode: c.mode,
        };
        let o = Objective::new(&m.graph, x.view(), &y, cfg).unwrap();
        let theta = m.theta.data.mapv(|v| v as f64);
        let x64 = x.mapv(|v| v as f64);
        let idx = trainable(&m.theta);
        let j = jacobian(&m.graph, &theta, &idx, &x64, c.mode, c.h);
        let p = probs(&m.graph, &theta, &x64, &y, c.mode);
        let what = |k: &str| format!("{} {:?} {:?} {k}", c.arch, c.loss, c.mode);

        let ggn = dense(&HessianOperator::new(
            &o,
            &m.theta,
            &ParamSubset::Trainable,
            f64_options(Curvature::Ggn),
        ));
        let want = sandwich(&j, &loss_factor(c.loss, &p));
        let d = rel_diff(&ggn, &want);
        assert!(d < c.tol, "{}: {d:e}", what("GGN"));
        assert_psd(&ggn, &what("GGN"));

        let emp = dense(&HessianOperator::new(
            &o,
            &m.theta,
            &ParamSubset::Trainable,
            f64_options(Curvature::EmpiricalFisher),
        ));
        let u = loss_grads(c.loss, &p, &y);
        let outers: Vec<Array2<f64>> = u
            .rows()
            .into_iter()
            .map(|r| outer(&r.to_owned(), &r.to_owned()))
            .collect();
        let d = rel_diff(&emp, &sandwich(&j, &outers));
        assert!(d < c.tol, "{}: {d:e}", what("empirical Fisher"));
        assert_psd(&emp, &what("empirical Fisher"));

        let (seed, draws) = (5, 3);
        let fisher = dense(&HessianOperator::new(
            &o,
            &m.theta,
            &ParamSubset::Trainable,
            f64_options(Curvature::Fisher {
                seed,
                samples: draws,
            }),
        ));
        let seeds: Vec<u64> = (0..y.len()).map(|i| label_seed(seed, i)).collect();
        let labels = sample_labels(&p, &seeds, draws);
        let mut mids: Vec<Array2<f64>> = vec![Array2::zeros((p.ncols(), p.ncols())); y.len()];
        for l in &labels {
            let u = loss_grads(c.loss, &p, l);
            for (mid, r) in mids.iter_mut().zip(u.rows()) {
                *mid += &(outer(&r.to_owned(), &r.to_owned()) / draws as f64);
            }
        }
        let d = rel_diff(&fisher, &sandwich(&j, &mids));
        assert!(d < c.tol, "{}: {d:e}", what("Fisher"));
        assert_psd(&fisher, &what("Fisher"));
    }
}

/// In eval mode the Fisher products equal (1/N) Σₙ gₙ gₙᵀ from per-sample gradients
/// (batches of one), at the data's labels and at the sampled ones.
#[test]
fn fisher_equals_mean_outer_product_of_per_sample_gradients() {
    let m = model(
        "resnet-cifar:depth=8,width=1,in_channels=1,input_size=4,num_classes=3",
        2,
    );
    let (x, y) = batch(&[6, 1, 4, 4], 3);
    let o = Objective::new(&m.graph, x.view(), &y, ObjectiveConfig::default()).unwrap();
    let theta = m.theta.data.mapv(|v| v as f64);
    let x64 = x.mapv(|v| v as f64);
    let idx = trainable(&m.theta);
    let grad_of = |n: usize, label: usize| -> Array1<f64> {
        let xn = x64.slice_axis(Axis(0), (n..n + 1).into()).to_owned();
        let mut g = Array1::zeros(theta.len());
        m.graph
            .grad_batch(theta.view(), &xn, &[label], Mode::Eval, g.view_mut());
        idx.iter().map(|&i| g[i]).collect()
    };
    let mean_outer = |labels: &[Vec<usize>]| -> Array2<f64> {
        let mut f = Array2::zeros((idx.len(), idx.len()));
        for l in labels {
            for (n, &label) in l.iter().enumerate() {
                let g = grad_of(n, label);
                f += &outer(&g, &g);
            }
        }
        f / (y.len() * labels.len()) as f64
    };
    let emp = dense(&HessianOperator::new(
        &o,
        &m.theta,
        &ParamSubset::Trainable,
        f64_options(Curvature::EmpiricalFisher),
    ));
    let d = rel_diff(&emp, &mean_outer(std::slice::from_ref(&y)));
    assert!(d < 1e-12, "empirical Fisher: {d:e}");
    let p = probs(&m.graph, &theta, &x64, &y, Mode::Eval);
    let seeds: Vec<u64> = (0..y.len()).map(|i| label_seed(9, i)).collect();
    let labels = sample_labels(&p, &seeds, 2);
    let fisher = dense(&HessianOperator::new(
        &o,
        &m.theta,
        &ParamSubset::Trainable,
        f64_options(Curvature::Fisher {
            seed: 9,
            samples: 2,
        }),
    ));
    let d = rel_diff(&fisher, &mean_outer(&labels));
    assert!(d < 1e-12, "Fisher: {d:e}");
}

/// Every spectral method sees a PSD operator: Lanczos top-3 and bottom-2 of the GGN equal
/// the dense eigenvalues; a block's operator is the principal submatrix (plus weight decay).
#[test]
fn lanczos_and_blocks_on_the_ggn() {
    let m = model(
        "resnet-cifar:depth=8,width=1,in_channels=1,input_size=4,num_classes=3",
        3,
    );
    let (x, y) = batch(&[8, 1, 4, 4], 3);
    let o = Objective::new(
        &m.graph,
        x.view(),
        &y,
        ObjectiveConfig {
            batch_size: 3,
            mode: Mode::Eval,
        },
    )
    .unwrap();
    let op = HessianOperator::new(
        &o,
        &m.theta,
        &ParamSubset::Trainable,
        f64_options(Curvature::Ggn),
    );
    let full = dense(&op);
    let ev = assert_psd(&full, "GGN");
    let n = ev.len();
    for which in [Which::Largest, Which::Smallest] {
        let k = if which == Which::Largest { 3 } else { 2 };
        let r = top_eigenpairs(
            &op,
            &LanczosParams {
                k,
                max_iter: n,
                tol: 1e-10,
                seed: 1,
                which,
                keep_vectors: false,
            },
        )
        .unwrap();
        for (i, got) in r.values.iter().enumerate() {
            let want = if which == Which::Largest {
                ev[n - 1 - i]
            } else {
                ev[i]
            };
            assert!(
                (got - want).abs() <= 1e-8 * ev[n - 1],
                "{which:?} {i}: {got} vs {want}"
            );
        }
    }
    let keep = |t: &losscape::engine::TensorSpec| t.name.starts_with("layer2");
    let block = dense(&HessianOperator::restricted(
        &o,
        &m.theta,
        keep,
        HessianOptions {
            weight_decay: 0.5,
            ..f64_options(Curvature::Ggn)
        },
    ));
    let all: Vec<bool> = m
        .theta
        .layout
        .tensors()
        .iter()
        .filter(|t| t.role.is_trainable())
        .flat_map(|t| std::iter::repeat_n(keep(t), t.len()))
        .collect();
    let sel: Vec<usize> = all
        .iter()
        .enumerate()
        .filter(|(_, &k)| k)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(block.nrows(), sel.len());
    for (a, &i) in sel.iter().enumerate() {
        for (b, &j) in sel.iter().enumerate() {
            let want = full[[i, j]] + if a == b { 0.5 } else { 0.0 };
            assert!(
                (block[[a, b]] - want).abs() <= 1e-13 * ev[n - 1],
                "[{a},{b}]"
            );
        }
    }
}

/// For cross-entropy the Fisher's expectation over the sampled labels is the GGN
/// (Martens 2014, §9.2): with 4000 labels per sample it is within Monte-Carlo error.
#[test]
fn sampled_fisher_tends_to_the_ggn() {
    let m = model("mlp:in_features=5,depth=1,width=4,num_classes=3", 4);
    let (x, y) = batch(&[5, 5], 3);
    let o = Objective::new(&m.graph, x.view(), &y, ObjectiveConfig::default()).unwrap();
    let g = dense(&HessianOperator::new(
        &o,
        &m.theta,
        &ParamSubset::Trainable,
        f64_options(Curvature::Ggn),
    ));
    let f = dense(&HessianOperator::new(
        &o,
        &m.theta,
        &ParamSubset::Trainable,
        f64_options(Curvature::Fisher {
            seed: 0,
            samples: 4000,
        }),
    ));
    let fro = |a: &Array2<f64>| a.iter().map(|v| v * v).sum::<f64>().sqrt();
    let rel = fro(&(&f - &g)) / fro(&g);
    assert!(rel < 0.05, "‖F − G‖/‖G‖ = {rel}");
    let one = dense(&HessianOperator::new(
        &o,
        &m.theta,
        &ParamSubset::Trainable,
        f64_options(Curvature::Fisher {
            seed: 0,
            samples: 1,
        }),
    ));
    assert!(
        fro(&(&one - &g)) / fro(&g) > rel,
        "one label per sample is a noisier estimate"
    );
}
