//! Concatenation of several activations along one axis of the internal layout (ONNX
//! `Concat`, e.g. channel concatenation in option-A shortcuts).
//!
//! ```text
//! y = [x₁ | x₂ | …] along `axis`
//! backward:   dxᵢ = the i-th block of dy        R-forward: R{y} = [R{x₁} | …] (0 for None)
//! R-backward: R{dxᵢ} = the i-th block of R{dy}
//! ```

use ndarray::{concatenate, ArrayD, ArrayView, Axis, IxDyn, Slice};

use super::{EngineOp, Fwd, Grads, Taped};
use crate::engine::error::ShapeError;
use crate::engine::Scalar;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Concat {
    pub axis: usize,
}

impl Concat {
    fn join<T: Scalar>(&self, xs: &[&ArrayD<T>]) -> ArrayD<T> {
        let views: Vec<ArrayView<T, IxDyn>> = xs.iter().map(|x| x.view()).collect();
        concatenate(Axis(self.axis), &views).expect("shapes checked at build")
    }

    /// Splits `gy` into blocks of the inputs' sizes along the axis.
    fn split<T: Scalar>(&self, gy: &ArrayD<T>, x: &[&ArrayD<T>]) -> Grads<T> {
        let mut at = 0;
        let dx = x
            .iter()
            .map(|x| {
                let s = x.shape()[self.axis];
                let b = gy
                    .slice_axis(Axis(self.axis), Slice::from(at..at + s))
                    .to_owned();
                at += s;
                Some(b)
            })
            .collect();
        Grads { dx, dp: vec![] }
    }
}

impl EngineOp for Concat {
    const KIND: &'static str = "concat";
    type Cache<T: Scalar> = ();
    type RCache<T: Scalar> = ();

    fn infer_shape(&self, x: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
        let mut s = x[0].to_vec();
        for other in &x[1..] {
            let same =
                other.len() == s.len() && (0..s.len()).all(|a| a == self.axis || other[a] == s[a]);
            if !same || self.axis >= s.len() {
                return Err(ShapeError::Concat {
                    a: s.into(),
                    b: (*other).into(),
                    axis: self.axis,
                });
            }
            s[self.axis] += other[self.axis];
        }
        Ok(s)
    }

    fn forward<T: Scalar>(&self, a: &Fwd<T>) -> (ArrayD<T>, ()) {
        (self.join(a.x), ())
    }

    fn backward<T: Scalar>(&self, a: &Taped<T>, _c: &(), gy: ArrayD<T>) -> Grads<T> {
        self.split(&gy, a.x)
    }

    /// A missing R-value is zero in its block (`None` only where all are).
    fn r_forward<T: Scalar>(&self, a: &Taped<T>, _c: &()) -> (Option<ArrayD<T>>, ()) {
        if (0..a.x.len()).all(|k| a.rx(k).is_none()) {
            return (None, ());
        }
        let owned: Vec<ArrayD<T>> =
            a.x.iter()
                .enumerate()
                .map(|(k, x)| match a.rx(k) {
                    Some(r) => r.clone(),
                    None => ArrayD::zeros(x.raw_dim()),
                })
                .collect();
        (Some(self.join(&owned.iter().collect::<Vec<_>>())), ())
    }

    fn r_backward<T: Scalar>(
        &self,
        a: &Taped<T>,
        _c: &(),
        _rc: &(),
        _gy: &ArrayD<T>,
        rgy: ArrayD<T>,
    ) -> Grads<T> {
        self.split(&rgy, a.x)
    }
}
