//! Rectified linear unit, y = max(x, 0).
//!
//! ```text
//! backward:   dx = dy ⊙ [x > 0]
//! R-forward:  R{y} = R{x} ⊙ [x > 0]
//! R-backward: R{dx} = R{dy} ⊙ [x > 0]      (the second derivative is 0 almost everywhere)
//! ```
//! The mask is read from the output (y > 0 ⇔ x > 0), as PyTorch's `threshold_backward` does.
//! Inference runs in place, or inside the epilogue of a fused convolution.

use ndarray::{ArrayD, Zip};

use super::vmath::{wide, zip_map, zip_mut};
use super::{Activation, EngineOp, Fwd, Grads, Mode, Taped};
use crate::engine::error::ShapeError;
use crate::engine::Scalar;

pub struct Relu;

#[inline(always)]
pub(super) fn relu<T: Scalar>(v: T) -> T {
    if v > T::zero() {
        v
    } else {
        T::zero()
    }
}

/// `g` where y > 0, else 0.
#[inline(always)]
pub(super) fn keep<T: Scalar>(g: T, y: T) -> T {
    if y > T::zero() {
        g
    } else {
        T::zero()
    }
}

/// Masks an owned `g` (a gradient or an R-quantity) by y > 0, in place.
fn mask<T: Scalar>(y: &ArrayD<T>, mut g: ArrayD<T>) -> ArrayD<T> {
    if !zip_mut(&mut g, y, |gv, yv| *gv = keep(*gv, yv)) {
        Zip::from(&mut g)
            .and(y)
            .for_each(|gv, &yv| *gv = keep(*gv, yv));
    }
    g
}

/// A new array: `g` masked by y > 0 (one pass, no copy of `g` first).
fn masked<T: Scalar>(y: &ArrayD<T>, g: &ArrayD<T>) -> ArrayD<T> {
    zip_map(g, y, keep).unwrap_or_else(|| mask(y, g.clone()))
}

/// `x` with ReLU applied in place (a slice loop in vectors where memory is contiguous).
fn relu_inplace<T: Scalar>(x: &mut ArrayD<T>) {
    match x.as_slice_memory_order_mut() {
        Some(s) => wide!(s.iter_mut().for_each(|v| *v = relu(*v)),),
        None => x.mapv_inplace(relu),
    }
}

impl EngineOp for Relu {
    const KIND: &'static str = "relu";
    type Cache<T: Scalar> = ();
    type RCache<T: Scalar> = ();

    fn infer_shape(&self, x: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
        Ok(x[0].to_vec())
    }

    fn forward<T: Scalar>(&self, a: &Fwd<T>) -> (ArrayD<T>, ()) {
        let x = a.x[0];
        let y = match x.as_slice() {
            Some(xs) => {
                let v = wide!(xs.iter().map(|&v| relu(v)).collect(),);
                ArrayD::from_shape_vec(x.raw_dim(), v).expect("same length")
            }
            None => x.mapv(relu),
        };
        (y, ())
    }

    fn in_place(&self, _mode: Mode) -> bool {
        true
    }

    fn forward_in_place<T: Scalar>(&self, _a: &Fwd<T>, x0: &mut ArrayD<T>) {
        relu_inplace(x0);
    }

    fn activation(&self) -> Option<Activation> {
        Some(Activation::Relu)
    }

    fn backward<T: Scalar>(&self, a: &Taped<T>, _c: &(), gy: ArrayD<T>) -> Grads<T> {
        Grads::input(mask(a.y, gy))
    }

    fn r_forward<T: Scalar>(&self, a: &Taped<T>, _c: &()) -> (Option<ArrayD<T>>, ()) {
        (a.rx(0).map(|r| masked(a.y, r)), ())
    }

    fn r_backward<T: Scalar>(
        &self,
        a: &Taped<T>,
        _c: &(),
        _rc: &(),
        _gy: &ArrayD<T>,
        rgy: ArrayD<T>,
    ) -> Grads<T> {
        Grads::input(mask(a.y, rgy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slice loops (AVX2 where the CPU has it) give the bits of ndarray's, on
    /// contiguous and on non-contiguous arrays.
    #[test]
    fn slice_loops_keep_ndarray_bits() {
        let y = ArrayD::from_shape_fn(vec![4, 6, 9], |i| {
            (i[0] * 54 + i[1] * 9 + i[2]) as f32 * 0.31 - 33.0
        });
        let g = y.mapv(|v| (v * 0.7).cos());
        let bits = |x: &ArrayD<f32>| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let plain = Zip::from(&g)
            .and(&y)
            .map_collect(|&gv, &yv| if yv > 0.0 { gv } else { 0.0 });
        assert_eq!(bits(&mask(&y, g.clone())), bits(&plain));
        assert_eq!(bits(&masked(&y, &g)), bits(&plain));
        // the baseline loops (as on a CPU without AVX2)
        let forced = super::super::vmath::plain(|| (mask(&y, g.clone()), masked(&y, &g)));
        assert_eq!(
            (bits(&forced.0), bits(&forced.1)),
            (bits(&plain), bits(&plain))
        );
        // transposed (column-major) arrays take ndarray's path
        let (yt, gt) = (y.t().to_owned(), g.t().to_owned());
        assert_eq!(bits(&masked(&yt, &gt)), bits(&plain.t().to_owned()));
        assert_eq!(bits(&mask(&yt, gt)), bits(&plain.t().to_owned()));
        let mut r = yt.clone();
        relu_inplace(&mut r);
        assert_eq!(bits(&r), bits(&yt.mapv(relu)));
        let mut rv = y.clone().reversed_axes();
        relu_inplace(&mut rv);
        assert_eq!(bits(&rv), bits(&y.t().mapv(relu)));
    }
}
