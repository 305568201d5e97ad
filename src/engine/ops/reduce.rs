//! Sum or mean over axes of a torch-layout value (ONNX `ReduceSum` / `ReduceMean`,
//! `x.mean(dim, keepdim)`), e.g. the token average `[N, T, D] → [N, D]` of a ViT head.
//!
//! A fixed linear map, with n the number of values reduced into each output (1 for Sum's
//! scale, 1/n for Mean's) and B the broadcast back over the reduced axes:
//!
//! ```text
//! y = c Σ_axes x         backward: dx = c B(dy)      (c = 1 or 1/n)
//! R{y} = c Σ_axes R{x}   R-backward: R{dx} = c B(R{dy})
//! ```

use ndarray::{ArrayD, Axis, IxDyn};

use super::FixedMap;
use crate::engine::error::ShapeError;
use crate::engine::Scalar;

/// Sum or mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    Sum,
    Mean,
}

/// A reduction over `axes` (torch-layout axes of the input; empty: every axis, as ONNX
/// without `axes`), keeping them as length-1 axes with `keepdims`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reduce {
    pub kind: ReduceKind,
    pub axes: Vec<usize>,
    pub keepdims: bool,
}

impl Reduce {
    /// Whether axis `i` of a rank-`rank` input is reduced.
    fn reduces(&self, i: usize, rank: usize) -> bool {
        debug_assert!(i < rank);
        self.axes.is_empty() || self.axes.contains(&i)
    }

    /// The output shape with the reduced axes kept as 1.
    fn kept_shape(&self, x: &[usize]) -> Vec<usize> {
        let r = x.len();
        (0..r)
            .map(|i| if self.reduces(i, r) { 1 } else { x[i] })
            .collect()
    }

    /// c: 1 (sum) or 1/n (mean) for an input of shape `x`.
    fn scale<T: Scalar>(&self, x: &[usize]) -> T {
        let n: usize = (0..x.len())
            .filter(|&i| self.reduces(i, x.len()))
            .map(|i| x[i])
            .product();
        match self.kind {
            ReduceKind::Sum => T::one(),
            ReduceKind::Mean => T::one() / T::from_usize(n).expect("count"),
        }
    }
}

impl FixedMap for Reduce {
    const KIND: &'static str = "reduce";

    fn shape(&self, x: &[usize]) -> Result<Vec<usize>, ShapeError> {
        let rank = x.len();
        if let Some(&axis) = self.axes.iter().find(|&&a| a >= rank) {
            return Err(ShapeError::AxisRange { axis, rank });
        }
        let kept = self.kept_shape(x);
        Ok(match self.keepdims {
            true => kept,
            false => (0..rank)
                .filter(|&i| !self.reduces(i, rank))
                .map(|i| x[i])
                .collect(),
        })
    }

    fn forward<T: Scalar>(&self, x: &ArrayD<T>) -> ArrayD<T> {
        let rank = x.ndim();
        let axes: Vec<usize> = (0..rank).rev().filter(|&i| self.reduces(i, rank)).collect();
        let mut y = match axes.split_first() {
            None => x.to_owned(),
            Some((&first, rest)) => rest
                .iter()
                .fold(x.sum_axis(Axis(first)), |y, &i| y.sum_axis(Axis(i))),
        };
        if self.kind == ReduceKind::Mean {
            let c: T = self.scale(x.shape());
            y.mapv_inplace(|v| v * c);
        }
        let out = self
            .shape(x.shape())
            .expect("axes checked by the shape rule");
        y.into_shape_with_order(IxDyn(&out))
            .expect("same number of values")
    }

    fn transpose<T: Scalar>(&self, g: &ArrayD<T>, in_shape: &[usize]) -> ArrayD<T> {
        let kept = self.kept_shape(in_shape);
        let c: T = self.scale(in_shape);
        let g = g
            .view()
            .into_shape_with_order(IxDyn(&kept))
            .expect("same number of values");
        let b = g.broadcast(IxDyn(in_shape)).expect("kept axes broadcast");
        match self.kind {
            ReduceKind::Sum => b.to_owned(),
            ReduceKind::Mean => b.mapv(|v| v * c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ops::testing::{check_op, randn, rng, At};
    use crate::engine::ops::EngineOp;

    #[test]
    fn passes_for_axes_and_keepdims() {
        let mut r = rng(1);
        let x = randn(&[2, 3, 4, 5], &mut r);
        for kind in [ReduceKind::Sum, ReduceKind::Mean] {
            for axes in [vec![1], vec![3], vec![1, 2], vec![0, 3], vec![]] {
                for keepdims in [false, true] {
                    let op = Reduce {
                        kind,
                        axes: axes.clone(),
                        keepdims,
                    };
                    eprintln!("{op:?}");
                    check_op(&op, std::slice::from_ref(&x), &[], 1e-6);
                }
            }
        }
    }

    #[test]
    fn values_and_shapes() {
        let x = ArrayD::from_shape_vec(IxDyn(&[2, 3]), (0..6).map(f64::from).collect()).unwrap();
        let op = |kind, axes: Vec<usize>, keepdims| Reduce {
            kind,
            axes,
            keepdims,
        };
        let mean_rows = op(ReduceKind::Mean, vec![1], false);
        let y = At::<_, f64>::new(&mean_rows, std::slice::from_ref(&x), &[])
            .forward()
            .0;
        assert_eq!(y.shape(), [2]);
        assert_eq!(y.iter().copied().collect::<Vec<_>>(), [1.0, 4.0]);
        let sum_all = op(ReduceKind::Sum, vec![], true);
        let y = At::<_, f64>::new(&sum_all, &[x], &[]).forward().0;
        assert_eq!((y.shape(), y[[0, 0]]), (&[1usize, 1][..], 15.0));
        assert_eq!(
            op(ReduceKind::Sum, vec![2], false)
                .infer_shape(&[&[2, 3]])
                .unwrap_err()
                .to_string(),
            "axis 2 out of range for a 2-D input"
        );
    }
}
