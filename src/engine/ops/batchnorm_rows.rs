//! Batch norm's per-channel `[C, M]` rows: views of `[C, N, H, W]` and `[N, C]` arrays,
//! a channel's row as a slice, arrays built row by row, and what x̂ is formed from (an
//! array, or on a lean tape's residual block end the kept output less the shortcut's term).

use std::borrow::Cow;

use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewMut2, Ix2};

use crate::engine::Scalar;

/// What x̂ is formed from: an array, less a second one of its shape where given.
pub(super) type Source<'a, T> = (&'a ArrayD<T>, Option<&'a ArrayD<T>>);

/// The `[C, M]` rows of a [`Source`]: rows of the first array, less the second's.
pub(super) struct Rows<'a, T> {
    v: ArrayView2<'a, T>,
    less: Option<ArrayView2<'a, T>>,
}

impl<'a, T: Scalar> Rows<'a, T> {
    pub(super) fn new((x, less): Source<'a, T>) -> Self {
        Rows {
            v: cview(x),
            less: less.map(cview),
        }
    }

    pub(super) fn ncols(&self) -> usize {
        self.v.ncols()
    }

    /// Channel `ch`'s rows of the two arrays.
    pub(super) fn parts(&self, ch: usize) -> (Cow<'_, [T]>, Option<Cow<'_, [T]>>) {
        (
            row_slice(&self.v, ch),
            self.less.as_ref().map(|l| row_slice(l, ch)),
        )
    }

    /// Channel `ch`'s row: borrowed where nothing is subtracted.
    #[inline(always)]
    pub(super) fn row(&self, ch: usize) -> Cow<'_, [T]> {
        let r = row_slice(&self.v, ch);
        match &self.less {
            None => r,
            Some(l) => {
                let mut out = Vec::with_capacity(r.len());
                extend_map2(&mut out, &r, &row_slice(l, ch), |z, q| z - q);
                Cow::Owned(out)
            }
        }
    }
}

/// `[C, M]` view of an activation: `[C, N, H, W]` reshaped, or `[N, C]` transposed.
pub(super) fn cview<T: Scalar>(x: &ArrayD<T>) -> ArrayView2<'_, T> {
    if x.ndim() == 2 {
        x.view()
            .into_dimensionality::<Ix2>()
            .unwrap()
            .reversed_axes()
    } else {
        let c = x.shape()[0];
        x.view()
            .into_shape_with_order((c, x.len() / c))
            .expect("standard layout")
    }
}

pub(super) fn cview_mut<T: Scalar>(x: &mut ArrayD<T>) -> ArrayViewMut2<'_, T> {
    if x.ndim() == 2 {
        x.view_mut()
            .into_dimensionality::<Ix2>()
            .unwrap()
            .reversed_axes()
    } else {
        let c = x.shape()[0];
        let m = x.len() / c;
        x.view_mut()
            .into_shape_with_order((c, m))
            .expect("standard layout")
    }
}

/// Channel `c`'s row of a `[C, M]` view as a slice (borrowed when contiguous, as for
/// `[C, N, H, W]`; copied for the transposed `[N, C]` view).
pub(super) fn row_slice<'a, T: Scalar>(v: &'a ArrayView2<'a, T>, c: usize) -> Cow<'a, [T]> {
    let r = v.row(c);
    match r.to_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(r.to_vec()),
    }
}

/// An array shaped like `like` (`[C, …]` or `[N, C]`) from its channel rows, each
/// appended in order by `row(c, out)`: no zero fill before the values are written.
#[inline(always)]
pub(super) fn from_rows<T: Scalar>(
    like: &ArrayD<T>,
    channels: usize,
    mut row: impl FnMut(usize, &mut Vec<T>),
) -> ArrayD<T> {
    let m = like.len() / channels.max(1);
    let mut v = Vec::with_capacity(like.len());
    for c in 0..channels {
        row(c, &mut v);
        assert_eq!(v.len(), (c + 1) * m, "batch norm: row length");
    }
    shaped(like, channels, v)
}

/// Appends `f(a[i], b[i])` for each `i` to `out` by an indexed loop, which inlines into
/// the caller (and so into [`wide!`]'s AVX2 code): an iterator `extend` runs its `fold`
/// out of line, compiled for the baseline instruction set.
#[inline(always)]
pub(super) fn extend_map2<T: Scalar>(out: &mut Vec<T>, a: &[T], b: &[T], f: impl Fn(T, T) -> T) {
    let n = a.len();
    let b = &b[..n];
    out.reserve(n);
    let spare = &mut out.spare_capacity_mut()[..n];
    for i in 0..n {
        spare[i].write(f(a[i], b[i]));
    }
    // SAFETY: the loop wrote the `n` values after the old length.
    unsafe { out.set_len(out.len() + n) };
}

/// The channel rows `v` (`[C, M]` in order) as an array shaped like `like`.
#[inline(always)]
pub(super) fn shaped<T: Scalar>(like: &ArrayD<T>, channels: usize, v: Vec<T>) -> ArrayD<T> {
    let m = like.len() / channels.max(1);
    if like.ndim() == 2 {
        Array2::from_shape_vec((channels, m), v)
            .expect("size")
            .reversed_axes()
            .as_standard_layout()
            .into_owned()
            .into_dyn()
    } else {
        ArrayD::from_shape_vec(like.raw_dim(), v).expect("size")
    }
}
