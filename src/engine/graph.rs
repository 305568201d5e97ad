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
//! The graph's [`EngineOptions`] go to every op call. Where the passes run several nodes
//! as one pass over memory (same bits) is in `fuse`; the reverse passes are in
//! `graph/reverse.rs`.

use std::collections::VecDeque;
use std::sync::Arc;

use ndarray::{Array1, ArrayD, ArrayView1, ArrayViewD, ArrayViewMut1, IxDyn};

use super::curvature::{GnKind, Middle};
use super::error::EngineError;
pub use super::ops::batchnorm::{BatchStats, Mode};
pub use super::ops::loss::Loss;
use super::ops::loss::LossCache;
pub use super::ops::Op;
use super::ops::{Activation, Erased, Fwd, LossValue, Taped};
use super::options::EngineOptions;
use super::params::Layout;
use super::Scalar;
use fuse::fusing;

mod fuse;
mod reverse;

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
    /// Per node, the value the passes read as its output (`Taped::y`) and take its shape
    /// from: its own, or on a lean tape the one after it that stands for it (a conv's
    /// and its batch norm's output are never kept; batch norm forms x̂ from its own
    /// output or its ReLU's, see [`super::TapeLayout::Lean`]).
    y_at: Vec<usize>,
    /// Per node, on a lean tape, the value to subtract from `y_at`'s to get its output
    /// (`Taped::y_less`): a batch norm at a residual block's end, whose output is the
    /// block's output less the shortcut's term. `None` elsewhere.
    y_less: Vec<Option<usize>>,
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
    y_less: Option<&'t ArrayD<T>>,
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
            y_less: self.y_less,
            p,
            v,
            rx: &self.rx,
            need_dx: &self.need_dx,
            want_dp,
        }
    }
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
        let mut y_at: Vec<usize> = (0..n).collect();
        let mut y_less: Vec<Option<usize>> = vec![None; n];
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
                    // earlier values that a fused node read last (a residual sum's other term)
                    for k in j + 1..=j + skip {
                        for &i in &self.nodes[k].inputs {
                            if i < j && last[i] == k {
                                values[i] = empty();
                            }
                        }
                    }
                    values.push(empty());
                    caches.push(unit());
                    fused.extend((1..skip).map(|_| (empty(), unit())));
                    fused.push_back((y, unit()));
                    continue;
                }
            }
            if keep == Keep::Tape && fusing() {
                if let Some((mut out, lean)) = self.fused_taped(theta, &values, &last, j, &p, mode)
                {
                    if let Some(lean) = lean {
                        // the last of the fused nodes holds the one value kept
                        let kept = j + out.len() - 1;
                        y_at[j..kept].fill(kept);
                        y_less[j + 1] = lean.less;
                    }
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
                .then(|| self.activation_after(&last, j))
                .flatten();
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
        Tape {
            values,
            caches,
            y_at,
            y_less,
        }
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
            affine: None,
        }
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
            y: &tape.values[tape.y_at[j]],
            y_less: tape.y_less[j].map(|i| &tape.values[i]),
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
}

/// A zero vector the size of θ, convenient for `grad_batch`/`hvp_batch` outputs.
pub fn zeros_like<T: Scalar>(theta: &ArrayView1<T>) -> Array1<T> {
    Array1::zeros(theta.len())
}

#[cfg(test)]
mod tests;
