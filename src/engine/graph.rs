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
//! passes (see [`super::ops`]); this file only routes values between nodes. A node's
//! parameters are tensors of the model's [`Layout`], read from a flat θ, so a perturbed
//! model is just another vector.

use std::sync::Arc;

use ndarray::{Array1, ArrayD, ArrayView1, ArrayViewD, ArrayViewMut1, IxDyn};

use super::error::EngineError;
pub use super::ops::batchnorm::Mode;
use super::ops::batchnorm::{BnCache, BnRCache};
use super::ops::conv2d::ConvCache;
use super::ops::flatten::swap_batch_channel;
pub use super::ops::loss::Loss;
use super::ops::loss::LossCache;
use super::ops::max_pool::MaxPoolCache;
use super::ops::*;
use super::params::Layout;
use super::Scalar;

/// What a node computes.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// The input batch, given in PyTorch layout `[N, C, H, W]` or `[N, F]`.
    Input,
    /// params: [weight, bias?]
    Conv2d(Conv2d),
    /// params: [weight, bias?]
    Linear(Linear),
    /// params: [γ, β, running_mean, running_var]
    BatchNorm(BatchNorm),
    Relu,
    /// Residual sum of two inputs.
    Add,
    GlobalAvgPool,
    AvgPool(Pool2d),
    MaxPool(Pool2d),
    Flatten,
    /// Constant per-channel a·x + b (input normalization of imported networks).
    Affine(Affine),
    /// Zero padding (internal-layout axes).
    Pad(Pad),
    /// Strided slice along one internal-layout axis.
    Slice(SliceAxis),
    /// Concatenation of all inputs along one internal-layout axis.
    Concat(Concat),
}

impl Op {
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Conv2d(_) => "conv2d",
            Op::Linear(_) => "linear",
            Op::BatchNorm(_) => "batchnorm",
            Op::Relu => "relu",
            Op::Add => "add",
            Op::GlobalAvgPool => "global-avg-pool",
            Op::AvgPool(_) => "avg-pool",
            Op::MaxPool(_) => "max-pool",
            Op::Flatten => "flatten",
            Op::Affine(_) => "affine",
            Op::Pad(_) => "pad",
            Op::Slice(_) => "slice",
            Op::Concat(_) => "concat",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Module path, e.g. `layer1.0.conv1` (empty for pure functions such as relu).
    pub name: String,
    pub op: Op,
    /// Indices of the nodes whose outputs this node reads.
    pub inputs: Vec<usize>,
    /// Indices of this node's tensors in the [`Layout`].
    pub params: Vec<usize>,
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
}

/// Batch statistics of one batch-norm node in a forward pass.
#[derive(Clone, Debug)]
pub struct BatchStats<T> {
    /// Layout index of the node's running mean.
    pub running_mean: usize,
    /// Layout index of the node's running variance.
    pub running_var: usize,
    /// Per-channel mean over the batch (and the spatial positions).
    pub mean: Array1<T>,
    /// Per-channel biased variance (what normalizes the batch).
    pub var: Array1<T>,
    /// Values per channel behind the statistics (N·H·W).
    pub count: usize,
}

enum Cache<T> {
    None,
    Conv(ConvCache<T>),
    Bn(Box<BnCache<T>>),
    Max(MaxPoolCache),
}

/// Everything the reverse passes need from the forward pass.
struct Tape<T> {
    values: Vec<ArrayD<T>>,
    caches: Vec<Cache<T>>,
}

enum RCache<T> {
    None,
    Bn(BnRCache<T>),
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
    /// Per node: None where the reverse pass never reached it; dL/d(output) for nodes
    /// with parameters; an empty placeholder for the others.
    g: Vec<Option<ArrayD<T>>>,
}

impl<T: Scalar> HvpState<T> {
    /// Bytes held by the arrays of the state (the cache's memory cost).
    pub fn bytes(&self) -> usize {
        let t = std::mem::size_of::<T>();
        let arrays = self.tape.values.iter().chain(self.g.iter().flatten());
        let caches: usize = self
            .tape
            .caches
            .iter()
            .map(|c| match c {
                Cache::Bn(b) => (b.xhat.len() + 4 * b.s.len()) * t,
                Cache::Max(m) => m.argmax.len() * std::mem::size_of::<usize>(),
                _ => 0,
            })
            .sum();
        (arrays.map(|a| a.len()).sum::<usize>() + self.lc.probs.len()) * t + caches
    }
}

impl Graph {
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
        let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let ins: Vec<&Vec<usize>> = node.inputs.iter().map(|&i| &shapes[i]).collect();
            let bad = |why: String| EngineError::OpShape {
                node: node.name.clone(),
                op: node.op.kind().into(),
                shape: ins.first().map(|s| s.to_vec()).unwrap_or_default(),
                why,
            };
            let s = match &node.op {
                Op::Input => {
                    let mut s = vec![n];
                    s.extend_from_slice(sample_shape);
                    if s.len() == 4 {
                        s.swap(0, 1);
                    }
                    s
                }
                Op::Conv2d(c) => {
                    let x = ins[0];
                    if x.len() != 4 || x[0] != c.in_channels {
                        return Err(bad(format!("expected [{}, N, H, W]", c.in_channels)));
                    }
                    let (ho, wo) = c
                        .out_hw(x[2], x[3])
                        .ok_or_else(|| bad("kernel larger than the padded image".into()))?;
                    vec![c.out_channels, x[1], ho, wo]
                }
                Op::Linear(l) => {
                    let x = ins[0];
                    if x.len() != 2 || x[1] != l.in_features {
                        return Err(bad(format!("expected [N, {}]", l.in_features)));
                    }
                    vec![x[0], l.out_features]
                }
                Op::BatchNorm(b) => {
                    let x = ins[0];
                    let c = if x.len() == 2 { x[1] } else { x[0] };
                    if c != b.channels {
                        return Err(bad(format!("expected {} channels", b.channels)));
                    }
                    x.clone()
                }
                Op::Relu => ins[0].clone(),
                Op::Add => {
                    if ins[0] != ins[1] {
                        return Err(bad(format!(
                            "the two summands differ: {:?} vs {:?}",
                            ins[0], ins[1]
                        )));
                    }
                    ins[0].clone()
                }
                Op::GlobalAvgPool => {
                    let x = ins[0];
                    if x.len() != 4 {
                        return Err(bad("expected a 4-D input".into()));
                    }
                    vec![x[1], x[0]]
                }
                Op::AvgPool(p) | Op::MaxPool(p) => {
                    let x = ins[0];
                    if x.len() != 4 {
                        return Err(bad("expected a 4-D input".into()));
                    }
                    let (ho, wo) = p
                        .out_hw(x[2], x[3])
                        .ok_or_else(|| bad("window larger than the padded image".into()))?;
                    vec![x[0], x[1], ho, wo]
                }
                Op::Flatten => {
                    let x = ins[0];
                    if x.len() == 2 {
                        x.clone()
                    } else {
                        vec![x[1], x[0] * x[2..].iter().product::<usize>()]
                    }
                }
                Op::Affine(a) => {
                    let x = ins[0];
                    let c = if x.len() == 2 { x[1] } else { x[0] };
                    if !a.fits(c) {
                        return Err(bad(format!("constants do not fit {c} channels")));
                    }
                    x.clone()
                }
                Op::Pad(p) => {
                    let x = ins[0];
                    if p.before.len() != x.len() || p.after.len() != x.len() {
                        return Err(bad(format!("expected a {}-D input", p.before.len())));
                    }
                    p.out_shape(x)
                }
                Op::Slice(sl) => {
                    let x = ins[0];
                    if sl.axis >= x.len() || sl.end > x[sl.axis] || sl.start > sl.end {
                        return Err(bad(format!(
                            "slice {}..{} of axis {} out of range",
                            sl.start, sl.end, sl.axis
                        )));
                    }
                    let mut s = x.clone();
                    s[sl.axis] = sl.out_len();
                    s
                }
                Op::Concat(c) => {
                    let mut s = ins[0].clone();
                    for other in &ins[1..] {
                        let same = other.len() == s.len()
                            && (0..s.len()).all(|a| a == c.axis || other[a] == s[a]);
                        if !same || c.axis >= s.len() {
                            return Err(bad(format!(
                                "cannot concatenate {:?} and {:?} along axis {}",
                                s, other, c.axis
                            )));
                        }
                        s[c.axis] += other[c.axis];
                    }
                    s
                }
            };
            shapes.push(s);
        }
        let out = shapes.last().cloned().unwrap_or_default();
        if out.len() != 2 || out[1] != self.num_classes {
            return Err(EngineError::OpShape {
                node: "output".into(),
                op: "logits".into(),
                shape: out,
                why: format!("expected [N, {}]", self.num_classes),
            });
        }
        Ok(shapes)
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

    /// Runs the forward pass. With `keep`, every value and cache is kept for the reverse
    /// passes; without, each value is dropped after its last reader (inference).
    fn run_forward<T: Scalar>(
        &self,
        theta: &ArrayView1<T>,
        x: &ArrayD<T>,
        mode: Mode,
        keep: bool,
    ) -> Tape<T> {
        let n = self.nodes.len();
        let last = self.last_use();
        let mut values: Vec<ArrayD<T>> = Vec::with_capacity(n);
        let mut caches: Vec<Cache<T>> = Vec::with_capacity(n);
        // (nodes still to skip, the fused result that the last of them gets)
        let mut fused: (usize, Option<ArrayD<T>>) = (0, None);
        for (j, node) in self.nodes.iter().enumerate() {
            if fused.0 > 0 {
                // computed by an earlier fused node: the last one gets its result, the
                // others an empty placeholder, so indices stay aligned
                fused.0 -= 1;
                let v = if fused.0 == 0 { fused.1.take() } else { None };
                values.push(v.unwrap_or_else(|| ArrayD::zeros(IxDyn(&[0]))));
                caches.push(Cache::None);
                continue;
            }
            let p = self.params(theta, node);
            // Inference, eval mode: conv (no bias) → batch norm [→ ReLU] in one pass, the
            // affine map and ReLU applied to each block of the GEMM output while in cache.
            if let (false, Mode::Eval, Op::Conv2d(c)) = (keep, mode, &node.op) {
                let only_reader = |i: usize, k: usize| {
                    self.nodes.get(k).is_some_and(|nk| nk.inputs == [i]) && last[i] == k
                };
                if !c.bias && only_reader(j, j + 1) {
                    if let Op::BatchNorm(b) = &self.nodes[j + 1].op {
                        let relu =
                            only_reader(j + 1, j + 2) && matches!(self.nodes[j + 2].op, Op::Relu);
                        let bp = self.params(theta, &self.nodes[j + 1]);
                        let y = c.forward_fused(
                            &values[node.inputs[0]],
                            &p[0],
                            b.eval_epilogue(&bp, relu),
                        );
                        if last[node.inputs[0]] == j {
                            values[node.inputs[0]] = ArrayD::zeros(IxDyn(&[0]));
                        }
                        values.push(ArrayD::zeros(IxDyn(&[0])));
                        caches.push(Cache::None);
                        fused = (if relu { 2 } else { 1 }, Some(y));
                        continue;
                    }
                }
            }
            // Inference: an elementwise op whose input is read by no later node works in
            // place on it (no allocation, one pass over memory instead of two).
            let owned = |k: usize| {
                !keep
                    && k < node.inputs.len()
                    && last[node.inputs[k]] == j
                    && node.inputs.iter().filter(|&&i| i == node.inputs[k]).count() == 1
            };
            if owned(0) && matches!(node.op, Op::Relu | Op::Add)
                || (owned(0) && mode == Mode::Eval && matches!(node.op, Op::BatchNorm(_)))
            {
                let mut y =
                    std::mem::replace(&mut values[node.inputs[0]], ArrayD::zeros(IxDyn(&[0])));
                match &node.op {
                    Op::Relu => y.mapv_inplace(|v| if v > T::zero() { v } else { T::zero() }),
                    Op::Add => y += &values[node.inputs[1]],
                    Op::BatchNorm(b) => b.forward_eval_inplace(&mut y, &p),
                    _ => unreachable!(),
                }
                values.push(y);
                caches.push(Cache::None);
                for &i in &node.inputs[1..] {
                    if last[i] == j {
                        values[i] = ArrayD::zeros(IxDyn(&[0]));
                    }
                }
                continue;
            }
            let input = |k: usize| &values[node.inputs[k]];
            let (y, cache) = match &node.op {
                Op::Input => (swap_batch_channel(x), Cache::None),
                Op::Conv2d(c) => {
                    let (y, cc) = c.forward(input(0), &p[0], p.get(1));
                    (y, if keep { Cache::Conv(cc) } else { Cache::None })
                }
                Op::Linear(l) => (l.forward(input(0), &p[0], p.get(1)), Cache::None),
                Op::BatchNorm(b) => {
                    let (y, bc) = b.forward(input(0), &p, mode);
                    (
                        y,
                        if keep {
                            Cache::Bn(Box::new(bc))
                        } else {
                            Cache::None
                        },
                    )
                }
                Op::Relu => (Relu::forward(input(0)), Cache::None),
                Op::Add => (Add::forward(input(0), input(1)), Cache::None),
                Op::GlobalAvgPool => (GlobalAvgPool::forward(input(0)), Cache::None),
                Op::AvgPool(cfg) => (AvgPool::forward(cfg, input(0)), Cache::None),
                Op::MaxPool(cfg) => {
                    let (y, mc) = MaxPool::forward(cfg, input(0));
                    (y, Cache::Max(mc))
                }
                Op::Flatten => (Flatten::forward(input(0)), Cache::None),
                Op::Affine(a) => (a.forward(input(0)), Cache::None),
                Op::Pad(p) => (p.forward(input(0)), Cache::None),
                Op::Slice(sl) => (sl.forward(input(0)), Cache::None),
                Op::Concat(c) => {
                    let xs: Vec<&ArrayD<T>> = (0..node.inputs.len()).map(input).collect();
                    (c.forward(&xs), Cache::None)
                }
            };
            values.push(y);
            caches.push(cache);
            if !keep {
                for &i in &node.inputs {
                    if last[i] == j {
                        values[i] = ArrayD::zeros(IxDyn(&[0]));
                    }
                }
            }
        }
        Tape { values, caches }
    }

    /// Block outputs for activation probes: the named ReLU nodes (the zoo names the ReLU
    /// that ends each block after the block, e.g. `layer2.1`, and the stem's `stem`).
    pub fn taps(&self) -> Vec<(String, usize)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.op == Op::Relu && !n.name.is_empty())
            .map(|(i, n)| (n.name.clone(), i))
            .collect()
    }

    /// Every node's output for a batch (internal layout, see the engine docs).
    pub fn forward_all<T: Scalar>(
        &self,
        theta: ArrayView1<T>,
        x: &ArrayD<T>,
        mode: Mode,
    ) -> Vec<ArrayD<T>> {
        self.run_forward(&theta, x, mode, true).values
    }

    /// Logits `[N, K]` for a batch in PyTorch layout.
    pub fn logits<T: Scalar>(&self, theta: ArrayView1<T>, x: &ArrayD<T>, mode: Mode) -> ArrayD<T> {
        let mut tape = self.run_forward(&theta, x, mode, false);
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
        let tape = self.run_forward(&theta, x, mode, true);
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
        let tape = self.run_forward(&theta, x, mode, true);
        let (value, lc) = self.loss.forward(tape.values.last().unwrap(), y);
        let gz = self.loss.backward(&lc, y);
        drop(lc);
        let mut stats = Vec::new();
        for (j, node) in self.nodes.iter().enumerate() {
            if let (Op::BatchNorm(_), Cache::Bn(bc)) = (&node.op, &tape.caches[j]) {
                let x = &tape.values[node.inputs[0]];
                let channels = bc.batch_mean.len();
                stats.push(BatchStats {
                    running_mean: node.params[2],
                    running_var: node.params[3],
                    mean: bc.batch_mean.clone(),
                    var: bc.batch_var.clone(),
                    count: x.len() / channels,
                });
            }
        }
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
        let tape = self.run_forward(theta, x, mode, true);
        let (value, lc) = self.loss.forward(tape.values.last().unwrap(), y);
        let gz = self.loss.backward(&lc, y);
        let mut g = Vec::new();
        self.reverse(theta, &tape, gz, None, Some(&mut g));
        let state = HvpState {
            tape,
            lc,
            y: y.to_vec(),
            g,
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

    /// R-forward: R{value} of every node along v (`None` = identically zero).
    #[allow(clippy::type_complexity)]
    fn r_forward<T: Scalar>(
        &self,
        theta: &ArrayView1<T>,
        v: &ArrayView1<T>,
        tape: &Tape<T>,
    ) -> (Vec<Option<ArrayD<T>>>, Vec<RCache<T>>) {
        let mut rv: Vec<Option<ArrayD<T>>> = Vec::with_capacity(self.nodes.len());
        let mut rc: Vec<RCache<T>> = Vec::with_capacity(self.nodes.len());
        for (j, node) in self.nodes.iter().enumerate() {
            let p = self.params(theta, node);
            let vp = self.params(v, node);
            let rin = |k: usize| rv[node.inputs[k]].as_ref();
            let xin = |k: usize| &tape.values[node.inputs[k]];
            let (r, cache) = match (&node.op, &tape.caches[j]) {
                (Op::Input, _) => (None, RCache::None),
                (Op::Conv2d(c), Cache::Conv(cc)) => {
                    let r = c.r_forward(cc, xin(0), &p[0], &vp[0], vp.get(1), rin(0));
                    (Some(r), RCache::None)
                }
                (Op::Linear(l), _) => (
                    Some(l.r_forward(xin(0), &p[0], &vp[0], vp.get(1), rin(0))),
                    RCache::None,
                ),
                (Op::BatchNorm(b), Cache::Bn(bc)) => {
                    let (r, brc) = b.r_forward(bc, &p, &vp, rin(0));
                    (Some(r), RCache::Bn(brc))
                }
                (Op::Relu, _) => (
                    rin(0).map(|r| Relu::r_forward(&tape.values[j], r)),
                    RCache::None,
                ),
                (Op::Add, _) => (Add::r_forward(rin(0), rin(1)), RCache::None),
                (Op::GlobalAvgPool, _) => (rin(0).map(GlobalAvgPool::r_forward), RCache::None),
                (Op::AvgPool(cfg), _) => (rin(0).map(|r| AvgPool::r_forward(cfg, r)), RCache::None),
                (Op::MaxPool(_), Cache::Max(mc)) => (
                    rin(0).map(|r| MaxPool::r_forward(mc, r, tape.values[j].shape())),
                    RCache::None,
                ),
                (Op::Flatten, _) => (rin(0).map(Flatten::r_forward), RCache::None),
                (Op::Affine(a), _) => (rin(0).map(|r| a.r_forward(r)), RCache::None),
                (Op::Pad(p), _) => (rin(0).map(|r| p.r_forward(r)), RCache::None),
                (Op::Slice(sl), _) => (rin(0).map(|r| sl.r_forward(r)), RCache::None),
                (Op::Concat(c), _) => {
                    let rs: Vec<Option<&ArrayD<T>>> = (0..node.inputs.len()).map(rin).collect();
                    let shapes: Vec<&[usize]> =
                        (0..node.inputs.len()).map(|k| xin(k).shape()).collect();
                    (c.r_forward(&rs, &shapes), RCache::None)
                }
                (op, _) => unreachable!("tape lacks the cache of a {} node", op.kind()),
            };
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
        let n = self.nodes.len();
        if let Some(keep) = keep.as_mut() {
            keep.clear();
            keep.resize_with(n, || None);
        }
        let mut g: Vec<Option<ArrayD<T>>> = (0..n).map(|_| None).collect();
        g[n - 1] = Some(gz);
        let want_dw = grad.is_some();
        let mut put = |index: usize, t: &ArrayD<T>| {
            if let Some(out) = grad.as_mut() {
                self.add_tensor(out, index, t);
            }
        };

        for j in (1..n).rev() {
            let node = &self.nodes[j];
            let Some(gy) = g[j].take() else { continue };
            if let Some(keep) = keep.as_mut() {
                // what the R-passes read: dL/d(output) of parametric nodes, and that the
                // node was reached at all
                let held = !node.params.is_empty();
                keep[j] = Some(if held {
                    gy.clone()
                } else {
                    ArrayD::zeros(IxDyn(&[0]))
                });
            }
            let p = self.params(theta, node);
            let need_dx = |k: usize| node.inputs[k] != 0;
            let xin = |k: usize| &tape.values[node.inputs[k]];
            // (input slot, gradient)
            let mut outs: Vec<(usize, ArrayD<T>)> = Vec::new();
            match (&node.op, &tape.caches[j]) {
                (Op::Conv2d(c), Cache::Conv(cc)) if !want_dw => {
                    if need_dx(0) {
                        outs.push((0, c.backward_dx(cc, xin(0), &p[0], &gy)));
                    }
                }
                (Op::Conv2d(c), Cache::Conv(cc)) => {
                    let (dx, dw, db) = c.backward(cc, xin(0), &p[0], &gy, need_dx(0));
                    put(node.params[0], &dw);
                    if let Some(db) = db {
                        put(node.params[1], &db);
                    }
                    outs.extend(dx.map(|d| (0, d)));
                }
                (Op::Linear(l), _) => {
                    let (dx, dw, db) = l.backward(xin(0), &p[0], &gy, need_dx(0));
                    put(node.params[0], &dw);
                    if let Some(db) = db {
                        put(node.params[1], &db);
                    }
                    outs.extend(dx.map(|d| (0, d)));
                }
                (Op::BatchNorm(b), Cache::Bn(bc)) => {
                    let (dx, dgamma, dbeta) = b.backward(bc, &p, &gy);
                    put(node.params[0], &dgamma);
                    put(node.params[1], &dbeta);
                    if need_dx(0) {
                        outs.push((0, dx));
                    }
                }
                (Op::Relu, _) => {
                    // gy is owned here: mask it in place
                    let mut gy = gy;
                    Relu::mask_inplace(&tape.values[j], &mut gy);
                    outs.push((0, gy));
                }
                (Op::Add, _) => {
                    // the same gradient flows to both inputs: one copy, one move
                    outs.push((0, gy.clone()));
                    outs.push((1, gy));
                }
                (Op::GlobalAvgPool, _) => {
                    outs.push((0, GlobalAvgPool::backward(&gy, xin(0).shape())));
                }
                (Op::AvgPool(cfg), _) => {
                    outs.push((0, AvgPool::backward(cfg, &gy, xin(0).shape())));
                }
                (Op::MaxPool(_), Cache::Max(mc)) => outs.push((0, MaxPool::backward(mc, &gy))),
                (Op::Flatten, _) => outs.push((0, Flatten::backward(&gy, xin(0).shape()))),
                (Op::Affine(a), _) => outs.push((0, a.backward(&gy))),
                (Op::Pad(pd), _) => outs.push((0, pd.backward(&gy, xin(0).shape()))),
                (Op::Slice(sl), _) => outs.push((0, sl.backward(&gy, xin(0).shape()))),
                (Op::Concat(c), _) => {
                    let sizes: Vec<usize> = (0..node.inputs.len())
                        .map(|k| xin(k).shape()[c.axis])
                        .collect();
                    outs.extend(c.backward(&gy, &sizes).into_iter().enumerate());
                }
                (op, _) => unreachable!("tape lacks the cache of a {} node", op.kind()),
            }
            for (k, dx) in outs {
                let i = node.inputs[k];
                if i != 0 {
                    acc(&mut g[i], dx);
                }
            }
        }
    }

    /// The reverse pass of R{g} alone, reading g from a prepared state (see
    /// [`Graph::hvp_prepared`]): each op's R-part of [`Graph::reverse`], in the same order.
    #[allow(clippy::too_many_arguments)]
    fn r_reverse<T: Scalar>(
        &self,
        theta: &ArrayView1<T>,
        v: &ArrayView1<T>,
        state: &HvpState<T>,
        rvals: &[Option<ArrayD<T>>],
        rcaches: &[RCache<T>],
        rgz: ArrayD<T>,
        mut hv: ArrayViewMut1<T>,
    ) {
        let (tape, n) = (&state.tape, self.nodes.len());
        let mut rg: Vec<Option<ArrayD<T>>> = (0..n).map(|_| None).collect();
        rg[n - 1] = Some(rgz);
        let mut put = |index: usize, t: &ArrayD<T>| self.add_tensor(&mut hv, index, t);
        for j in (1..n).rev() {
            let node = &self.nodes[j];
            let Some(gy) = state.g[j].as_ref() else {
                continue;
            };
            let rgy = rg[j]
                .take()
                .unwrap_or_else(|| ArrayD::zeros(tape.values[j].raw_dim()));
            let p = self.params(theta, node);
            let vp = self.params(v, node);
            let need_dx = |k: usize| node.inputs[k] != 0;
            let xin = |k: usize| &tape.values[node.inputs[k]];
            let rin = |k: usize| rvals[node.inputs[k]].as_ref();
            // (input slot, R{gradient})
            let mut outs: Vec<(usize, ArrayD<T>)> = Vec::new();
            match (&node.op, &tape.caches[j]) {
                (Op::Conv2d(c), Cache::Conv(cc)) => {
                    let r = c.backward_hvp(
                        cc,
                        xin(0),
                        rin(0),
                        &p[0],
                        &vp[0],
                        gy,
                        &rgy,
                        need_dx(0),
                        false,
                        false,
                    );
                    put(node.params[0], &r.rdw);
                    if let Some(rdb) = &r.rdb {
                        put(node.params[1], rdb);
                    }
                    outs.extend(r.rdx.map(|d| (0, d)));
                }
                (Op::Linear(l), _) => {
                    let (rd, rdw, rdb) =
                        l.r_backward(xin(0), rin(0), &p[0], &vp[0], gy, &rgy, need_dx(0));
                    put(node.params[0], &rdw);
                    if let Some(rdb) = rdb {
                        put(node.params[1], &rdb);
                    }
                    outs.extend(rd.filter(|_| need_dx(0)).map(|d| (0, d)));
                }
                (Op::BatchNorm(b), Cache::Bn(bc)) => {
                    let RCache::Bn(brc) = &rcaches[j] else {
                        unreachable!()
                    };
                    let (rd, rdg, rdb) = b.r_backward(bc, brc, &p, &vp, rin(0), gy, &rgy);
                    put(node.params[0], &rdg);
                    put(node.params[1], &rdb);
                    if need_dx(0) {
                        outs.push((0, rd));
                    }
                }
                (Op::Relu, _) => {
                    let mut rgy = rgy;
                    Relu::mask_inplace(&tape.values[j], &mut rgy);
                    outs.push((0, rgy));
                }
                (Op::Add, _) => {
                    outs.push((0, rgy.clone()));
                    outs.push((1, rgy));
                }
                (Op::GlobalAvgPool, _) => {
                    outs.push((0, GlobalAvgPool::r_backward(&rgy, xin(0).shape())));
                }
                (Op::AvgPool(cfg), _) => {
                    outs.push((0, AvgPool::r_backward(cfg, &rgy, xin(0).shape())));
                }
                (Op::MaxPool(_), Cache::Max(mc)) => {
                    outs.push((0, MaxPool::r_backward(mc, &rgy)));
                }
                (Op::Flatten, _) => outs.push((0, Flatten::r_backward(&rgy, xin(0).shape()))),
                (Op::Affine(a), _) => outs.push((0, a.r_backward(&rgy))),
                (Op::Pad(pd), _) => outs.push((0, pd.r_backward(&rgy, xin(0).shape()))),
                (Op::Slice(sl), _) => outs.push((0, sl.r_backward(&rgy, xin(0).shape()))),
                (Op::Concat(c), _) => {
                    let sizes: Vec<usize> = (0..node.inputs.len())
                        .map(|k| xin(k).shape()[c.axis])
                        .collect();
                    outs.extend(c.r_backward(&rgy, &sizes).into_iter().enumerate());
                }
                (op, _) => unreachable!("tape lacks the cache of a {} node", op.kind()),
            }
            for (k, rdx) in outs {
                let i = node.inputs[k];
                if i != 0 {
                    acc(&mut rg[i], rdx);
                }
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
        Some(s) => *s += &add,
        None => *slot = Some(add),
    }
}

/// A zero vector the size of θ, convenient for `grad_batch`/`hvp_batch` outputs.
pub fn zeros_like<T: Scalar>(theta: &ArrayView1<T>) -> Array1<T> {
    Array1::zeros(theta.len())
}
