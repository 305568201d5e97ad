//! Elementwise sum of two activations: the residual connection, y = a + b.
//!
//! ```text
//! backward:   da = dy,  db = dy
//! R-forward:  R{y} = R{a} + R{b}
//! R-backward: R{da} = R{dy},  R{db} = R{dy}
//! ```

use ndarray::ArrayD;

use crate::engine::Scalar;

pub struct Add;

impl Add {
    pub fn forward<T: Scalar>(a: &ArrayD<T>, b: &ArrayD<T>) -> ArrayD<T> {
        a + b
    }

    /// The same upstream gradient flows to both inputs.
    pub fn backward<T: Scalar>(gy: &ArrayD<T>) -> (ArrayD<T>, ArrayD<T>) {
        (gy.clone(), gy.clone())
    }

    /// `None` stands for an R-quantity that is identically zero.
    pub fn r_forward<T: Scalar>(
        ra: Option<&ArrayD<T>>,
        rb: Option<&ArrayD<T>>,
    ) -> Option<ArrayD<T>> {
        match (ra, rb) {
            (Some(a), Some(b)) => Some(a + b),
            (Some(a), None) | (None, Some(a)) => Some(a.clone()),
            (None, None) => None,
        }
    }

    pub fn r_backward<T: Scalar>(rgy: &ArrayD<T>) -> (ArrayD<T>, ArrayD<T>) {
        Self::backward(rgy)
    }
}
