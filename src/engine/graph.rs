//! A network as a list of nodes in topological order, and the passes over it.
//!
//! ```text
//! forward      x ─► values, caches ─► logits ─► loss
//! backward     dL/dlogits ─► (reverse order) ─► dL/dθ
//! HVP          θ-only half (HvpState): forward, reverse pass keeping g at parametric nodes;
//!              per direction v: R-forward (R{value} of every node), reverse pass of R{g}
//!              ─► R{dL/dθ} = H·v. The half is formed once per θ when kept (Hessian
//!              operators), once per product otherwise
//! ```
//! The HVP is exact (Pearlmutter 1994): no finite differences. Each op owns its four
//! passes and its inference hooks (see [`super::ops`]); this file only routes values
//! between nodes, in the same order whatever the ops. A node's parameters are tensors of
//! the model's [`Layout`], read from a flat θ, so a perturbed model is just another vector.
//! The graph's [`EngineOptions`] go to every op call.

use std::collections::VecDeque;
use std::sync::Arc;

use ndarray::{Array1, ArrayD, ArrayView1, ArrayViewD, ArrayViewMut1, IxDyn};

use super::curvature::{GnKind, Middle};
use super::error::EngineError;
pub use super::ops::batchnorm::{BatchStats, Mode};
pub use super::ops::loss::Loss;
use super::ops::loss::LossCache;
pub use super::ops::Op;
use super::ops::{add_assign, Activation, Erased, Fwd, Grads, LossValue, Taped};
use super::options::EngineOptions;
use super::params::Layout;
use super::Scalar;

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Module path, e.g. `layer1.0.conv1` (empty for pure functions such as relu).
    pub name: String,
    pub op: Op,
    /// Indices of the nodes whose outputs this node reads (none: the batch).
    pub inputs: Vec<usize>,
    /// Indices of this node's tensors in the [`Layout`].
    pub params: Vec<usize>,
    /// When set, this node's output is a block output that probes read, under this label
    /// (the zoo's transformer blocks `blocks.{i}`; ReLU taps need only a name).
    pub tap: Option<String>,
}

/// A network: nodes in topological order (node 0 is the input, the last node the logits),
/// the layout of its parameters and the loss on its logits.
#[derive(Clone, Debug)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub layout: Arc<Layout>,
    pub loss: Loss,
    /// Per-sample input shape in PyTorch order, e.g. `[1, 8, 8]` or `[40]`.
    pub input_shape: Vec<usize>,
    pub num_classes: usize,
    /// How the passes compute where that changes result bits (defaults everywhere a graph
    /// is built: zoo, ONNX import, model files).
    pub options: EngineOptions,
}

/// Everything the reverse passes need from the forward pass.
struct Tape<T> {
    values: Vec<ArrayD<T>>,
    /// Each node's cache (the op's own type, see [`super::ops::EngineOp::Cache`]).
    caches: Vec<Erased>,
}

/// The half of an HVP on one batch that depends on θ alone: the forward tape, the loss
/// cache, and dL/d(output) of every node with parameters. Kept while v changes (as
/// Hessian-free optimization keeps activations across the products of one CG run,
/// Martens 2010, and PyHessian keeps the autograd graph), each H·v runs only the R-passes:
/// R-forward, R{dx}, R{dW} (6 of an HVP's 8 convolution passes).
pub struct HvpState<T> {
    tape: Tape<T>,
    lc: LossCache<T>,
    /// The batch's labels (the R-pass of the loss reads them).
    y: Vec<usize>,
    /// Per node: None where the reverse pass never reached it; dL/d(output) where the
    /// op's R-backward reads it; an empty placeholder for the others.
    g: Vec<Option<ArrayD<T>>>,
    /// Bytes of the ops' caches on the tape.
    cache_bytes: usize,
}

impl<T: Scalar> HvpState<T> {
    /// Bytes held by the arrays of the state (the cache's memory cost).
    pub fn bytes(&self) -> usize {
        let t = std::mem::size_of::<T>();
        let arrays = self.tape.values.iter().chain(self.g.iter().flatten());
        (arrays.map(|a| a.len()).sum::<usize>() + self.lc.probs.len()) * t + self.cache_bytes
    }
}

/// The half of a Gauss–Newton-type product on one batch that depends on θ alone: the
/// forward tape and the output-space middle Mₙ of every sample (for the Fisher, with its
/// sampled labels). Kept while v changes, each product runs an R-forward and a plain
/// reverse pass (4 of a cold product's 5 convolution passes).
pub struct GnState<T> {
    tape: Tape<T>,
    middle: Middle<T>,
    /// Bytes of the ops' caches on the tape.
    cache_bytes: usize,
}

impl<T: Scalar> GnState<T> {
    /// Bytes held by the arrays of the state (the cache's memory cost).
    pub fn bytes(&self) -> usize {
        let t = std::mem::size_of::<T>();
        let values: usize = self.tape.values.iter().map(|a| a.len()).sum();
        (values + self.middle.len()) * t + self.cache_bytes
    }
}

/// What the reverse and R-passes show a node (see [`Taped`]), owned while it looks.
struct NodeView<'t, T> {
    x: Vec<&'t ArrayD<T>>,
    y: &'t ArrayD<T>,
    rx: Vec<Option<&'t ArrayD<T>>>,
    need_dx: Vec<bool>,
}

impl<T> NodeView<'_, T> {
    fn taped<'a>(
        &'a self,
        options: &'a EngineOptions,
        (p, v): (&'a [ArrayViewD<'a, T>], &'a [ArrayViewD<'a, T>]),
        want_dp: bool,
    ) -> Taped<'a, T> {
        Taped {
            options,
            x: &self.x,
            y: self.y,
            p,
            v,
            rx: &self.rx,
            need_dx: &self.need_dx,
            want_dp,
        }
    }
}

#[cfg(test)]
thread_local! {
    static UNFUSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the passes may fuse ops (tests switch it off on their thread to compare bits).
fn fusing() -> bool {
    #[cfg(test)]
    return !UNFUSED.with(|u| u.get());
    #[cfg(not(test))]
    true
}

/// What a forward pass keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keep {
    /// Nothing (inference): values are dropped after their last reader; ops may run in
    /// place or fused.
    None,
    /// What the reverse and R-passes read: ops may run fused where that leaves a value no
    /// pass reads as an empty placeholder.
    Tape,
    /// Every node's value and cache.
    All,
}

/// An empty placeholder value (a freed or fused-away node output).
fn empty<T: Scalar>() -> ArrayD<T> {
    ArrayD::zeros(IxDyn(&[0]))
}

impl Graph {
    /// The same graph computing with `options`.
    pub fn with_options(mut self, options: EngineOptions) -> Self {
        self.options = options;
        self
    }

    /// Adds a node and returns its index.
    pub fn push(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: &[usize],
        params: &[usize],
    ) -> usize {
        self.nodes.push(Node {
            name: name.into(),
            op,
            inputs: inputs.to_vec(),
            params: params.to_vec(),
            tap: None,
        });
        self.nodes.len() - 1
    }

    fn param<'a, T: Scalar>(
        &self,
        theta: &'a ArrayView1<'a, T>,
        index: usize,
    ) -> ArrayViewD<'a, T> {
        let spec = self.layout.tensor(index);
        theta
            .slice(ndarray::s![spec.range()])
            .into_shape_with_order(IxDyn(&spec.shape))
            .expect("θ is contiguous")
    }

    fn params<'a, T: Scalar>(
        &self,
        theta: &'a ArrayView1<'a, T>,
        node: &Node,
    ) -> Vec<ArrayViewD<'a, T>> {
        node.params.iter().map(|&i| self.param(theta, i)).collect()
    }

    /// Shape of every node's output (internal layout) for a batch of `n` samples, checking
    /// that each op can take its input.
    pub fn infer_shapes(
        &self,
        sample_shape: &[usize],
        n: usize,
    ) -> Result<Vec<Vec<usize>>, EngineError> {
        if sample_shape != self.input_shape.as_slice() {
            return Err(EngineError::InputShape {
                expected: self.input_shape.clone(),
                got: sample_shape.to_vec(),
                hint: String::new(),
            });
        }
        let batch: Vec<usize> = std::iter::once(n)
            .chain(sample_shape.iter().copied())
            .collect();
        let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let ins: Vec<&[usize]> = match node.inputs.is_empty() {
                true => vec![&batch],
                false => node.inputs.iter().map(|&i| &shapes[i][..]).collect(),
            };
            let s = node
                .op
                .infer_shape(&ins)
                .map_err(|why| EngineError::OpShape {
                    node: node.name.clone(),
                    op: node.op.kind().into(),
                    shape: match node.inputs.is_empty() {
                        true => vec![],
                        false => ins[0].to_vec(),
                    },
                    why,
                })?;
            shapes.push(s);
        }
        let out = shapes.last().cloned().unwrap_or_default();
        if out.len() != 2 || out[1] != self.num_classes {
            return Err(EngineError::OpShape {
                node: "output".into(),
                op: "logits".into(),
                shape: out,
                why: super::error::ShapeError::Features {
                    features: self.num_classes,
                },
            });
        }
        Ok(shapes)
    }

    /// Checks what shapes cannot tell about a batch: that every value an embedding node
    /// reads from it as a token id is one of its rows. Call before the passes on data
    /// from outside (the passes take that for granted).
    pub fn check_batch<T: Scalar>(&self, x: &ArrayD<T>) -> Result<(), EngineError> {
        for node in &self.nodes {
            let Op::Embedding(e) = &node.op else {
                continue;
            };
            let reads_batch = node.inputs.is_empty()
                || node.inputs.iter().all(|&i| self.nodes[i].op == Op::Input);
            if reads_batch {
                e.check_ids(x).map_err(|value| EngineError::TokenId {
                    node: node.name.clone(),
                    value,
                    vocab: e.vocab,
                })?;
            }
        }
        Ok(())
    }

    /// Index of the last node reading each node's output (itself when unread).
    fn last_use(&self) -> Vec<usize> {
        let mut last: Vec<usize> = (0..self.nodes.len()).collect();
        for (j, node) in self.nodes.iter().enumerate() {
            for &i in &node.inputs {
                last[i] = last[i].max(j);
            }
        }
        last
    }

    /// The values node `node` reads: its inputs', or the batch `x` for a node without.
    fn inputs_of<'a, T>(
        &self,
        node: &Node,
        values: &'a [ArrayD<T>],
        x: &'a ArrayD<T>,
    ) -> Vec<&'a ArrayD<T>> {
        match node.inputs.is_empty() {
            true => vec![x],
            false => node.inputs.iter().map(|&i| &values[i]).collect(),
        }
    }

    /// Runs the forward pass, keeping what `keep` says: for inference each value is
    /// dropped after its last reader, and ops may run in place or fused (see
    /// [`Graph::fused_forward`]); for the tape, ops may run fused where a value that no
    /// later pass reads is then never formed (see [`Graph::fused_taped`]).
    fn run_forward<T: Scalar>(
        &self,
        theta: &ArrayView1<T>,
        x: &ArrayD<T>,
        mode: Mode,
        keep: Keep,
    ) -> Tape<T> {
        let n = self.nodes.len();
        let last = self.last_use();
        let mut values: Vec<ArrayD<T>> = Vec::with_capacity(n);
        let mut caches: Vec<Erased> = Vec::with_capacity(n);
        // the values and caches of the nodes that an earlier fused node computed (an empty
        // placeholder for those whose value no pass reads), so indices stay aligned
        let mut fused: VecDeque<(ArrayD<T>, Erased)> = VecDeque::new();
        let unit = || Box::new(()) as Erased;
        for (j, node) in self.nodes.iter().enumerate() {
            if let Some((v, c)) = fused.pop_front() {
                values.push(v);
                caches.push(c);
                continue;
            }
            let p = self.params(theta, node);
            if keep == Keep::None && fusing() {
                if let Some((y, skip)) = self.fused_forward(theta, &values, &last, j, &p, mode) {
                    if last[node.inputs[0]] == j {
                        values[node.inputs[0]] = empty();
                    }
                    values.push(empty());
                    caches.push(unit());
                    fused.extend((1..skip).map(|_| (empty(), unit())));
                    fused.push_back((y, unit()));
                    continue;
                }
            }
            if keep == Keep::Tape && fusing() {
                if let Some(mut out) = self.fused_taped(theta, &values, &last, j, &p, mode) {
                    let (y, c) = out.pop_front().expect("the producer's output");
                    values.push(y);
                    caches.push(c);
                    fused = out;
                    continue;
                }
            }
            // the activation of the node that alone reads this one: it may be folded into
            // this node's pass where no pass reads this node's own value
            let then = (fusing() && keep != Keep::All && !node.inputs.is_empty())
                .then_some(j + 1)
                .filter(|&k| self.only_reader(&last, j, k))
                .and_then(|k| self.nodes[k].op.activation());
            if let (Keep::Tape, Some(act)) = (keep, then) {
                let xs = self.inputs_of(node, &values, x);
                if let Some((y, c)) = node.op.forward_then(&self.fwd(&xs, &p, mode), act) {
                    values.push(empty());
                    caches.push(c);
                    fused.push_back((y, unit()));
                    continue;
                }
            }
            let keep = keep != Keep::None;
            // Inference: an op whose input 0 is read by no later node may work in place on
            // it (no allocation, one pass over memory instead of two).
            let owned = |k: usize| {
                !keep
                    && k < node.inputs.len()
                    && last[node.inputs[k]] == j
                    && node.inputs.iter().filter(|&&i| i == node.inputs[k]).count() == 1
            };
            let mut folded = false;
            let (y, cache) = if owned(0) && node.op.in_place(mode) {
                let mut y = std::mem::replace(&mut values[node.inputs[0]], empty());
                let xs = self.inputs_of(node, &values, x);
                let a = self.fwd(&xs, &p, mode);
                match then {
                    Some(act) if node.op.forward_in_place_then(&a, &mut y, act) => folded = true,
                    _ => node.op.forward_in_place(&a, &mut y),
                }
                (y, unit())
            } else {
                let xs = self.inputs_of(node, &values, x);
                node.op.forward(&self.fwd(&xs, &p, mode), keep)
            };
            if folded {
                // the activation's node gets the result
                values.push(empty());
                fused.push_back((y, unit()));
            } else {
                values.push(y);
            }
            caches.push(cache);
            if !keep {
                for &i in &node.inputs {
                    if last[i] == j {
                        values[i] = empty();
                    }
                }
            }
        }
        Tape { values, caches }
    }

    fn fwd<'a, T>(
        &'a self,
        x: &'a [&'a ArrayD<T>],
        p: &'a [ArrayViewD<'a, T>],
        mode: Mode,
    ) -> Fwd<'a, T> {
        Fwd {
            options: &self.options,
            mode,
            x,
            p,
        }
    }

    /// Whether node `k` exists, has node `i` as its one input, and no other node reads `i`
    /// (`last`: each node's last reader, see [`Graph::last_use`]; a reader after `i`
    /// other than `k` makes it later, or else `k` is not the last).
    fn only_reader(&self, last: &[usize], i: usize, k: usize) -> bool {
        self.nodes.get(k).is_some_and(|nk| nk.inputs == [i]) && last[i] == k
    }

    /// Inference: node `j` (parameters `p`) with its only reader's per-channel epilogue,
    /// and that one's only reader's activation, applied block by block while in cache
    /// (conv → batch norm in eval mode [→ ReLU]): the result and how many following nodes
    /// it stands for; `None` where the ops do not fuse.
    fn fused_forward<T: Scalar>(
        &self,
        theta: &ArrayView1<T>,
        values: &[ArrayD<T>],
        last: &[usize],
        j: usize,
        p: &[ArrayViewD<T>],
        mode: Mode,
    ) -> Option<(ArrayD<T>, usize)> {
        let only_reader = |i: usize, k: usize| self.only_reader(last, i, k);
        if self.nodes[j].inputs.is_empty() || !only_reader(j, j + 1) {
            return None;
        }
        let then = match only_reader(j + 1, j + 2) {
            true => self.nodes[j + 2].op.activation(),
            false => None,
        };
        let next = &self.nodes[j + 1];
        let np = self.params(theta, next);
        let epilogue = next.op.epilogue(&np, mode, then)?;
        let node = &self.nodes[j];
        let xs: Vec<&ArrayD<T>> = node.inputs.iter().map(|&i| &values[i]).collect();
        let y = node.op.forward_fused(&self.fwd(&xs, p, mode), &*epilogue)?;
        Some((y, if then.is_some() { 2 } else { 1 }))
    }

    /// For the tape: node `j` (parameters `p`) with its only reader's per-channel map into
    /// a second array, and that one's only reader's ReLU, applied block by block while in
    /// cache (conv → batch norm in eval mode [→ ReLU]). The value and cache of `j`, then of
    /// each following node it stands for (batch norm's value is an empty placeholder when
    /// the ReLU follows: neither its reverse nor its R-passes read it, nor the ReLU's);
    /// `None` where the ops do not fuse.
    fn fused_taped<T: Scalar>(
        &self,
        theta: &ArrayView1<T>,
        values: &[ArrayD<T>],
        last: &[usize],
        j: usize,
        p: &[ArrayViewD<T>],
        mode: Mode,
    ) -> Option<VecDeque<(ArrayD<T>, Erased)>> {
        let only_reader = |i: usize, k: usize| self.only_reader(last, i, k);
        let node = &self.nodes[j];
        if node.inputs.is_empty() || !only_reader(j, j + 1) {
            return None;
        }
        let relu = only_reader(j + 1, j + 2)
            && self.nodes[j + 2].op.activation() == Some(Activation::Relu);
        let xs: Vec<&ArrayD<T>> = node.inputs.iter().map(|&i| &values[i]).collect();
        let shapes: Vec<&[usize]> = xs.iter().map(|x| x.shape()).collect();
        let shape = node.op.infer_shape(&shapes).ok()?;
        let next = &self.nodes[j + 1];
        let np = self.params(theta, next);
        let then = relu.then_some(Activation::Relu);
        let (map, next_cache) = next.op.taped_epilogue(&np, mode, then, &shape)?;
        let (y, z, cache) = node.op.forward_taped(&self.fwd(&xs, p, mode), &*map)?;
        let mut out = VecDeque::from([(y, cache)]);
        if relu {
            out.push_back((empty(), next_cache));
            out.push_back((z, Box::new(()) as Erased));
        } else {
            out.push_back((z, next_cache));
        }
        Some(out)
    }

    /// Block outputs for activation probes: the named ReLU nodes (the zoo names the ReLU
    /// that ends each block after the block, e.g. `layer2.1`, and the stem's `stem`) and
    /// the nodes marked with a [`Node::tap`] label, in graph order.
    pub fn taps(&self) -> Vec<(String, usize)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match &n.tap {
                Some(label) => Some((label.clone(), i)),
                None => (n.op.activation() == Some(Activation::Relu) && !n.name.is_empty())
                    .then(|| (n.name.clone(), i)),
            })
            .collect()
    }

    /// Every node's output for a batch (internal layout, see the engine docs).
    pub fn forward_all<T: Scalar>(
        &self,
        theta: ArrayView1<T>,
        x: &ArrayD<T>,
        mode: Mode,
    ) -> Vec<ArrayD<T>> {
        self.run_forward(&theta, x, mode, Keep::All).values
    }

    /// Logits `[N, K]` for a batch in PyTorch layout.
    pub fn logits<T: Scalar>(&self, theta: ArrayView1<T>, x: &ArrayD<T>, mode: Mode) -> ArrayD<T> {
        let mut tape = self.run_forward(&theta, x, mode, Keep::None);
        tape.values.pop().expect("graph has nodes")
    }

    /// Σₙ loss and the number of correct predictions over one batch.
    pub fn loss_batch<T: Scalar>(
        &self,
        theta: ArrayView1<T>,
        x: &ArrayD<T>,
        y: &[usize],
        mode: Mode,
    ) -> LossValue {
        let z = self.logits(theta, x, mode);
        self.loss.forward(&z, y).0
    }

    /// Σₙ loss over one batch; adds d(Σₙ ℓₙ)/dθ into `grad` (running statistics get 0).
    pub fn grad_batch<T: Scalar>(
        &self,
        theta: ArrayView1<T>,
        x: &ArrayD<T>,
        y: &[usize],
        mode: Mode,
        grad: ArrayViewMut1<T>,
    ) -> LossValue {
        let tape = self.run_forward(&theta, x, mode, Keep::Tape);
        let (value, lc) = self.loss.forward(tape.values.last().unwrap(), y);
        let gz = self.loss.backward(&lc, y);
        drop(lc);
        self.reverse(&theta, &tape, gz, Some(grad), None);
        value
    }

    /// Like [`Graph::grad_batch`], and also returns every batch-norm node's batch
    /// statistics (in node order), from which a trainer updates the running statistics.
    pub fn grad_batch_stats<T: Scalar>(
        &self,
        theta: ArrayView1<T>,
        x: &ArrayD<T>,
        y: &[usize],
        mode: Mode,
        grad: ArrayViewMut1<T>,
    ) -> (LossValue, Vec<BatchStats<T>>) {
        let tape = self.run_forward(&theta, x, mode, Keep::Tape);
        let (value, lc) = self.loss.forward(tape.values.last().unwrap(), y);
        let gz = self.loss.backward(&lc, y);
        drop(lc);
        let stats = (self.nodes.iter().zip(&tape.caches))
            .filter_map(|(node, c)| node.op.batch_stats(c, &node.params))
            .collect();
        self.reverse(&theta, &tape, gz, Some(grad), None);
        (value, stats)
    }

    /// Σₙ loss over one batch; adds H·v (Hessian of Σₙ ℓₙ) into `hv`. Direction
    /// components on running statistics are ignored. The θ-only half ([`HvpState`]) is
    /// formed and used once; [`Graph::hvp_prepare`] keeps it for many directions.
    pub fn hvp_batch<T: Scalar>(
        &self,
        theta: ArrayView1<T>,
        v: ArrayView1<T>,
        x: &ArrayD<T>,
        y: &[usize],
        mode: Mode,
        hv: ArrayViewMut1<T>,
    ) -> LossValue {
        let (value, state) = self.prepare(&theta, x, y, mode);
        self.hvp_prepared(theta, v, &state, hv);
        value
    }

    /// The half of an HVP on one batch that depends on θ only (see [`HvpState`]).
    pub fn hvp_prepare<T: Scalar>(
        &self,
        theta: ArrayView1<T>,
        x: &ArrayD<T>,
        y: &[usize],
        mode: Mode,
    ) -> HvpState<T> {
        self.prepare(&theta, x, y, mode).1
    }

    fn prepare<T: Scalar>(
        &self,
        theta: &ArrayView1<T>,
        x: &ArrayD<T>,
        y: &[usize],
        mode: Mode,
    ) -> (LossValue, HvpState<T>) {
        let tape = self.run_forward(theta, x, mode, Keep::Tape);
        let (value, lc) = self.loss.forward(tape.values.last().unwrap(), y);
        let gz = self.loss.backward(&lc, y);
        let mut g = Vec::new();
        self.reverse(theta, &tape, gz, None, Some(&mut g));
        let cache_bytes = (self.nodes.iter().zip(&tape.caches))
            .map(|(node, c)| node.op.cache_bytes::<T>(c))
            .sum();
        let state = HvpState {
            tape,
            lc,
            y: y.to_vec(),
            g,
            cache_bytes,
        };
        (value, state)
    }

    /// [`Graph::hvp_batch`] from a prepared state: the R-passes only (R-forward, then the
    /// reverse pass of R{g}, reading g from the state), with the same arithmetic in the
    /// same order, so the same bits. `theta` must be the θ the state was prepared at.
    pub fn hvp_prepared<T: Scalar>(
        &self,
        theta: ArrayView1<T>,
        v: ArrayView1<T>,
        state: &HvpState<T>,
        hv: ArrayViewMut1<T>,
    ) {
        let (rvals, rcaches) = self.r_forward(&theta, &v, &state.tape);
        let rz = rvals.last().unwrap().as_ref().expect("logits depend on θ");
        let rgz = self.loss.r_backward(&state.lc, &state.y, rz);
        self.r_reverse(&theta, &v, state, &rvals, &rcaches, rgz, hv);
    }

    /// Σₙ loss over one batch; adds G·v into `out`, where G = Σₙ Jₙᵀ Mₙ Jₙ is the
    /// Gauss–Newton-type matrix of `kind` for the sum of the batch's losses (Jₙ = ∂zₙ/∂θ;
    /// see [`super::curvature`]): one R-forward pass to the logits, the middle, one plain
    /// reverse pass. Exact and symmetric PSD whatever the network. Direction components on
    /// running statistics are ignored. [`Graph::gn_prepare`] keeps the θ-only half.
    #[allow(clippy::too_many_arguments)]
    pub fn gn_batch<T: Scalar>(
        &self,
        theta: ArrayView1<T>,
        v: ArrayView1<T>,
        x: &ArrayD<T>,
        y: &[usize],
        mode: Mode,
        kind: &GnKind,
        out: ArrayViewMut1<T>,
    ) -> LossValue {
        let (value, state) = self.gn_prepare_valued(&theta, x, y, mode, kind);
        self.gn_prepared(theta, v, &state, out);
        value
    }

    /// The half of a Gauss–Newton-type product on one batch that depends on θ only (see
    /// [`GnState`]): the forward tape and the middle of `kind` (sampled labels included).
    pub fn gn_prepare<T: Scalar>(
        &self,
        theta: ArrayView1<T>,
        x: &ArrayD<T>,
        y: &[usize],
        mode: Mode,
        kind: &GnKind,
    ) -> GnState<T> {
        self.gn_prepare_valued(&theta, x, y, mode, kind).1
    }

    fn gn_prepare_valued<T: Scalar>(
        &self,
        theta: &ArrayView1<T>,
        x: &ArrayD<T>,
        y: &[usize],
        mode: Mode,
        kind: &GnKind,
    ) -> (LossValue, GnState<T>) {
        let tape = self.run_forward(theta, x, mode, Keep::Tape);
        let (value, lc) = self.loss.forward(tape.values.last().unwrap(), y);
        let cache_bytes = (self.nodes.iter().zip(&tape.caches))
            .map(|(node, c)| node.op.cache_bytes::<T>(c))
            .sum();
        let middle = Middle::new(self.loss, lc, y, kind);
        let state = GnState {
            tape,
            middle,
            cache_bytes,
        };
        (value, state)
    }

    /// [`Graph::gn_batch`] from a prepared state, with the same bits. `theta` must be the
    /// θ the state was prepared at.
    pub fn gn_prepared<T: Scalar>(
        &self,
        theta: ArrayView1<T>,
        v: ArrayView1<T>,
        state: &GnState<T>,
        out: ArrayViewMut1<T>,
    ) {
        let (mut rvals, _) = self.r_forward(&theta, &v, &state.tape);
        // R{z} is None only where no parameter reaches the logits: then G·v = 0
        let Some(rz) = rvals.pop().flatten() else {
            return;
        };
        drop(rvals);
        let gz = state.middle.apply(&rz);
        self.reverse(&theta, &state.tape, gz, Some(out), None);
    }

    /// What the reverse and R-passes show node `j` of `tape`, with the R-values `rv` of
    /// the nodes before it (R-passes).
    fn view<'t, T: Scalar>(
        &self,
        j: usize,
        tape: &'t Tape<T>,
        rv: &'t [Option<ArrayD<T>>],
    ) -> NodeView<'t, T> {
        let inputs = &self.nodes[j].inputs;
        NodeView {
            x: inputs.iter().map(|&i| &tape.values[i]).collect(),
            y: &tape.values[j],
            rx: inputs
                .iter()
                .map(|&i| rv.get(i).and_then(|r| r.as_ref()))
                .collect(),
            // the batch (node 0) takes no gradient
            need_dx: inputs.iter().map(|&i| i != 0).collect(),
        }
    }

    /// R-forward: R{value} of every node along v (`None` = identically zero), and what
    /// each op keeps for its R-backward pass.
    fn r_forward<T: Scalar>(
        &self,
        theta: &ArrayView1<T>,
        v: &ArrayView1<T>,
        tape: &Tape<T>,
    ) -> (Vec<Option<ArrayD<T>>>, Vec<Erased>) {
        let mut rv: Vec<Option<ArrayD<T>>> = Vec::with_capacity(self.nodes.len());
        let mut rc: Vec<Erased> = Vec::with_capacity(self.nodes.len());
        for (j, node) in self.nodes.iter().enumerate() {
            let (p, vp) = (self.params(theta, node), self.params(v, node));
            let view = self.view(j, tape, &rv);
            let a = view.taped(&self.options, (&p, &vp), false);
            let (r, cache) = node.op.r_forward(&a, &tape.caches[j]);
            rv.push(r);
            rc.push(cache);
        }
        (rv, rc)
    }

    /// The reverse pass: propagates g = dL/d(value), adds parameter gradients into `grad`
    /// where given, and with `keep` records what the R-passes of an HVP read (see
    /// [`HvpState`]).
    fn reverse<T: Scalar>(
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
        // what a node fused into its reader's step sends back when its own turn comes
        let mut sent: Option<(usize, Vec<Option<ArrayD<T>>>)> = None;
        self.route_back(gz, |j, gy| {
            if let Some((i, dx)) = sent.take() {
                if i == j {
                    return Some(dx);
                }
                sent = Some((i, dx));
            }
            let node = &self.nodes[j];
            let mut gy = gy?;
            // a ReLU that alone reads the node just before it: both backward passes in one
            // pass over memory where that op fuses them (eval-mode batch norm)
            if fusing()
                && node.op.activation() == Some(Activation::Relu)
                && !node.op.r_backward_reads_gy()
                && j >= 2
                && self.only_reader(&last, j - 1, j)
            {
                let (i, prev) = (j - 1, &self.nodes[j - 1]);
                let p = self.params(theta, prev);
                let view = self.view(i, tape, &[]);
                let a = view.taped(&self.options, (&p, &[]), want_dp);
                let keep_gy = keep.is_some() && prev.op.r_backward_reads_gy();
                let y = &tape.values[j];
                match prev.op.backward_relu(&a, &tape.caches[i], y, gy, keep_gy) {
                    Ok((grads, kept)) => {
                        if let Some(keep) = keep.as_mut() {
                            keep[j] = Some(empty());
                            keep[i] = Some(kept.unwrap_or_else(empty));
                        }
                        if let Some(out) = grad.as_mut() {
                            self.add_params(out, prev, &grads);
                        }
                        sent = Some((i, grads.dx));
                        return Some(vec![None]);
                    }
                    Err(back) => gy = back,
                }
            }
            let p = self.params(theta, node);
            let view = self.view(j, tape, &[]);
            let a = view.taped(&self.options, (&p, &[]), want_dp);
            let c = &tape.caches[j];
            let grads = match keep.as_mut() {
                // what the R-passes read: dL/d(output) where R-backward reads it (kept
                // without a copy where the backward pass only reads it), and that the node
                // was reached at all
                Some(keep) if node.op.r_backward_reads_gy() => {
                    match node.op.backward_ref(&a, c, &gy) {
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
                None => node.op.backward(&a, c, gy),
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
    fn r_reverse<T: Scalar>(
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
        self.route_back(rgz, |j, rgy| {
            let node = &self.nodes[j];
            let gy = state.g[j].as_ref()?;
            let rgy = rgy.unwrap_or_else(|| ArrayD::zeros(tape.values[j].raw_dim()));
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
    /// `step(j, slot)` gets node j's slot (the sum of what its readers sent back, in the
    /// order they sent it; `None` if nothing) and returns what j sends to each input, or
    /// `None` to skip the node. Node 0, the batch, gets nothing.
    fn route_back<T: Scalar>(
        &self,
        seed: ArrayD<T>,
        mut step: impl FnMut(usize, Option<ArrayD<T>>) -> Option<Vec<Option<ArrayD<T>>>>,
    ) {
        let n = self.nodes.len();
        let mut g: Vec<Option<ArrayD<T>>> = (0..n).map(|_| None).collect();
        g[n - 1] = Some(seed);
        for j in (1..n).rev() {
            let Some(dx) = step(j, g[j].take()) else {
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

/// A zero vector the size of θ, convenient for `grad_batch`/`hvp_batch` outputs.
pub fn zeros_like<T: Scalar>(theta: &ArrayView1<T>) -> Array1<T> {
    Array1::zeros(theta.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ops::{Concat, Conv2d, Linear, Pool2d};

    /// Runs `f` with the passes' fusions switched off on this thread.
    fn unfused<R>(f: impl FnOnce() -> R) -> R {
        let before = UNFUSED.with(|u| u.replace(true));
        let r = f();
        UNFUSED.with(|u| u.set(before));
        r
    }

    /// Bits of every output of the passes of the bundled ResNet-20 on `n` inputs, and the
    /// kept state's size.
    fn pass_bits<T: Scalar>(n: usize, mode: Mode) -> (Vec<Vec<u64>>, usize) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/models/resnet20-digits.safetensors");
        let model = crate::model::Model::load(&path, None).unwrap();
        let g = &model.graph;
        let mut shape = vec![n];
        shape.extend(&g.input_shape);
        let x = ArrayD::from_shape_fn(IxDyn(&shape), |i| {
            let h = (ndarray::Dimension::slice(&i).iter())
                .fold(17usize, |a, &v| a.wrapping_mul(31).wrapping_add(v));
            T::from_f((h.wrapping_mul(2654435761) % 1000) as f64 / 500.0 - 1.0)
        });
        let y: Vec<usize> = (0..n).map(|i| i * 3 % g.num_classes).collect();
        let theta = model.theta.data.mapv(|v| T::from_f(v as f64));
        let v = Array1::from_shape_fn(theta.len(), |i| {
            T::from_f((i.wrapping_mul(2654435761) % 1000) as f64 / 1000.0 - 0.5)
        });
        let bits = |a: &Array1<T>| a.iter().map(|t| t.as_f64().to_bits()).collect::<Vec<_>>();
        let mut out = vec![];
        let logits = g.logits(theta.view(), &x, mode);
        out.push(logits.iter().map(|t| t.as_f64().to_bits()).collect());
        let mut grad = zeros_like(&theta.view());
        g.grad_batch(theta.view(), &x, &y, mode, grad.view_mut());
        out.push(bits(&grad));
        let mut hv = zeros_like(&theta.view());
        g.hvp_batch(theta.view(), v.view(), &x, &y, mode, hv.view_mut());
        out.push(bits(&hv));
        let state = g.hvp_prepare(theta.view(), &x, &y, mode);
        let mut kept = zeros_like(&theta.view());
        g.hvp_prepared(theta.view(), v.view(), &state, kept.view_mut());
        out.push(bits(&kept));
        let kind = GnKind::Ggn;
        let mut gn = zeros_like(&theta.view());
        g.gn_batch(theta.view(), v.view(), &x, &y, mode, &kind, gn.view_mut());
        out.push(bits(&gn));
        (out, state.bytes())
    }

    /// The fused passes (conv → batch norm → ReLU on the tape, ReLU → batch norm in the
    /// reverse pass, conv → batch norm [→ ReLU] in inference) give the bits of the
    /// separate ones, f32 and f64, on image counts with and without a lane tail; on the
    /// tape each residual block keeps one activation less per fused pair.
    #[test]
    fn fused_passes_keep_the_bits() {
        for n in [5, 12] {
            for mode in [Mode::Eval, Mode::Train] {
                let (fused, fused_bytes) = pass_bits::<f32>(n, mode);
                let (plain, plain_bytes) = unfused(|| pass_bits::<f32>(n, mode));
                assert_eq!(fused, plain, "f32, {n} inputs, {mode:?}");
                let (fused64, _) = pass_bits::<f64>(n, mode);
                let (plain64, _) = unfused(|| pass_bits::<f64>(n, mode));
                assert_eq!(fused64, plain64, "f64, {n} inputs, {mode:?}");
                // eval mode fuses conv → batch norm → ReLU, both modes add → ReLU
                let fused_away = (plain_bytes - fused_bytes) / std::mem::size_of::<f32>();
                let activation = 16 * 8 * 8 * n; // the stem's output on 8×8 digits
                let blocks = if mode == Mode::Eval { 2 } else { 1 };
                assert!(
                    fused_away >= blocks * 9 * activation / 4,
                    "{mode:?}: {fused_bytes} vs {plain_bytes}"
                );
            }
        }
    }

    /// The message of the shape error of a graph with input `[n, sample…]` and the nodes
    /// `(name, op, inputs)` after the input node.
    fn message(sample: &[usize], n: usize, nodes: Vec<(&str, Op, &[usize])>) -> String {
        let mut g = Graph {
            nodes: vec![],
            layout: Arc::new(Layout::new()),
            loss: Loss::CrossEntropy,
            input_shape: sample.to_vec(),
            num_classes: 3,
            options: EngineOptions::default(),
        };
        g.push("input", Op::Input, &[], &[]);
        for (name, op, inputs) in nodes {
            g.push(name, op, inputs, &[]);
        }
        g.infer_shapes(sample, n).unwrap_err().to_string()
    }

    /// Shape errors name the node and op, the input shape and the reason, as they always
    /// have (the ops' typed reasons render the same text).
    #[test]
    fn shape_errors_name_node_op_and_reason() {
        let lin = Linear {
            in_features: 5,
            out_features: 3,
            bias: false,
        };
        assert_eq!(
            message(&[4], 2, vec![("fc", Op::Linear(lin), &[0])]),
            "layer 'fc' (linear) cannot take an input of shape [2, 4]: expected [N, 5]"
        );
        let conv = Conv2d {
            in_channels: 2,
            out_channels: 4,
            kernel: 5,
            stride: 1,
            padding: 0,
            bias: false,
            groups: 1,
        };
        assert_eq!(
            message(&[2, 3, 3], 1, vec![("c", Op::Conv2d(conv), &[0])]),
            "layer 'c' (conv2d) cannot take an input of shape [2, 1, 3, 3]: kernel larger than the padded image"
        );
        let pool = Pool2d {
            kernel: 4,
            stride: 1,
            padding: 0,
            ceil_mode: false,
        };
        assert_eq!(
            message(&[2, 3, 3], 1, vec![("p", Op::MaxPool(pool), &[0])]),
            "layer 'p' (max-pool) cannot take an input of shape [2, 1, 3, 3]: window larger than the padded image"
        );
        let cat = Op::Concat(Concat { axis: 5 });
        assert_eq!(
            message(&[2, 3, 3], 1, vec![("s", Op::Add, &[0, 0]), ("", cat, &[0, 1])]),
            "layer '' (concat) cannot take an input of shape [2, 1, 3, 3]: cannot concatenate [2, 1, 3, 3] and [2, 1, 3, 3] along axis 5"
        );
        assert_eq!(
            message(&[4], 2, vec![("", Op::Relu, &[0])]),
            "layer 'output' (logits) cannot take an input of shape [2, 4]: expected [N, 3]"
        );
    }
}
