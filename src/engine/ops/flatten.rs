//! Flatten `[C, N, H, W]` (internal layout) into `[N, C·H·W]` in PyTorch's order
//! (index c·H·W + h·W + w), as `x.view(x.size(0), -1)` does on `[N, C, H, W]`.
//! A 2-D input `[N, F]` passes through unchanged.
//!
//! A permutation, so linear: backward un-permutes dy, R-forward permutes R{x},
//! R-backward un-permutes R{dy}.

use ndarray::{ArrayD, IxDyn};

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
        x.view()
            .permuted_axes(IxDyn(&permutation(x.ndim())))
            .as_standard_layout()
            .into_owned()
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
        gy.view()
            .into_shape_with_order(IxDyn(&nchw))
            .expect("standard layout")
            .permuted_axes(IxDyn(&permutation(in_shape.len())))
            .as_standard_layout()
            .into_owned()
    }
}

/// Swaps the first two axes (its own inverse).
fn permutation(ndim: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..ndim).collect();
    p.swap(0, 1);
    p
}

/// Converts a PyTorch `[N, C, H, W]` batch to the internal `[C, N, H, W]` layout (and
/// back: the map is its own inverse). Other ranks (`[N, F]`, token batches `[N, T]`,
/// `[N, T, D]`) are torch layout inside the engine too, and are returned as they are.
pub fn swap_batch_channel<T: Scalar>(x: &ArrayD<T>) -> ArrayD<T> {
    if x.ndim() != 4 {
        return x.to_owned();
    }
    let mut v = x.view();
    v.swap_axes(0, 1);
    v.as_standard_layout().into_owned()
}
