//! Each ONNX node translated into engine nodes: one arm per supported op type (see the
//! parent module for the conventions on axes, constants and the batch dimension).

use super::*;

impl Importer {
    pub(super) fn node(&mut self, n: &NodeProto, graph_output: &str) -> NodeResult<()> {
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
        if self.try_fold(n)? {
            return Ok(());
        }
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
                let groups = attr_i(n, "group", 1);
                let groups = usize::try_from(groups)
                    .ok()
                    .filter(|&g| g >= 1 && x.shape[1] % g == 0)
                    .ok_or_else(|| {
                        unsupported(format!("group {groups} for {} input channels", x.shape[1]))
                    })?;
                if w.dims.len() != 4 || w.dims[1] * groups != x.shape[1] || w.dims[0] % groups != 0
                {
                    return Err(OnnxNodeError::WeightShape {
                        name: wname,
                        dims: w.dims.clone(),
                        expected: format!("[out, {}, k, k]", x.shape[1] / groups),
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
                    // the current exporter folds BN into a conv as a bias `<weight>_bias`
                    // and notes the rewrite rule on the node
                    if b.ends_with("_bias")
                        || n.metadata_props
                            .iter()
                            .any(|p| p.value.contains("FuseBatchNorm"))
                    {
                        self.folded_bn.push((wname.clone(), w.dims[0]));
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
                    groups,
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
                self.set(&out, Value::image(y, vec![1, c, ho, wo]));
            }
            "BatchNormalization" => {
                let x = self.value(inp(0)?)?;
                let x = if x.shape.len() == 4 {
                    self.as_image(x)?
                } else {
                    x
                };
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
                let x = self.operand(inp(0)?)?;
                let y = self.push(&n.name, Op::Relu, &[x.node], &[]);
                self.set(&out, Value { node: y, ..x });
            }
            "Add" | "Sub" | "Mul" | "Div" => {
                // a commutative op with the constant first (legacy: Add(bias, MatMul)) is
                // read with the value first
                let (n0, n1) = (inp(0)?.to_string(), inp(1)?.to_string());
                let (a, b) = (self.get(&n0)?.clone(), self.get(&n1)?.clone());
                let swap = matches!(n.op_type.as_str(), "Add" | "Mul")
                    && matches!((&a, &b), (Entry::Const(..), Entry::Value(_)));
                let (a, b, n0, n1) = if swap { (b, a, n1, n0) } else { (a, b, n0, n1) };
                let affine_ok = |t: &Tensor, name: &str, x: &Value| {
                    !state_dict_like(name)
                        && (t.values.len() == 1
                            || ((x.image || x.shape.len() == 2)
                                && x.batch == Some(0)
                                && Self::channel_values(t, x).is_ok()))
                };
                match (n.op_type.as_str(), a, b) {
                    ("Add", Entry::Value(a), Entry::Value(b))
                        if a.shape == b.shape
                            && a.squeezed == b.squeezed
                            && a.image == b.image
                            && a.batch == b.batch =>
                    {
                        let y = self.push(&n.name, Op::Add, &[a.node, b.node], &[]);
                        self.set(&out, Value { node: y, ..a });
                    }
                    (op, Entry::Value(x), Entry::Const(t, init))
                        if (op == "Add"
                            && init.is_some()
                            && self.matmul.contains(&x.node)
                            && t.values.len() == *x.shape.last().unwrap_or(&0))
                            || affine_ok(&t, &n1, &x) =>
                    {
                        // MatMul + Add of an initializer: the bias of a linear layer
                        if op == "Add"
                            && init.is_some()
                            && self.matmul.contains(&x.node)
                            && t.values.len() == *x.shape.last().unwrap_or(&0)
                        {
                            let bname = n1.clone();
                            let b = self.param(&bname, Role::Bias, false)?;
                            self.name_weight_after_bias(x.node, &bname);
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
                    (op @ ("Add" | "Sub" | "Mul"), Entry::Const(t, _), Entry::Value(x))
                        if affine_ok(&t, &n0, &x) =>
                    {
                        let c = Self::channel_values(&t, &x)?;
                        let (scale, shift) = match op {
                            "Add" => (vec![1.0], c),
                            "Sub" => (vec![-1.0], c),
                            _ => (c, vec![0.0]),
                        };
                        self.affine(n, x, scale, shift);
                    }
                    _ => {
                        let (a, b) = (self.operand(&n0)?, self.operand(&n1)?);
                        if a.batch.is_none() && b.batch.is_none() {
                            return Err(unsupported(format!(
                                "{} of two parameters or constants (fold it before export)",
                                n.op_type
                            )));
                        }
                        self.binary(n, &out, a, b)?;
                    }
                }
            }
            "MatMul" if !matches!(self.get(inp(1)?)?, Entry::Const(..)) => {
                let (a, b) = (self.operand(inp(0)?)?, self.operand(inp(1)?)?);
                let (a, b) = (self.plain(a), self.plain(b));
                let (ra, rb) = (a.shape.len(), b.shape.len());
                if ra < 2 || rb < 2 || a.shape[ra - 1] != b.shape[rb - 2] {
                    return Err(OnnxNodeError::Summands {
                        a: a.shape,
                        b: b.shape,
                    });
                }
                if a.batch == Some(ra - 1) || b.batch.is_some_and(|x| x + 2 >= rb) {
                    return Err(unsupported("a matrix product over the batch axis"));
                }
                let lead = |v: &Value| Value {
                    shape: v.shape[..v.shape.len() - 2].to_vec(),
                    batch: v.batch.filter(|&x| x + 2 < v.shape.len()),
                    ..v.clone()
                };
                let (mut shape, mut batch) = Self::broadcast_values(&lead(&a), &lead(&b))?;
                if a.batch == Some(ra - 2) {
                    batch = Some(shape.len());
                }
                shape.push(a.shape[ra - 2]);
                shape.push(b.shape[rb - 1]);
                let y = self.push(&n.name, Op::MatMul, &[a.node, b.node], &[]);
                self.set(
                    &out,
                    Value {
                        node: y,
                        shape,
                        batch,
                        squeezed: false,
                        image: false,
                    },
                );
            }
            "Gemm" | "MatMul" => {
                let x = self.operand(inp(0)?)?;
                let x = self.plain(x);
                if x.shape.len() < 2 || (n.op_type == "Gemm" && x.shape.len() != 2) {
                    return Err(OnnxNodeError::InputShape {
                        shape: x.shape,
                        expected: "[N, features] (flatten first)",
                    });
                }
                let feat = *x.shape.last().unwrap_or(&0);
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
                if fin != feat {
                    return Err(OnnxNodeError::WeightFeatures {
                        name: wname,
                        dims: w.dims.clone(),
                        features: feat,
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
                let mut shape = x.shape.clone();
                *shape.last_mut().expect("rank ≥ 2") = fout;
                self.set(
                    &out,
                    Value {
                        node: y,
                        shape,
                        ..x
                    },
                );
            }
            "GlobalAveragePool" | "ReduceMean" if self.spatial_mean(n)? => {
                let x = self.image(inp(0)?)?;
                let keep = n.op_type != "ReduceMean" || attr_i(n, "keepdims", 1) != 0;
                let y = self.push(&n.name, Op::GlobalAvgPool, &[x.node], &[]);
                let shape = if keep {
                    vec![1, x.shape[1], 1, 1]
                } else {
                    vec![1, x.shape[1]]
                };
                self.set(
                    &out,
                    Value {
                        squeezed: keep,
                        image: false,
                        ..Value::plain(y, shape)
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
                    ceil_mode: attr_i(n, "ceil_mode", 0) != 0,
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
                self.set(&out, Value::image(y, vec![1, x.shape[1], ho, wo]));
            }
            "Pad" => {
                let x = self.value(inp(0)?)?;
                let x = if x.shape.len() == 4 {
                    self.as_image(x)?
                } else {
                    x
                };
                if x.batch != Some(0) {
                    return Err(unsupported(
                        "Pad of a value whose batch axis is not the first",
                    ));
                }
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
                        ..x
                    },
                );
            }
            "Slice" => {
                let x = self.operand(inp(0)?)?;
                let mut x = if x.squeezed { self.plain(x) } else { x };
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
                    if x.batch == Some(a) {
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
                        axis: if x.image { engine_axis(rank, a) } else { a },
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
                let mut xs: Vec<Value> = vec![];
                for i in &n.input {
                    let v = self.operand(i)?;
                    xs.push(v);
                }
                if xs.is_empty() {
                    return Err(unsupported("Concat without inputs"));
                }
                let rank = xs[0].shape.len();
                let a = norm_axis(attr_i(n, "axis", 1), rank)?;
                let all_image = xs.iter().all(|x| x.image && !x.squeezed);
                if !all_image {
                    xs = xs.into_iter().map(|x| self.plain(x)).collect();
                }
                let batch = xs[0].batch;
                if batch == Some(a) || xs.iter().any(|x| x.batch != batch || x.shape.len() != rank)
                {
                    return Err(unsupported(
                        "concatenation along the batch axis, or of values with and without a batch axis (expand first)",
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
                        axis: if all_image { engine_axis(rank, a) } else { a },
                    }),
                    &ins,
                    &[],
                );
                self.set(
                    &out,
                    Value {
                        node: y,
                        shape,
                        batch,
                        squeezed: false,
                        image: all_image,
                    },
                );
            }
            "LogSoftmax" | "Softmax" if out == graph_output => {
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
                if !self.generic(n, &out)? {
                    return Err(unsupported(format!(
                        "op {other} is not supported (supported: {SUPPORTED})"
                    )));
                }
            }
        }
        Ok(())
    }
}
