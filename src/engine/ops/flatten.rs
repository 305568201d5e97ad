//! Flatten `[C, N, H, W]` (internal layout) into `[N, C·H·W]` in PyTorch's order
//! (index c·H·W + h·W + w), as `x.view(x.size(0), -1)` does on `[N, C, H, W]`.
//! A 2-D input `[N, F]` passes through unchanged.
//!
//! A permutation, so linear: backward un-permutes dy, R-forward permutes R{x},
//! R-backward un-permutes R{dy}.

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use super::FixedMap;
use crate::engine::error::ShapeError;
use crate::engine::Scalar;

pub struct Flatten;

impl FixedMap for Flatten {
    const KIND: &'static str = "flatten";

    fn shape(&self, x: &[usize]) -> Result<Vec<usize>, ShapeError> {
        Ok(if x.len() == 2 {
            x.to_vec()
        } else {
            vec![x[1], x[0] * x[2..].iter().product::<usize>()]
        })
    }

    fn forward<T: Scalar>(&self, x: &ArrayD<T>) -> ArrayD<T> {
        if x.ndim() == 2 {
            return x.clone();
        }
        let n = x.shape()[1];
        let f = x.len() / n;
        swapped(x.view())
            .into_shape_with_order(IxDyn(&[n, f]))
            .expect("standard layout")
    }

    /// `in_shape` is the internal input shape `[C, N, H, W]`.
    fn transpose<T: Scalar>(&self, gy: &ArrayD<T>, in_shape: &[usize]) -> ArrayD<T> {
        if in_shape.len() == 2 {
            return gy.clone();
        }
        // [N, C·H·W] → [N, C, H, W] → [C, N, H, W]
        let mut nchw = in_shape.to_vec();
        nchw.swap(0, 1);
        swapped(
            gy.view()
                .into_shape_with_order(IxDyn(&nchw))
                .expect("standard layout"),
        )
    }
}

/// `x` (at least 2-D) with its first two axes swapped, in standard layout: from a
/// standard-layout `x`, one copy of each contiguous block of the other axes (an image
/// plane, for `[N, C, H, W]`), where ndarray's strided copy goes element by element;
/// else that copy.
fn swapped<T: Scalar>(mut x: ArrayViewD<T>) -> ArrayD<T> {
    let mut shape = x.shape().to_vec();
    shape.swap(0, 1);
    let (b, a) = (shape[0], shape[1]);
    let inner: usize = shape[2..].iter().product();
    if let (Some(src), true) = (x.as_slice(), inner > 1) {
        let mut out = Vec::with_capacity(src.len());
        for j in 0..b {
            for i in 0..a {
                out.extend_from_slice(&src[(i * b + j) * inner..][..inner]);
            }
        }
        return ArrayD::from_shape_vec(IxDyn(&shape), out).expect("size");
    }
    x.swap_axes(0, 1);
    x.as_standard_layout().into_owned()
}

/// Converts a PyTorch `[N, C, H, W]` batch to the internal `[C, N, H, W]` layout (and
/// back: the map is its own inverse). Other ranks (`[N, F]`, token batches `[N, T]`,
/// `[N, T, D]`) are torch layout inside the engine too, and are returned as they are.
pub fn swap_batch_channel<T: Scalar>(x: &ArrayD<T>) -> ArrayD<T> {
    if x.ndim() != 4 {
        return x.to_owned();
    }
    swapped(x.view())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The block copy gives ndarray's strided copy, for standard and other layouts, with
    /// one-element blocks and empty axes.
    #[test]
    fn swapped_is_the_strided_copy() {
        for shape in [
            vec![3, 5, 4, 6],
            vec![1, 7, 2, 3],
            vec![4, 2, 1, 1],
            vec![2, 3, 5],
            vec![3, 4],
            vec![0, 3, 2, 2],
        ] {
            let x = ArrayD::from_shape_fn(IxDyn(&shape), |i| {
                (ndarray::Dimension::slice(&i).iter()).fold(0.25f32, |a, &v| a * 7.0 + v as f32)
            });
            let strided = |v: ArrayViewD<f32>| {
                let mut v = v;
                v.swap_axes(0, 1);
                v.as_standard_layout().into_owned()
            };
            assert_eq!(swapped(x.view()), strided(x.view()), "{shape:?}");
            // a view that is not in standard layout (its last axes reversed)
            let mut r = x.view();
            r.invert_axis(ndarray::Axis(shape.len() - 1));
            assert_eq!(swapped(r.clone()), strided(r), "{shape:?} reversed");
        }
    }
}
