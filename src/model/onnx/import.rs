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

use super::proto::{AttributeProto, ModelProto, NodeProto};
use super::{decode_tensor, DataFiles, OnnxArch, Tensor};
use crate::model::error::{OnnxError, OnnxNodeError, TensorError};

/// What the node-level steps return.
type NodeResult<T> = Result<T, OnnxNodeError>;

fn unsupported(what: impl Into<String>) -> OnnxNodeError {
    OnnxNodeError::Unsupported { what: what.into() }
}

/// A computed value: its engine node and ONNX shape (batch axis first, its size not tracked).
#[derive(Clone, Debug)]
struct Value {
    node: usize,
    shape: Vec<usize>,
    /// ONNX `[N, C, 1, 1]` held by the engine as `[N, C]`.
    squeezed: bool,
}

#[derive(Clone, Debug)]
enum Entry {
    Value(Value),
    /// A constant and, for initializers, its position among them.
    Const(Arc<Tensor>, Option<usize>),
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
    if dims.len() != 2 && dims.len() != 4 {
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
    let mut shape = vec![0];
    shape.extend(&sample);
    imp.env.insert(
        input.name.clone(),
        Entry::Value(Value {
            node: node0,
            shape,
            squeezed: false,
        }),
    );
    let output = graph.output.first().ok_or(OnnxError::NoOutput)?;
    for (i, n) in graph.node.iter().enumerate() {
        let label = if n.name.is_empty() {
            format!("#{i}")
        } else {
            n.name.clone()
        };
        imp.node(n, &output.name).map_err(|why| ImportError::Node {
            node: label,
            op: n.op_type.clone(),
            why: Box::new(why),
        })?;
    }
    let out = match imp.env.get(&output.name) {
        Some(Entry::Value(v)) => v.clone(),
        Some(Entry::Const(..)) => {
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
    if out.shape.len() != 2 || out.squeezed || out.node == 0 {
        return Err(OnnxError::OutputShape {
            name: output.name.clone(),
            shape: out.shape,
        }
        .into());
    }
    imp.g.num_classes = out.shape[1];
    Ok(imp.finish(out.node, path, m, opset)?)
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
    if attr_i(n, "ceil_mode", 0) != 0 {
        return Err(unsupported(
            "ceil_mode=1 is not supported; use ceil_mode=False",
        ));
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
            Entry::Const(..) => Err(OnnxNodeError::ConstantInput {
                name: name.to_string(),
            }),
        }
    }

    /// A computed value of image shape `[N, C, H, W]` (not squeezed to `[N, C]`).
    fn image(&self, name: &str) -> NodeResult<Value> {
        let x = self.value(name)?;
        if x.shape.len() != 4 || x.squeezed {
            return Err(OnnxNodeError::InputShape {
                shape: x.shape,
                expected: "[N, C, H, W]",
            });
        }
        Ok(x)
    }

    fn konst(&self, name: &str) -> NodeResult<(Arc<Tensor>, Option<usize>)> {
        match self.get(name)? {
            Entry::Const(t, i) => Ok((t.clone(), *i)),
            Entry::Value(_) => Err(OnnxNodeError::ComputedInput {
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
        if let Some(&i) = self.by_name.get(name) {
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

    fn node(&mut self, n: &NodeProto, graph_output: &str) -> NodeResult<()> {
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            return Err(unsupported(format!(
                "op domain '{}' is not supported (only the default ONNX domain: {SUPPORTED})",
                n.domain
            )));
        }
        let inp = |k: usize| -> NodeResult<&str> {
            Self::opt_input(n, k).ok_or(OnnxNodeError::MissingInput { index: k })
        };
        let out = n.output.first().ok_or(OnnxNodeError::NoOutput)?.clone();
        match n.op_type.as_str() {
            "Constant" => {
                let t = if let Some(t) = attr(n, "value").and_then(|a| a.t.as_ref()) {
                    // external data of a Constant would resolve against the working directory
                    if t.data_location == 1 {
                        return Err(unsupported(
                            "a Constant with external data is not supported",
                        ));
                    }
                    decode_tensor(t, &mut DataFiles::new(Path::new("")))?
                } else if let Some(a) = attr(n, "value_float") {
                    Tensor {
                        dims: vec![],
                        values: vec![a.f as f64],
                        ints: vec![],
                    }
                } else if let Some(a) = attr(n, "value_floats") {
                    Tensor {
                        dims: vec![a.floats.len()],
                        values: a.floats.iter().map(|&v| v as f64).collect(),
                        ints: vec![],
                    }
                } else if let Some(a) = attr(n, "value_int") {
                    Tensor {
                        dims: vec![],
                        values: vec![a.i as f64],
                        ints: vec![a.i],
                    }
                } else if let Some(a) = attr(n, "value_ints") {
                    Tensor {
                        dims: vec![a.ints.len()],
                        values: a.ints.iter().map(|&v| v as f64).collect(),
                        ints: a.ints.clone(),
                    }
                } else {
                    return Err(unsupported(
                        "Constant without a value, value_float(s) or value_int(s) attribute",
                    ));
                };
                self.env.insert(out, Entry::Const(Arc::new(t), None));
            }
            "Identity" | "Dropout" => {
                // inference: the identity (a Dropout's mask output, if any, is left unread)
                let e = self.get(inp(0)?)?.clone();
                self.env.insert(out, e);
            }
            "Conv" => {
                let x = self.image(inp(0)?)?;
                let wname = inp(1)?.to_string();
                let (w, _) = self.konst(&wname)?;
                if attr_i(n, "group", 1) != 1 {
                    return Err(unsupported(
                        "grouped convolutions (group ≠ 1) are not supported",
                    ));
                }
                if w.dims.len() != 4 || w.dims[1] != x.shape[1] {
                    return Err(OnnxNodeError::WeightShape {
                        name: wname,
                        dims: w.dims.clone(),
                        expected: format!("[out, {}, k, k]", x.shape[1]),
                    });
                }
                let (k, s, p) = window(n, Some((w.dims[2], w.dims[3])))?;
                if (k, k) != (w.dims[2], w.dims[3]) {
                    return Err(OnnxNodeError::KernelShape {
                        dims: w.dims.clone(),
                    });
                }
                let mut params = vec![self.param(&wname, Role::Weight, false)?];
                if let Some(b) = Self::opt_input(n, 2) {
                    let (bt, _) = self.konst(b)?;
                    if bt.values.len() != w.dims[0] {
                        return Err(OnnxNodeError::BiasShape {
                            name: b.to_string(),
                            dims: bt.dims.clone(),
                            expected: w.dims[0],
                        });
                    }
                    // the current exporter passes an all-zero constant for bias=False
                    if state_dict_like(b) || b.contains("::") || bt.values.iter().any(|&v| v != 0.0)
                    {
                        params.push(self.param(b, Role::Bias, false)?);
                    }
                }
                let conv = Conv2d {
                    in_channels: x.shape[1],
                    out_channels: w.dims[0],
                    kernel: k,
                    stride: s,
                    padding: p,
                    bias: params.len() == 2,
                };
                let (ho, wo) = conv
                    .out_hw(x.shape[2], x.shape[3])
                    .ok_or(OnnxNodeError::KernelTooLarge)?;
                let c = conv.out_channels;
                let y = self.push(
                    &Self::module(&wname, n),
                    Op::Conv2d(conv),
                    &[x.node],
                    &params,
                );
                self.set(
                    &out,
                    Value {
                        node: y,
                        shape: vec![0, c, ho, wo],
                        squeezed: false,
                    },
                );
            }
            "BatchNormalization" => {
                let x = self.value(inp(0)?)?;
                if attr_i(n, "training_mode", 0) != 0 {
                    return Err(unsupported(
                        "training_mode=1; export the model in eval mode (model.eval())",
                    ));
                }
                if n.output.iter().skip(1).any(|o| !o.is_empty()) {
                    return Err(unsupported("running-statistics outputs are used (training-mode export); export in eval mode"));
                }
                if x.squeezed || (x.shape.len() != 4 && x.shape.len() != 2) {
                    return Err(OnnxNodeError::InputShape {
                        shape: x.shape,
                        expected: "[N, C, H, W] or [N, F]",
                    });
                }
                let c = x.shape[1];
                let names: Vec<String> = (1..5)
                    .map(|k| inp(k).map(str::to_string))
                    .collect::<Result<_, _>>()?;
                let roles = [
                    Role::BnScale,
                    Role::BnShift,
                    Role::RunningMean,
                    Role::RunningVar,
                ];
                let mut params = vec![];
                for (name, role) in names.iter().zip(roles) {
                    let (t, _) = self.konst(name)?;
                    if t.values.len() != c {
                        return Err(OnnxNodeError::ChannelShape {
                            name: name.clone(),
                            dims: t.dims.clone(),
                            channels: c,
                        });
                    }
                    params.push(self.param(name, role, false)?);
                }
                // ε is stored as float32: take its shortest decimal (1e-5, not 9.99999974e-6)
                let eps: f64 = format!("{}", attr_f(n, "epsilon", 1e-5))
                    .parse()
                    .unwrap_or(1e-5);
                let module = match names[0].strip_suffix(".weight") {
                    Some(m) if state_dict_like(&names[0]) => m.to_string(),
                    _ => n.name.clone(),
                };
                let y = self.push(
                    &module,
                    Op::BatchNorm(BatchNorm { channels: c, eps }),
                    &[x.node],
                    &params,
                );
                self.set(&out, Value { node: y, ..x });
            }
            "Relu" => {
                let x = self.value(inp(0)?)?;
                let y = self.push(&n.name, Op::Relu, &[x.node], &[]);
                self.set(&out, Value { node: y, ..x });
            }
            "Add" | "Sub" | "Mul" | "Div" => {
                let (a, b) = (self.get(inp(0)?)?.clone(), self.get(inp(1)?)?.clone());
                match (n.op_type.as_str(), a, b) {
                    ("Add", Entry::Value(a), Entry::Value(b)) => {
                        if a.shape != b.shape || a.squeezed != b.squeezed {
                            return Err(OnnxNodeError::Summands {
                                a: a.shape,
                                b: b.shape,
                            });
                        }
                        let y = self.push(&n.name, Op::Add, &[a.node, b.node], &[]);
                        self.set(&out, Value { node: y, ..a });
                    }
                    (op, Entry::Value(x), Entry::Const(t, init)) => {
                        // MatMul + Add of an initializer: the bias of a linear layer
                        if op == "Add" && init.is_some() && self.matmul.contains(&x.node)
                            && t.values.len() == x.shape[1] && x.shape.len() == 2
                        {
                            let b = self.param(inp(1)?, Role::Bias, false)?;
                            let node = &mut self.g.nodes[x.node];
                            if let Op::Linear(l) = &mut node.op {
                                l.bias = true;
                            }
                            node.params.push(b);
                            self.matmul.retain(|&i| i != x.node);
                            self.set(&out, x);
                            return Ok(());
                        }
                        let c = Self::channel_values(&t, &x)?;
                        let ones = vec![1.0];
                        let (scale, shift) = match op {
                            "Add" => (ones, c),
                            "Sub" => (ones, c.iter().map(|v| -v).collect()),
                            "Mul" => (c, vec![0.0]),
                            _ => {
                                if c.contains(&0.0) {
                                    return Err(OnnxNodeError::ZeroDivisor);
                                }
                                (c.iter().map(|v| 1.0 / v).collect(), vec![0.0])
                            }
                        };
                        self.affine(n, x, scale, shift);
                    }
                    (op @ ("Add" | "Sub" | "Mul"), Entry::Const(t, _), Entry::Value(x)) => {
                        let c = Self::channel_values(&t, &x)?;
                        let (scale, shift) = match op {
                            "Add" => (vec![1.0], c),
                            "Sub" => (vec![-1.0], c),
                            _ => (c, vec![0.0]),
                        };
                        self.affine(n, x, scale, shift);
                    }
                    _ => {
                        return Err(unsupported(format!(
                            "{} is supported only between a computed value and a constant (or, for Add, two values)",
                            n.op_type
                        )))
                    }
                }
            }
            "Gemm" | "MatMul" => {
                let x = self.value(inp(0)?)?;
                if x.shape.len() != 2 || x.squeezed {
                    return Err(OnnxNodeError::InputShape {
                        shape: x.shape,
                        expected: "[N, features] (flatten first)",
                    });
                }
                let wname = inp(1)?.to_string();
                let (w, _) = self.konst(&wname)?;
                let gemm = n.op_type == "Gemm";
                if gemm
                    && (attr_i(n, "transA", 0) != 0
                        || attr_f(n, "alpha", 1.0) != 1.0
                        || attr_f(n, "beta", 1.0) != 1.0)
                {
                    return Err(unsupported(
                        "only transA=0, alpha=1, beta=1 are supported (as nn.Linear exports)",
                    ));
                }
                let trans_b = gemm && attr_i(n, "transB", 0) != 0;
                if w.dims.len() != 2 {
                    return Err(OnnxNodeError::WeightShape {
                        name: wname,
                        dims: w.dims.clone(),
                        expected: "2-D".into(),
                    });
                }
                let (fout, fin) = if trans_b {
                    (w.dims[0], w.dims[1])
                } else {
                    (w.dims[1], w.dims[0])
                };
                if fin != x.shape[1] {
                    return Err(OnnxNodeError::WeightFeatures {
                        name: wname,
                        dims: w.dims.clone(),
                        features: x.shape[1],
                    });
                }
                let mut params = vec![self.param(&wname, Role::Weight, !trans_b)?];
                if let Some(b) = Self::opt_input(n, 2).filter(|_| gemm) {
                    let (bt, _) = self.konst(b)?;
                    if bt.values.len() != fout {
                        return Err(OnnxNodeError::BiasShape {
                            name: b.to_string(),
                            dims: bt.dims.clone(),
                            expected: fout,
                        });
                    }
                    params.push(self.param(b, Role::Bias, false)?);
                }
                let lin = Linear {
                    in_features: fin,
                    out_features: fout,
                    bias: params.len() == 2,
                };
                let y = self.push(
                    &Self::module(&wname, n),
                    Op::Linear(lin),
                    &[x.node],
                    &params,
                );
                if !gemm {
                    self.matmul.push(y);
                }
                self.set(
                    &out,
                    Value {
                        node: y,
                        shape: vec![0, fout],
                        squeezed: false,
                    },
                );
            }
            "Flatten" | "Reshape" => {
                let x = self.value(inp(0)?)?;
                let f: usize = x.shape[1..].iter().product();
                if n.op_type == "Flatten" {
                    let axis = attr_i(n, "axis", 1);
                    if axis != 1 {
                        return Err(unsupported(format!(
                            "axis {axis}: only Flatten(axis=1) is supported"
                        )));
                    }
                } else {
                    let target = self
                        .ints(inp(1)?)
                        .map_err(|e| OnnxNodeError::ReshapeTarget { why: Box::new(e) })?;
                    let batch_ok =
                        |d: i64| d == 0 || d == -1 || Some(d as usize) == self.export_batch;
                    let ok = target.len() == 2
                        && batch_ok(target[0])
                        && (target[1] == f as i64 || (target[1] == -1 && target[0] != -1));
                    if !ok {
                        return Err(unsupported(format!(
                            "target shape {target:?} for an input of shape {:?} (batch first): only flattening to [N, {f}] is supported; use x.flatten(1)",
                            x.shape
                        )));
                    }
                }
                let node = if x.shape.len() == 2 || x.squeezed {
                    x.node
                } else {
                    self.push(&n.name, Op::Flatten, &[x.node], &[])
                };
                self.set(
                    &out,
                    Value {
                        node,
                        shape: vec![0, f],
                        squeezed: false,
                    },
                );
            }
            "GlobalAveragePool" | "ReduceMean" => {
                let x = self.image(inp(0)?)?;
                let mut keep = true;
                if n.op_type == "ReduceMean" {
                    let axes = match Self::opt_input(n, 1) {
                        Some(a) => self.ints(a)?,
                        None => attr_ints(n, "axes").unwrap_or_default(),
                    };
                    let mut axes: Vec<usize> = axes
                        .iter()
                        .map(|&a| norm_axis(a, 4))
                        .collect::<Result<_, _>>()?;
                    axes.sort_unstable();
                    if axes != [2, 3] {
                        return Err(unsupported(format!(
                            "axes {axes:?}: only the mean over the spatial axes [2, 3] is supported"
                        )));
                    }
                    keep = attr_i(n, "keepdims", 1) != 0;
                }
                let y = self.push(&n.name, Op::GlobalAvgPool, &[x.node], &[]);
                let shape = if keep {
                    vec![0, x.shape[1], 1, 1]
                } else {
                    vec![0, x.shape[1]]
                };
                self.set(
                    &out,
                    Value {
                        node: y,
                        shape,
                        squeezed: keep,
                    },
                );
            }
            "AveragePool" | "MaxPool" => {
                let x = self.image(inp(0)?)?;
                if n.output.len() > 1 && !n.output[1].is_empty() {
                    return Err(unsupported("MaxPool indices output is not supported"));
                }
                let (kernel, stride, padding) = window(n, None)?;
                if n.op_type == "AveragePool"
                    && padding > 0
                    && attr_i(n, "count_include_pad", 0) == 0
                {
                    return Err(unsupported("count_include_pad=0 with padding is not supported (PyTorch's default count_include_pad=True is)"));
                }
                let p = Pool2d {
                    kernel,
                    stride,
                    padding,
                };
                let (ho, wo) = p
                    .out_hw(x.shape[2], x.shape[3])
                    .ok_or(OnnxNodeError::WindowTooLarge)?;
                let op = if n.op_type == "MaxPool" {
                    Op::MaxPool(p)
                } else {
                    Op::AvgPool(p)
                };
                let y = self.push(&n.name, op, &[x.node], &[]);
                self.set(
                    &out,
                    Value {
                        node: y,
                        shape: vec![0, x.shape[1], ho, wo],
                        squeezed: false,
                    },
                );
            }
            "Pad" => {
                let x = self.value(inp(0)?)?;
                let mode = attr_s(n, "mode");
                if !(mode.is_empty() || mode == "constant") {
                    return Err(unsupported(format!(
                        "mode '{mode}': only constant (zero) padding is supported"
                    )));
                }
                if let Some(c) = Self::opt_input(n, 2) {
                    let (t, _) = self.konst(c)?;
                    if t.values.iter().any(|&v| v != 0.0) {
                        return Err(unsupported(
                            "only zero padding (constant_value 0) is supported",
                        ));
                    }
                }
                let pads = match Self::opt_input(n, 1) {
                    Some(p) => self.ints(p)?,
                    None => attr_ints(n, "pads").ok_or(OnnxNodeError::NoPads)?,
                };
                let rank = x.shape.len();
                let axes: Vec<usize> = match Self::opt_input(n, 3) {
                    Some(a) => self
                        .ints(a)?
                        .iter()
                        .map(|&a| norm_axis(a, rank))
                        .collect::<Result<_, _>>()?,
                    None => (0..rank).collect(),
                };
                if pads.len() != 2 * axes.len() || x.squeezed {
                    return Err(unsupported(format!(
                        "pads {pads:?} do not fit an input of shape {:?}",
                        x.shape
                    )));
                }
                let (mut before, mut after) = (vec![0; rank], vec![0; rank]);
                let mut shape = x.shape.clone();
                for (i, &a) in axes.iter().enumerate() {
                    let (b, e) = (pads[i], pads[i + axes.len()]);
                    if b < 0 || e < 0 || (a == 0 && (b, e) != (0, 0)) {
                        return Err(unsupported(format!(
                            "pads {pads:?}: only non-negative padding of non-batch axes is supported"
                        )));
                    }
                    if b.max(e) > MAX_PAD {
                        return Err(unsupported(format!(
                            "pads {pads:?}: padding beyond {MAX_PAD} per side is refused (a damaged file?)"
                        )));
                    }
                    before[engine_axis(rank, a)] = b as usize;
                    after[engine_axis(rank, a)] = e as usize;
                    shape[a] += (b + e) as usize;
                }
                let y = self.push(&n.name, Op::Pad(Pad { before, after }), &[x.node], &[]);
                self.set(
                    &out,
                    Value {
                        node: y,
                        shape,
                        squeezed: false,
                    },
                );
            }
            "Slice" => {
                let mut x = self.value(inp(0)?)?;
                if x.squeezed {
                    return Err(unsupported(
                        "slicing a pooled [N, C, 1, 1] value is not supported",
                    ));
                }
                let starts = self.ints(inp(1)?)?;
                let ends = self.ints(inp(2)?)?;
                let rank = x.shape.len();
                let axes: Vec<usize> = match Self::opt_input(n, 3) {
                    Some(a) => self
                        .ints(a)?
                        .iter()
                        .map(|&a| norm_axis(a, rank))
                        .collect::<Result<_, _>>()?,
                    None => (0..starts.len()).collect(),
                };
                let steps = match Self::opt_input(n, 4) {
                    Some(s) => self.ints(s)?,
                    None => vec![1; starts.len()],
                };
                if ends.len() != starts.len()
                    || axes.len() != starts.len()
                    || steps.len() != starts.len()
                {
                    return Err(unsupported("starts, ends, axes and steps differ in length"));
                }
                for i in 0..starts.len() {
                    let a = axes[i];
                    if steps[i] <= 0 {
                        return Err(unsupported(format!(
                            "step {}: only positive steps are supported",
                            steps[i]
                        )));
                    }
                    let clamp = |v: i64, d: usize| -> usize {
                        let v = if v < 0 { v + d as i64 } else { v };
                        v.clamp(0, d as i64) as usize
                    };
                    if a == 0 {
                        if starts[i] == 0 && ends[i] >= i64::from(i32::MAX) && steps[i] == 1 {
                            continue;
                        }
                        return Err(unsupported("slicing the batch axis is not supported"));
                    }
                    let d = x.shape[a];
                    let (s, e) = (clamp(starts[i], d), clamp(ends[i], d));
                    if e <= s {
                        return Err(OnnxNodeError::EmptySlice {
                            start: starts[i],
                            end: ends[i],
                            axis: a,
                            size: d,
                        });
                    }
                    if (s, e, steps[i]) == (0, d, 1) {
                        continue;
                    }
                    let sl = SliceAxis {
                        axis: engine_axis(rank, a),
                        start: s,
                        end: e,
                        step: steps[i] as usize,
                    };
                    x.shape[a] = sl.out_len();
                    x.node = self.push(&n.name, Op::Slice(sl), &[x.node], &[]);
                }
                self.set(&out, x);
            }
            "Concat" => {
                let xs: Vec<Value> = n
                    .input
                    .iter()
                    .map(|i| self.value(i))
                    .collect::<Result<_, _>>()?;
                if xs.is_empty() {
                    return Err(unsupported("Concat without inputs"));
                }
                let rank = xs[0].shape.len();
                let a = norm_axis(attr_i(n, "axis", 1), rank)?;
                if a == 0 || xs.iter().any(|x| x.squeezed) {
                    return Err(unsupported(
                        "concatenation along the batch axis (or of pooled values) is not supported",
                    ));
                }
                let mut shape = xs[0].shape.clone();
                shape[a] = xs
                    .iter()
                    .map(|x| x.shape.get(a).copied().unwrap_or(0))
                    .sum();
                let ins: Vec<usize> = xs.iter().map(|x| x.node).collect();
                let y = self.push(
                    &n.name,
                    Op::Concat(Concat {
                        axis: engine_axis(rank, a),
                    }),
                    &ins,
                    &[],
                );
                self.set(
                    &out,
                    Value {
                        node: y,
                        shape,
                        squeezed: false,
                    },
                );
            }
            "LogSoftmax" | "Softmax" => {
                let x = self.value(inp(0)?)?;
                let axis = attr_i(n, "axis", -1);
                if out != graph_output || x.shape.len() != 2 || !(axis == 1 || axis == -1) {
                    return Err(unsupported(format!(
                        "{} is supported only over the classes at the graph output (the loss applies it)",
                        n.op_type
                    )));
                }
                self.notes.push(format!(
                    "the output {} was stripped: the loss is cross-entropy on its input (the logits){}",
                    n.op_type,
                    if n.op_type == "Softmax" { "; a model trained on softmax outputs with another loss is not reproduced" } else { "" }
                ));
                self.set(&out, x);
            }
            other => {
                return Err(unsupported(format!(
                    "op {other} is not supported (supported: {SUPPORTED})"
                )));
            }
        }
        Ok(())
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
            .filter(|n| !state_dict_like(n))
            .collect();
        let bn_folded = !has_bn
            && g.nodes.iter().any(|n| match &n.op {
                Op::Conv2d(c) => c.bias && !state_dict_like(&g.layout.tensor(n.params[0]).name),
                _ => false,
            });
        let mut notes = std::mem::take(&mut self.notes);
        if bn_folded {
            notes.insert(0, "BatchNorm was folded into the convolutions by the exporter (constant folding): filter normalization acts on the folded weights, a different parameterization of the landscape; re-export with do_constant_folding=False (legacy) or optimize=False (dynamo) to keep BN".into());
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
