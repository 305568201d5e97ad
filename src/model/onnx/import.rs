//! ONNX graph → engine graph. Nodes are visited in file order (ONNX requires topological
//! order); each value is either computed (an engine node) or constant (an initializer or
//! a `Constant` node). Constants read as weights become parameters; constant operands of
//! Sub/Mul/Div/Add become a fixed affine map; shape constants are read and dropped.
//!
//! Axes: ONNX values are `[N, C, H, W]` or `[N, F]`; the engine holds images as
//! `[C, N, H, W]`, so Pad/Slice/Concat axes are mapped (N ↔ C). A global average pool
//! keeps ONNX's `[N, C, 1, 1]` as the engine's `[N, C]` ("squeezed") until a Flatten or
//! Reshape makes it `[N, C]` for ONNX too.
//!
//! The batch axis is free whatever the file says: the current exporter fixes it to the
//! example's size unless asked otherwise, so a Reshape to `[that size, F]` is read as a
//! flatten to `[N, F]`. Every other input dimension must be a number.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::engine::ops::{Affine, BatchNorm, Concat, Conv2d, Linear, Pad, Pool2d, SliceAxis};
use crate::engine::{Graph, Layout, Loss, Node, Op, ParamVec, Role};

use super::fold::{Folded, Sym};
use super::proto::{AttributeProto, ModelProto, NodeProto};
use super::{decode_tensor, DataFiles, OnnxArch, Tensor};
use crate::model::error::{OnnxError, OnnxNodeError, TensorError, UnsupportedUse};

mod generic;
mod nodes;

/// What the node-level steps return.
type NodeResult<T> = Result<T, OnnxNodeError>;

fn unsupported(what: impl Into<String>) -> OnnxNodeError {
    OnnxNodeError::Unsupported { what: what.into() }
}

/// A computed value: its engine node and ONNX shape. The batch axis (axis 0 unless a
/// reshape moved it, as attention's `[T, N·H, D]`) holds its multiplier, 1 or H, not N.
#[derive(Clone, Debug)]
struct Value {
    node: usize,
    shape: Vec<usize>,
    /// The axis whose size is the multiplier times N; `None` for values that do not depend
    /// on the batch (parameters, and what is computed from them alone).
    batch: Option<usize>,
    /// ONNX `[N, C, 1, 1]` held by the engine as `[N, C]`.
    squeezed: bool,
    /// A rank-4 value the engine holds channel-major `[C, N, H, W]` (the layout of
    /// convolutions, batch norm and pools); other values are held as ONNX has them.
    image: bool,
}

impl Value {
    /// An image `[N, C, H, W]` held channel-major.
    fn image(node: usize, shape: Vec<usize>) -> Self {
        Value {
            node,
            shape,
            batch: Some(0),
            squeezed: false,
            image: true,
        }
    }

    /// A value held in ONNX's layout with the batch first.
    fn plain(node: usize, shape: Vec<usize>) -> Self {
        Value {
            node,
            shape,
            batch: Some(0),
            squeezed: false,
            image: false,
        }
    }
}

#[derive(Clone, Debug)]
enum Entry {
    Value(Value),
    /// A constant and, for initializers, its position among them.
    Const(Arc<Tensor>, Option<usize>),
    /// Shape arithmetic that depends on the batch size (see [`fold`]).
    Sym(Arc<Folded>),
    /// Token ids: a computed value cast to integers (an Embedding's indices).
    Ids(Value),
}

struct Pending {
    name: String,
    shape: Vec<usize>,
    role: Role,
    data: Vec<f64>,
}

const SUPPORTED: &str = "Conv, BatchNormalization, Relu, Add, Sub, Mul, Div, Gemm, MatMul, Flatten, Reshape, GlobalAveragePool, AveragePool, MaxPool, ReduceMean, Identity, Constant, Pad, Slice, Concat, Dropout, LogSoftmax/Softmax at the output";

/// Largest zero padding per side accepted (guards against damaged files asking for huge
/// activations; real networks pad by a few pixels or channels).
const MAX_PAD: i64 = 1 << 16;

struct Importer {
    g: Graph,
    params: Vec<Pending>,
    by_name: HashMap<String, usize>,
    env: HashMap<String, Entry>,
    notes: Vec<String>,
    /// The exported batch size when the input's first dimension is fixed.
    export_batch: Option<usize>,
    /// Linear nodes made from a MatMul, waiting for a bias from a following Add.
    matmul: Vec<usize>,
    /// Per node: the node holding its value in the other layout (image ↔ ONNX).
    layout_cache: HashMap<usize, usize>,
    /// Per parameter: the `Param` node that uses it as a value.
    param_nodes: HashMap<usize, usize>,
    /// The graph output's name.
    graph_output: String,
    /// The name of the node being translated.
    current: String,
    /// Names an Identity gave to an initializer (legacy exports pass weights through one).
    aliases: HashMap<String, String>,
    /// Convolutions into which the exporter folded a BatchNorm: weight name, channels.
    folded_bn: Vec<(String, usize)>,
    opset: i64,
}

/// Why an import failed: at one node, or in the file as a whole.
pub(super) enum ImportError {
    Node {
        node: String,
        op: String,
        why: Box<OnnxNodeError>,
    },
    Graph(OnnxError),
}

impl From<OnnxError> for ImportError {
    fn from(why: OnnxError) -> Self {
        ImportError::Graph(why)
    }
}

impl From<TensorError> for ImportError {
    fn from(why: TensorError) -> Self {
        ImportError::Graph(why.into())
    }
}

pub(super) fn import(
    m: &ModelProto,
    path: &Path,
    data: &mut DataFiles,
) -> Result<(Graph, ParamVec<f32>, OnnxArch), ImportError> {
    let graph = m.graph.as_ref().ok_or(OnnxError::NoGraph)?;
    let opset = m
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(0);
    let mut imp = Importer {
        g: Graph {
            nodes: vec![],
            layout: Arc::new(Layout::new()),
            loss: Loss::CrossEntropy,
            input_shape: vec![],
            num_classes: 0,
            options: Default::default(),
        },
        params: vec![],
        by_name: HashMap::new(),
        env: HashMap::new(),
        notes: vec![],
        export_batch: None,
        matmul: vec![],
        layout_cache: HashMap::new(),
        folded_bn: vec![],
        aliases: HashMap::new(),
        current: String::new(),
        param_nodes: HashMap::new(),
        graph_output: graph
            .output
            .first()
            .map(|o| o.name.clone())
            .unwrap_or_default(),
        opset,
    };
    for (i, t) in graph.initializer.iter().enumerate() {
        let tensor = decode_tensor(t, data)?;
        imp.env
            .insert(t.name.clone(), Entry::Const(Arc::new(tensor), Some(i)));
    }
    // the network input: the first graph input that is not an initializer
    let input = graph
        .input
        .iter()
        .find(|v| !imp.env.contains_key(&v.name))
        .ok_or(OnnxError::NoInput)?;
    let dims = input
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .and_then(|t| t.shape.as_ref())
        .map(|s| s.dim.clone())
        .ok_or_else(|| OnnxError::InputShapeless {
            name: input.name.clone(),
        })?;
    if !(2..=4).contains(&dims.len()) {
        return Err(OnnxError::InputRank {
            name: input.name.clone(),
            rank: dims.len(),
        }
        .into());
    }
    imp.export_batch = dims[0].dim_value.and_then(|d| usize::try_from(d).ok());
    let mut sample = vec![];
    for (k, d) in dims.iter().enumerate().skip(1) {
        match d.dim_value {
            Some(v) if v > 0 => sample.push(v as usize),
            _ => {
                return Err(OnnxError::DynamicDim {
                    name: input.name.clone(),
                    axis: k,
                    param: d.dim_param.clone().unwrap_or_default(),
                }
                .into())
            }
        }
    }
    imp.g.input_shape = sample.clone();
    let node0 = imp.g.push("input", Op::Input, &[], &[]);
    let mut shape = vec![1];
    shape.extend(&sample);
    let v = match shape.len() {
        4 => Value::image(node0, shape),
        _ => Value::plain(node0, shape),
    };
    imp.env.insert(input.name.clone(), Entry::Value(v));
    let output = graph.output.first().ok_or(OnnxError::NoOutput)?;
    // every op without a rule, listed at once
    let mut unknown: Vec<(String, Vec<String>)> = vec![];
    for (i, n) in graph.node.iter().enumerate() {
        if !Importer::knows(n) {
            let label = node_label(n, i);
            let key = if n.domain.is_empty() || n.domain == "ai.onnx" {
                n.op_type.clone()
            } else {
                format!("{}::{}", n.domain, n.op_type)
            };
            match unknown.iter_mut().find(|(k, _)| *k == key) {
                Some((_, nodes)) => nodes.push(label),
                None => unknown.push((key, vec![label])),
            }
        }
    }
    if !unknown.is_empty() {
        return Err(OnnxError::Unsupported {
            list: unknown
                .into_iter()
                .map(|(op, nodes)| UnsupportedUse {
                    op,
                    why: "no rule for this op".into(),
                    nodes,
                })
                .collect(),
        }
        .into());
    }
    // translation; an unsupported use of a known op is collected too, and whatever
    // depends on its outputs is skipped
    let mut failed: Vec<UnsupportedUse> = vec![];
    let mut poisoned: std::collections::HashSet<String> = Default::default();
    for (i, n) in graph.node.iter().enumerate() {
        let label = node_label(n, i);
        if n.input.iter().any(|x| poisoned.contains(x)) {
            poisoned.extend(n.output.iter().cloned());
            continue;
        }
        imp.current = n.name.clone();
        match imp.node(n, &output.name) {
            Ok(()) => {}
            Err(OnnxNodeError::Unsupported { what }) => {
                poisoned.extend(n.output.iter().cloned());
                match failed
                    .iter_mut()
                    .find(|u| u.op == n.op_type && u.why == what)
                {
                    Some(u) => u.nodes.push(label),
                    None => failed.push(UnsupportedUse {
                        op: n.op_type.clone(),
                        why: what,
                        nodes: vec![label],
                    }),
                }
            }
            Err(why) => {
                return Err(ImportError::Node {
                    node: label,
                    op: n.op_type.clone(),
                    why: Box::new(why),
                })
            }
        }
    }
    if !failed.is_empty() {
        return Err(OnnxError::Unsupported { list: failed }.into());
    }
    let out = match imp.env.get(&output.name) {
        Some(Entry::Value(v)) => v.clone(),
        Some(_) => {
            return Err(OnnxError::OutputConstant {
                name: output.name.clone(),
            }
            .into())
        }
        None => {
            return Err(OnnxError::OutputMissing {
                name: output.name.clone(),
            }
            .into())
        }
    };
    if out.shape.len() != 2
        || out.squeezed
        || out.node == 0
        || out.batch != Some(0)
        || out.shape[0] != 1
    {
        return Err(OnnxError::OutputShape {
            name: output.name.clone(),
            shape: out.shape,
        }
        .into());
    }
    imp.g.num_classes = out.shape[1];
    Ok(imp.finish(out.node, path, m, opset)?)
}

fn node_label(n: &NodeProto, i: usize) -> String {
    if n.name.is_empty() {
        format!("#{i}")
    } else {
        n.name.clone()
    }
}

fn attr<'n>(n: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}
fn attr_i(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map(|a| a.i).unwrap_or(default)
}
fn attr_f(n: &NodeProto, name: &str, default: f32) -> f32 {
    attr(n, name).map(|a| a.f).unwrap_or(default)
}
fn attr_ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}
fn attr_s(n: &NodeProto, name: &str) -> String {
    attr(n, name)
        .map(|a| String::from_utf8_lossy(&a.s).into_owned())
        .unwrap_or_default()
}

/// Whether a name looks like a PyTorch `state_dict` path rather than an exporter's own.
fn state_dict_like(name: &str) -> bool {
    name.contains('.') && !name.contains("::") && !name.starts_with('/')
}

/// One kernel size, stride and padding for both spatial axes.
fn window(n: &NodeProto, kernel: Option<(usize, usize)>) -> NodeResult<(usize, usize, usize)> {
    let ks = match attr_ints(n, "kernel_shape") {
        Some(k) if k.len() == 2 => (k[0], k[1]),
        Some(k) => {
            return Err(unsupported(format!(
                "kernel_shape {k:?}: only 2-D kernels are supported"
            )))
        }
        None => match kernel {
            Some((a, b)) => (a as i64, b as i64),
            None => return Err(OnnxNodeError::NoKernelShape),
        },
    };
    if ks.0 != ks.1 || ks.0 <= 0 {
        return Err(unsupported(format!(
            "kernel {}×{}: only square kernels are supported",
            ks.0, ks.1
        )));
    }
    let strides = attr_ints(n, "strides").unwrap_or(vec![1, 1]);
    if strides.len() != 2 || strides[0] != strides[1] || strides[0] <= 0 {
        return Err(unsupported(format!(
            "strides {strides:?}: only equal positive strides are supported"
        )));
    }
    let pads = attr_ints(n, "pads").unwrap_or(vec![0; 4]);
    if pads.len() != 4 || pads.iter().any(|&p| p != pads[0]) || pads[0] < 0 {
        return Err(unsupported(format!(
            "pads {pads:?}: only the same padding on every side is supported"
        )));
    }
    if let Some(d) = attr_ints(n, "dilations") {
        if d.iter().any(|&v| v != 1) {
            return Err(unsupported(format!(
                "dilations {d:?}: only dilation 1 is supported"
            )));
        }
    }
    let auto = attr_s(n, "auto_pad");
    if !(auto.is_empty() || auto == "NOTSET" || (auto == "VALID" && pads[0] == 0)) {
        return Err(unsupported(format!(
            "auto_pad {auto}: export with explicit padding"
        )));
    }
    if pads[0] > ks.0 {
        return Err(unsupported(format!(
            "pads {pads:?} exceed the kernel size {}; PyTorch pads by at most half the kernel",
            ks.0
        )));
    }
    Ok((ks.0 as usize, strides[0] as usize, pads[0] as usize))
}

/// Engine axis of an ONNX axis of a value of rank `rank` (N ↔ C for images).
fn engine_axis(rank: usize, axis: usize) -> usize {
    if rank == 4 && axis < 2 {
        1 - axis
    } else {
        axis
    }
}

fn norm_axis(axis: i64, rank: usize) -> NodeResult<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a >= rank as i64 {
        return Err(OnnxNodeError::Axis { axis, rank });
    }
    Ok(a as usize)
}

impl Importer {
    fn get(&self, name: &str) -> NodeResult<&Entry> {
        self.env.get(name).ok_or_else(|| OnnxNodeError::NoProducer {
            name: name.to_string(),
        })
    }

    fn value(&self, name: &str) -> NodeResult<Value> {
        match self.get(name)? {
            Entry::Value(v) => Ok(v.clone()),
            Entry::Ids(_) => Err(unsupported(format!(
                "'{name}' holds integer token ids, which only an embedding (Gather) takes"
            ))),
            Entry::Sym(_) | Entry::Const(..) => Err(OnnxNodeError::ConstantInput {
                name: name.to_string(),
            }),
        }
    }

    /// A computed value of image shape `[N, C, H, W]` (not squeezed to `[N, C]`), held
    /// channel-major.
    fn image(&mut self, name: &str) -> NodeResult<Value> {
        let x = self.value(name)?;
        self.as_image(x)
    }

    /// Whether a GlobalAveragePool / ReduceMean is the mean over an image's spatial axes.
    fn spatial_mean(&self, n: &NodeProto) -> NodeResult<bool> {
        let Some(x) = n.input.first() else {
            return Ok(false);
        };
        let Entry::Value(x) = self.get(x)? else {
            return Ok(false);
        };
        if x.shape.len() != 4 || x.squeezed || x.batch != Some(0) {
            return Ok(false);
        }
        if n.op_type == "GlobalAveragePool" {
            return Ok(true);
        }
        let axes = match Self::opt_input(n, 1) {
            Some(a) => self.ints(a)?,
            None => attr_ints(n, "axes").unwrap_or_default(),
        };
        let mut axes: Vec<usize> = axes
            .iter()
            .map(|&a| norm_axis(a, 4))
            .collect::<Result<_, _>>()?;
        axes.sort_unstable();
        Ok(axes == [2, 3])
    }

    fn konst(&self, name: &str) -> NodeResult<(Arc<Tensor>, Option<usize>)> {
        match self.get(name)? {
            Entry::Const(t, i) => Ok((t.clone(), *i)),
            Entry::Sym(_) => Err(unsupported(format!(
                "'{name}' depends on the batch size where a constant is needed"
            ))),
            Entry::Value(_) | Entry::Ids(_) => Err(OnnxNodeError::ComputedInput {
                name: name.to_string(),
            }),
        }
    }

    fn opt_input(n: &NodeProto, k: usize) -> Option<&str> {
        n.input.get(k).map(String::as_str).filter(|s| !s.is_empty())
    }

    fn ints(&self, name: &str) -> NodeResult<Vec<i64>> {
        let (t, _) = self.konst(name)?;
        Ok(if t.ints.is_empty() {
            t.values.iter().map(|&v| v as i64).collect()
        } else {
            t.ints.clone()
        })
    }

    /// The parameter for constant `name` (created on first use); `transpose` stores a 2-D
    /// tensor transposed (PyTorch's `[out, in]` from a MatMul's `[in, out]`).
    fn param(&mut self, name: &str, role: Role, transpose: bool) -> NodeResult<usize> {
        let alias = self.aliases.get(name).cloned();
        let name = alias.as_deref().unwrap_or(name);
        if let Some(&i) = self.by_name.get(name) {
            // the legacy exporter stores equal tensors once (a fresh model's zero biases):
            // a use in another role (a conv bias as a LayerNorm shift) gets its own
            // parameter, named after the module path in the node's name
            let other_role = self.params[i].role != role;
            if let Some(own) = self.untied_name(name, role).filter(|_| other_role) {
                if let Some(&j) = self.by_name.get(&own) {
                    return Ok(j);
                }
                let p = &self.params[i];
                let (shape, data) = (p.shape.clone(), p.data.clone());
                self.notes.push(format!(
                    "the file stores '{own}' and '{name}' as one initializer (equal values); they are separate parameters here, as in PyTorch"
                ));
                self.params.push(Pending {
                    name: own.clone(),
                    shape,
                    role,
                    data,
                });
                self.by_name.insert(own, self.params.len() - 1);
                return Ok(self.params.len() - 1);
            }
            if self.params[i].role != role {
                return Err(OnnxNodeError::Roles {
                    name: name.to_string(),
                    first: self.params[i].role,
                    second: role,
                });
            }
            return Ok(i);
        }
        let (t, _) = self.konst(name)?;
        if t.values.iter().any(|v| !v.is_finite()) {
            return Err(OnnxNodeError::NonFinite {
                name: name.to_string(),
            });
        }
        let (shape, data) = if transpose {
            let (r, c) = (t.dims[0], t.dims[1]);
            let mut d = vec![0.0; r * c];
            for i in 0..r {
                for j in 0..c {
                    d[j * r + i] = t.values[i * c + j];
                }
            }
            self.notes.push(format!(
                "'{name}' is stored transposed in the file ([in, out]); it is held as [out, in] like nn.Linear.weight"
            ));
            (vec![c, r], d)
        } else {
            (t.dims.clone(), t.values.clone())
        };
        self.params.push(Pending {
            name: name.to_string(),
            shape,
            role,
            data,
        });
        self.by_name.insert(name.to_string(), self.params.len() - 1);
        Ok(self.params.len() - 1)
    }

    /// For a second use of initializer `name` by a node of another module (legacy node
    /// names are module paths, `/encoder/layers/encoder_layer_0/ln_1/LayerNormalization`):
    /// the name the tensor has in that module.
    fn untied_name(&self, name: &str, role: Role) -> Option<String> {
        let path = self.current.strip_prefix('/')?;
        let (module, _) = path.rsplit_once('/')?;
        let module = module.replace('/', ".");
        let (own, suffix) = name.rsplit_once('.')?;
        if module.is_empty() || own == module || generic::exporter_made(name) {
            return None;
        }
        let suffix = match role {
            Role::BnScale => "weight",
            Role::BnShift => "bias",
            _ => suffix,
        };
        Some(format!("{module}.{suffix}"))
    }

    /// A MatMul weight the exporter stored transposed under its own name (`val_14`,
    /// `onnx::MatMul_83`) takes its module's name from the bias added after it
    /// (`….in_proj_bias` → `….in_proj_weight`, `….mlp.0.bias` → `….mlp.0.weight`), as
    /// PyTorch's `state_dict` has it, unless that name is taken.
    fn name_weight_after_bias(&mut self, node: usize, bias: &str) {
        let Some(&w) = self.g.nodes[node].params.first() else {
            return;
        };
        let old = self.params[w].name.clone();
        if !generic::exporter_made(&old) {
            return;
        }
        let new = if let Some(m) = bias.strip_suffix(".bias") {
            format!("{m}.weight")
        } else if let Some(m) = bias.strip_suffix("_bias") {
            format!("{m}_weight")
        } else {
            return;
        };
        if self.by_name.contains_key(&new) || self.env.contains_key(&new) {
            return;
        }
        self.notes.push(format!(
            "'{old}' (a weight the exporter stored transposed under its own name) is named '{new}' after its bias"
        ));
        self.by_name.remove(&old);
        self.by_name.insert(new.clone(), w);
        self.params[w].name = new.clone();
        if let Some(m) = new.strip_suffix(".weight") {
            self.g.nodes[node].name = m.to_string();
        }
    }

    fn set(&mut self, name: &str, v: Value) {
        self.env.insert(name.to_string(), Entry::Value(v));
    }

    fn push(&mut self, name: &str, op: Op, inputs: &[usize], params: &[usize]) -> usize {
        self.g.push(name, op, inputs, params)
    }

    /// The module path a weight name implies (`layer1.0.conv1.weight` → `layer1.0.conv1`).
    fn module(weight: &str, node: &NodeProto) -> String {
        match weight.strip_suffix(".weight") {
            Some(m) if state_dict_like(weight) => m.to_string(),
            _ => node.name.clone(),
        }
    }

    /// Per-channel constants of an affine operand for a value `x`.
    fn channel_values(t: &Tensor, x: &Value) -> NodeResult<Vec<f64>> {
        if t.values.len() == 1 {
            return Ok(t.values.clone());
        }
        let rank = x.shape.len();
        let mut dims = t.dims.clone();
        while dims.len() < rank {
            dims.insert(0, 1);
        }
        let fits = dims.len() == rank
            && dims
                .iter()
                .enumerate()
                .all(|(a, &d)| d == 1 || (a == 1 && d == x.shape[1]));
        if !fits || x.squeezed {
            return Err(OnnxNodeError::ChannelConstant {
                dims: t.dims.clone(),
                shape: x.shape.clone(),
            });
        }
        Ok(t.values.clone())
    }

    fn affine(&mut self, n: &NodeProto, x: Value, scale: Vec<f64>, shift: Vec<f64>) {
        let y = self.push(&n.name, Op::Affine(Affine { scale, shift }), &[x.node], &[]);
        self.set(&n.output[0], Value { node: y, ..x });
    }

    /// Drops nodes the output does not need, orders the parameters as the initializers are
    /// ordered (PyTorch's `state_dict()` order for both exporters) and checks shapes.
    fn finish(
        mut self,
        out: usize,
        path: &Path,
        m: &ModelProto,
        opset: i64,
    ) -> Result<(Graph, ParamVec<f32>, OnnxArch), OnnxError> {
        let n = self.g.nodes.len();
        let mut need = vec![false; n];
        need[out] = true;
        need[0] = true;
        for j in (0..=out).rev() {
            if need[j] {
                for &i in &self.g.nodes[j].inputs {
                    need[i] = true;
                }
            }
        }
        let mut remap = vec![usize::MAX; n];
        let mut nodes: Vec<Node> = vec![];
        for (j, node) in self.g.nodes.iter().enumerate().take(out + 1) {
            if need[j] {
                remap[j] = nodes.len();
                let mut node = node.clone();
                node.inputs = node.inputs.iter().map(|&i| remap[i]).collect();
                nodes.push(node);
            }
        }
        // parameters: those the kept nodes use, in order of first use, which is PyTorch's
        // registration (`state_dict()`) order when modules are called in the order they are
        // defined; initializer order is not (the exporters move buffers and some biases)
        let mut used: Vec<usize> = nodes.iter().flat_map(|n| n.params.clone()).collect();
        let mut seen = std::collections::HashSet::new();
        used.retain(|i| seen.insert(*i));
        let mut layout = Layout::new();
        let mut pmap = HashMap::new();
        for &i in &used {
            let p = &self.params[i];
            pmap.insert(i, layout.push(p.name.clone(), &p.shape, p.role));
        }
        for node in &mut nodes {
            node.params = node.params.iter().map(|i| pmap[i]).collect();
        }
        let layout = Arc::new(layout);
        let mut data = Vec::with_capacity(layout.len());
        for &i in &used {
            data.extend(self.params[i].data.iter().map(|&v| v as f32));
        }
        let theta = ParamVec::from_data(layout.clone(), ndarray::Array1::from(data));
        self.g.nodes = nodes;
        self.g.layout = layout;
        self.g
            .infer_shapes(&self.g.input_shape.clone(), 1)
            .map_err(|e| OnnxError::Check { why: e.to_string() })?;

        let g = &self.g;
        let has_bn = g.nodes.iter().any(|n| matches!(n.op, Op::BatchNorm(_)));
        let renamed: Vec<&str> = g
            .layout
            .tensors()
            .iter()
            .map(|t| t.name.as_str())
            .filter(|n| generic::exporter_made(n))
            .collect();
        let mut folded = std::mem::take(&mut self.folded_bn);
        if folded.is_empty() && !has_bn {
            // the legacy exporter's constant folding: exporter-named conv weights and biases
            for n in &g.nodes {
                if let Op::Conv2d(c) = &n.op {
                    let w = &g.layout.tensor(n.params[0]).name;
                    if c.bias && !state_dict_like(w) {
                        folded.push((w.clone(), c.out_channels));
                    }
                }
            }
        }
        let bn_folded = !has_bn && !folded.is_empty();
        let mut notes = std::mem::take(&mut self.notes);
        if bn_folded {
            let channels: usize = folded.iter().map(|(_, c)| c).sum();
            let names: Vec<&str> = folded.iter().take(3).map(|(n, _)| n.as_str()).collect();
            let more = if folded.len() > 3 { ", …" } else { "" };
            let p = g.layout.len();
            notes.insert(0, format!(
                "the exporter folded BatchNorm into {} convolution(s) ({}{more}): their weights are W·γ/σ plus a bias β − γμ/σ, so the {p} parameters here are not the model's (PyTorch has γ and β instead of those biases: about {} trainable parameters); Hessians and filter-normalized directions refer to the folded parameterization. To keep BatchNorm, export with torch.onnx.export(model, x, dynamo=False, do_constant_folding=False) or dynamo=True, optimize=False",
                folded.len(),
                names.join(", "),
                p + channels
            ));
        }
        if !renamed.is_empty() {
            notes.push(format!(
                "{} tensor(s) carry exporter-made names, not state_dict names (e.g. '{}'); they are kept as they are",
                renamed.len(),
                renamed[0]
            ));
        }
        let arch = OnnxArch {
            file: path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            producer: format!("{} {}", m.producer_name, m.producer_version)
                .trim()
                .to_string(),
            opset,
            depth: g
                .nodes
                .iter()
                .filter(|n| matches!(n.op, Op::Conv2d(_) | Op::Linear(_)))
                .count(),
            residual: g.nodes.iter().any(|n| n.op == Op::Add),
            bn_folded,
            num_classes: g.num_classes,
            input_shape: g.input_shape.clone(),
            notes,
        };
        Ok((self.g, theta, arch))
    }
}
