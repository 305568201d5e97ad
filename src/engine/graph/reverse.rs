//! The reverse passes: the plain one (dL/dθ, and what an HVP's R-passes read) and the
//! R-pass of R{g}, both routed back from the loss the same way ([`Graph::route_back`]).

use ndarray::{ArrayD, ArrayView1, ArrayViewMut1};

use super::{empty, fusing, Graph, HvpState, Node, Tape};
use crate::engine::ops::{add_assign, Erased, Grads};
use crate::engine::Scalar;

impl Graph {
    /// The reverse pass: propagates g = dL/d(value), adds parameter gradients into `grad`
    /// where given, and with `keep` records what the R-passes of an HVP read (see
    /// [`HvpState`]).
    pub(super) fn reverse<T: Scalar>(
        &self,
        theta: &ArrayView1<T>,
        tape: &Tape<T>,
        gz: ArrayD<T>,
        mut grad: Option<ArrayViewMut1<T>>,
        mut keep: Option<&mut Vec<Option<ArrayD<T>>>>,
    ) {
        if let Some(keep) = keep.as_mut() {
            keep.clear();
            keep.resize_with(self.nodes.len(), || None);
        }
        let want_dp = grad.is_some();
        let last = self.last_use();
        // what nodes fused into a reader's step send back when their own turn comes
        let mut sent: Vec<(usize, Vec<Option<ArrayD<T>>>)> = Vec::new();
        self.route_back(gz, |j, gy, before| {
            if let Some(k) = sent.iter().position(|(i, _)| *i == j) {
                return Some(sent.swap_remove(k).1);
            }
            let node = &self.nodes[j];
            let mut gy = gy?;
            if keep.is_none() {
                gy = match self.fused_backward_add(theta, tape, &last, j, gy, want_dp) {
                    Ok((i, grads, to_add)) => {
                        if let Some(out) = grad.as_mut() {
                            self.add_params(out, &self.nodes[i], &grads);
                        }
                        // the add's turn sends the masked dy on, then the batch norm's dx
                        sent.push((j - 1, to_add));
                        sent.push((i, grads.dx));
                        return Some(vec![None]);
                    }
                    Err(gy) => gy,
                };
            }
            let gy = match self.fused_backward(theta, tape, &last, j, gy, want_dp, keep.is_some()) {
                Ok((i, grads, kept)) => {
                    if let Some(keep) = keep.as_mut() {
                        keep[j] = Some(empty());
                        keep[i] = Some(kept.unwrap_or_else(empty));
                    }
                    if let Some(out) = grad.as_mut() {
                        self.add_params(out, &self.nodes[i], &grads);
                    }
                    sent.push((i, grads.dx));
                    return Some(vec![None]);
                }
                Err(gy) => gy,
            };
            let p = self.params(theta, node);
            let view = self.view(j, tape, &[]);
            let a = view.taped(&self.options, (&p, &[]), want_dp);
            let c = &tape.caches[j];
            let grads = match keep.as_mut() {
                // what the R-passes read: dL/d(output) where R-backward reads it (kept
                // without a copy where the backward pass only reads it), and that the node
                // was reached at all
                Some(keep) if node.op.r_backward_reads_gy() => {
                    let grads = node.op.backward_adding(&a, c, &gy, before);
                    match grads.or_else(|| node.op.backward_ref(&a, c, &gy)) {
                        Some(grads) => {
                            keep[j] = Some(gy);
                            grads
                        }
                        None => {
                            keep[j] = Some(gy.clone());
                            node.op.backward(&a, c, gy)
                        }
                    }
                }
                Some(keep) => {
                    keep[j] = Some(empty());
                    node.op.backward(&a, c, gy)
                }
                None => match node.op.backward_adding(&a, c, &gy, before) {
                    Some(grads) => grads,
                    None => node.op.backward(&a, c, gy),
                },
            };
            if let Some(out) = grad.as_mut() {
                self.add_params(out, node, &grads);
            }
            Some(grads.dx)
        });
    }

    /// The reverse pass of R{g} alone, reading g from a prepared state (see
    /// [`Graph::hvp_prepared`]): each op's R-backward, routed as [`Graph::reverse`] routes
    /// its backward, in the same order.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn r_reverse<T: Scalar>(
        &self,
        theta: &ArrayView1<T>,
        v: &ArrayView1<T>,
        state: &HvpState<T>,
        rvals: &[Option<ArrayD<T>>],
        rcaches: &[Erased],
        rgz: ArrayD<T>,
        mut hv: ArrayViewMut1<T>,
    ) {
        let tape = &state.tape;
        self.route_back(rgz, |j, rgy, _| {
            let node = &self.nodes[j];
            let gy = state.g[j].as_ref()?;
            let rgy = rgy.unwrap_or_else(|| ArrayD::zeros(tape.values[tape.y_at[j]].raw_dim()));
            let (p, vp) = (self.params(theta, node), self.params(v, node));
            let view = self.view(j, tape, rvals);
            let a = view.taped(&self.options, (&p, &vp), true);
            let grads = node
                .op
                .r_backward(&a, &tape.caches[j], &rcaches[j], gy, rgy);
            self.add_params(&mut hv, node, &grads);
            Some(grads.dx)
        });
    }

    /// The routing both reverse passes share: from the seed at the last node to node 1,
    /// `step(j, slot, before)` gets node j's slot (the sum of what its readers sent back,
    /// in the order they sent it; `None` if nothing) and returns what j sends to each
    /// input, or `None` to skip the node. Node 0, the batch, gets nothing. For a node of
    /// one input, `before` holds that input's slot so far: a step may take it and send
    /// back the sum itself (`before + dx`, the bits of the addition here), else it is
    /// added here.
    #[allow(clippy::type_complexity)]
    fn route_back<T: Scalar>(
        &self,
        seed: ArrayD<T>,
        mut step: impl FnMut(
            usize,
            Option<ArrayD<T>>,
            &mut Option<ArrayD<T>>,
        ) -> Option<Vec<Option<ArrayD<T>>>>,
    ) {
        let n = self.nodes.len();
        let mut g: Vec<Option<ArrayD<T>>> = (0..n).map(|_| None).collect();
        g[n - 1] = Some(seed);
        for j in (1..n).rev() {
            let only = match self.nodes[j].inputs[..] {
                [i] if i != 0 && fusing() => Some(i),
                _ => None,
            };
            let mut before = only.and_then(|i| g[i].take());
            let dx = step(j, g[j].take(), &mut before);
            if let (Some(i), Some(b)) = (only, before) {
                g[i] = Some(b);
            }
            let Some(dx) = dx else {
                continue;
            };
            for (&i, d) in self.nodes[j].inputs.iter().zip(dx) {
                if let (Some(d), true) = (d, i != 0) {
                    acc(&mut g[i], d);
                }
            }
        }
    }

    /// Adds a node's parameter gradients into the flat vector `out`.
    fn add_params<T: Scalar>(&self, out: &mut ArrayViewMut1<T>, node: &Node, grads: &Grads<T>) {
        for (&index, t) in node.params.iter().zip(&grads.dp) {
            if let Some(t) = t {
                self.add_tensor(out, index, t);
            }
        }
    }

    /// Adds `t` into the slice of the flat vector `out` that holds layout tensor `index`.
    fn add_tensor<T: Scalar>(&self, out: &mut ArrayViewMut1<T>, index: usize, t: &ArrayD<T>) {
        let spec = self.layout.tensor(index);
        let mut dst = out.slice_mut(ndarray::s![spec.range()]);
        dst.zip_mut_with(
            &t.view().into_shape_with_order(spec.len()).unwrap(),
            |a, &b| *a += b,
        );
    }
}

/// Adds a gradient contribution into a node's slot (moved in when the slot is empty).
fn acc<T: Scalar>(slot: &mut Option<ArrayD<T>>, add: ArrayD<T>) {
    match slot {
        Some(s) => add_assign(s, &add),
        None => *slot = Some(add),
    }
}
