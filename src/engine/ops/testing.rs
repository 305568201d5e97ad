//! Test oracles shared by the ops' tests: f64 central differences of each of an op's four
//! passes, the f32 passes against the f64 ones, and a graph-level check of the loss
//! gradient and H·v against central differences.
//!
//! With an op at (x, p), random u, w shaped like y and a random direction (dx, dp):
//!
//! ```text
//! backward    ⟨dx, Jₓᵀu⟩ + ⟨dp, Jₚᵀu⟩  vs  d/dt ⟨u, y(x + t dx, p + t dp)⟩
//! R-forward   R{y}(rx = dx, v = dp)   vs  d/dt y(x + t dx, p + t dp)
//! R-backward  R{g}(gy = u, R{gy} = w) vs  d/dt backward(x + t dx, p + t dp; gy = u + t w)
//! ```
//! each derivative a central difference with step 1e-6, compared elementwise to 1e-6 of
//! the larger of 1 and the largest magnitude compared. The R-passes are also checked with
//! every R{x} = `None` (zero), the path an op takes on the batch.

use std::sync::Arc;

use ndarray::{Array1, ArrayD, ArrayViewD, IxDyn};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal, Uniform};

use super::{EngineOp, Fwd, Grads, Mode, Taped};
use crate::engine::options::EngineOptions;
use crate::engine::{Graph, Layout, Op, Scalar};

/// Central-difference step.
const STEP: f64 = 1e-6;
/// Tolerance of a central difference, relative to max(1, largest magnitude compared).
pub const FD_TOL: f64 = 1e-6;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Standard normal values.
pub fn randn(shape: &[usize], rng: &mut ChaCha8Rng) -> ArrayD<f64> {
    let n = shape.iter().product();
    let v = (0..n).map(|_| StandardNormal.sample(rng)).collect();
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

/// Uniform values in `[lo, hi)`.
pub fn uniform(shape: &[usize], lo: f64, hi: f64, rng: &mut ChaCha8Rng) -> ArrayD<f64> {
    let u = Uniform::new(lo, hi).unwrap();
    let n = shape.iter().product();
    let v = (0..n).map(|_| u.sample(rng)).collect();
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

/// Elementwise |a − b| ≤ tol · max(1, max |b|), with the worst element in the message.
pub fn assert_close(what: &str, a: &ArrayD<f64>, b: &ArrayD<f64>, tol: f64) {
    assert_eq!(a.shape(), b.shape(), "{what}: shapes");
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let (mut worst, mut at) = (0.0f64, 0);
    for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
        let d = (x - y).abs();
        if d > worst || d.is_nan() {
            (worst, at) = (d, i);
        }
    }
    assert!(
        worst <= tol * scale,
        "{what}: |a − b| = {worst:e} at flat index {at} ({} vs {}), scale {scale:e}, tol {tol:e}",
        a.iter().nth(at).unwrap(),
        b.iter().nth(at).unwrap()
    );
}

fn cast<T: Scalar>(a: &ArrayD<f64>) -> ArrayD<T> {
    a.mapv(T::from_f)
}

fn back<T: Scalar>(a: &ArrayD<T>) -> ArrayD<f64> {
    a.mapv(|v| v.as_f64())
}

fn views<T>(a: &[ArrayD<T>]) -> Vec<ArrayViewD<'_, T>> {
    a.iter().map(|t| t.view()).collect()
}

/// x + t·d for each pair.
fn shift(x: &[ArrayD<f64>], d: &[ArrayD<f64>], t: f64) -> Vec<ArrayD<f64>> {
    x.iter().zip(d).map(|(x, d)| x + &(d * t)).collect()
}

fn zeros_like(x: &[ArrayD<f64>]) -> Vec<ArrayD<f64>> {
    x.iter().map(|x| ArrayD::zeros(x.raw_dim())).collect()
}

/// An op evaluated at fixed inputs and parameters (any precision).
pub struct At<'o, O, T> {
    pub op: &'o O,
    pub x: Vec<ArrayD<T>>,
    pub p: Vec<ArrayD<T>>,
    pub options: EngineOptions,
}

/// Gradients as dense arrays (`None` → zeros shaped like `like`).
fn dense<T: Scalar>(g: Vec<Option<ArrayD<T>>>, like: &[ArrayD<T>]) -> Vec<ArrayD<f64>> {
    (0..like.len())
        .map(|k| match g.get(k).and_then(|a| a.as_ref()) {
            Some(a) => {
                assert_eq!(a.shape(), like[k].shape(), "gradient {k} shape");
                back(a)
            }
            None => ArrayD::zeros(like[k].raw_dim()),
        })
        .collect()
}

impl<'o, O: EngineOp, T: Scalar> At<'o, O, T> {
    pub fn new(op: &'o O, x: &[ArrayD<f64>], p: &[ArrayD<f64>]) -> Self {
        At {
            op,
            x: x.iter().map(cast).collect(),
            p: p.iter().map(cast).collect(),
            options: EngineOptions::default(),
        }
    }

    pub fn forward(&self) -> (ArrayD<T>, O::Cache<T>) {
        let xs: Vec<&ArrayD<T>> = self.x.iter().collect();
        let p = views(&self.p);
        self.op.forward(&Fwd {
            options: &self.options,
            mode: Mode::Eval,
            x: &xs,
            p: &p,
            affine: None,
        })
    }

    fn taped<'a>(
        &'a self,
        xs: &'a [&'a ArrayD<T>],
        y: &'a ArrayD<T>,
        (p, v): (&'a [ArrayViewD<'a, T>], &'a [ArrayViewD<'a, T>]),
        rx: &'a [Option<&'a ArrayD<T>>],
        need_dx: &'a [bool],
    ) -> Taped<'a, T> {
        Taped {
            options: &self.options,
            x: xs,
            y,
            y_less: None,
            p,
            v,
            rx,
            need_dx,
            want_dp: true,
        }
    }

    /// (dx per input, dp per parameter) from dL/dy = `gy`, as f64.
    pub fn backward(&self, gy: &ArrayD<f64>) -> (Vec<ArrayD<f64>>, Vec<ArrayD<f64>>) {
        let (y, c) = self.forward();
        let xs: Vec<&ArrayD<T>> = self.x.iter().collect();
        let p = views(&self.p);
        let need = vec![true; xs.len()];
        let rx = vec![None; xs.len()];
        let a = self.taped(&xs, &y, (&p, &[]), &rx, &need);
        let g: Grads<T> = self.op.backward(&a, &c, cast(gy));
        (dense(g.dx, &self.x), dense(g.dp, &self.p))
    }

    /// (R{y}, R{dx} per input, R{dp} per parameter) along (rx, v) with gy, R{gy}.
    #[allow(clippy::type_complexity)]
    pub fn r_passes(
        &self,
        rx: &[Option<ArrayD<f64>>],
        v: &[ArrayD<f64>],
        gy: &ArrayD<f64>,
        rgy: &ArrayD<f64>,
    ) -> (Option<ArrayD<f64>>, Vec<ArrayD<f64>>, Vec<ArrayD<f64>>) {
        let (y, c) = self.forward();
        let xs: Vec<&ArrayD<T>> = self.x.iter().collect();
        let p = views(&self.p);
        let v: Vec<ArrayD<T>> = v.iter().map(cast).collect();
        let vv = views(&v);
        let rx: Vec<Option<ArrayD<T>>> = rx.iter().map(|r| r.as_ref().map(cast)).collect();
        let rxr: Vec<Option<&ArrayD<T>>> = rx.iter().map(|r| r.as_ref()).collect();
        let need = vec![true; xs.len()];
        let a = self.taped(&xs, &y, (&p, &vv), &rxr, &need);
        let (ry, rc) = self.op.r_forward(&a, &c);
        if let Some(r) = &ry {
            assert_eq!(r.shape(), y.shape(), "R{{y}} shape");
        }
        let g = self.op.r_backward(&a, &c, &rc, &cast(gy), cast::<T>(rgy));
        (
            ry.map(|r| back(&r)),
            dense(g.dx, &self.x),
            dense(g.dp, &self.p),
        )
    }
}

/// y(x + t dx, p + t dp) in f64.
fn y_at<O: EngineOp>(op: &O, x: &[ArrayD<f64>], p: &[ArrayD<f64>]) -> ArrayD<f64> {
    At::<O, f64>::new(op, x, p).forward().0
}

/// Checks all four passes of `op` at inputs `x` and parameters `p` against f64 central
/// differences (see the module docs), the shape rule against the forward pass, and the
/// f32 passes against the f64 ones (forward to `f32_tol` relative, the others to 100×).
pub fn check_op<O: EngineOp>(op: &O, x: &[ArrayD<f64>], p: &[ArrayD<f64>], f32_tol: f64) {
    let mut rng = rng(11);
    let at = At::<O, f64>::new(op, x, p);
    let y = at.forward().0;
    let shapes: Vec<&[usize]> = x.iter().map(|a| a.shape()).collect();
    assert_eq!(
        op.infer_shape(&shapes)
            .expect("shape rule accepts the inputs"),
        y.shape(),
        "infer_shape vs forward"
    );
    let (u, w) = (randn(y.shape(), &mut rng), randn(y.shape(), &mut rng));
    let dx: Vec<ArrayD<f64>> = x.iter().map(|a| randn(a.shape(), &mut rng)).collect();
    let dp: Vec<ArrayD<f64>> = p.iter().map(|a| randn(a.shape(), &mut rng)).collect();

    let y_along = |dx: &[ArrayD<f64>], dp: &[ArrayD<f64>], t: f64| {
        y_at(op, &shift(x, dx, t), &shift(p, dp, t))
    };
    let fd_y = |dx: &[ArrayD<f64>], dp: &[ArrayD<f64>]| {
        (y_along(dx, dp, STEP) - y_along(dx, dp, -STEP)) / (2.0 * STEP)
    };

    // backward: directional derivatives of ⟨u, y⟩ along each input, the parameters, all
    let (gx, gp) = at.backward(&u);
    let dot = |a: &[ArrayD<f64>], b: &[ArrayD<f64>]| -> f64 {
        a.iter().zip(b).map(|(a, b)| (a * b).sum()).sum()
    };
    // (what, input directions, parameter directions)
    type Case = (String, Vec<ArrayD<f64>>, Vec<ArrayD<f64>>);
    let mut cases: Vec<Case> = vec![];
    for k in 0..x.len() {
        let mut d = zeros_like(x);
        d[k] = dx[k].clone();
        cases.push((format!("input {k}"), d, zeros_like(p)));
    }
    if !p.is_empty() {
        cases.push(("parameters".into(), zeros_like(x), dp.clone()));
    }
    cases.push(("all".into(), dx.clone(), dp.clone()));
    for (what, d, e) in &cases {
        let fd = (&fd_y(d, e) * &u).sum();
        let an = dot(&gx, d) + dot(&gp, e);
        let tol = FD_TOL * an.abs().max(1.0);
        assert!(
            (fd - an).abs() <= tol,
            "backward along {what}: analytic {an} vs central difference {fd}"
        );
    }

    // R-passes along (dx, dp), and along (0, dp) with every R{x} = None
    let bwd_along = |dx: &[ArrayD<f64>], dp: &[ArrayD<f64>], t: f64| {
        let at = At::<O, f64>::new(op, &shift(x, dx, t), &shift(p, dp, t));
        at.backward(&(&u + &(&w * t)))
    };
    for with_rx in [true, false] {
        let d = if with_rx { dx.clone() } else { zeros_like(x) };
        let rx: Vec<Option<ArrayD<f64>>> = d.iter().map(|d| with_rx.then(|| d.clone())).collect();
        let (ry, rgx, rgp) = at.r_passes(&rx, &dp, &u, &w);
        let ry = ry.unwrap_or_else(|| ArrayD::zeros(y.raw_dim()));
        let label = if with_rx { "R{x} given" } else { "R{x} None" };
        assert_close(&format!("R-forward, {label}"), &ry, &fd_y(&d, &dp), FD_TOL);
        let (plus, minus) = (bwd_along(&d, &dp, STEP), bwd_along(&d, &dp, -STEP));
        let pairs = |an: &[ArrayD<f64>], plus: &[ArrayD<f64>], minus: &[ArrayD<f64>], what| {
            for (k, ((an, p), m)) in an.iter().zip(plus).zip(minus).enumerate() {
                let fd = (p - m) / (2.0 * STEP);
                assert_close(&format!("R-backward {what}{k}, {label}"), an, &fd, FD_TOL);
            }
        };
        assert_eq!((rgx.len(), rgp.len()), (x.len(), p.len()));
        pairs(&rgx, &plus.0, &minus.0, "dx");
        pairs(&rgp, &plus.1, &minus.1, "dp");
    }

    // f32 against f64
    let at32 = At::<O, f32>::new(op, x, p);
    assert_close("f32 forward", &back(&at32.forward().0), &y, f32_tol);
    let (gx32, gp32) = at32.backward(&u);
    for (a, b) in gx32.iter().zip(&gx).chain(gp32.iter().zip(&gp)) {
        assert_close("f32 backward", a, b, 100.0 * f32_tol);
    }
    let rx: Vec<Option<ArrayD<f64>>> = dx.iter().map(|d| Some(d.clone())).collect();
    let (ry64, rgx64, rgp64) = at.r_passes(&rx, &dp, &u, &w);
    let (ry32, rgx32, rgp32) = at32.r_passes(&rx, &dp, &u, &w);
    if let (Some(a), Some(b)) = (&ry32, &ry64) {
        assert_close("f32 R-forward", a, b, 100.0 * f32_tol);
    }
    for (a, b) in rgx32.iter().zip(&rgx64).chain(rgp32.iter().zip(&rgp64)) {
        assert_close("f32 R-backward", a, b, 100.0 * f32_tol);
    }
}

/// A graph with its θ, batch and labels, for graph-level oracles.
pub struct GraphCase {
    pub g: Graph,
    pub theta: Array1<f64>,
    pub x: ArrayD<f64>,
    pub y: Vec<usize>,
}

impl GraphCase {
    fn loss(&self, theta: &Array1<f64>) -> f64 {
        let v = self
            .g
            .loss_batch(theta.view(), &self.x, &self.y, Mode::Eval);
        v.sum / self.y.len() as f64
    }

    fn grad(&self, theta: &Array1<f64>) -> Array1<f64> {
        let mut g = Array1::zeros(theta.len());
        self.g
            .grad_batch(theta.view(), &self.x, &self.y, Mode::Eval, g.view_mut());
        g / self.y.len() as f64
    }

    fn hvp(&self, v: &Array1<f64>) -> Array1<f64> {
        let mut hv = Array1::zeros(v.len());
        self.g.hvp_batch(
            self.theta.view(),
            v.view(),
            &self.x,
            &self.y,
            Mode::Eval,
            hv.view_mut(),
        );
        hv / self.y.len() as f64
    }

    /// ⟨g, v⟩ against a central difference of the loss, H·v against central differences
    /// of the gradient (relative 1e-6 of the largest component), and ⟨u, Hv⟩ = ⟨v, Hu⟩.
    pub fn check(&self) {
        let mut rng = rng(5);
        let g = self.grad(&self.theta);
        let n = self.theta.len();
        let dir = |rng: &mut ChaCha8Rng| -> Array1<f64> {
            Array1::from_iter(randn(&[n], rng).iter().copied())
        };
        for _ in 0..2 {
            let v = dir(&mut rng);
            let (tp, tm) = (&self.theta + &(&v * STEP), &self.theta - &(&v * STEP));
            let fd = (self.loss(&tp) - self.loss(&tm)) / (2.0 * STEP);
            let an = g.dot(&v);
            assert!(
                (fd - an).abs() <= FD_TOL * an.abs().max(1.0),
                "⟨g, v⟩ = {an} vs central difference {fd}"
            );
            let fd = (self.grad(&tp) - self.grad(&tm)) / (2.0 * STEP);
            let hv = self.hvp(&v);
            assert_close("H·v", &hv.into_dyn(), &fd.into_dyn(), FD_TOL);
        }
        let (u, v) = (dir(&mut rng), dir(&mut rng));
        let (a, b) = (u.dot(&self.hvp(&v)), v.dot(&self.hvp(&u)));
        assert!(
            (a - b).abs() <= 1e-10 * a.abs().max(1.0),
            "⟨u, Hv⟩ = {a} vs ⟨v, Hu⟩ = {b}"
        );
    }
}

/// An empty graph on per-sample inputs of `input_shape` with `classes` outputs and
/// parameters `layout`, with its input node (node 0).
pub fn graph(input_shape: &[usize], classes: usize, layout: Layout) -> Graph {
    let mut g = Graph {
        nodes: vec![],
        layout: Arc::new(layout),
        loss: crate::engine::Loss::CrossEntropy,
        input_shape: input_shape.to_vec(),
        num_classes: classes,
        options: EngineOptions::default(),
    };
    g.push("input", Op::Input, &[], &[]);
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ops::{
        BinaryKind, GroupNorm, LayerNorm, PointwiseFn, Reduce, ReduceKind, Softmax,
    };
    use crate::engine::Role;

    /// A small graph of every group-A op where both inputs of the products depend on θ
    /// (so dy depends on θ in each R-backward): the loss gradient and H·v against central
    /// differences, and the symmetry of H.
    #[test]
    fn graph_gradient_and_hvp() {
        let (n, t, d) = (3, 4, 6);
        let mut layout = Layout::new();
        let ln = [
            layout.push("ln.weight", &[d], Role::BnScale),
            layout.push("ln.bias", &[d], Role::BnShift),
        ];
        let gn = [
            layout.push("gn.weight", &[t], Role::BnScale),
            layout.push("gn.bias", &[t], Role::BnShift),
        ];
        let ln2 = [layout.push("ln2.weight", &[t, d], Role::BnScale)];
        let mut g = graph(&[t, d], d, layout);
        let pw = |f| Op::Pointwise(f);
        let bin = |k| Op::Binary(k);
        let x1 = g.push(
            "ln",
            Op::LayerNorm(LayerNorm {
                axes_from: 2,
                eps: 1e-5,
                affine: true,
                bias: true,
            }),
            &[0],
            &ln,
        );
        let x2 = g.push("", pw(PointwiseFn::GeluTanh), &[x1], &[]);
        let x3 = g.push("", bin(BinaryKind::Mul), &[x2, x1], &[]);
        let x4 = g.push(
            "",
            Op::Softmax(Softmax {
                axis: 2,
                log: false,
            }),
            &[x3],
            &[],
        );
        let gnorm = GroupNorm {
            groups: 2,
            eps: 1e-5,
            affine: true,
        };
        let x5 = g.push("gn", Op::GroupNorm(gnorm), &[x4], &gn);
        let x6 = g.push("", pw(PointwiseFn::Tanh), &[x5], &[]);
        // a per-sample [N, 1, D] mean broadcast back over the tokens
        let mean_t = Reduce {
            kind: ReduceKind::Mean,
            axes: vec![1],
            keepdims: true,
        };
        let x7 = g.push("", Op::Reduce(mean_t), &[x1], &[]);
        let x8 = g.push("", pw(PointwiseFn::Sigmoid), &[x7], &[]);
        let x9 = g.push("", bin(BinaryKind::Div), &[x6, x8], &[]);
        let x10 = g.push("", bin(BinaryKind::Sub), &[x9, x2], &[]);
        let x11 = g.push("", pw(PointwiseFn::Pow(2.0)), &[x10], &[]);
        let x12 = g.push("", pw(PointwiseFn::Silu), &[x11], &[]);
        let x13 = g.push("", bin(BinaryKind::Add), &[x12, x7], &[]);
        let ln_all = LayerNorm {
            axes_from: 1,
            eps: 1e-5,
            affine: true,
            bias: false,
        };
        let x14 = g.push("ln2", Op::LayerNorm(ln_all), &[x13], &ln2);
        let x15 = g.push("", Op::Softmax(Softmax { axis: 1, log: true }), &[x14], &[]);
        let mean = Reduce {
            kind: ReduceKind::Mean,
            axes: vec![1],
            keepdims: false,
        };
        g.push("", Op::Reduce(mean), &[x15], &[]);
        g.infer_shapes(&[t, d], n).expect("shapes");

        let mut r = rng(3);
        let mut theta = randn(&[g.layout.len()], &mut r) * 0.3;
        for i in [ln[0], gn[0], ln2[0]] {
            let range = g.layout.tensor(i).range();
            theta
                .slice_mut(ndarray::s![range])
                .mapv_inplace(|v| v + 1.0);
        }
        let case = GraphCase {
            theta: Array1::from_iter(theta.iter().copied()),
            x: randn(&[n, t, d], &mut r),
            y: vec![1, 4, 0],
            g,
        };
        case.check();
    }
}
