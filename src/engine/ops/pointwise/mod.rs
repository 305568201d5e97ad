//! Elementwise functions y = f(x) of one value, any shape and layout (activations such as
//! GELU, SiLU, tanh, and the arithmetic ONNX graphs spell out: sqrt, pow, exp, …).
//!
//! Every pass follows from f, f′ and f″, which each function's file gives side by side
//! (f′ and f″ may read y = f(x), so tanh, sigmoid and exp cost no second transcendental):
//!
//! ```text
//! forward:    y = f(x)
//! backward:   dx = f′(x) ⊙ dy
//! R-forward:  R{y} = f′(x) ⊙ R{x}
//! R-backward: R{dx} = f″(x) ⊙ R{x} ⊙ dy + f′(x) ⊙ R{dy}
//! ```
//! (Pearlmutter 1994.) R-backward reads dy unless f″ ≡ 0 (neg, clip), so the graph keeps dy
//! for the R-pass of an HVP exactly where it is read. Each pass is one loop over the
//! elements, monomorphized per function (the `PointwiseFn` match runs once per call); in
//! f32, exp, tanh and erf are the branch-free versions of `super::vmath`, so the loops
//! vectorize.

mod clip;
mod erf;
mod exp;
mod gelu;
mod log;
mod neg;
mod pow;
mod reciprocal;
mod sigmoid;
mod silu;
mod sqrt;
mod tanh;

use std::borrow::Cow;

use ndarray::ArrayD;

use super::vmath::wide;
use super::{EngineOp, Fwd, Grads, Mode, Taped};
use crate::engine::error::ShapeError;
use crate::engine::Scalar;

/// A scalar function of the pointwise op, with its first two derivatives.
trait Derivs: Copy {
    /// Whether f″ can be nonzero (else R-backward needs no dy).
    const CURVED: bool = true;
    fn f<T: Scalar>(self, x: T) -> T;
    /// f′(x), given y = f(x).
    fn d1<T: Scalar>(self, x: T, y: T) -> T;
    /// f″(x), given y = f(x).
    fn d2<T: Scalar>(self, x: T, y: T) -> T;
}

/// Which function an elementwise op applies (constants stored as f64).
#[derive(Clone, Debug, PartialEq)]
pub enum PointwiseFn {
    Tanh,
    /// Logistic sigmoid 1/(1 + e⁻ˣ).
    Sigmoid,
    /// x·σ(x) (SiLU, swish).
    Silu,
    /// Exact GELU x·Φ(x) (`nn.GELU()`).
    GeluErf,
    /// PyTorch's `nn.GELU(approximate='tanh')`.
    GeluTanh,
    Erf,
    Sqrt,
    /// xᵖ with a constant exponent.
    Pow(f64),
    /// Clamp to [min, max] (ReLU6 = `Clip { min: 0.0, max: 6.0 }`); ±∞ leave a side open.
    Clip {
        min: f64,
        max: f64,
    },
    Exp,
    /// Natural logarithm.
    Log,
    Neg,
    /// 1/x.
    Reciprocal,
}

/// Runs `$body` with `$d` bound to the [`Derivs`] of `$f` (one monomorphized copy per
/// function).
macro_rules! with_derivs {
    ($f:expr, $d:ident => $body:expr) => {
        match *$f {
            PointwiseFn::Tanh => {
                let $d = tanh::Tanh;
                $body
            }
            PointwiseFn::Sigmoid => {
                let $d = sigmoid::Sigmoid;
                $body
            }
            PointwiseFn::Silu => {
                let $d = silu::Silu;
                $body
            }
            PointwiseFn::GeluErf => {
                let $d = gelu::GeluErf;
                $body
            }
            PointwiseFn::GeluTanh => {
                let $d = gelu::GeluTanh;
                $body
            }
            PointwiseFn::Erf => {
                let $d = erf::Erf;
                $body
            }
            PointwiseFn::Sqrt => {
                let $d = sqrt::Sqrt;
                $body
            }
            PointwiseFn::Pow(p) => {
                let $d = pow::Pow::new(p);
                $body
            }
            PointwiseFn::Clip { min, max } => {
                let $d = clip::Clip::new(min, max);
                $body
            }
            PointwiseFn::Exp => {
                let $d = exp::Exp;
                $body
            }
            PointwiseFn::Log => {
                let $d = log::Log;
                $body
            }
            PointwiseFn::Neg => {
                let $d = neg::Neg;
                $body
            }
            PointwiseFn::Reciprocal => {
                let $d = reciprocal::Reciprocal;
                $body
            }
        }
    };
}

fn curved<D: Derivs>(_: D) -> bool {
    D::CURVED
}

/// An array's values in row-major order as one slice (borrowed: always, in practice).
fn values<T: Scalar>(a: &ArrayD<T>) -> Cow<'_, [T]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

/// `a` in standard layout, so its buffer can be overwritten in row-major order.
fn standard<T: Scalar>(a: ArrayD<T>) -> ArrayD<T> {
    match a.is_standard_layout() {
        true => a,
        false => a.as_standard_layout().into_owned(),
    }
}

// The passes run over plain slices with `f`, `f′`, `f″` inlined, so the loops vectorize
// (with AVX2 where the CPU has it, see `wide!`).

/// f(x).
fn forward_with<D: Derivs, T: Scalar>(d: D, x: &ArrayD<T>) -> ArrayD<T> {
    let xs = values(x);
    let mut y = vec![T::zero(); xs.len()];
    wide!({
        for (y, &x) in y.iter_mut().zip(xs.iter()) {
            *y = d.f(x);
        }
    },);
    ArrayD::from_shape_vec(x.raw_dim(), y).expect("size")
}

/// dy ← f′(x) ⊙ dy, in place.
fn backward_with<D: Derivs, T: Scalar>(
    d: D,
    x: &ArrayD<T>,
    y: &ArrayD<T>,
    gy: ArrayD<T>,
) -> ArrayD<T> {
    let (x, y, mut gy) = (values(x), values(y), standard(gy));
    let g = gy.as_slice_mut().expect("standard layout");
    wide!({
        for ((g, &x), &y) in g.iter_mut().zip(x.iter()).zip(y.iter()) {
            *g = d.d1(x, y) * *g;
        }
    },);
    gy
}

/// f′(x) ⊙ R{x}.
fn r_forward_with<D: Derivs, T: Scalar>(
    d: D,
    x: &ArrayD<T>,
    y: &ArrayD<T>,
    rx: &ArrayD<T>,
) -> ArrayD<T> {
    let (xs, ys, rs) = (values(x), values(y), values(rx));
    let it = rs.iter().zip(xs.iter()).zip(ys.iter());
    let mut r = vec![T::zero(); xs.len()];
    wide!({
        for (o, ((&r, &x), &y)) in r.iter_mut().zip(it) {
            *o = d.d1(x, y) * r;
        }
    },);
    ArrayD::from_shape_vec(x.raw_dim(), r).expect("size")
}

/// R{dy} ← f″(x) ⊙ R{x} ⊙ dy + f′(x) ⊙ R{dy}, in place (R{x} = `None`: zero).
fn r_backward_with<D: Derivs, T: Scalar>(
    d: D,
    x: &ArrayD<T>,
    y: &ArrayD<T>,
    rx: Option<&ArrayD<T>>,
    gy: &ArrayD<T>,
    rgy: ArrayD<T>,
) -> ArrayD<T> {
    let (xs, ys, mut rgy) = (values(x), values(y), standard(rgy));
    let rg = rgy.as_slice_mut().expect("standard layout");
    match rx {
        Some(rx) if D::CURVED => {
            let (rs, gs) = (values(rx), values(gy));
            let it = rg
                .iter_mut()
                .zip(xs.iter())
                .zip(ys.iter())
                .zip(rs.iter())
                .zip(gs.iter());
            wide!({
                for ((((r, &x), &y), &rx), &g) in it {
                    *r = d.d2(x, y) * rx * g + d.d1(x, y) * *r;
                }
            },);
        }
        _ => wide!({
            for ((r, &x), &y) in rg.iter_mut().zip(xs.iter()).zip(ys.iter()) {
                *r = d.d1(x, y) * *r;
            }
        },),
    }
    rgy
}

impl PointwiseFn {
    /// f(x) in the precision of `T`.
    pub fn apply<T: Scalar>(&self, x: T) -> T {
        with_derivs!(self, d => d.f(x))
    }

    /// f′(x).
    pub fn derivative<T: Scalar>(&self, x: T) -> T {
        with_derivs!(self, d => d.d1(x, d.f(x)))
    }

    /// f″(x).
    pub fn second_derivative<T: Scalar>(&self, x: T) -> T {
        with_derivs!(self, d => d.d2(x, d.f(x)))
    }
}

impl EngineOp for PointwiseFn {
    const KIND: &'static str = "pointwise";
    type Cache<T: Scalar> = ();
    type RCache<T: Scalar> = ();

    fn infer_shape(&self, x: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
        Ok(x[0].to_vec())
    }

    fn forward<T: Scalar>(&self, a: &Fwd<T>) -> (ArrayD<T>, ()) {
        with_derivs!(self, d => (forward_with(d, a.x[0]), ()))
    }

    fn in_place(&self, _mode: Mode) -> bool {
        true
    }

    fn forward_in_place<T: Scalar>(&self, _a: &Fwd<T>, x0: &mut ArrayD<T>) {
        with_derivs!(self, d => match x0.as_slice_mut() {
            Some(s) => wide!(s.iter_mut().for_each(|v| *v = d.f(*v))),
            None => x0.mapv_inplace(|v| d.f(v)),
        })
    }

    fn r_backward_reads_gy(&self) -> bool {
        with_derivs!(self, d => curved(d))
    }

    fn backward<T: Scalar>(&self, a: &Taped<T>, _c: &(), gy: ArrayD<T>) -> Grads<T> {
        if !a.need_dx(0) {
            return Grads::none();
        }
        with_derivs!(self, d => Grads::input(backward_with(d, a.x[0], a.y, gy)))
    }

    fn r_forward<T: Scalar>(&self, a: &Taped<T>, _c: &()) -> (Option<ArrayD<T>>, ()) {
        let r = a
            .rx(0)
            .map(|rx| with_derivs!(self, d => r_forward_with(d, a.x[0], a.y, rx)));
        (r, ())
    }

    fn r_backward<T: Scalar>(
        &self,
        a: &Taped<T>,
        _c: &(),
        _rc: &(),
        gy: &ArrayD<T>,
        rgy: ArrayD<T>,
    ) -> Grads<T> {
        if !a.need_dx(0) {
            return Grads::none();
        }
        with_derivs!(self, d => Grads::input(r_backward_with(d, a.x[0], a.y, a.rx(0), gy, rgy)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ops::testing::{check_op, randn, rng, uniform};

    const SHAPE: &[usize] = &[3, 4, 5];

    fn check(f: PointwiseFn, x: ArrayD<f64>) {
        eprintln!("{f:?}");
        check_op(&f, &[x], &[], 1e-6);
    }

    #[test]
    fn smooth_functions_on_the_real_line() {
        let mut r = rng(1);
        for f in [
            PointwiseFn::Tanh,
            PointwiseFn::Sigmoid,
            PointwiseFn::Silu,
            PointwiseFn::GeluErf,
            PointwiseFn::GeluTanh,
            PointwiseFn::Erf,
            PointwiseFn::Exp,
            PointwiseFn::Neg,
            PointwiseFn::Pow(2.0),
            PointwiseFn::Pow(3.0),
            PointwiseFn::Pow(1.0),
            PointwiseFn::Pow(0.0),
        ] {
            check(f, randn(SHAPE, &mut r) * 1.5);
        }
    }

    #[test]
    fn functions_of_positive_inputs() {
        let mut r = rng(2);
        for f in [
            PointwiseFn::Sqrt,
            PointwiseFn::Log,
            PointwiseFn::Reciprocal,
            PointwiseFn::Pow(0.5),
            PointwiseFn::Pow(-1.5),
            PointwiseFn::Pow(2.7),
        ] {
            check(f, uniform(SHAPE, 0.3, 3.0, &mut r));
        }
        // integer powers and the reciprocal of negative bases
        for f in [PointwiseFn::Pow(-2.0), PointwiseFn::Reciprocal] {
            check(f, uniform(SHAPE, -3.0, -0.3, &mut r));
        }
    }

    #[test]
    fn clip_passes_and_boundary() {
        let mut r = rng(3);
        check(
            PointwiseFn::Clip {
                min: -1.0,
                max: 2.0,
            },
            randn(SHAPE, &mut r) * 2.0,
        );
        let relu6 = PointwiseFn::Clip { min: 0.0, max: 6.0 };
        let xs = [-1.0, 0.0, 3.0, 6.0, 7.0f64];
        let ys: Vec<f64> = xs.iter().map(|&x| relu6.apply(x)).collect();
        assert_eq!(ys, [0.0, 0.0, 3.0, 6.0, 6.0]);
        // PyTorch's hardtanh_backward: no gradient at either boundary
        let ds: Vec<f64> = xs.iter().map(|&x| relu6.derivative(x)).collect();
        assert_eq!(ds, [0.0, 0.0, 1.0, 0.0, 0.0]);
        let open = PointwiseFn::Clip {
            min: 0.0,
            max: f64::INFINITY,
        };
        assert_eq!(open.apply(1e30f64), 1e30);
    }

    /// Values against independent references: erf to full f64 precision (tabulated
    /// values), the GELUs against their closed forms as PyTorch computes them.
    #[test]
    fn known_values() {
        for (x, e) in [
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (-0.1, -0.112_462_916_018_284_9),
            (3.5, 0.999_999_256_901_627_7),
        ] {
            let got: f64 = PointwiseFn::Erf.apply(x);
            assert!(
                (got - e).abs() <= 2e-16 * e.abs().max(1.0),
                "erf({x}) = {got} vs {e}"
            );
            let got32: f32 = PointwiseFn::Erf.apply(x as f32);
            assert!(
                (got32 as f64 - e).abs() <= 2e-7,
                "erff({x}) = {got32} vs {e}"
            );
        }
        let gelu: f64 = PointwiseFn::GeluErf.apply(1.0);
        assert!((gelu - 0.841_344_746_068_542_9).abs() < 1e-15, "{gelu}");
        let x = 1.0f64;
        let c = (2.0 / std::f64::consts::PI).sqrt();
        let expect = 0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh());
        let got: f64 = PointwiseFn::GeluTanh.apply(x);
        assert!((got - expect).abs() < 1e-15 && (got - 0.841_191_990_608_276_8).abs() < 1e-12);
        let sig: f64 = PointwiseFn::Sigmoid.apply(-800.0);
        assert!(sig == 0.0 && PointwiseFn::Sigmoid.apply(800.0f64) == 1.0);
        let silu: f64 = PointwiseFn::Silu.apply(-800.0);
        assert!(silu.is_finite());
    }

    #[test]
    fn r_backward_reads_gy_only_when_curved() {
        assert!(PointwiseFn::Tanh.r_backward_reads_gy());
        assert!(PointwiseFn::Pow(2.0).r_backward_reads_gy());
        assert!(!PointwiseFn::Neg.r_backward_reads_gy());
        assert!(!PointwiseFn::Clip { min: 0.0, max: 6.0 }.r_backward_reads_gy());
    }
}
