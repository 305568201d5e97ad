//! The `ops!` macro: declares [`Op`](super::Op) from one line per op and routes each of
//! its methods to the op's [`EngineOp`], erasing the ops' cache types for the tape.

use std::any::Any;

use ndarray::ArrayD;

use super::{EngineOp, Fwd, Taped};
use crate::engine::Scalar;

/// A type-erased cache on the tape.
pub(crate) type Erased = Box<dyn Any + Send + Sync>;

/// `c` as the cache of `op`'s forward pass (what the tape holds for its node).
pub(super) fn cache<'c, O: EngineOp, T: Scalar>(_op: &O, c: &'c Erased) -> &'c O::Cache<T> {
    c.downcast_ref().expect("the tape holds this op's cache")
}

/// `c` as the cache of `op`'s R-forward pass.
pub(super) fn r_cache<'c, O: EngineOp, T: Scalar>(_op: &O, c: &'c Erased) -> &'c O::RCache<T> {
    c.downcast_ref().expect("the R-pass holds this op's cache")
}

pub(super) fn kind_of<O: EngineOp>(_: &O) -> &'static str {
    O::KIND
}

pub(super) fn forward_erased<O: EngineOp, T: Scalar>(
    op: &O,
    a: &Fwd<T>,
    keep: bool,
) -> (ArrayD<T>, Erased) {
    let (y, c) = op.forward(a);
    (y, if keep { Box::new(c) } else { Box::new(()) })
}

pub(super) fn r_forward_erased<O: EngineOp, T: Scalar>(
    op: &O,
    a: &Taped<T>,
    c: &Erased,
) -> (Option<ArrayD<T>>, Erased) {
    let (r, rc) = op.r_forward(a, cache(op, c));
    (r, Box::new(rc))
}

pub(super) fn cache_bytes_erased<O: EngineOp, T: Scalar>(op: &O, c: &Erased) -> usize {
    O::cache_bytes::<T>(cache(op, c))
}

/// Declares [`Op`], one variant per line, and routes each of its methods to the variant's
/// [`EngineOp`]: `Variant(Payload)` (the payload implements the trait), `Variant(Payload)
/// => Wrapper` (`Wrapper(&payload)` does) or `Variant => Unit` (a unit struct does).
macro_rules! ops {
    // Normalize each line to {[attributes] Variant(payload?) [pattern] [op expression]}.
    (@go [$($done:tt)*]) => { ops!(@emit $($done)*); };
    (@go [$($done:tt)*] $(#[$m:meta])* $var:ident($payload:ty) => $wrap:ident, $($rest:tt)*) => {
        ops!(@go [$($done)* {[$(#[$m])*] $var($payload) [Op::$var(op)] [&$wrap(op)]}] $($rest)*);
    };
    (@go [$($done:tt)*] $(#[$m:meta])* $var:ident($payload:ty), $($rest:tt)*) => {
        ops!(@go [$($done)* {[$(#[$m])*] $var($payload) [Op::$var(op)] [op]}] $($rest)*);
    };
    (@go [$($done:tt)*] $(#[$m:meta])* $var:ident => $unit:ident, $($rest:tt)*) => {
        ops!(@go [$($done)* {[$(#[$m])*] $var() [Op::$var] [&$unit]}] $($rest)*);
    };
    (@emit $({[$($attr:tt)*] $var:ident($($payload:ty)?) [$pat:pat] [$op:expr]})*) => {
        /// What a node computes.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Op {
            $($($attr)* $var $(($payload))?,)*
        }

        impl Op {
            pub fn kind(&self) -> &'static str {
                match self { $($pat => kind_of($op),)* }
            }

            pub(crate) fn infer_shape(&self, x: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
                match self { $($pat => EngineOp::infer_shape($op, x),)* }
            }

            /// The forward pass and its cache (kept only with `keep`).
            pub(crate) fn forward<T: Scalar>(&self, a: &Fwd<T>, keep: bool) -> (ArrayD<T>, Erased) {
                match self { $($pat => forward_erased($op, a, keep),)* }
            }

            pub(crate) fn in_place(&self, mode: Mode) -> bool {
                match self { $($pat => EngineOp::in_place($op, mode),)* }
            }

            pub(crate) fn forward_in_place<T: Scalar>(&self, a: &Fwd<T>, x0: &mut ArrayD<T>) {
                match self { $($pat => EngineOp::forward_in_place($op, a, x0),)* }
            }

            pub(crate) fn forward_fused<T: Scalar>(
                &self,
                a: &Fwd<T>,
                epilogue: &ChannelMap<T>,
            ) -> Option<ArrayD<T>> {
                match self { $($pat => EngineOp::forward_fused($op, a, epilogue),)* }
            }

            pub(crate) fn affine<T: Scalar>(
                &self,
                p: &[ArrayViewD<T>],
                mode: Mode,
            ) -> Option<Vec<[T; 4]>> {
                match self { $($pat => EngineOp::affine($op, p, mode),)* }
            }

            pub(crate) fn epilogue<'a, T: Scalar>(
                &self,
                p: &'a [ArrayViewD<'a, T>],
                mode: Mode,
                then: Option<Activation>,
            ) -> Option<Epilogue<'a, T>> {
                match self { $($pat => EngineOp::epilogue($op, p, mode, then),)* }
            }

            pub(crate) fn forward_then<T: Scalar>(
                &self,
                a: &Fwd<T>,
                act: Activation,
            ) -> Option<(ArrayD<T>, Erased)> {
                match self {
                    $($pat => EngineOp::forward_then($op, a, act)
                        .map(|(y, c)| (y, Box::new(c) as Erased)),)*
                }
            }

            pub(crate) fn forward_in_place_then<T: Scalar>(
                &self,
                a: &Fwd<T>,
                x0: &mut ArrayD<T>,
                act: Activation,
            ) -> bool {
                match self { $($pat => EngineOp::forward_in_place_then($op, a, x0, act),)* }
            }

            #[allow(clippy::type_complexity)]
            pub(crate) fn forward_taped<T: Scalar>(
                &self,
                a: &Fwd<T>,
                map: &TapedMap<T>,
            ) -> Option<(ArrayD<T>, ArrayD<T>, Erased)> {
                match self {
                    $($pat => EngineOp::forward_taped($op, a, map)
                        .map(|(y, z, c)| (y, z, Box::new(c) as Erased)),)*
                }
            }

            pub(crate) fn forward_lean<T: Scalar>(
                &self,
                a: &Fwd<T>,
                epilogue: &ChannelMap<T>,
            ) -> Option<(ArrayD<T>, Erased)> {
                match self {
                    $($pat => EngineOp::forward_lean($op, a, epilogue)
                        .map(|(y, c)| (y, Box::new(c) as Erased)),)*
                }
            }

            pub(crate) fn lean_epilogue<'a, T: Scalar>(
                &self,
                p: &'a [ArrayViewD<'a, T>],
                mode: Mode,
                then: Option<Activation>,
                x: &[usize],
            ) -> Option<(Epilogue<'a, T>, Erased)> {
                match self {
                    $($pat => EngineOp::lean_epilogue($op, p, mode, then, x)
                        .map(|(e, c)| (e, Box::new(c) as Erased)),)*
                }
            }

            pub(crate) fn taped_epilogue<'a, T: Scalar>(
                &self,
                p: &'a [ArrayViewD<'a, T>],
                mode: Mode,
                then: Option<Activation>,
                x: &[usize],
            ) -> Option<(TapedEpilogue<'a, T>, Erased)> {
                match self {
                    $($pat => EngineOp::taped_epilogue($op, p, mode, then, x)
                        .map(|(e, c)| (e, Box::new(c) as Erased)),)*
                }
            }

            pub(crate) fn activation(&self) -> Option<Activation> {
                match self { $($pat => EngineOp::activation($op),)* }
            }

            pub(crate) fn backward<T: Scalar>(&self, a: &Taped<T>, c: &Erased, gy: ArrayD<T>) -> Grads<T> {
                match self { $($pat => { let op = $op; op.backward(a, cache::<_, T>(op, c), gy) })* }
            }

            pub(crate) fn backward_ref<T: Scalar>(
                &self,
                a: &Taped<T>,
                c: &Erased,
                gy: &ArrayD<T>,
            ) -> Option<Grads<T>> {
                match self {
                    $($pat => { let op = $op; op.backward_ref(a, cache::<_, T>(op, c), gy) })*
                }
            }

            pub(crate) fn backward_adding<T: Scalar>(
                &self,
                a: &Taped<T>,
                c: &Erased,
                gy: &ArrayD<T>,
                acc: &mut Option<ArrayD<T>>,
            ) -> Option<Grads<T>> {
                match self {
                    $($pat => { let op = $op; op.backward_adding(a, cache::<_, T>(op, c), gy, acc) })*
                }
            }

            #[allow(clippy::type_complexity)]
            pub(crate) fn backward_relu<T: Scalar>(
                &self,
                a: &Taped<T>,
                c: &Erased,
                y: &ArrayD<T>,
                gy: ArrayD<T>,
                keep_gy: bool,
            ) -> Result<(Grads<T>, Option<ArrayD<T>>), ArrayD<T>> {
                match self {
                    $($pat => { let op = $op; op.backward_relu(a, cache::<_, T>(op, c), y, gy, keep_gy) })*
                }
            }

            pub(crate) fn r_forward<T: Scalar>(&self, a: &Taped<T>, c: &Erased) -> (Option<ArrayD<T>>, Erased) {
                match self { $($pat => r_forward_erased($op, a, c),)* }
            }

            pub(crate) fn r_backward<T: Scalar>(
                &self,
                a: &Taped<T>,
                c: &Erased,
                rc: &Erased,
                gy: &ArrayD<T>,
                rgy: ArrayD<T>,
            ) -> Grads<T> {
                match self {
                    $($pat => {
                        let op = $op;
                        op.r_backward(a, cache::<_, T>(op, c), r_cache::<_, T>(op, rc), gy, rgy)
                    })*
                }
            }

            pub(crate) fn r_backward_reads_gy(&self) -> bool {
                match self { $($pat => EngineOp::r_backward_reads_gy($op),)* }
            }

            pub(crate) fn cache_bytes<T: Scalar>(&self, c: &Erased) -> usize {
                match self { $($pat => cache_bytes_erased::<_, T>($op, c),)* }
            }

            pub(crate) fn batch_stats<T: Scalar>(&self, c: &Erased, params: &[usize]) -> Option<BatchStats<T>> {
                match self { $($pat => { let op = $op; op.batch_stats(cache::<_, T>(op, c), params) })* }
            }
        }
    };
    ($($lines:tt)*) => { ops!(@go [] $($lines)*); };
}
