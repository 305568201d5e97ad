//! A fixed tensor (an ONNX initializer or `Constant` that is not a parameter): a source
//! node whose value does not depend on θ or the batch, so it has no gradient and a zero
//! R-value.
//!
//! ```text
//! y = values      backward: nothing      R{y} = 0      R-backward: nothing
//! ```

use std::sync::Arc;

use ndarray::{ArrayD, IxDyn};

use super::{EngineOp, Fwd, Grads, Taped};
use crate::engine::error::ShapeError;
use crate::engine::Scalar;

#[derive(Clone, Debug, PartialEq)]
pub struct Constant {
    pub shape: Vec<usize>,
    /// Row-major values, `shape`'s product of them.
    pub values: Arc<Vec<f64>>,
}

impl EngineOp for Constant {
    const KIND: &'static str = "constant";
    type Cache<T: Scalar> = ();
    type RCache<T: Scalar> = ();

    fn infer_shape(&self, _x: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
        if self.values.len() != self.shape.iter().product::<usize>() {
            return Err(ShapeError::ConstantSize {
                len: self.values.len(),
                shape: self.shape.clone().into(),
            });
        }
        Ok(self.shape.clone())
    }

    fn forward<T: Scalar>(&self, _a: &Fwd<T>) -> (ArrayD<T>, ()) {
        let v = self.values.iter().map(|&v| T::from_f(v)).collect();
        let y = ArrayD::from_shape_vec(IxDyn(&self.shape), v).expect("size checked at build");
        (y, ())
    }

    fn backward<T: Scalar>(&self, _a: &Taped<T>, _c: &(), _gy: ArrayD<T>) -> Grads<T> {
        Grads::none()
    }

    fn r_forward<T: Scalar>(&self, _a: &Taped<T>, _c: &()) -> (Option<ArrayD<T>>, ()) {
        (None, ())
    }

    fn r_backward<T: Scalar>(
        &self,
        _a: &Taped<T>,
        _c: &(),
        _rc: &(),
        _gy: &ArrayD<T>,
        _rgy: ArrayD<T>,
    ) -> Grads<T> {
        Grads::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ops::oracle::{check, random, Case};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn passes_match_central_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let op = Constant {
            shape: vec![2, 3],
            values: Arc::new((0..6).map(|i| 0.1 * i as f64 - 0.2).collect()),
        };
        assert_eq!(op.infer_shape(&[&[5, 7]]).unwrap(), [2, 3]);
        let bad = Constant {
            shape: vec![2, 2],
            ..op.clone()
        };
        assert!(bad.infer_shape(&[&[5, 7]]).is_err());
        let (opts, batch) = (
            crate::engine::EngineOptions::default(),
            ArrayD::zeros(IxDyn(&[5, 7])),
        );
        let xs = [&batch];
        let a = Fwd {
            options: &opts,
            mode: crate::engine::Mode::Eval,
            x: &xs,
            p: &[],
            affine: None,
        };
        let (y, _) = op.forward::<f32>(&a);
        assert_eq!(y.shape(), [2, 3]);
        assert_eq!(y[[1, 2]], 0.3);
        let case = Case {
            x: vec![random(&[5, 7], &mut rng)],
            diff: vec![false],
            p: vec![],
            source: true,
        };
        check("constant", &op, &case, 14);
    }
}
