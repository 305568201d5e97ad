//! Elementwise arithmetic of two graph values with numpy/ONNX broadcasting (ONNX `Add`,
//! `Sub`, `Mul`, `Div`): trailing axes aligned, an axis of length 1 (or a missing leading
//! one) repeated to the other's length — the batch axis too, so a `[1, T, D]` position
//! embedding adds to `[N, T, D]` tokens. Shapes are torch layout, or equal in any layout.
//!
//! With ᵃ/ᵇ the broadcast of an input to the output's shape and S_a (S_b) the sum over the
//! axes that broadcast repeated, back to that input's shape:
//!
//! ```text
//! Add:  y = a + b    da = S_a dy,       db = S_b dy
//!       R{y} = R{a} + R{b}              R{da} = S_a R{dy},  R{db} = S_b R{dy}
//! Sub:  y = a − b    da = S_a dy,       db = −S_b dy
//!       R{y} = R{a} − R{b}              R{da} = S_a R{dy},  R{db} = −S_b R{dy}
//! Mul:  y = a b      da = S_a (dy b),   db = S_b (dy a)
//!       R{y} = R{a} b + a R{b}
//!       R{da} = S_a (R{dy} b + dy R{b}),   R{db} = S_b (R{dy} a + dy R{a})
//! Div:  y = a / b    da = S_a (dy / b), db = −S_b (dy y / b)
//!       R{y} = (R{a} − y R{b}) / b
//!       R{da} = S_a ((R{dy} − dy R{b} / b) / b)
//!       R{db} = −S_b ((R{dy} y + dy (R{a} − 2 y R{b}) / b) / b)
//! ```
//! (Pearlmutter 1994; an R-value `None` is zero.) The residual sum of two equal shapes
//! keeps its own op, [`super::Add`].

use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, Zip};

use super::{EngineOp, Fwd, Grads, Taped};
use crate::engine::error::ShapeError;
use crate::engine::Scalar;

/// Which arithmetic a [`EngineOp`] of two values does (the op is `Op::Binary(kind)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryKind {
    Add,
    Sub,
    Mul,
    Div,
}

/// The broadcast of shapes `a` and `b` (numpy rules), or `None`.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let at = |s: &[usize], i: usize| match (i + s.len()).checked_sub(n) {
        Some(k) => s[k],
        None => 1,
    };
    (0..n)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// `g` (the output's shape) summed over the axes that broadcasting repeated to reach it
/// from `shape`, so shaped `shape`. Moves `g` through when nothing was repeated.
pub fn sum_to<T: Scalar>(g: ArrayD<T>, shape: &[usize]) -> ArrayD<T> {
    if g.shape() == shape {
        return g;
    }
    let mut r = g;
    while r.ndim() > shape.len() {
        r = r.sum_axis(Axis(0));
    }
    for (i, &n) in shape.iter().enumerate() {
        if n == 1 && r.shape()[i] != 1 {
            r = r.sum_axis(Axis(i)).insert_axis(Axis(i));
        }
    }
    r
}

/// `x` broadcast to `shape` (checked by the shape rule).
fn bc<'a, T>(x: &'a ArrayD<T>, shape: &[usize]) -> ArrayViewD<'a, T> {
    x.broadcast(IxDyn(shape)).expect("shapes broadcast")
}

/// `x` in standard (row-major) layout, as the other ops expect.
fn standard<T: Scalar>(x: ArrayD<T>) -> ArrayD<T> {
    match x.is_standard_layout() {
        true => x,
        false => x.as_standard_layout().into_owned(),
    }
}

impl BinaryKind {
    fn apply<T: Scalar>(self, a: T, b: T) -> T {
        match self {
            BinaryKind::Add => a + b,
            BinaryKind::Sub => a - b,
            BinaryKind::Mul => a * b,
            BinaryKind::Div => a / b,
        }
    }
}

impl EngineOp for BinaryKind {
    const KIND: &'static str = "binary";
    type Cache<T: Scalar> = ();
    type RCache<T: Scalar> = ();

    fn infer_shape(&self, x: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
        broadcast_shape(x[0], x[1]).ok_or_else(|| ShapeError::Broadcast {
            a: x[0].into(),
            b: x[1].into(),
        })
    }

    fn forward<T: Scalar>(&self, a: &Fwd<T>) -> (ArrayD<T>, ()) {
        let (x0, x1) = (a.x[0], a.x[1]);
        let k = *self;
        let y = match x0.shape() == x1.shape() {
            true => Zip::from(x0).and(x1).map_collect(|&p, &q| k.apply(p, q)),
            false => {
                let s = broadcast_shape(x0.shape(), x1.shape()).expect("shapes broadcast");
                Zip::from(bc(x0, &s))
                    .and(bc(x1, &s))
                    .map_collect(|&p, &q| k.apply(p, q))
            }
        };
        (standard(y), ())
    }

    fn r_backward_reads_gy(&self) -> bool {
        matches!(self, BinaryKind::Mul | BinaryKind::Div)
    }

    fn backward<T: Scalar>(&self, a: &Taped<T>, _c: &(), gy: ArrayD<T>) -> Grads<T> {
        let (x0, x1, y) = (a.x[0], a.x[1], a.y);
        let s = y.shape().to_vec();
        let (na, nb) = (a.need_dx(0), a.need_dx(1));
        let (b, av) = (bc(x1, &s), bc(x0, &s));
        // db first (from a borrowed dy), then da (consuming dy)
        let db = nb.then(|| {
            let d = match self {
                BinaryKind::Add => gy.clone(),
                BinaryKind::Sub => gy.mapv(|g| -g),
                BinaryKind::Mul => Zip::from(&gy).and(&av).map_collect(|&g, &p| g * p),
                BinaryKind::Div => Zip::from(&gy)
                    .and(y)
                    .and(&b)
                    .map_collect(|&g, &y, &q| -(g * y / q)),
            };
            sum_to(standard(d), x1.shape())
        });
        let da = na.then(|| {
            let mut d = gy;
            match self {
                BinaryKind::Add | BinaryKind::Sub => {}
                BinaryKind::Mul => Zip::from(&mut d).and(&b).for_each(|g, &q| *g *= q),
                BinaryKind::Div => Zip::from(&mut d).and(&b).for_each(|g, &q| *g /= q),
            }
            sum_to(d, x0.shape())
        });
        Grads {
            dx: vec![da, db],
            dp: vec![],
        }
    }

    fn r_forward<T: Scalar>(&self, a: &Taped<T>, _c: &()) -> (Option<ArrayD<T>>, ()) {
        if a.rx(0).is_none() && a.rx(1).is_none() {
            return (None, ());
        }
        let (x0, x1, y) = (a.x[0], a.x[1], a.y);
        let s = y.shape();
        let zero = ArrayD::<T>::zeros(IxDyn(&[]));
        let ra = a.rx(0).map_or_else(|| bc(&zero, s), |r| bc(r, s));
        let rb = a.rx(1).map_or_else(|| bc(&zero, s), |r| bc(r, s));
        let r = match self {
            BinaryKind::Add => Zip::from(&ra).and(&rb).map_collect(|&p, &q| p + q),
            BinaryKind::Sub => Zip::from(&ra).and(&rb).map_collect(|&p, &q| p - q),
            BinaryKind::Mul => Zip::from(&ra)
                .and(&rb)
                .and(bc(x0, s))
                .and(bc(x1, s))
                .map_collect(|&ra, &rb, &p, &q| ra * q + p * rb),
            BinaryKind::Div => Zip::from(&ra)
                .and(&rb)
                .and(y)
                .and(bc(x1, s))
                .map_collect(|&ra, &rb, &y, &q| (ra - y * rb) / q),
        };
        (Some(standard(r)), ())
    }

    fn r_backward<T: Scalar>(
        &self,
        a: &Taped<T>,
        _c: &(),
        _rc: &(),
        gy: &ArrayD<T>,
        rgy: ArrayD<T>,
    ) -> Grads<T> {
        let (x0, x1, y) = (a.x[0], a.x[1], a.y);
        let s = y.shape().to_vec();
        let (na, nb) = (a.need_dx(0), a.need_dx(1));
        let zero = ArrayD::<T>::zeros(IxDyn(&[]));
        let ra = a.rx(0).map_or_else(|| bc(&zero, &s), |r| bc(r, &s));
        let rb = a.rx(1).map_or_else(|| bc(&zero, &s), |r| bc(r, &s));
        let (av, b) = (bc(x0, &s), bc(x1, &s));
        let db = nb.then(|| {
            let d = match self {
                BinaryKind::Add => rgy.clone(),
                BinaryKind::Sub => rgy.mapv(|g| -g),
                BinaryKind::Mul => Zip::from(&rgy)
                    .and(&av)
                    .and(gy)
                    .and(&ra)
                    .map_collect(|&rg, &p, &g, &ra| rg * p + g * ra),
                BinaryKind::Div => {
                    let mut d = rgy.clone();
                    Zip::from(&mut d)
                        .and(y)
                        .and(&b)
                        .and(gy)
                        .and(&ra)
                        .and(&rb)
                        .for_each(|rg, &y, &q, &g, &ra, &rb| {
                            *rg = -((*rg * y + g * (ra - (y + y) * rb) / q) / q)
                        });
                    d
                }
            };
            sum_to(standard(d), x1.shape())
        });
        let da = na.then(|| {
            let mut d = rgy;
            match self {
                BinaryKind::Add | BinaryKind::Sub => {}
                BinaryKind::Mul => Zip::from(&mut d)
                    .and(&b)
                    .and(gy)
                    .and(&rb)
                    .for_each(|rg, &q, &g, &rb| *rg = *rg * q + g * rb),
                BinaryKind::Div => Zip::from(&mut d)
                    .and(&b)
                    .and(gy)
                    .and(&rb)
                    .for_each(|rg, &q, &g, &rb| *rg = (*rg - g * rb / q) / q),
            }
            sum_to(d, x0.shape())
        });
        Grads {
            dx: vec![da, db],
            dp: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ops::testing::{check_op, randn, rng, uniform};

    const KINDS: [BinaryKind; 4] = [
        BinaryKind::Add,
        BinaryKind::Sub,
        BinaryKind::Mul,
        BinaryKind::Div,
    ];

    /// Each kind on (a, b) shapes: equal, a batch-broadcast parameter, a scalar, a rank-0
    /// constant, both sides broadcasting, and a channel vector on a 4-D value.
    #[test]
    fn all_passes_with_broadcasting() {
        let mut r = rng(1);
        let cases: [(&[usize], &[usize]); 7] = [
            (&[2, 3, 4], &[2, 3, 4]),
            (&[2, 3, 4], &[1, 3, 4]),
            (&[2, 3, 4], &[4]),
            (&[2, 3, 4], &[]),
            (&[2, 1, 4], &[3, 1]),
            (&[1, 3, 1, 1], &[2, 3, 2, 2]),
            (&[2, 3], &[2, 1]),
        ];
        for k in KINDS {
            for (sa, sb) in cases {
                eprintln!("{k:?} {sa:?} {sb:?}");
                let a = randn(sa, &mut r);
                // divisors kept away from 0
                let b = match k {
                    BinaryKind::Div => {
                        uniform(sb, 0.5, 2.0, &mut r) * (randn(sb, &mut r).mapv(f64::signum))
                    }
                    _ => randn(sb, &mut r),
                };
                check_op(&k, &[a, b], &[], 1e-6);
            }
        }
    }

    #[test]
    fn shape_rule() {
        let s = |a: &[usize], b: &[usize]| BinaryKind::Mul.infer_shape(&[a, b]);
        assert_eq!(s(&[5, 1, 3], &[4, 1]).unwrap(), vec![5, 4, 3]);
        assert_eq!(s(&[], &[2, 3]).unwrap(), vec![2, 3]);
        assert_eq!(
            s(&[2, 3], &[4]).unwrap_err().to_string(),
            "cannot broadcast [2, 3] and [4]"
        );
    }

    #[test]
    fn forward_values() {
        let a = ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let b = ArrayD::from_shape_vec(IxDyn(&[2]), vec![10.0, 20.0]).unwrap();
        let run = |k: BinaryKind| {
            let at =
                crate::engine::ops::testing::At::<_, f64>::new(&k, &[a.clone(), b.clone()], &[]);
            at.forward().0.iter().copied().collect::<Vec<f64>>()
        };
        assert_eq!(run(BinaryKind::Add), [11.0, 22.0, 13.0, 24.0]);
        assert_eq!(run(BinaryKind::Sub), [-9.0, -18.0, -7.0, -16.0]);
        assert_eq!(run(BinaryKind::Mul), [10.0, 40.0, 30.0, 80.0]);
        assert_eq!(run(BinaryKind::Div), [0.1, 0.1, 0.3, 0.2]);
    }
}
