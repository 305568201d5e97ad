//! Where the graph's passes run two or three nodes as one pass over memory, with the
//! arithmetic of the separate ops in the same order (so the same bits):
//!
//! ```text
//! inference    conv → batch norm (eval) [→ ReLU]    the conv's epilogue, in place
//!              conv → batch norm (eval) → add → ReLU
//!                                                   the same, adding the residual block's
//!                                                   other term (computed before) per block
//!              add → ReLU                          one pass, in place
//! tape         conv → batch norm (eval) [→ ReLU]    the conv's epilogue into a second array
//!                                                   (lean tape: in place, only it kept)
//!              conv → batch norm (eval) → add → ReLU
//!                                                   lean tape only: the conv's epilogue in
//!                                                   place as in inference, only the block's
//!                                                   output z kept; batch norm's output read
//!                                                   as z − r (its x̂ rounds differently)
//!              add → ReLU                          one pass; the add's output never formed
//! reverse      ReLU → batch norm (eval)            mask, channel sums and dx in one pass
//!              ReLU → add → batch norm (eval)      the same, and the masked dy the add sends
//!                                                   to its other input (plain gradients)
//! ```
//! Each fusion asks the ops (see the hooks of [`super::super::ops::EngineOp`]); where one
//! declines, the graph runs the separate passes. The conv's epilogues of inference and
//! of the lean tape also go as numbers ([`ChannelAffine`]): Winograd's zmm output
//! transform applies them in registers as it stores each output (the same operations in
//! the same order), so no pass over the stored output remains.

use std::collections::VecDeque;

use ndarray::{ArrayD, ArrayView1, ArrayViewD};

use super::{empty, Graph, Mode, Node, Tape};
use crate::engine::ops::{add_relu_in_place, Activation, ChannelAffine, Erased, Fwd, Grads, Op};
use crate::engine::{Scalar, TapeLayout};

#[cfg(test)]
thread_local! {
    static UNFUSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static NO_NUMBERS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Tests: whether this thread switched `off` on.
#[cfg(test)]
fn switched(off: &'static std::thread::LocalKey<std::cell::Cell<bool>>) -> bool {
    off.with(|u| u.get())
}

/// Tests: runs `f` with `off` switched on on this thread.
#[cfg(test)]
fn switching<R>(
    off: &'static std::thread::LocalKey<std::cell::Cell<bool>>,
    f: impl FnOnce() -> R,
) -> R {
    let before = off.with(|u| u.replace(true));
    let r = f();
    off.with(|u| u.set(before));
    r
}

/// Whether fused epilogues are also given as numbers ([`ChannelAffine`]), for kernels
/// that apply them in registers (tests switch it off to compare bits).
fn with_numbers() -> bool {
    #[cfg(test)]
    return !switched(&NO_NUMBERS);
    #[cfg(not(test))]
    true
}

/// Tests: runs `f` with fused epilogues given only as maps (no [`ChannelAffine`]).
#[cfg(test)]
pub(super) fn without_numbers<R>(f: impl FnOnce() -> R) -> R {
    switching(&NO_NUMBERS, f)
}

/// Whether the passes may fuse ops (tests switch it off on their thread to compare bits).
pub(super) fn fusing() -> bool {
    #[cfg(test)]
    return !switched(&UNFUSED);
    #[cfg(not(test))]
    true
}

/// Tests: runs `f` with the passes' fusions switched off on this thread.
#[cfg(test)]
pub(super) fn unfused<R>(f: impl FnOnce() -> R) -> R {
    switching(&UNFUSED, f)
}

/// The epilogue of node `next` (parameters `np`) as numbers too, followed by the ReLU where
/// `relu` and after adding `residual`, for kernels that apply it in registers; `None`
/// where the op gives none.
fn numbers<'a, T: Scalar>(
    next: &Node,
    np: &[ArrayViewD<T>],
    mode: Mode,
    relu: bool,
    residual: Option<&'a [T]>,
) -> Option<ChannelAffine<'a, T>> {
    let channels = with_numbers().then(|| next.op.affine(np, mode)).flatten()?;
    Some(ChannelAffine {
        channels,
        relu,
        residual,
    })
}

/// `a` with a fused epilogue's `numbers`.
fn fwd_with<'a, T>(a: Fwd<'a, T>, numbers: &'a Option<ChannelAffine<'a, T>>) -> Fwd<'a, T> {
    Fwd {
        affine: numbers.as_ref(),
        ..a
    }
}

/// The values and caches of the nodes one fused pass stands for, in order.
pub(super) type Fused<T> = VecDeque<(ArrayD<T>, Erased)>;

/// A fused pass of a lean tape: only its last value is kept.
pub(super) struct Lean {
    /// At a residual block's end, the node whose value batch norm's output is the kept
    /// one less (the shortcut's term, see `Tape::y_less`).
    pub less: Option<usize>,
}

impl Graph {
    /// Whether node `k` exists, has node `i` as its one input, and no other node reads `i`
    /// (`last`: each node's last reader, see [`Graph::last_use`]; a reader after `i`
    /// other than `k` makes it later, or else `k` is not the last).
    fn only_reader(&self, last: &[usize], i: usize, k: usize) -> bool {
        self.nodes.get(k).is_some_and(|nk| nk.inputs == [i]) && last[i] == k
    }

    /// The activation of the node right after `j` where that node alone reads `j`.
    pub(super) fn activation_after(&self, last: &[usize], j: usize) -> Option<Activation> {
        self.only_reader(last, j, j + 1)
            .then(|| self.nodes[j + 1].op.activation())
            .flatten()
    }

    /// Inference: node `j` (parameters `p`) with its only reader's per-channel epilogue,
    /// and that one's only reader's activation, applied block by block while in cache
    /// (conv → batch norm in eval mode [→ ReLU]), or without the ReLU the add → ReLU of a
    /// residual block after it ([`Graph::residual_after`]): the result and how many
    /// following nodes it stands for; `None` where the ops do not fuse.
    pub(super) fn fused_forward<T: Scalar>(
        &self,
        theta: &ArrayView1<T>,
        values: &[ArrayD<T>],
        last: &[usize],
        j: usize,
        p: &[ArrayViewD<T>],
        mode: Mode,
    ) -> Option<(ArrayD<T>, usize)> {
        let node = &self.nodes[j];
        if node.inputs.is_empty() || !self.only_reader(last, j, j + 1) {
            return None;
        }
        let then = self.activation_after(last, j + 1);
        let next = &self.nodes[j + 1];
        let np = self.params(theta, next);
        let epilogue = next.op.epilogue(&np, mode, then)?;
        let xs: Vec<&ArrayD<T>> = node.inputs.iter().map(|&i| &values[i]).collect();
        if then.is_none() {
            if let Some(other) = self.residual_after(values, last, j) {
                // conv → batch norm → add → ReLU: relu(bn(y) + other) per block, in the
                // add's order of operands (the same sum either way round)
                let r = values[other].as_slice()?;
                let ep = |ch: usize, off: usize, row: &mut [T]| {
                    epilogue(ch, off, row);
                    add_relu_in_place(row, &r[off..][..row.len()]);
                };
                let numbers = numbers(next, &np, mode, true, Some(r));
                let y = node
                    .op
                    .forward_fused(&fwd_with(self.fwd(&xs, p, mode), &numbers), &ep)?;
                return Some((y, 3));
            }
        }
        let numbers = numbers(next, &np, mode, then == Some(Activation::Relu), None);
        let a = fwd_with(self.fwd(&xs, p, mode), &numbers);
        let y = node.op.forward_fused(&a, &*epilogue)?;
        Some((y, if then.is_some() { 2 } else { 1 }))
    }

    /// Inference, for node `j` whose only reader is `j + 1`: where `j + 2` is an add of
    /// `j + 1` and an earlier node's value of the same shape (a residual block's sum), the
    /// add the only reader of `j + 1` and a ReLU the only reader of the add, that earlier
    /// node (its value in `values`).
    fn residual_after<T: Scalar>(
        &self,
        values: &[ArrayD<T>],
        last: &[usize],
        j: usize,
    ) -> Option<usize> {
        let add = self.nodes.get(j + 2)?;
        if !matches!(add.op, Op::Add) || add.inputs.len() != 2 || last[j + 1] != j + 2 {
            return None;
        }
        let other = match add.inputs[..] {
            [a, b] if a == j + 1 && b != j + 1 => b,
            [a, b] if b == j + 1 && a != j + 1 => a,
            _ => return None,
        };
        let conv_out = self.nodes[j]
            .op
            .infer_shape(&[values.get(self.nodes[j].inputs[0])?.shape()])
            .ok()?;
        let ok = other < j
            && values[other].shape() == &conv_out[..]
            && values[other].is_standard_layout()
            && self.activation_after(last, j + 2) == Some(Activation::Relu);
        ok.then_some(other)
    }

    /// For the tape: node `j` (parameters `p`) with its only reader's per-channel map into
    /// a second array, and that one's only reader's ReLU, applied block by block while in
    /// cache (conv → batch norm in eval mode [→ ReLU]). The value and cache of `j`, then of
    /// each following node it stands for (batch norm's value is an empty placeholder when
    /// the ReLU follows: neither its reverse nor its R-passes read it, nor the ReLU's);
    /// `None` where the ops do not fuse.
    ///
    /// On a lean tape (f32, [`TapeLayout::Lean`]) where batch norm can read x̂ from its
    /// output (see [`crate::engine::ops::EngineOp::lean_epilogue`]), the conv's epilogue
    /// runs in place as in inference and only the last value is kept (the others are
    /// empty placeholders that read it, see `Tape::y_at`); [`Lean`] says so. At a residual
    /// block's end (conv → batch norm → add → ReLU, [`Graph::residual_after`]) that value
    /// is the block's output z = relu(bn(conv) + r), formed as inference forms it, and
    /// batch norm reads its output as z − r ([`Lean::less`]).
    pub(super) fn fused_taped<T: Scalar>(
        &self,
        theta: &ArrayView1<T>,
        values: &[ArrayD<T>],
        last: &[usize],
        j: usize,
        p: &[ArrayViewD<T>],
        mode: Mode,
    ) -> Option<(Fused<T>, Option<Lean>)> {
        let node = &self.nodes[j];
        if node.inputs.is_empty() || !self.only_reader(last, j, j + 1) {
            return None;
        }
        let then = self
            .activation_after(last, j + 1)
            .filter(|&a| a == Activation::Relu);
        let xs: Vec<&ArrayD<T>> = node.inputs.iter().map(|&i| &values[i]).collect();
        let shapes: Vec<&[usize]> = xs.iter().map(|x| x.shape()).collect();
        let shape = node.op.infer_shape(&shapes).ok()?;
        let next = &self.nodes[j + 1];
        let np = self.params(theta, next);
        let f32 = std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>();
        let lean = self.options.tape == TapeLayout::Lean && f32;
        if let Some((epilogue, next_cache)) = lean
            .then(|| next.op.lean_epilogue(&np, mode, then, &shape))
            .flatten()
        {
            let other = then
                .is_none()
                .then(|| self.residual_after(values, last, j))
                .flatten();
            let r = other.and_then(|o| values[o].as_slice());
            if let (Some(o), Some(r)) = (other, r) {
                // conv → batch norm → add → ReLU: only the block's output is kept
                let ep = |ch: usize, off: usize, row: &mut [T]| {
                    epilogue(ch, off, row);
                    add_relu_in_place(row, &r[off..][..row.len()]);
                };
                let numbers = numbers(next, &np, mode, true, Some(r));
                let a = fwd_with(self.fwd(&xs, p, mode), &numbers);
                if let Some((z, cache)) = node.op.forward_lean(&a, &ep) {
                    let unit = || Box::new(()) as Erased;
                    let out = VecDeque::from([
                        (empty(), cache),
                        (empty(), next_cache),
                        (empty(), unit()),
                        (z, unit()),
                    ]);
                    return Some((out, Some(Lean { less: Some(o) })));
                }
            }
            let numbers = numbers(next, &np, mode, then.is_some(), None);
            let a = fwd_with(self.fwd(&xs, p, mode), &numbers);
            if let Some((z, cache)) = node.op.forward_lean(&a, &*epilogue) {
                let mut out = VecDeque::from([(empty(), cache), (empty(), next_cache)]);
                match then {
                    Some(_) => out.push_back((z, Box::new(()) as Erased)),
                    None => out.back_mut().expect("two").0 = z,
                }
                return Some((out, Some(Lean { less: None })));
            }
        }
        let (map, next_cache) = next.op.taped_epilogue(&np, mode, then, &shape)?;
        let (y, z, cache) = node.op.forward_taped(&self.fwd(&xs, p, mode), &*map)?;
        let mut out = VecDeque::from([(y, cache)]);
        if then.is_some() {
            out.push_back((empty(), next_cache));
            out.push_back((z, Box::new(()) as Erased));
        } else {
            out.push_back((z, next_cache));
        }
        Some((out, None))
    }

    /// Reverse pass at node `j`, given `gy` = dL/d(its output): where `j` is a ReLU that
    /// alone reads the node `i = j − 1` and that node's op fuses the two backward passes
    /// (eval-mode batch norm), `Ok((i, i's grads, the masked dy i saw when keep_gy and i's
    /// R-backward reads it))`; `Err(gy)` otherwise (run the separate passes).
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    pub(super) fn fused_backward<T: Scalar>(
        &self,
        theta: &ArrayView1<T>,
        tape: &Tape<T>,
        last: &[usize],
        j: usize,
        gy: ArrayD<T>,
        want_dp: bool,
        keep_gy: bool,
    ) -> Result<(usize, Grads<T>, Option<ArrayD<T>>), ArrayD<T>> {
        let node = &self.nodes[j];
        let fuses = fusing()
            && node.op.activation() == Some(Activation::Relu)
            && !node.op.r_backward_reads_gy()
            && j >= 2
            && self.only_reader(last, j - 1, j);
        if !fuses {
            return Err(gy);
        }
        let i = j - 1;
        let keep_gy = keep_gy && self.nodes[i].op.r_backward_reads_gy();
        let (grads, kept) = self.backward_relu_at(theta, tape, (i, j), gy, want_dp, keep_gy)?;
        Ok((i, grads, kept))
    }

    /// Node `i`'s backward pass with the mask of the ReLU `j` that reads it
    /// ([`Op::backward_relu`]; the ReLU's value read through `y_at`, as its own backward
    /// reads it): `Err(gy)` where `i`'s op does not fuse the two.
    #[allow(clippy::type_complexity)]
    fn backward_relu_at<T: Scalar>(
        &self,
        theta: &ArrayView1<T>,
        tape: &Tape<T>,
        (i, j): (usize, usize),
        gy: ArrayD<T>,
        want_dp: bool,
        keep_gy: bool,
    ) -> Result<(Grads<T>, Option<ArrayD<T>>), ArrayD<T>> {
        let prev = &self.nodes[i];
        let p = self.params(theta, prev);
        let view = self.view(i, tape, &[]);
        let a = view.taped(&self.options, (&p, &[]), want_dp);
        let y = &tape.values[tape.y_at[j]];
        prev.op.backward_relu(&a, &tape.caches[i], y, gy, keep_gy)
    }

    /// Reverse pass at node `j`, given `gy` = dL/d(its output), for the end of a residual
    /// block: where `j` is a ReLU that alone reads an add `j − 1` of batch norm `j − 2`
    /// (which the add alone reads) and one other node, and the batch norm fuses the
    /// ReLU's mask into its backward pass (eval mode), `Ok((j − 2, its grads, what the add
    /// sends to its inputs))`: one pass forms the masked dy (the ReLU's backward, which
    /// the add sends on to its other input) as it forms the batch norm's, where the
    /// separate passes mask, copy the masked dy for the add's second input, then run the
    /// batch norm's backward (the same arithmetic, so the same bits). `Err(gy)` otherwise.
    /// Only where no R-pass state is kept (the batch norm's R-backward reads the masked
    /// dy, which the other input's sum then overwrites).
    #[allow(clippy::type_complexity)]
    pub(super) fn fused_backward_add<T: Scalar>(
        &self,
        theta: &ArrayView1<T>,
        tape: &Tape<T>,
        last: &[usize],
        j: usize,
        gy: ArrayD<T>,
        want_dp: bool,
    ) -> Result<(usize, Grads<T>, Vec<Option<ArrayD<T>>>), ArrayD<T>> {
        let fuses = fusing()
            && j >= 3
            && self.nodes[j].op.activation() == Some(Activation::Relu)
            && self.only_reader(last, j - 1, j)
            && matches!(self.nodes[j - 1].op, Op::Add)
            && last[j - 2] == j - 1;
        if !fuses {
            return Err(gy);
        }
        let (add, bn) = (&self.nodes[j - 1], j - 2);
        if add.inputs.len() != 2 || add.inputs.iter().filter(|&&i| i == bn).count() != 1 {
            return Err(gy);
        }
        let (grads, kept) = self.backward_relu_at(theta, tape, (bn, j), gy, want_dp, true)?;
        let masked = kept.expect("backward_relu keeps the masked dy when asked");
        let mut masked = Some(masked);
        let sends = add
            .inputs
            .iter()
            .map(|&i| if i == bn { None } else { masked.take() })
            .collect();
        Ok((bn, grads, sends))
    }
}
