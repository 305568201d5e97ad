//! A source node whose value is its one parameter tensor, as stored (a vision
//! transformer's class token `[1, 1, D]`, position embedding `[1, T, D]`; broadcasting
//! ops take it to the batch). The node has no inputs (the batch it gets is not read).
//!
//! ```text
//! y = p          backward:   dp = dy
//! R{y} = v       R-backward: R{dp} = R{dy}
//! ```

use ndarray::ArrayD;

use super::{EngineOp, Fwd, Grads, Taped};
use crate::engine::error::ShapeError;
use crate::engine::Scalar;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    /// The parameter's shape (as in the layout), which is the node's output shape.
    pub shape: Vec<usize>,
}

impl EngineOp for Param {
    const KIND: &'static str = "param";
    type Cache<T: Scalar> = ();
    type RCache<T: Scalar> = ();

    fn infer_shape(&self, _x: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
        Ok(self.shape.clone())
    }

    fn forward<T: Scalar>(&self, a: &Fwd<T>) -> (ArrayD<T>, ()) {
        (a.p[0].as_standard_layout().into_owned(), ())
    }

    fn backward<T: Scalar>(&self, a: &Taped<T>, _c: &(), gy: ArrayD<T>) -> Grads<T> {
        Grads {
            dx: vec![],
            dp: match a.want_dp {
                true => vec![Some(gy)],
                false => vec![],
            },
        }
    }

    fn r_forward<T: Scalar>(&self, a: &Taped<T>, _c: &()) -> (Option<ArrayD<T>>, ()) {
        (Some(a.v[0].as_standard_layout().into_owned()), ())
    }

    fn r_backward<T: Scalar>(
        &self,
        _a: &Taped<T>,
        _c: &(),
        _rc: &(),
        _gy: &ArrayD<T>,
        rgy: ArrayD<T>,
    ) -> Grads<T> {
        Grads {
            dx: vec![],
            dp: vec![Some(rgy)],
        }
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
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let op = Param {
            shape: vec![1, 3, 4],
        };
        assert_eq!(op.infer_shape(&[&[5, 7]]).unwrap(), [1, 3, 4]);
        let case = Case {
            x: vec![random(&[5, 7], &mut rng)],
            diff: vec![false],
            p: vec![random(&[1, 3, 4], &mut rng)],
            source: true,
        };
        check("param", &op, &case, 12);
        let opts = crate::engine::EngineOptions::default();
        let (xs, p) = ([&case.x[0]], [case.p[0].view()]);
        let a = Fwd {
            options: &opts,
            mode: crate::engine::Mode::Eval,
            x: &xs,
            p: &p,
            affine: None,
        };
        assert_eq!(op.forward(&a).0, case.p[0]);
    }
}
