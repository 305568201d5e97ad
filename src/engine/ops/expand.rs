//! Broadcast to a target shape (ONNX `Expand`: numpy broadcasting both ways, the output
//! shape is the broadcast of the input's and the target's). `shape[0] == 0` takes the
//! batch size from the node's second input, a reference value (e.g. the patch tokens), so
//! that a `[1, 1, D]` class token becomes `[N, 1, D]`; the reference gets no gradient and
//! its R-value is not read.
//!
//! ```text
//! y = broadcast(x)               (a linear map: copies of x along the broadcast axes)
//! backward:   dx = Σ dy over the broadcast axes (leading ones, and size-1 axes of x)
//! R-forward:  R{y} = broadcast(R{x})      R-backward: R{dx} = Σ R{dy} over them
//! ```

use ndarray::{ArrayD, Axis, IxDyn};

use super::{EngineOp, Fwd, Grads, Taped};
use crate::engine::error::ShapeError;
use crate::engine::Scalar;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expand {
    /// Target shape, batch axis first; `shape[0] == 0`: the second input's batch size.
    pub shape: Vec<usize>,
    /// The axis of the second input that holds the batch (1 for the network's input
    /// images, held `[C, N, H, W]`).
    pub ref_axis: usize,
}

/// numpy broadcast of two shapes (trailing axes aligned), or `None` where they clash.
pub(crate) fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let at = |s: &[usize], i: usize| match (i + s.len()).checked_sub(r) {
        Some(j) => s[j],
        None => 1,
    };
    (0..r)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// Σ of `g` over the axes along which `shape` was broadcast to `g`'s shape (the leading
/// axes `g` has more, and the axes where `shape` is 1): the adjoint of broadcasting.
pub(crate) fn sum_to<T: Scalar>(g: &ArrayD<T>, shape: &[usize]) -> ArrayD<T> {
    if g.shape() == shape {
        return g.clone();
    }
    let lead = g.ndim() - shape.len();
    let mut s = g.clone();
    for _ in 0..lead {
        s = s.sum_axis(Axis(0));
    }
    for (a, &d) in shape.iter().enumerate() {
        if d == 1 && s.shape()[a] != 1 {
            s = s.sum_axis(Axis(a)).insert_axis(Axis(a));
        }
    }
    s
}

impl Expand {
    /// The output shape for input `x` and reference `reference`.
    fn out_shape(
        &self,
        x: &[usize],
        reference: Option<&[usize]>,
    ) -> Result<Vec<usize>, ShapeError> {
        let mut target = self.shape.clone();
        let bad = |to: &[usize]| ShapeError::Expand {
            from: x.into(),
            to: to.into(),
        };
        if target.first() == Some(&0) {
            target[0] = reference
                .and_then(|r| r.get(self.ref_axis).copied())
                .ok_or(bad(&target))?;
        }
        broadcast_shapes(x, &target).ok_or(bad(&target))
    }

    fn expand<T: Scalar>(&self, x: &ArrayD<T>, out: &[usize]) -> ArrayD<T> {
        x.broadcast(IxDyn(out))
            .expect("shapes checked at build")
            .to_owned()
    }

    fn reduce<T: Scalar>(&self, a: &Taped<T>, g: &ArrayD<T>) -> Grads<T> {
        let dx = a.need_dx(0).then(|| sum_to(g, a.x[0].shape()));
        let mut all = vec![dx];
        all.resize_with(a.x.len(), || None);
        Grads {
            dx: all,
            dp: vec![],
        }
    }
}

impl EngineOp for Expand {
    const KIND: &'static str = "expand";
    type Cache<T: Scalar> = ();
    type RCache<T: Scalar> = ();

    fn infer_shape(&self, x: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
        self.out_shape(x[0], x.get(1).copied())
    }

    fn forward<T: Scalar>(&self, a: &Fwd<T>) -> (ArrayD<T>, ()) {
        let out = self
            .out_shape(a.x[0].shape(), a.x.get(1).map(|r| r.shape()))
            .expect("shapes checked at build");
        (self.expand(a.x[0], &out), ())
    }

    fn backward<T: Scalar>(&self, a: &Taped<T>, _c: &(), gy: ArrayD<T>) -> Grads<T> {
        self.reduce(a, &gy)
    }

    fn r_forward<T: Scalar>(&self, a: &Taped<T>, _c: &()) -> (Option<ArrayD<T>>, ()) {
        (a.rx(0).map(|r| self.expand(r, a.y.shape())), ())
    }

    fn r_backward<T: Scalar>(
        &self,
        a: &Taped<T>,
        _c: &(),
        _rc: &(),
        _gy: &ArrayD<T>,
        rgy: ArrayD<T>,
    ) -> Grads<T> {
        self.reduce(a, &rgy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ops::oracle::{check, random, Case};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn broadcast_rules() {
        assert_eq!(
            broadcast_shapes(&[1, 1, 4], &[3, 5, 4]),
            Some(vec![3, 5, 4])
        );
        assert_eq!(broadcast_shapes(&[5, 1], &[2, 1, 3]), Some(vec![2, 5, 3]));
        assert_eq!(broadcast_shapes(&[2, 3], &[3, 3]), None);
        let e = Expand {
            shape: vec![0, 1, 4],
            ref_axis: 0,
        };
        assert_eq!(e.infer_shape(&[&[1, 1, 4], &[6, 9, 4]]).unwrap(), [6, 1, 4]);
        assert!(e.infer_shape(&[&[1, 1, 4]]).is_err());
        // bidirectional: the input's larger axes win
        let e = Expand {
            shape: vec![3, 1],
            ref_axis: 0,
        };
        assert_eq!(e.infer_shape(&[&[1, 5]]).unwrap(), [3, 5]);
        assert!(e.infer_shape(&[&[2, 5]]).is_err());
    }

    #[test]
    fn passes_match_central_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        // the class token against patch tokens: the reference takes no gradient
        let mut case = Case::new(
            vec![random(&[1, 1, 3], &mut rng), random(&[4, 5, 3], &mut rng)],
            vec![],
        );
        case.diff[1] = false;
        let op = Expand {
            shape: vec![0, 1, 3],
            ref_axis: 0,
        };
        check("expand class token", &op, &case, 9);
        for (from, to) in [
            (vec![1, 3, 1], vec![2, 3, 4]),
            (vec![3, 1], vec![2, 2, 3, 2]),
            (vec![2, 3], vec![2, 3]),
            (vec![2, 1, 2], vec![1, 3, 1]),
        ] {
            let op = Expand {
                shape: to,
                ref_axis: 0,
            };
            let case = Case::new(vec![random(&from, &mut rng)], vec![]);
            check(&format!("expand {from:?} {op:?}"), &op, &case, 10);
        }
    }
}
