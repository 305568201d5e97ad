//! A reshape in row-major order, as `torch.reshape` (ONNX `Reshape`, `Squeeze`,
//! `Unsqueeze`, `Flatten(axis)` of torch-layout values). The target is fixed but for one
//! axis, `batch`, whose size is inferred from the element count at run time: the batch
//! axis, which may also merge the batch with another (attention's `[T, N·H, D]`).
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
    /// Target shape; at `batch` a placeholder (the size there is inferred).
    pub shape: Vec<usize>,
    /// The axis whose size follows from the element count (`None`: `shape` is exact).
    pub batch: Option<usize>,
}

impl Reshape {
    /// `[N, shape…]`: a per-sample reshape that keeps the batch axis first.
    pub fn per_sample(shape: Vec<usize>) -> Self {
        let mut full = vec![1];
        full.extend(shape);
        Reshape {
            shape: full,
            batch: Some(0),
        }
    }

    /// The output shape for an input of `numel` elements.
    fn target(&self, numel: usize) -> Option<Vec<usize>> {
        let mut out = self.shape.clone();
        if let Some(b) = self.batch {
            let rest: usize = out
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != b)
                .map(|(_, &d)| d)
                .product();
            if rest == 0 || numel % rest != 0 || b >= out.len() {
                return None;
            }
            out[b] = numel / rest;
        }
        (out.iter().product::<usize>() == numel).then_some(out)
    }
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
        self.target(x.iter().product())
            .ok_or_else(|| ShapeError::Reshape {
                from: x.into(),
                to: self.shape.clone().into(),
            })
    }

    fn forward<T: Scalar>(&self, x: &ArrayD<T>) -> ArrayD<T> {
        let out = self.target(x.len()).expect("sizes checked at build");
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
        let op = Reshape::per_sample(vec![3, 2]);
        assert_eq!(op.shape(&[2, 2, 3]).unwrap(), [2, 3, 2]);
        let y = FixedMap::forward(&op, &x);
        assert_eq!(y.shape(), [2, 3, 2]);
        assert_eq!(y[[1, 0, 1]], 7.0);
        assert_eq!(y[[0, 2, 0]], 4.0);
        assert!(op.shape(&[2, 5]).is_err());
        // squeeze / unsqueeze
        let sq = Reshape::per_sample(vec![6]);
        assert_eq!(sq.shape(&[4, 1, 6]).unwrap(), [4, 6]);
        let un = Reshape::per_sample(vec![1, 6, 1]);
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
            check(
                &format!("reshape {to:?}"),
                &Reshape::per_sample(to),
                &case,
                5,
            );
        }
    }
}
