//! Test oracles for one op on its own: f64 central differences of the forward pass check
//! the backward pass (per coordinate, of ⟨u, y⟩ for a random u) and the R-forward pass
//! (a directional derivative), central differences of the backward pass (dy fixed, then
//! along R{dy}) check the R-backward pass, and the f32 passes are checked against f64.
//! Every combination of present and absent (`None`) R-values of the inputs is tried.

use ndarray::{ArrayD, ArrayViewD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{EngineOp, Fwd, Grads, Mode, Taped};
use crate::engine::options::EngineOptions;
use crate::engine::Scalar;

/// Central-difference step.
const STEP: f64 = 1e-6;
/// Largest |analytic − central difference| relative to max(1, the tensor's largest entry).
const FD_TOL: f64 = 1e-6;
/// At most this many coordinates per tensor get a per-coordinate gradient check.
const MAX_COORDS: usize = 160;

/// An op's inputs and parameters.
pub(crate) struct Case {
    pub x: Vec<ArrayD<f64>>,
    /// Per input: whether it is differentiable (false for token ids, a shape reference).
    pub diff: Vec<bool>,
    pub p: Vec<ArrayD<f64>>,
    /// A source node (no graph inputs): the forward pass gets `x` (the batch), the other
    /// passes no inputs at all, as in the graph.
    pub source: bool,
}

impl Case {
    /// Differentiable inputs `x` and parameters `p`.
    pub fn new(x: Vec<ArrayD<f64>>, p: Vec<ArrayD<f64>>) -> Self {
        let diff = vec![true; x.len()];
        Case {
            x,
            diff,
            p,
            source: false,
        }
    }
}

/// Uniform entries in [−1, 1].
pub(crate) fn random(shape: &[usize], rng: &mut ChaCha8Rng) -> ArrayD<f64> {
    ArrayD::from_shape_simple_fn(IxDyn(shape), || rng.random_range(-1.0..1.0))
}

fn cast<T: Scalar>(a: &ArrayD<f64>) -> ArrayD<T> {
    a.mapv(T::from_f)
}

/// The four passes of `op` on one case, in precision T.
struct Passes<'o, O, T> {
    op: &'o O,
    x: Vec<ArrayD<T>>,
    p: Vec<ArrayD<T>>,
    diff: Vec<bool>,
    source: bool,
    options: EngineOptions,
}

impl<O: EngineOp, T: Scalar> Passes<'_, O, T> {
    fn forward_at(&self, x: &[ArrayD<T>], p: &[ArrayD<T>]) -> (ArrayD<T>, O::Cache<T>) {
        let xr: Vec<&ArrayD<T>> = x.iter().collect();
        let pv: Vec<ArrayViewD<T>> = p.iter().map(|a| a.view()).collect();
        let a = Fwd {
            options: &self.options,
            mode: Mode::Eval,
            x: &xr,
            p: &pv,
            affine: None,
        };
        self.op.forward(&a)
    }

    /// The passes' inputs as the graph shows them (none for a source node).
    fn taped_x<'a>(&self, x: &'a [ArrayD<T>]) -> Vec<&'a ArrayD<T>> {
        match self.source {
            true => vec![],
            false => x.iter().collect(),
        }
    }

    fn need_dx(&self) -> Vec<bool> {
        match self.source {
            true => vec![],
            false => self.diff.clone(),
        }
    }

    fn backward_at(&self, x: &[ArrayD<T>], p: &[ArrayD<T>], gy: &ArrayD<T>) -> Grads<T> {
        let (y, c) = self.forward_at(x, p);
        let xr = self.taped_x(x);
        let pv: Vec<ArrayViewD<T>> = p.iter().map(|a| a.view()).collect();
        let rx = vec![None; xr.len()];
        let need_dx = self.need_dx();
        let a = Taped {
            options: &self.options,
            x: &xr,
            y: &y,
            y_less: None,
            p: &pv,
            v: &[],
            rx: &rx,
            need_dx: &need_dx,
            want_dp: true,
        };
        self.op.backward(&a, &c, gy.clone())
    }

    /// R{y} and R-backward's gradients (the latter when `g` = (dy, R{dy}) is given).
    fn r_passes_at(
        &self,
        x: &[ArrayD<T>],
        p: &[ArrayD<T>],
        rx: &[Option<ArrayD<T>>],
        v: &[ArrayD<T>],
        g: Option<(&ArrayD<T>, &ArrayD<T>)>,
    ) -> (Option<ArrayD<T>>, Option<Grads<T>>) {
        let (y, c) = self.forward_at(x, p);
        let xr = self.taped_x(x);
        let pv: Vec<ArrayViewD<T>> = p.iter().map(|a| a.view()).collect();
        let vv: Vec<ArrayViewD<T>> = v.iter().map(|a| a.view()).collect();
        let rxr: Vec<Option<&ArrayD<T>>> = match self.source {
            true => vec![],
            false => rx.iter().map(|r| r.as_ref()).collect(),
        };
        let need_dx = self.need_dx();
        let a = Taped {
            options: &self.options,
            x: &xr,
            y: &y,
            y_less: None,
            p: &pv,
            v: &vv,
            rx: &rxr,
            need_dx: &need_dx,
            want_dp: true,
        };
        let (ry, rc) = self.op.r_forward(&a, &c);
        let grads = g.map(|(gy, rgy)| self.op.r_backward(&a, &c, &rc, gy, rgy.clone()));
        (ry, grads)
    }
}

fn dot(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape(), "dot: shapes");
    a.iter().zip(b.iter()).map(|(x, y)| x * y).sum()
}

/// `a` against `b` to `tol` relative to max(1, max |b|).
fn close(what: &str, a: &ArrayD<f64>, b: &ArrayD<f64>, tol: f64) {
    assert_eq!(a.shape(), b.shape(), "{what}: shape");
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
        assert!(
            (x - y).abs() <= tol * scale,
            "{what}: element {i}: {x} vs {y} (scale {scale})"
        );
    }
}

/// `x + s·d` for each tensor (`None` directions: no move).
fn moved(x: &[ArrayD<f64>], d: &[Option<ArrayD<f64>>], s: f64) -> Vec<ArrayD<f64>> {
    x.iter()
        .zip(d)
        .map(|(x, d)| match d {
            Some(d) => x + &(d * s),
            None => x.clone(),
        })
        .collect()
}

/// `grads.dx[k]`, or a zero tensor of `shape` where the op sent `None` (checked to be
/// right by the central differences).
fn grad_or_zero(g: &[Option<ArrayD<f64>>], k: usize, shape: &[usize]) -> ArrayD<f64> {
    g.get(k)
        .cloned()
        .flatten()
        .unwrap_or_else(|| ArrayD::zeros(IxDyn(shape)))
}

/// Runs every oracle on `op` at `case` (see the module docs).
pub(crate) fn check<O: EngineOp>(label: &str, op: &O, case: &Case, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let f64p = Passes::<O, f64> {
        op,
        x: case.x.clone(),
        p: case.p.clone(),
        diff: case.diff.clone(),
        source: case.source,
        options: EngineOptions::default(),
    };
    let (y, _) = f64p.forward_at(&f64p.x, &f64p.p);
    let u = random(y.shape(), &mut rng);
    check_gradient(label, &f64p, &u, &mut rng);
    let nx = if case.source { 0 } else { case.x.len() };
    let diff_inputs: Vec<usize> = (0..nx).filter(|&k| case.diff[k]).collect();
    for mask in 0..1usize << diff_inputs.len() {
        let mut rx: Vec<Option<ArrayD<f64>>> = vec![None; case.x.len()];
        for (bit, &k) in diff_inputs.iter().enumerate() {
            if mask >> bit & 1 == 1 {
                rx[k] = Some(random(case.x[k].shape(), &mut rng));
            }
        }
        let v: Vec<ArrayD<f64>> = case.p.iter().map(|p| random(p.shape(), &mut rng)).collect();
        let w = random(y.shape(), &mut rng);
        let tag = format!("{label} (R-values present: {mask:b})");
        check_r_passes(&tag, &f64p, &rx, &v, (&u, &w));
        check_f32(&tag, op, case, &rx, &v, (&u, &w));
    }
}

/// dx and dp from `gy = u` against central differences of ⟨u, y⟩, per coordinate.
fn check_gradient<O: EngineOp>(
    label: &str,
    f: &Passes<O, f64>,
    u: &ArrayD<f64>,
    rng: &mut ChaCha8Rng,
) {
    let grads = f.backward_at(&f.x, &f.p, u);
    let value = |x: &[ArrayD<f64>], p: &[ArrayD<f64>]| dot(u, &f.forward_at(x, p).0);
    let coords = |len: usize, rng: &mut ChaCha8Rng| -> Vec<usize> {
        match len <= MAX_COORDS {
            true => (0..len).collect(),
            false => (0..MAX_COORDS).map(|_| rng.random_range(0..len)).collect(),
        }
    };
    for k in 0..f.x.len() {
        let taken = grads.dx.get(k).and_then(|d| d.as_ref());
        if f.source || !f.diff[k] {
            assert!(taken.is_none(), "{label}: gradient for input {k}");
            continue;
        }
        let dx = taken.unwrap_or_else(|| panic!("{label}: no gradient for input {k}"));
        assert_eq!(dx.shape(), f.x[k].shape(), "{label}: dx{k} shape");
        for i in coords(dx.len(), rng) {
            let at = |s: f64| {
                let mut x = f.x.clone();
                x[k].as_slice_mut().unwrap()[i] += s;
                value(&x, &f.p)
            };
            let fd = (at(STEP) - at(-STEP)) / (2.0 * STEP);
            let an = dx.as_slice().unwrap()[i];
            let scale = dx.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            assert!(
                (fd - an).abs() <= FD_TOL * scale,
                "{label}: dx{k}[{i}] = {an}, central difference {fd}"
            );
        }
    }
    for j in 0..f.p.len() {
        let dp = grads.dp[j]
            .as_ref()
            .unwrap_or_else(|| panic!("{label}: no gradient for parameter {j}"));
        assert_eq!(dp.shape(), f.p[j].shape(), "{label}: dp{j} shape");
        let dp = dp.as_standard_layout();
        for i in coords(dp.len(), rng) {
            let at = |s: f64| {
                let mut p = f.p.clone();
                p[j].as_slice_mut().unwrap()[i] += s;
                value(&f.x, &p)
            };
            let fd = (at(STEP) - at(-STEP)) / (2.0 * STEP);
            let an = dp.as_slice().unwrap()[i];
            let scale = dp.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            assert!(
                (fd - an).abs() <= FD_TOL * scale,
                "{label}: dp{j}[{i}] = {an}, central difference {fd}"
            );
        }
    }
}

/// R{y} against the directional derivative of the forward pass along (R{x}, v), and
/// R-backward against that of the backward pass along (R{x}, v, R{dy}).
fn check_r_passes<O: EngineOp>(
    label: &str,
    f: &Passes<O, f64>,
    rx: &[Option<ArrayD<f64>>],
    v: &[ArrayD<f64>],
    (gy, rgy): (&ArrayD<f64>, &ArrayD<f64>),
) {
    let vd: Vec<Option<ArrayD<f64>>> = v.iter().cloned().map(Some).collect();
    let at = |s: f64| (moved(&f.x, rx, s), moved(&f.p, &vd, s));
    let ((xp, pp), (xm, pm)) = (at(STEP), at(-STEP));
    let (ry, grads) = f.r_passes_at(&f.x, &f.p, rx, v, Some((gy, rgy)));
    let grads = grads.expect("asked for");
    // R-forward
    let fd = (f.forward_at(&xp, &pp).0 - f.forward_at(&xm, &pm).0) / (2.0 * STEP);
    let ry = ry.unwrap_or_else(|| ArrayD::zeros(fd.raw_dim()));
    close(&format!("{label}: R{{y}}"), &ry, &fd, FD_TOL);
    // R-backward
    let (gp, gm) = (gy + &(rgy * STEP), gy - &(rgy * STEP));
    let (bp, bm) = (f.backward_at(&xp, &pp, &gp), f.backward_at(&xm, &pm, &gm));
    for k in 0..f.x.len() {
        if f.source || !f.diff[k] {
            let none = grads.dx.get(k).is_none_or(|d| d.is_none());
            assert!(none, "{label}: R-gradient for input {k}");
            continue;
        }
        let shape = f.x[k].shape();
        let fd = (grad_or_zero(&bp.dx, k, shape) - grad_or_zero(&bm.dx, k, shape)) / (2.0 * STEP);
        let an = grads.dx[k]
            .clone()
            .unwrap_or_else(|| panic!("{label}: no R{{dx{k}}}"));
        close(&format!("{label}: R{{dx{k}}}"), &an, &fd, FD_TOL);
    }
    for j in 0..f.p.len() {
        let shape = f.p[j].shape();
        let fd = (grad_or_zero(&bp.dp, j, shape) - grad_or_zero(&bm.dp, j, shape)) / (2.0 * STEP);
        let an = grads.dp[j]
            .clone()
            .unwrap_or_else(|| panic!("{label}: no R{{dp{j}}}"));
        close(&format!("{label}: R{{dp{j}}}"), &an, &fd, FD_TOL);
    }
}

/// All four passes in f32 against f64 on the same (f32-rounded) values: the forward pass to
/// 1e-6 of its largest entry, the others to 1e-5.
fn check_f32<O: EngineOp>(
    label: &str,
    op: &O,
    case: &Case,
    rx: &[Option<ArrayD<f64>>],
    v: &[ArrayD<f64>],
    (gy, rgy): (&ArrayD<f64>, &ArrayD<f64>),
) {
    let round = |a: &ArrayD<f64>| a.mapv(|t| t as f32 as f64);
    let rounded = |a: &[ArrayD<f64>]| a.iter().map(round).collect::<Vec<_>>();
    let d = Passes::<O, f64> {
        op,
        x: rounded(&case.x),
        p: rounded(&case.p),
        diff: case.diff.clone(),
        source: case.source,
        options: EngineOptions::default(),
    };
    let s = Passes::<O, f32> {
        op,
        x: d.x.iter().map(cast).collect(),
        p: d.p.iter().map(cast).collect(),
        diff: case.diff.clone(),
        source: case.source,
        options: EngineOptions::default(),
    };
    let up = |a: &ArrayD<f32>| a.mapv(|t| t as f64);
    let y32 = up(&s.forward_at(&s.x, &s.p).0);
    close(
        &format!("{label}: f32 y"),
        &y32,
        &d.forward_at(&d.x, &d.p).0,
        1e-6,
    );
    let (rxd, vd) = (
        rx.iter().map(|r| r.as_ref().map(round)).collect::<Vec<_>>(),
        rounded(v),
    );
    let (gyd, rgyd) = (round(gy), round(rgy));
    let rxs: Vec<Option<ArrayD<f32>>> = rxd.iter().map(|r| r.as_ref().map(cast)).collect();
    let vs: Vec<ArrayD<f32>> = vd.iter().map(cast).collect();
    let (gys, rgys) = (cast::<f32>(&gyd), cast::<f32>(&rgyd));
    let b64 = d.backward_at(&d.x, &d.p, &gyd);
    let b32 = s.backward_at(&s.x, &s.p, &gys);
    let (ry64, r64) = d.r_passes_at(&d.x, &d.p, &rxd, &vd, Some((&gyd, &rgyd)));
    let (ry32, r32) = s.r_passes_at(&s.x, &s.p, &rxs, &vs, Some((&gys, &rgys)));
    let both = |what: &str, a: Option<&ArrayD<f32>>, b: Option<&ArrayD<f64>>| match (a, b) {
        (Some(a), Some(b)) => close(&format!("{label}: f32 {what}"), &up(a), b, 1e-5),
        (None, None) => {}
        _ => panic!("{label}: f32 and f64 {what} differ in presence"),
    };
    both("R{y}", ry32.as_ref(), ry64.as_ref());
    let (r32, r64) = (r32.expect("asked for"), r64.expect("asked for"));
    for (what, g32, g64) in [("dx", &b32.dx, &b64.dx), ("R{dx}", &r32.dx, &r64.dx)] {
        for (k, (a, b)) in g32.iter().zip(g64.iter()).enumerate() {
            both(&format!("{what}{k}"), a.as_ref(), b.as_ref());
        }
    }
    for (what, g32, g64) in [("dp", &b32.dp, &b64.dp), ("R{dp}", &r32.dp, &r64.dp)] {
        for (j, (a, b)) in g32.iter().zip(g64.iter()).enumerate() {
            both(&format!("{what}{j}"), a.as_ref(), b.as_ref());
        }
    }
}
