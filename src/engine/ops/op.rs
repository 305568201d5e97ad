//! The op trait and what the passes give an op (see [`super`]).

use std::mem::MaybeUninit;

use ndarray::{ArrayD, ArrayViewD};

use super::{BatchStats, Mode};
use crate::engine::error::ShapeError;
use crate::engine::options::EngineOptions;
use crate::engine::Scalar;

/// What the forward pass gives a node.
pub struct Fwd<'a, T> {
    pub options: &'a EngineOptions,
    pub mode: Mode,
    /// The values of the node's inputs; a node without inputs gets the batch.
    pub x: &'a [&'a ArrayD<T>],
    /// The node's parameter tensors, in its order (e.g. `[weight, bias]`).
    pub p: &'a [ArrayViewD<'a, T>],
    /// With [`EngineOp::forward_fused`] and [`EngineOp::forward_lean`]: their epilogue as
    /// numbers where it is a [`ChannelAffine`] map, for kernels that apply it in registers.
    pub affine: Option<&'a ChannelAffine<'a, T>>,
}

/// What the reverse and R-passes give a node: the taped values around it, its parameters
/// and its slice of the direction.
pub struct Taped<'a, T> {
    pub options: &'a EngineOptions,
    /// The values of the node's inputs.
    pub x: &'a [&'a ArrayD<T>],
    /// The node's own value (or, on a lean tape, the value that stands for it).
    pub y: &'a ArrayD<T>,
    /// On a lean tape, where `y` stands for the node's output only after this is
    /// subtracted: a batch norm at a residual block's end keeps only z = relu(y + r), and
    /// reads its output as z − r (exact up to a rounding of z wherever the ReLU passes;
    /// elsewhere the ReLU's mask zeroes what it meets). `None` elsewhere.
    pub y_less: Option<&'a ArrayD<T>>,
    pub p: &'a [ArrayViewD<'a, T>],
    /// The direction v on the node's parameters (R-passes; empty in the reverse pass).
    pub v: &'a [ArrayViewD<'a, T>],
    /// R{x} of each input, `None` where identically zero (all `None` in the reverse pass).
    pub rx: &'a [Option<&'a ArrayD<T>>],
    /// Per input: whether its gradient is wanted (never for the batch).
    pub need_dx: &'a [bool],
    /// Whether parameter gradients are wanted (not in the reverse pass of an HVP's
    /// θ-only half, which only propagates).
    pub want_dp: bool,
}

impl<T> Taped<'_, T> {
    /// R{x} of input `k` (`None`: zero).
    pub fn rx(&self, k: usize) -> Option<&ArrayD<T>> {
        self.rx.get(k).copied().flatten()
    }

    /// Whether input `k` wants a gradient.
    pub fn need_dx(&self, k: usize) -> bool {
        self.need_dx.get(k).copied().unwrap_or(false)
    }
}

/// What a backward or R-backward pass sends back: per input and per parameter tensor, a
/// gradient (or R-gradient) or `None` for nothing.
pub struct Grads<T> {
    pub dx: Vec<Option<ArrayD<T>>>,
    pub dp: Vec<Option<ArrayD<T>>>,
}

impl<T> Grads<T> {
    /// One input's gradient, no parameters.
    pub fn input(dx: ArrayD<T>) -> Self {
        Grads {
            dx: vec![Some(dx)],
            dp: vec![],
        }
    }

    /// Nothing to send back.
    pub fn none() -> Self {
        Grads {
            dx: vec![],
            dp: vec![],
        }
    }
}

/// A per-channel map applied to each block of a producer's output while it is in cache:
/// `(channel, offset, values)`, `offset` where `values` start in the output (`[C, …]`
/// flattened, so a same-shaped array's values are at the same place).
pub type ChannelMap<'a, T> = dyn Fn(usize, usize, &mut [T]) + 'a;

/// An owned [`ChannelMap`].
pub type Epilogue<'a, T> = Box<ChannelMap<'a, T>>;

/// A fused epilogue as numbers (eval-mode batch norm, then ReLU, or plus a residual term
/// then ReLU): `y ↦ γ·((y − μ)·s) + β` per channel with `s = 1/√(σ² + ε)`, the
/// operations of the [`ChannelMap`] it stands for, in its order, so a kernel that applies
/// it to its outputs in registers gives that map's bits without a pass over memory.
pub struct ChannelAffine<'a, T> {
    /// `[μ, s, γ, β]` of each channel.
    pub channels: Vec<[T; 4]>,
    /// ReLU last.
    pub relu: bool,
    /// A term added after the map (before the ReLU), laid out as the output.
    pub residual: Option<&'a [T]>,
}

/// A per-channel map from each block of a producer's output, while it is in cache, into
/// a second array at the same place: `(channel, values, out)`, writing every element of
/// `out` (fresh memory, never zeroed). The reverse passes keep both (the producer's
/// output and the map's).
pub type TapedMap<'a, T> = dyn Fn(usize, &[T], &mut [MaybeUninit<T>]) + 'a;

/// An owned [`TapedMap`].
pub type TapedEpilogue<'a, T> = Box<TapedMap<'a, T>>;

/// An elementwise activation that an [`Epilogue`] can apply in the same loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Relu,
}

/// An op of the engine: its shape rule and its four passes (forward, backward, R-forward,
/// R-backward; Pearlmutter 1994), plus optional hooks for inference fusion.
///
/// A pass gets the node's context ([`Fwd`], [`Taped`]) and what the op's own forward
/// (R-forward) pass cached. `None` as an R-value means identically zero.
pub trait EngineOp {
    /// Name in messages and `losscape info`.
    const KIND: &'static str;
    /// What the forward pass keeps for the other passes (`()`: nothing beyond the taped
    /// values).
    type Cache<T: Scalar>: Send + Sync + 'static;
    /// What the R-forward pass keeps for the R-backward pass.
    type RCache<T: Scalar>: Send + Sync + 'static;

    /// Output shape (internal layout) for inputs of shapes `x`; a node without inputs gets
    /// the batch's shape in PyTorch layout.
    fn infer_shape(&self, x: &[&[usize]]) -> Result<Vec<usize>, ShapeError>;

    fn forward<T: Scalar>(&self, a: &Fwd<T>) -> (ArrayD<T>, Self::Cache<T>);

    /// Gradients from `gy` = dL/d(output), owned so it may be reused in place.
    fn backward<T: Scalar>(&self, a: &Taped<T>, c: &Self::Cache<T>, gy: ArrayD<T>) -> Grads<T>;

    /// R{output} (`None`: zero).
    fn r_forward<T: Scalar>(
        &self,
        a: &Taped<T>,
        c: &Self::Cache<T>,
    ) -> (Option<ArrayD<T>>, Self::RCache<T>);

    /// R-gradients from `rgy` = R{dL/d(output)}; `gy` is dL/d(output) where
    /// [`EngineOp::r_backward_reads_gy`] says it is read (else an empty placeholder).
    fn r_backward<T: Scalar>(
        &self,
        a: &Taped<T>,
        c: &Self::Cache<T>,
        rc: &Self::RCache<T>,
        gy: &ArrayD<T>,
        rgy: ArrayD<T>,
    ) -> Grads<T>;

    /// Whether [`EngineOp::r_backward`] reads dL/d(output), which an HVP's θ-only half
    /// then keeps (ops with parameters).
    fn r_backward_reads_gy(&self) -> bool {
        false
    }

    /// Bytes held by a cache (the memory cost of a kept HVP state).
    fn cache_bytes<T: Scalar>(_c: &Self::Cache<T>) -> usize {
        0
    }

    /// Whether inference in `mode` may compute the output in the buffer of input 0 (when
    /// no later node reads that input).
    fn in_place(&self, _mode: Mode) -> bool {
        false
    }

    /// The forward pass in place on input 0, `x0` (`a.x[0]` is a placeholder), with
    /// [`EngineOp::forward`]'s arithmetic. Called only where [`EngineOp::in_place`].
    fn forward_in_place<T: Scalar>(&self, a: &Fwd<T>, x0: &mut ArrayD<T>) {
        let mut x = a.x.to_vec();
        x[0] = x0;
        let (y, _) = self.forward(&Fwd { x: &x, ..*a });
        *x0 = y;
    }

    /// Inference: the forward pass with `epilogue` applied to each output block while in
    /// cache, or `None` where the op cannot (then the graph runs the plain passes).
    fn forward_fused<T: Scalar>(
        &self,
        _a: &Fwd<T>,
        _epilogue: &ChannelMap<T>,
    ) -> Option<ArrayD<T>> {
        None
    }

    /// For a lean tape: [`EngineOp::forward_fused`] (the output is never kept, only the
    /// epilogue's result) with the op's cache; `None` where the op cannot.
    fn forward_lean<T: Scalar>(
        &self,
        _a: &Fwd<T>,
        _epilogue: &ChannelMap<T>,
    ) -> Option<(ArrayD<T>, Self::Cache<T>)> {
        None
    }

    /// `act(y)` for this op's output y in one pass, without forming y (the graph runs it
    /// where `act`'s node alone reads this one and no pass reads y), with the op's cache;
    /// `None` where the op cannot.
    fn forward_then<T: Scalar>(
        &self,
        _a: &Fwd<T>,
        _act: Activation,
    ) -> Option<(ArrayD<T>, Self::Cache<T>)> {
        None
    }

    /// Inference: [`EngineOp::forward_in_place`] followed by `act` in the same pass; false
    /// (and `x0` untouched) where the op cannot.
    fn forward_in_place_then<T: Scalar>(
        &self,
        _a: &Fwd<T>,
        _x0: &mut ArrayD<T>,
        _act: Activation,
    ) -> bool {
        false
    }

    /// A forward pass for the tape: the output and [`TapedMap`] `map` of it, formed block
    /// by block while in cache, and the op's cache; `None` where the op cannot (then the
    /// graph runs the plain passes).
    #[allow(clippy::type_complexity)]
    fn forward_taped<T: Scalar>(
        &self,
        _a: &Fwd<T>,
        _map: &TapedMap<T>,
    ) -> Option<(ArrayD<T>, ArrayD<T>, Self::Cache<T>)> {
        None
    }

    /// For the tape: this op (followed by `then` when given, which the map must apply)
    /// as a [`TapedMap`] of its input, of shape `x`, and the cache its forward pass would
    /// keep; `None` where it is not one.
    fn taped_epilogue<'a, T: Scalar>(
        &self,
        _p: &'a [ArrayViewD<'a, T>],
        _mode: Mode,
        _then: Option<Activation>,
        _x: &[usize],
    ) -> Option<(TapedEpilogue<'a, T>, Self::Cache<T>)> {
        None
    }

    /// For a lean tape: this op (followed by `then` when given, which the epilogue must
    /// apply) as an in-place [`Epilogue`] of the node before it, of shape `x`, where its
    /// reverse and R-passes can read their output (`Taped::y`: its own, or `then`'s)
    /// instead of their input, which is then never kept; with the cache they read.
    /// `None` where it cannot.
    fn lean_epilogue<'a, T: Scalar>(
        &self,
        _p: &'a [ArrayViewD<'a, T>],
        _mode: Mode,
        _then: Option<Activation>,
        _x: &[usize],
    ) -> Option<(Epilogue<'a, T>, Self::Cache<T>)> {
        None
    }

    /// [`EngineOp::epilogue`]'s map as [`ChannelAffine`] numbers `[μ, s, γ, β]` per channel where
    /// it is one (the caller adds the ReLU and residual term it fuses), else `None`.
    fn affine<T: Scalar>(&self, _p: &[ArrayViewD<T>], _mode: Mode) -> Option<Vec<[T; 4]>> {
        None
    }

    /// Inference: this op as a per-channel [`Epilogue`] of the node before it, followed
    /// by `then` when given (the epilogue must apply it), or `None` where it is not one.
    fn epilogue<'a, T: Scalar>(
        &self,
        _p: &'a [ArrayViewD<'a, T>],
        _mode: Mode,
        _then: Option<Activation>,
    ) -> Option<Epilogue<'a, T>> {
        None
    }

    /// The backward pass from a borrowed `gy`, for an op that only reads it (so a caller
    /// that keeps `gy` needs no copy), or `None` where the op consumes `gy`; the same
    /// result as [`EngineOp::backward`].
    fn backward_ref<T: Scalar>(
        &self,
        _a: &Taped<T>,
        _c: &Self::Cache<T>,
        _gy: &ArrayD<T>,
    ) -> Option<Grads<T>> {
        None
    }

    /// [`EngineOp::backward_ref`] that may fold `acc` — what the other readers of input 0
    /// sent back before, laid out as that input — into input 0's gradient: where the op
    /// takes `acc`, `dx[0]` is `acc + dx` with the bits of the separate sum
    /// (the graph's `add_assign`), without its pass over memory; where it leaves
    /// `acc`, the caller adds it. `None` where the op has no such pass (the caller then runs
    /// [`EngineOp::backward`]).
    fn backward_adding<T: Scalar>(
        &self,
        _a: &Taped<T>,
        _c: &Self::Cache<T>,
        _gy: &ArrayD<T>,
        _acc: &mut Option<ArrayD<T>>,
    ) -> Option<Grads<T>> {
        None
    }

    /// The backward pass of this node through the ReLU that is its only reader, in one
    /// pass over memory: `y` is the ReLU's output and `gy` dL/d(ReLU output); the node's
    /// grads for `gy ⊙ [y > 0]` with the bits of the two separate passes, and that masked
    /// gradient itself when `keep_gy` (what this node's R-backward reads). `Err(gy)` where
    /// the op does not fuse (then the graph runs the two passes).
    #[allow(clippy::type_complexity)]
    fn backward_relu<T: Scalar>(
        &self,
        _a: &Taped<T>,
        _c: &Self::Cache<T>,
        _y: &ArrayD<T>,
        gy: ArrayD<T>,
        _keep_gy: bool,
    ) -> Result<(Grads<T>, Option<ArrayD<T>>), ArrayD<T>> {
        Err(gy)
    }

    /// The activation this op is, if an epilogue can apply it (such an op keeps no cache:
    /// its `Cache` is `()`, which the fused passes give it).
    fn activation(&self) -> Option<Activation> {
        None
    }

    /// Batch statistics of a batch-norm-like op (`params`: the node's layout indices).
    fn batch_stats<T: Scalar>(
        &self,
        _c: &Self::Cache<T>,
        _params: &[usize],
    ) -> Option<BatchStats<T>> {
        None
    }
}

/// An op that is a fixed affine map of its one input: no parameters, no cache, so its
/// derivative J is the same everywhere and its passes follow from three functions:
///
/// ```text
/// y = forward(x)      dx = Jᵀ dy      R{y} = J R{x}      R{dx} = Jᵀ R{dy}
/// ```
pub trait FixedMap {
    const KIND: &'static str;

    /// Output shape for an input of shape `x`.
    fn shape(&self, x: &[usize]) -> Result<Vec<usize>, ShapeError>;

    fn forward<T: Scalar>(&self, x: &ArrayD<T>) -> ArrayD<T>;

    /// J r, the linear part of the map (the forward pass of a linear map).
    fn jacobian<T: Scalar>(&self, r: &ArrayD<T>) -> ArrayD<T> {
        self.forward(r)
    }

    /// Jᵀ g for an input of shape `in_shape`.
    fn transpose<T: Scalar>(&self, g: &ArrayD<T>, in_shape: &[usize]) -> ArrayD<T>;
}

impl<M: FixedMap> EngineOp for M {
    const KIND: &'static str = M::KIND;
    type Cache<T: Scalar> = ();
    type RCache<T: Scalar> = ();

    fn infer_shape(&self, x: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
        self.shape(x[0])
    }

    fn forward<T: Scalar>(&self, a: &Fwd<T>) -> (ArrayD<T>, ()) {
        (FixedMap::forward(self, a.x[0]), ())
    }

    fn backward<T: Scalar>(&self, a: &Taped<T>, _c: &(), gy: ArrayD<T>) -> Grads<T> {
        Grads::input(self.transpose(&gy, a.x[0].shape()))
    }

    fn r_forward<T: Scalar>(&self, a: &Taped<T>, _c: &()) -> (Option<ArrayD<T>>, ()) {
        (a.rx(0).map(|r| self.jacobian(r)), ())
    }

    fn r_backward<T: Scalar>(
        &self,
        a: &Taped<T>,
        _c: &(),
        _rc: &(),
        _gy: &ArrayD<T>,
        rgy: ArrayD<T>,
    ) -> Grads<T> {
        Grads::input(self.transpose(&rgy, a.x[0].shape()))
    }
}
