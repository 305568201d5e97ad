//! Selection of constant indices along one axis (never the batch's: the importer checks
//! that) of a torch-layout value (ONNX
//! `Gather` with constant indices; `x[:, 0]`, the class token of a vision transformer,
//! is `Gather { axis: 1, indices: [0], keep_axis: false }`).
//!
//! ```text
//! y[…, j, …] = x[…, indices[j], …]    along `axis` (dropped when !keep_axis: one index)
//! backward:   dx = 0, then dx[…, indices[j], …] += dy[…, j, …]    (scatter-add; an index
//!             may repeat)
//! R-forward:  R{y} = gather(R{x})     R-backward: R{dx} = scatter-add(R{dy})
//! ```

use ndarray::{ArrayD, Axis, IxDyn};

use super::FixedMap;
use crate::engine::error::ShapeError;
use crate::engine::Scalar;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gather {
    /// A torch-layout axis, ≥ 1 (not the batch axis).
    pub axis: usize,
    pub indices: Vec<usize>,
    /// false: a scalar index (exactly one), whose axis the output drops.
    pub keep_axis: bool,
}

impl FixedMap for Gather {
    const KIND: &'static str = "gather";

    fn shape(&self, x: &[usize]) -> Result<Vec<usize>, ShapeError> {
        let (axis, rank) = (self.axis, x.len());
        if axis >= rank {
            return Err(ShapeError::Axis { axis, rank });
        }
        if let Some(&index) = self.indices.iter().find(|&&i| i >= x[axis]) {
            return Err(ShapeError::Index {
                index,
                axis,
                len: x[axis],
            });
        }
        let mut s = x.to_vec();
        match self.keep_axis {
            true => s[axis] = self.indices.len(),
            false if self.indices.len() == 1 => {
                s.remove(axis);
            }
            false => {
                return Err(ShapeError::Index {
                    index: self.indices.len(),
                    axis,
                    len: 1,
                })
            }
        }
        Ok(s)
    }

    fn forward<T: Scalar>(&self, x: &ArrayD<T>) -> ArrayD<T> {
        let ax = Axis(self.axis);
        match self.keep_axis {
            true => x.select(ax, &self.indices),
            false => x.index_axis(ax, self.indices[0]).to_owned(),
        }
    }

    fn transpose<T: Scalar>(&self, gy: &ArrayD<T>, in_shape: &[usize]) -> ArrayD<T> {
        let ax = Axis(self.axis);
        let mut dx = ArrayD::zeros(IxDyn(in_shape));
        for (j, &i) in self.indices.iter().enumerate() {
            let mut dst = dx.index_axis_mut(ax, i);
            match self.keep_axis {
                true => dst += &gy.index_axis(ax, j),
                false => dst += gy,
            }
        }
        dx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ops::oracle::{check, random, Case};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn selects_and_checks_shapes() {
        let x =
            ArrayD::from_shape_vec(IxDyn(&[2, 3, 2]), (0..12).map(f64::from).collect()).unwrap();
        let cls = Gather {
            axis: 1,
            indices: vec![0],
            keep_axis: false,
        };
        assert_eq!(cls.shape(&[2, 3, 2]).unwrap(), [2, 2]);
        let y = FixedMap::forward(&cls, &x);
        assert_eq!(y.as_slice().unwrap(), [0.0, 1.0, 6.0, 7.0]);
        let g = Gather {
            axis: 2,
            indices: vec![1, 1, 0],
            keep_axis: true,
        };
        assert_eq!(g.shape(&[2, 3, 2]).unwrap(), [2, 3, 3]);
        assert_eq!(FixedMap::forward(&g, &x)[[1, 2, 0]], 11.0);
        // the repeated index receives both gradients
        let dx = g.transpose(&ArrayD::<f64>::ones(IxDyn(&[2, 3, 3])), &[2, 3, 2]);
        assert_eq!(dx[[0, 0, 1]], 2.0);
        assert_eq!(dx[[0, 0, 0]], 1.0);
        let bad = |axis, indices: Vec<usize>, keep_axis| {
            Gather {
                axis,
                indices,
                keep_axis,
            }
            .shape(&[2, 3, 2])
            .is_err()
        };
        assert!(!bad(0, vec![0], true)); // any axis but the batch's, which the importer checks
        assert!(bad(3, vec![0], true));
        assert!(bad(1, vec![3], true));
        assert!(bad(1, vec![0, 1], false));
    }

    #[test]
    fn passes_match_central_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        for (shape, axis, indices, keep_axis) in [
            (vec![2, 4, 3], 1, vec![0], false),
            (vec![2, 4, 3], 2, vec![2, 0, 2], true),
            (vec![3, 2, 3, 2], 2, vec![1], false),
            (vec![2, 5], 1, vec![4, 1], true),
        ] {
            let op = Gather {
                axis,
                indices,
                keep_axis,
            };
            let case = Case::new(vec![random(&shape, &mut rng)], vec![]);
            check(&format!("{op:?}"), &op, &case, 7);
        }
    }
}
