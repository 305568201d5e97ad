//! A per-sample reshape in row-major order, as `torch.reshape` on `[N, …]` values
//! (ONNX `Reshape`, `Squeeze`, `Unsqueeze`, `Flatten(axis)` of torch-layout values). The
//! batch axis stays the first axis; `shape` is the per-sample target, without it.
//!
//! ```text
//! y = x read in row-major order into [N, shape…]        (the identity on the values)
//! backward:   dx = dy read into x's shape       R-forward: R{y} = reshape(R{x})
//! R-backward: R{dx} = R{dy} read into x's shape
//! ```

use ndarray::{ArrayD, IxDyn};

use super::FixedMap;
use crate::engine::error::ShapeError;
use crate::engine::Scalar;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reshape {
    /// Per-sample target shape (the batch axis excluded).
    pub shape: Vec<usize>,
}

/// `x`'s values in row-major order, shaped `shape`.
fn reshaped<T: Scalar>(x: &ArrayD<T>, shape: &[usize]) -> ArrayD<T> {
    x.as_standard_layout()
        .into_owned()
        .into_shape_with_order(IxDyn(shape))
        .expect("sizes checked at build")
}

impl FixedMap for Reshape {
    const KIND: &'static str = "reshape";

    fn shape(&self, x: &[usize]) -> Result<Vec<usize>, ShapeError> {
        let per_sample: usize = x.iter().skip(1).product();
        if x.is_empty() || per_sample != self.shape.iter().product::<usize>() {
            return Err(ShapeError::Reshape {
                from: x.into(),
                to: self.shape.clone().into(),
            });
        }
        Ok(std::iter::once(x[0])
            .chain(self.shape.iter().copied())
            .collect())
    }

    fn forward<T: Scalar>(&self, x: &ArrayD<T>) -> ArrayD<T> {
        let out: Vec<usize> = std::iter::once(x.shape()[0])
            .chain(self.shape.iter().copied())
            .collect();
        reshaped(x, &out)
    }

    fn transpose<T: Scalar>(&self, gy: &ArrayD<T>, in_shape: &[usize]) -> ArrayD<T> {
        reshaped(gy, in_shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ops::oracle::{check, random, Case};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn row_major_as_torch() {
        let x =
            ArrayD::from_shape_vec(IxDyn(&[2, 2, 3]), (0..12).map(f64::from).collect()).unwrap();
        let op = Reshape { shape: vec![3, 2] };
        assert_eq!(op.shape(&[2, 2, 3]).unwrap(), [2, 3, 2]);
        let y = FixedMap::forward(&op, &x);
        assert_eq!(y.shape(), [2, 3, 2]);
        assert_eq!(y[[1, 0, 1]], 7.0);
        assert_eq!(y[[0, 2, 0]], 4.0);
        assert!(op.shape(&[2, 5]).is_err());
        // squeeze / unsqueeze
        let sq = Reshape { shape: vec![6] };
        assert_eq!(sq.shape(&[4, 1, 6]).unwrap(), [4, 6]);
        let un = Reshape {
            shape: vec![1, 6, 1],
        };
        assert_eq!(un.shape(&[4, 6]).unwrap(), [4, 1, 6, 1]);
    }

    #[test]
    fn passes_match_central_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for (from, to) in [
            (vec![2, 3, 4], vec![12]),
            (vec![2, 12], vec![3, 2, 2]),
            (vec![3, 2, 3, 2], vec![6, 2]),
        ] {
            let case = Case::new(vec![random(&from, &mut rng)], vec![]);
            check(&format!("reshape {to:?}"), &Reshape { shape: to }, &case, 5);
        }
    }
}
