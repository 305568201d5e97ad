//! Concatenation of several activations along one axis of the internal layout (ONNX
//! `Concat`, e.g. channel concatenation in option-A shortcuts).
//!
//! ```text
//! y = [x₁ | x₂ | …] along `axis`
//! backward:   dxᵢ = the i-th block of dy        R-forward: R{y} = [R{x₁} | …] (0 for None)
//! R-backward: R{dxᵢ} = the i-th block of R{dy}
//! ```

use ndarray::{concatenate, ArrayD, ArrayView, Axis, IxDyn, Slice};

use crate::engine::Scalar;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Concat {
    pub axis: usize,
}

impl Concat {
    pub fn forward<T: Scalar>(&self, xs: &[&ArrayD<T>]) -> ArrayD<T> {
        let views: Vec<ArrayView<T, IxDyn>> = xs.iter().map(|x| x.view()).collect();
        concatenate(Axis(self.axis), &views).expect("shapes checked at build")
    }

    /// Splits `gy` into blocks of the inputs' sizes along the axis.
    pub fn backward<T: Scalar>(&self, gy: &ArrayD<T>, sizes: &[usize]) -> Vec<ArrayD<T>> {
        let mut at = 0;
        sizes
            .iter()
            .map(|&s| {
                let b = gy
                    .slice_axis(Axis(self.axis), Slice::from(at..at + s))
                    .to_owned();
                at += s;
                b
            })
            .collect()
    }

    /// `shapes` are the inputs' shapes (a missing R-quantity is zero).
    pub fn r_forward<T: Scalar>(
        &self,
        rxs: &[Option<&ArrayD<T>>],
        shapes: &[&[usize]],
    ) -> Option<ArrayD<T>> {
        if rxs.iter().all(|r| r.is_none()) {
            return None;
        }
        let owned: Vec<ArrayD<T>> = rxs
            .iter()
            .zip(shapes)
            .map(|(r, s)| match r {
                Some(r) => (*r).clone(),
                None => ArrayD::zeros(IxDyn(s)),
            })
            .collect();
        Some(self.forward(&owned.iter().collect::<Vec<_>>()))
    }

    pub fn r_backward<T: Scalar>(&self, rgy: &ArrayD<T>, sizes: &[usize]) -> Vec<ArrayD<T>> {
        self.backward(rgy, sizes)
    }
}
