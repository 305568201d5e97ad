//! Elementwise sum of two activations: the residual connection, y = a + b.
//!
//! ```text
//! backward:   da = dy,  db = dy
//! R-forward:  R{y} = R{a} + R{b}
//! R-backward: R{da} = R{dy},  R{db} = R{dy}
//! ```
//! Inference adds b into a's buffer when no later node reads a.

use ndarray::ArrayD;

use super::relu::relu;
use super::vmath::{wide, zip_map, zip_mut};
use super::{Activation, EngineOp, Fwd, Grads, Mode, Taped};
use crate::engine::error::ShapeError;
use crate::engine::Scalar;

pub struct Add;

/// `a += b` (one shape): a slice loop in vectors where both are contiguous (the same
/// additions in the same order as ndarray's, so the same bits).
pub(crate) fn add_assign<T: Scalar>(a: &mut ArrayD<T>, b: &ArrayD<T>) {
    if !zip_mut(a, b, |u, v| *u += v) {
        *a += b;
    }
}

/// `a + b` (one shape), in vectors where both are contiguous.
fn sum<T: Scalar>(a: &ArrayD<T>, b: &ArrayD<T>) -> ArrayD<T> {
    zip_map(a, b, |u, v| u + v).unwrap_or_else(|| a + b)
}

/// The same gradient flows to both inputs: one copy, one move.
fn both<T: Scalar>(gy: ArrayD<T>) -> Grads<T> {
    Grads {
        dx: vec![Some(gy.clone()), Some(gy)],
        dp: vec![],
    }
}

impl EngineOp for Add {
    const KIND: &'static str = "add";
    type Cache<T: Scalar> = ();
    type RCache<T: Scalar> = ();

    fn infer_shape(&self, x: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
        if x[0] != x[1] {
            return Err(ShapeError::Summands {
                a: x[0].into(),
                b: x[1].into(),
            });
        }
        Ok(x[0].to_vec())
    }

    fn forward<T: Scalar>(&self, a: &Fwd<T>) -> (ArrayD<T>, ()) {
        (sum(a.x[0], a.x[1]), ())
    }

    fn in_place(&self, _mode: Mode) -> bool {
        true
    }

    fn forward_in_place<T: Scalar>(&self, a: &Fwd<T>, x0: &mut ArrayD<T>) {
        add_assign(x0, a.x[1]);
    }

    /// ReLU only: relu(a + b), the same additions (so the same bits).
    fn forward_then<T: Scalar>(&self, a: &Fwd<T>, act: Activation) -> Option<(ArrayD<T>, ())> {
        if act != Activation::Relu {
            return None;
        }
        zip_map(a.x[0], a.x[1], |u, v| relu(u + v)).map(|y| (y, ()))
    }

    fn forward_in_place_then<T: Scalar>(
        &self,
        a: &Fwd<T>,
        x0: &mut ArrayD<T>,
        act: Activation,
    ) -> bool {
        act == Activation::Relu && zip_mut(x0, a.x[1], |u, v| *u = relu(*u + v))
    }

    fn backward<T: Scalar>(&self, _a: &Taped<T>, _c: &(), gy: ArrayD<T>) -> Grads<T> {
        both(gy)
    }

    fn r_forward<T: Scalar>(&self, a: &Taped<T>, _c: &()) -> (Option<ArrayD<T>>, ()) {
        let r = match (a.rx(0), a.rx(1)) {
            (Some(x), Some(y)) => Some(sum(x, y)),
            (Some(x), None) | (None, Some(x)) => Some(x.clone()),
            (None, None) => None,
        };
        (r, ())
    }

    fn r_backward<T: Scalar>(
        &self,
        _a: &Taped<T>,
        _c: &(),
        _rc: &(),
        _gy: &ArrayD<T>,
        rgy: ArrayD<T>,
    ) -> Grads<T> {
        both(rgy)
    }
}

/// `a ← relu(a + b)` element by element in `wide!` vectors: the add → ReLU of a residual
/// block with [`Add`]'s arithmetic (so its bits), for the graph's fused epilogues.
pub fn add_relu_in_place<T: Scalar>(a: &mut [T], b: &[T]) {
    let b = &b[..a.len()];
    wide!(a.iter_mut().zip(b).for_each(|(u, &v)| *u = relu(*u + v)),);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slice loops (compiled for AVX2 where the CPU has it) give the bits of ndarray's
    /// element-wise `+`, and non-contiguous operands still add correctly.
    #[test]
    fn slice_loops_keep_ndarray_bits() {
        let a = ArrayD::from_shape_fn(vec![3, 5, 7, 11], |i| {
            (i[0] * 131 + i[1] * 17 + i[2] * 7 + i[3]) as f32 * 0.37 - 40.0
        });
        let b = a.mapv(|v| (v * 1.3).sin() * 1e-3);
        let bits = |x: &ArrayD<f32>| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let plain = &a + &b;
        for forced in [false, true] {
            // the widest loops, then the baseline ones (as on a CPU without AVX2)
            let run = |f: &dyn Fn() -> ArrayD<f32>| match forced {
                true => super::super::vmath::plain(f),
                false => f(),
            };
            assert_eq!(bits(&run(&|| sum(&a, &b))), bits(&plain));
            let c = run(&|| {
                let mut c = a.clone();
                add_assign(&mut c, &b);
                c
            });
            assert_eq!(bits(&c), bits(&plain));
        }
        // transposed (column-major) operands take ndarray's path
        let (at, bt) = (a.t().to_owned(), b.t().to_owned());
        let mut d = at.clone();
        add_assign(&mut d, &bt);
        assert_eq!(bits(&d), bits(&(&at + &bt)));
        assert_eq!(bits(&sum(&at, &bt)), bits(&(&at + &bt)));
    }
}
