//! The ops of transformers and modern CNNs on values held in ONNX's own layout: shape
//! folding, layout changes, broadcasting arithmetic, normalizations, attention's
//! transposes, reshapes and batched products, and parameters used as values (class
//! tokens, position embeddings).

use super::*;
use crate::engine::ops::{
    BinaryKind, Constant, Embedding, Expand, Gather, GroupNorm, LayerNorm, Param, PointwiseFn,
    Reduce, ReduceKind, Reshape, Softmax, Transpose,
};
use crate::model::onnx::fold::{fold, FoldNode, FOLDABLE};

/// Ops with a translation rule (besides [`FOLDABLE`] ones on constants).
const VALUE_OPS: &[&str] = &[
    "Constant",
    "Identity",
    "Dropout",
    "Conv",
    "BatchNormalization",
    "Relu",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Gemm",
    "MatMul",
    "Flatten",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "GlobalAveragePool",
    "ReduceMean",
    "ReduceSum",
    "AveragePool",
    "MaxPool",
    "Pad",
    "Slice",
    "Concat",
    "Split",
    "Gather",
    "Expand",
    "Cast",
    "CastLike",
    "Shape",
    "LogSoftmax",
    "Softmax",
    "LayerNormalization",
    "InstanceNormalization",
    "GroupNormalization",
    "Tanh",
    "Sigmoid",
    "Erf",
    "Gelu",
    "Sqrt",
    "Exp",
    "Log",
    "Neg",
    "Reciprocal",
    "Clip",
];

/// Whether a name is an exporter's own (a constant it made), not a module's tensor.
pub(super) fn exporter_made(name: &str) -> bool {
    name.contains("::")
        || name.starts_with('/')
        || name.starts_with("val_")
        || name.starts_with("_val")
        || name.starts_with("Constant")
        || name.starts_with("_tensor_constant")
        || name.starts_with("scalar_tensor")
        || name.chars().all(|c| c.is_ascii_digit())
}

/// Engine axis of an ONNX axis of an image held channel-major.
fn image_axis(a: usize) -> usize {
    [1, 0, 2, 3][a]
}

impl Importer {
    /// Whether the importer has a rule for node `n`'s op.
    pub(super) fn knows(n: &NodeProto) -> bool {
        (n.domain.is_empty() || n.domain == "ai.onnx")
            && (VALUE_OPS.contains(&n.op_type.as_str()) || FOLDABLE.contains(&n.op_type.as_str()))
    }

    /// A folded view of a constant input (`None`: a computed value).
    fn folded(&self, name: &str) -> NodeResult<Option<Folded>> {
        Ok(match self.get(name)? {
            Entry::Const(t, _) => Some(Folded::from_tensor(t)),
            Entry::Sym(f) => Some((**f).clone()),
            Entry::Value(_) | Entry::Ids(_) => None,
        })
    }

    /// Integer entries of a constant or folded input (a shape, axes, indices).
    pub(super) fn sym_ints(&self, name: &str) -> NodeResult<Vec<Sym>> {
        match self.folded(name)? {
            Some(f) => Ok(f.v),
            None => Err(OnnxNodeError::ComputedInput {
                name: name.to_string(),
            }),
        }
    }

    fn store(&mut self, out: &str, f: Folded) {
        let e = match f.to_tensor() {
            Some(t) => Entry::Const(Arc::new(t), None),
            None => Entry::Sym(Arc::new(f)),
        };
        self.env.insert(out.to_string(), e);
    }

    /// Folds node `n` when every input is constant (or it is a Shape); `Ok(false)` when
    /// it computes on values.
    pub(super) fn try_fold(&mut self, n: &NodeProto) -> NodeResult<bool> {
        let Some(out) = n.output.first() else {
            return Ok(false);
        };
        if n.op_type == "Shape" {
            let x = match self.get(n.input.first().map(String::as_str).unwrap_or(""))? {
                Entry::Value(v) | Entry::Ids(v) => v.clone(),
                Entry::Const(t, _) => {
                    let dims = t.dims.clone();
                    self.store(out, Self::shape_of(&dims, None, n)?);
                    return Ok(true);
                }
                Entry::Sym(f) => {
                    let dims = f.dims.clone();
                    self.store(out, Self::shape_of(&dims, None, n)?);
                    return Ok(true);
                }
            };
            let f = Self::shape_of(&x.shape, x.batch, n)?;
            self.store(out, f);
            return Ok(true);
        }
        if !FOLDABLE.contains(&n.op_type.as_str()) {
            return Ok(false);
        }
        let mut xs = vec![];
        for (k, name) in n.input.iter().enumerate() {
            if name.is_empty() {
                xs.push(None);
                continue;
            }
            // CastLike reads only the dtype of its second input
            if n.op_type == "CastLike" && k == 1 {
                let int = matches!(self.get(name)?, Entry::Const(t, _) if !t.ints.is_empty());
                xs.push(Some(Folded {
                    dims: vec![],
                    v: vec![],
                    int,
                }));
                continue;
            }
            // a parameter stays a parameter (Expand of a class token, Transpose of a
            // weight): those are computed, so that gradients reach it
            if let Entry::Const(t, Some(_)) = self.get(name)? {
                if t.ints.is_empty() && !exporter_made(name) && n.op_type != "Identity" {
                    return Ok(false);
                }
            }
            match self.folded(name)? {
                Some(f) => xs.push(Some(f)),
                // a Reshape/Expand/… of a computed value: its rule reads the shape
                None => return Ok(false),
            }
        }
        // a tensor whose size depends on the batch is data, not shape arithmetic
        let sym = |k: usize| {
            xs.get(k)
                .and_then(|x| x.as_ref())
                .is_some_and(|f: &Folded| f.v.iter().any(|s| s.n != 0.0))
        };
        if matches!(
            n.op_type.as_str(),
            "Expand" | "ConstantOfShape" | "Reshape" | "Range"
        ) && (sym(1)
            || (n.op_type == "ConstantOfShape" && sym(0))
            || (n.op_type == "Range" && (sym(0) || sym(1))))
        {
            return Ok(false);
        }
        if n.op_type == "Identity" {
            if let Some(src) = n.input.first() {
                // the legacy exporter stores equal tensors once and gives the others back
                // by an Identity named after them: those stay separate parameters; an
                // Identity to an exporter-made name keeps the tensor's own name
                if exporter_made(out) {
                    let base = self
                        .aliases
                        .get(src)
                        .cloned()
                        .unwrap_or_else(|| src.clone());
                    self.aliases.insert(out.clone(), base);
                }
                let e = self.get(src)?.clone();
                self.env.insert(out.clone(), e);
                return Ok(true);
            }
        }
        let value = match attr(n, "value").and_then(|a| a.t.as_ref()) {
            Some(t) => Some(Folded::from_tensor(&decode_tensor(
                t,
                &mut DataFiles::new(Path::new("")),
            )?)),
            None => None,
        };
        let ints = |k: &str| attr_ints(n, k);
        let int = |k: &str| attr(n, k).map(|a| a.i);
        let f = fold(
            &FoldNode {
                op: &n.op_type,
                ints: &ints,
                int: &int,
                value,
            },
            &xs,
        )?;
        self.store(out, f);
        Ok(true)
    }

    fn shape_of(dims: &[usize], batch: Option<usize>, n: &NodeProto) -> NodeResult<Folded> {
        let r = dims.len() as i64;
        let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let start = clamp(attr_i(n, "start", 0));
        let end = attr(n, "end").map(|a| clamp(a.i)).unwrap_or(r as usize);
        let v: Vec<Sym> = (start..end.max(start))
            .map(|i| {
                if Some(i) == batch {
                    Sym::batch(dims[i] as f64)
                } else {
                    Sym::konst(dims[i] as f64)
                }
            })
            .collect();
        Ok(Folded {
            dims: vec![v.len()],
            v,
            int: true,
        })
    }

    /// `x` held in ONNX's layout (a Transpose node after an image, a Reshape after a
    /// squeezed pool output).
    pub(super) fn plain(&mut self, x: Value) -> Value {
        if x.squeezed {
            let c = x.shape[1];
            let y = self.push(
                "",
                Op::Reshape(Reshape {
                    shape: vec![1, c, 1, 1],
                    batch: Some(0),
                }),
                &[x.node],
                &[],
            );
            return Value::plain(y, vec![1, c, 1, 1]);
        }
        if !x.image {
            return x;
        }
        if let Some(&y) = self.layout_cache.get(&x.node) {
            return Value {
                node: y,
                image: false,
                ..x
            };
        }
        let y = self.push(
            "",
            Op::Transpose(Transpose {
                perm: vec![1, 0, 2, 3],
            }),
            &[x.node],
            &[],
        );
        self.layout_cache.insert(x.node, y);
        Value {
            node: y,
            image: false,
            ..x
        }
    }

    /// `x` as an image held channel-major (for Conv, BatchNorm, pools).
    pub(super) fn as_image(&mut self, x: Value) -> NodeResult<Value> {
        if x.image && !x.squeezed {
            return Ok(x);
        }
        if x.shape.len() != 4 || x.squeezed || x.batch != Some(0) || x.shape[0] != 1 {
            return Err(OnnxNodeError::InputShape {
                shape: x.shape,
                expected: "[N, C, H, W]",
            });
        }
        if let Some(&y) = self.layout_cache.get(&x.node) {
            return Ok(Value {
                node: y,
                image: true,
                ..x
            });
        }
        let y = self.push(
            "",
            Op::Transpose(Transpose {
                perm: vec![1, 0, 2, 3],
            }),
            &[x.node],
            &[],
        );
        self.layout_cache.insert(x.node, y);
        Ok(Value {
            node: y,
            image: true,
            ..x
        })
    }

    /// Input `name` as a value: a computed value, a parameter (an initializer with a
    /// module's name) as a `Param` node, or a constant as a `Constant` node.
    pub(super) fn operand(&mut self, name: &str) -> NodeResult<Value> {
        match self.get(name)?.clone() {
            Entry::Value(v) => Ok(v),
            Entry::Ids(v) => Ok(v),
            Entry::Sym(_) => Err(unsupported(format!(
                "'{name}' depends on the batch size and is used as data"
            ))),
            Entry::Const(t, init) => {
                if init.is_some() && !exporter_made(name) {
                    self.param_value(name)
                } else {
                    Ok(self.const_value(&t))
                }
            }
        }
    }

    /// A parameter used as a value.
    pub(super) fn param_value(&mut self, name: &str) -> NodeResult<Value> {
        let (t, _) = self.konst(name)?;
        let role = if t.dims.iter().filter(|&&d| d > 1).count() >= 2 {
            Role::Weight
        } else {
            Role::Bias
        };
        let p = self.param(name, role, false)?;
        if let Some(&node) = self.param_nodes.get(&p) {
            return Ok(Self::unbatched(node, t.dims.clone()));
        }
        let node = self.push(
            name,
            Op::Param(Param {
                shape: t.dims.clone(),
            }),
            &[],
            &[p],
        );
        self.param_nodes.insert(p, node);
        Ok(Self::unbatched(node, t.dims.clone()))
    }

    fn const_value(&mut self, t: &Tensor) -> Value {
        if t.values.iter().any(|v| !v.is_finite()) {
            // a mask constant (−inf) is data the ops may still take; keep as is
        }
        let node = self.push(
            "",
            Op::Constant(Constant {
                shape: t.dims.clone(),
                values: Arc::new(t.values.clone()),
            }),
            &[],
            &[],
        );
        Self::unbatched(node, t.dims.clone())
    }

    fn unbatched(node: usize, shape: Vec<usize>) -> Value {
        Value {
            node,
            shape,
            batch: None,
            squeezed: false,
            image: false,
        }
    }

    /// Shape and batch axis of the broadcast of `a` and `b`.
    pub(super) fn broadcast_values(
        a: &Value,
        b: &Value,
    ) -> NodeResult<(Vec<usize>, Option<usize>)> {
        let r = a.shape.len().max(b.shape.len());
        let mut shape = vec![0; r];
        let mut batch = None;
        for (i, s) in shape.iter_mut().enumerate() {
            let pick = |v: &Value| -> (usize, bool) {
                let off = r - v.shape.len();
                if i < off {
                    (1, false)
                } else {
                    (v.shape[i - off], v.batch == Some(i - off))
                }
            };
            let ((da, ba), (db, bb)) = (pick(a), pick(b));
            *s = match (ba, bb) {
                (true, true) if da == db => da,
                (true, false) if db == 1 => da,
                (false, true) if da == 1 => db,
                (false, false) if da == db || db == 1 => da,
                (false, false) if da == 1 => db,
                _ => {
                    return Err(OnnxNodeError::Summands {
                        a: a.shape.clone(),
                        b: b.shape.clone(),
                    })
                }
            };
            if ba || bb {
                batch = Some(i);
            }
        }
        Ok((shape, batch))
    }

    /// Add/Sub/Mul/Div/Pow of two values with broadcasting.
    pub(super) fn binary(
        &mut self,
        n: &NodeProto,
        out: &str,
        a: Value,
        b: Value,
    ) -> NodeResult<()> {
        let kind = match n.op_type.as_str() {
            "Add" => BinaryKind::Add,
            "Sub" => BinaryKind::Sub,
            "Mul" => BinaryKind::Mul,
            "Div" => BinaryKind::Div,
            other => return Err(unsupported(format!("{other} of two computed values"))),
        };
        let same = a.shape == b.shape
            && a.batch == b.batch
            && a.image == b.image
            && a.squeezed == b.squeezed;
        let (a, b) = if same {
            (a, b)
        } else {
            (self.plain(a), self.plain(b))
        };
        let (shape, batch) = Self::broadcast_values(&a, &b)?;
        let y = self.push(&n.name, Op::Binary(kind), &[a.node, b.node], &[]);
        let v = Value {
            node: y,
            shape,
            batch,
            squeezed: same && a.squeezed,
            image: same && a.image,
        };
        self.set(out, v);
        Ok(())
    }

    /// Output shape and batch axis of reshaping `x` to `target` (ONNX Reshape: 0 copies
    /// an input dimension unless `allowzero`, −1 is inferred).
    fn reshape_target(
        &self,
        x: &Value,
        target: &[Sym],
        allowzero: bool,
    ) -> NodeResult<(Vec<usize>, Option<usize>)> {
        let bad = || {
            unsupported(format!(
                "a reshape of {:?} to {:?} that moves the batch dimension into another",
                x.shape,
                target
                    .iter()
                    .map(|s| if s.n != 0.0 {
                        format!("{}·N{:+}", s.n, s.c)
                    } else {
                        format!("{}", s.c)
                    })
                    .collect::<Vec<_>>()
            ))
        };
        // elements per batch item: M
        let m: usize = x.shape.iter().product();
        let mut shape = vec![0usize; target.len()];
        let mut batch = None;
        let mut infer = None;
        for (i, t) in target.iter().enumerate() {
            if t.n != 0.0 {
                if t.c != 0.0 || t.n < 1.0 || t.n.fract() != 0.0 || batch.is_some() {
                    return Err(bad());
                }
                batch = Some(i);
                shape[i] = t.n as usize;
            } else if t.c == 0.0 && !allowzero {
                shape[i] = *x.shape.get(i).ok_or_else(bad)?;
                if x.batch == Some(i) {
                    if batch.is_some() {
                        return Err(bad());
                    }
                    batch = Some(i);
                }
            } else if t.c == -1.0 && infer.is_none() {
                infer = Some(i);
                shape[i] = 1;
            } else if t.c >= 0.0 && t.c.fract() == 0.0 {
                shape[i] = t.c as usize;
            } else {
                return Err(bad());
            }
        }
        if x.batch.is_some() && batch.is_none() {
            // a literal export batch size in place of N (a fixed batch axis)
            match (self.export_batch, infer) {
                (Some(b), _)
                    if target.first().map(|t| t.c) == Some(b as f64) && !target.is_empty() =>
                {
                    batch = Some(0);
                    shape[0] = 1;
                }
                (_, Some(i)) => batch = Some(i),
                _ => return Err(bad()),
            }
        }
        if x.batch.is_none() && batch.is_some() {
            return Err(bad());
        }
        let known: usize = shape
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != infer)
            .map(|(_, &d)| d)
            .product();
        if let Some(i) = infer {
            if known == 0 || m % known != 0 {
                return Err(bad());
            }
            shape[i] = m / known;
        }
        if shape.iter().product::<usize>() != m {
            return Err(OnnxNodeError::Unsupported {
                what: format!(
                    "a reshape of {:?} to {:?}: the element counts differ",
                    x.shape, shape
                ),
            });
        }
        Ok((shape, batch))
    }

    /// Reshapes `x` (any layout) to `shape` with the batch at `batch`.
    pub(super) fn reshape_to(
        &mut self,
        name: &str,
        x: Value,
        shape: Vec<usize>,
        batch: Option<usize>,
    ) -> Value {
        // the engine's flatten (same bits as before for CNN heads)
        if batch == Some(0)
            && shape.len() == 2
            && shape[0] == 1
            && x.batch == Some(0)
            && x.shape[0] == 1
        {
            if x.squeezed || (x.shape.len() == 2 && !x.image) {
                return Value::plain(x.node, shape);
            }
            if x.image {
                let y = self.push(name, Op::Flatten, &[x.node], &[]);
                return Value::plain(y, shape);
            }
        }
        let x = self.plain(x);
        if x.shape == shape && x.batch == batch {
            return x;
        }
        let y = self.push(
            name,
            Op::Reshape(Reshape {
                shape: shape.clone(),
                batch,
            }),
            &[x.node],
            &[],
        );
        Value {
            node: y,
            shape,
            batch,
            squeezed: false,
            image: false,
        }
    }

    /// Translates the ops of this file's rules; `Ok(false)`: not one of them.
    pub(super) fn generic(&mut self, n: &NodeProto, out: &str) -> NodeResult<bool> {
        let inp = |k: usize| -> NodeResult<&str> {
            Self::opt_input(n, k).ok_or(OnnxNodeError::MissingInput { index: k })
        };
        match n.op_type.as_str() {
            "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => {
                let x = self.operand(inp(0)?)?;
                let r = x.shape.len();
                let target: Vec<Sym> = match n.op_type.as_str() {
                    "Reshape" => self.sym_ints(inp(1)?)?,
                    "Flatten" => {
                        let a = norm_axis(attr_i(n, "axis", 1), r + 1)?;
                        let lead: usize = x.shape[..a].iter().product();
                        let rest: usize = x.shape[a..].iter().product();
                        let ent = |lo: usize, hi: usize, prod: usize| {
                            if x.batch.is_some_and(|b| (lo..hi).contains(&b)) {
                                Sym::batch(prod as f64)
                            } else {
                                Sym::konst(prod as f64)
                            }
                        };
                        vec![ent(0, a, lead), ent(a, r, rest)]
                    }
                    op => {
                        let axes: Vec<i64> = match Self::opt_input(n, 1) {
                            Some(a) => self.ints(a)?,
                            None => attr_ints(n, "axes").unwrap_or_default(),
                        };
                        let entry = |i: usize| {
                            if x.batch == Some(i) {
                                Sym::batch(x.shape[i] as f64)
                            } else {
                                Sym::konst(x.shape[i] as f64)
                            }
                        };
                        if op == "Squeeze" {
                            let ax: Vec<usize> = if axes.is_empty() {
                                (0..r)
                                    .filter(|&i| x.shape[i] == 1 && x.batch != Some(i))
                                    .collect()
                            } else {
                                axes.iter()
                                    .map(|&a| norm_axis(a, r))
                                    .collect::<Result<_, _>>()?
                            };
                            if ax.iter().any(|&a| x.batch == Some(a) || x.shape[a] != 1) {
                                return Err(unsupported(format!(
                                    "Squeeze of axes {ax:?} of a value of shape {:?} (batch first)",
                                    x.shape
                                )));
                            }
                            (0..r).filter(|i| !ax.contains(i)).map(entry).collect()
                        } else {
                            let ro = r + axes.len();
                            let mut ax: Vec<usize> = axes
                                .iter()
                                .map(|&a| norm_axis(a, ro))
                                .collect::<Result<_, _>>()?;
                            ax.sort_unstable();
                            let mut t: Vec<Sym> = (0..r).map(entry).collect();
                            for &a in &ax {
                                t.insert(a.min(t.len()), Sym::konst(1.0));
                            }
                            t
                        }
                    }
                };
                let allowzero = n.op_type != "Reshape" || attr_i(n, "allowzero", 0) != 0;
                let (shape, batch) = self.reshape_target(&x, &target, allowzero)?;
                let v = self.reshape_to(&n.name, x, shape, batch);
                self.set(out, v);
            }
            "Transpose" => {
                let x = self.operand(inp(0)?)?;
                let r = x.shape.len();
                let perm: Vec<usize> = match attr_ints(n, "perm") {
                    Some(p) => p
                        .iter()
                        .map(|&a| norm_axis(a, r))
                        .collect::<Result<_, _>>()?,
                    None => (0..r).rev().collect(),
                };
                let mut seen = vec![false; r];
                if perm.len() != r || perm.iter().any(|&p| std::mem::replace(&mut seen[p], true)) {
                    return Err(unsupported(format!(
                        "perm {perm:?} is not a permutation of {r} axes"
                    )));
                }
                let x = if x.squeezed { self.plain(x) } else { x };
                let engine_perm: Vec<usize> = if x.image {
                    perm.iter().map(|&p| image_axis(p)).collect()
                } else {
                    perm.clone()
                };
                let y = self.push(
                    &n.name,
                    Op::Transpose(Transpose { perm: engine_perm }),
                    &[x.node],
                    &[],
                );
                self.set(
                    out,
                    Value {
                        node: y,
                        shape: perm.iter().map(|&p| x.shape[p]).collect(),
                        batch: x
                            .batch
                            .map(|b| perm.iter().position(|&p| p == b).unwrap_or(0)),
                        squeezed: false,
                        image: false,
                    },
                );
            }
            "Gather" => {
                match self.get(inp(1)?)?.clone() {
                    Entry::Ids(ids) => {
                        // an embedding lookup: weight[ids]
                        let wname = inp(0)?.to_string();
                        let (w, _) = self.konst(&wname)?;
                        if w.dims.len() != 2 || attr_i(n, "axis", 0) != 0 {
                            return Err(unsupported(format!(
                                "Gather of token ids from '{wname}' of shape {:?}: only an embedding table [vocab, dim] on axis 0 is supported",
                                w.dims
                            )));
                        }
                        let p = self.param(&wname, Role::Weight, false)?;
                        let ids = self.plain(ids);
                        let y = self.push(
                            &Self::module(&wname, n),
                            Op::Embedding(Embedding {
                                vocab: w.dims[0],
                                dim: w.dims[1],
                            }),
                            &[ids.node],
                            &[p],
                        );
                        let mut shape = ids.shape.clone();
                        shape.push(w.dims[1]);
                        self.set(
                            out,
                            Value {
                                node: y,
                                shape,
                                batch: ids.batch,
                                squeezed: false,
                                image: false,
                            },
                        );
                    }
                    _ => {
                        let x = self.operand(inp(0)?)?;
                        let x = self.plain(x);
                        let r = x.shape.len();
                        let a = norm_axis(attr_i(n, "axis", 0), r)?;
                        if x.batch == Some(a) {
                            return Err(unsupported("Gather along the batch axis"));
                        }
                        let (it, _) = self.konst(inp(1)?)?;
                        if it.dims.len() > 1 {
                            return Err(unsupported("Gather with indices of rank > 1"));
                        }
                        let d = x.shape[a] as i64;
                        let indices: Vec<usize> = self
                            .ints(inp(1)?)?
                            .iter()
                            .map(|&i| {
                                let j = if i < 0 { i + d } else { i };
                                usize::try_from(j).ok().filter(|&j| (j as i64) < d).ok_or(
                                    OnnxNodeError::Unsupported {
                                        what: format!("Gather index {i} out of range for size {d}"),
                                    },
                                )
                            })
                            .collect::<Result<_, _>>()?;
                        let keep_axis = !it.dims.is_empty();
                        let mut shape = x.shape.clone();
                        if keep_axis {
                            shape[a] = indices.len();
                        } else {
                            shape.remove(a);
                        }
                        let batch = x.batch.map(|b| if !keep_axis && b > a { b - 1 } else { b });
                        let y = self.push(
                            &n.name,
                            Op::Gather(Gather {
                                axis: a,
                                indices,
                                keep_axis,
                            }),
                            &[x.node],
                            &[],
                        );
                        self.set(
                            out,
                            Value {
                                node: y,
                                shape,
                                batch,
                                squeezed: false,
                                image: false,
                            },
                        );
                    }
                }
            }
            "Expand" => {
                let x = self.operand(inp(0)?)?;
                let x = self.plain(x);
                let target = self.sym_ints(inp(1)?)?;
                let r = x.shape.len().max(target.len());
                let mut shape = vec![0; r];
                let mut batch = None;
                for i in 0..r {
                    let xi = (i + x.shape.len()).checked_sub(r);
                    let ti = (i + target.len()).checked_sub(r);
                    let (d, xb) = match xi {
                        Some(k) => (x.shape[k], x.batch == Some(k)),
                        None => (1, false),
                    };
                    let t = ti.map(|k| target[k]).unwrap_or(Sym::konst(1.0));
                    shape[i] = if t.n != 0.0 {
                        if d != 1 && !xb {
                            return Err(unsupported("Expand of a non-unit axis to the batch size"));
                        }
                        batch = Some(i);
                        t.n as usize
                    } else {
                        let c = t.c.max(0.0) as usize;
                        if xb {
                            batch = Some(i);
                            d
                        } else if d == c || c == 1 {
                            d
                        } else if d == 1 {
                            c
                        } else {
                            return Err(unsupported(format!(
                                "Expand of {:?} to {:?}",
                                x.shape, target
                            )));
                        }
                    };
                }
                if batch.is_some() && batch != Some(0) && x.batch.is_none() {
                    return Err(unsupported("Expand to a batch axis other than the first"));
                }
                if shape == x.shape && batch == x.batch {
                    self.set(out, x);
                } else {
                    // the batch size comes from the network's input at run time
                    let mut target = shape.clone();
                    let (inputs, ref_axis) = if batch.is_some() && x.batch.is_none() {
                        target[0] = 0;
                        (vec![x.node, 0], usize::from(self.g.input_shape.len() == 3))
                    } else {
                        (vec![x.node], 0)
                    };
                    let y = self.push(
                        &n.name,
                        Op::Expand(Expand {
                            shape: target,
                            ref_axis,
                        }),
                        &inputs,
                        &[],
                    );
                    self.set(
                        out,
                        Value {
                            node: y,
                            shape,
                            batch,
                            squeezed: false,
                            image: false,
                        },
                    );
                }
            }
            "Cast" | "CastLike" => {
                let x = self.operand(inp(0)?)?;
                let to = if n.op_type == "CastLike" {
                    match self.get(inp(1)?)? {
                        Entry::Const(t, _) if !t.ints.is_empty() => 7,
                        _ => 1,
                    }
                } else {
                    attr_i(n, "to", 1)
                };
                if matches!(to, 1 | 10 | 11 | 16) {
                    self.set(out, x);
                } else if matches!(to, 6 | 7) {
                    self.env.insert(out.to_string(), Entry::Ids(x));
                } else {
                    return Err(unsupported(format!(
                        "Cast of a computed value to data type {to}"
                    )));
                }
            }
            "Softmax" | "LogSoftmax" if out != self.graph_output => {
                let x = self.operand(inp(0)?)?;
                let x = self.plain(x);
                let r = x.shape.len();
                let a = norm_axis(attr_i(n, "axis", -1), r)?;
                if self.opset < 13 && a != r - 1 {
                    return Err(unsupported(
                        "Softmax over a non-last axis before opset 13 (flattening semantics)",
                    ));
                }
                let y = self.push(
                    &n.name,
                    Op::Softmax(Softmax {
                        axis: a,
                        log: n.op_type == "LogSoftmax",
                    }),
                    &[x.node],
                    &[],
                );
                self.set(out, Value { node: y, ..x });
            }
            "LayerNormalization" => {
                let x = self.operand(inp(0)?)?;
                let x = self.plain(x);
                let r = x.shape.len();
                let a = norm_axis(attr_i(n, "axis", -1), r)?;
                if x.batch.is_some_and(|b| b >= a) {
                    return Err(unsupported("LayerNormalization over the batch axis"));
                }
                let eps = eps_of(n);
                let (params, affine, bias) = self.norm_affine(n, &x.shape[a..], 1, 2)?;
                let y = self.push(
                    &norm_module(self, n, 1),
                    Op::LayerNorm(LayerNorm {
                        axes_from: a,
                        eps,
                        affine,
                        bias,
                    }),
                    &[x.node],
                    &params,
                );
                self.set(out, Value { node: y, ..x });
            }
            "InstanceNormalization" | "GroupNormalization" => {
                let x = self.operand(inp(0)?)?;
                let x = self.plain(x);
                if x.shape.len() < 3 || x.batch != Some(0) {
                    return Err(OnnxNodeError::InputShape {
                        shape: x.shape,
                        expected: "[N, C, …spatial]",
                    });
                }
                let c = x.shape[1];
                let groups = if n.op_type == "InstanceNormalization" {
                    c
                } else {
                    attr_i(n, "num_groups", 0) as usize
                };
                if groups == 0 || c % groups != 0 {
                    return Err(unsupported(format!("{groups} groups for {c} channels")));
                }
                let (params, affine, _) = self.norm_affine(n, &[c], 1, 2)?;
                let y = self.push(
                    &norm_module(self, n, 1),
                    Op::GroupNorm(GroupNorm {
                        groups,
                        eps: eps_of(n),
                        affine,
                    }),
                    &[x.node],
                    &params,
                );
                self.set(out, Value { node: y, ..x });
            }
            "Tanh" | "Sigmoid" | "Erf" | "Gelu" | "Sqrt" | "Exp" | "Log" | "Neg" | "Reciprocal"
            | "Clip" | "Pow" => {
                let x = self.operand(inp(0)?)?;
                let f = match n.op_type.as_str() {
                    "Tanh" => PointwiseFn::Tanh,
                    "Sigmoid" => PointwiseFn::Sigmoid,
                    "Erf" => PointwiseFn::Erf,
                    "Gelu" => match attr_s(n, "approximate").as_str() {
                        "tanh" => PointwiseFn::GeluTanh,
                        _ => PointwiseFn::GeluErf,
                    },
                    "Sqrt" => PointwiseFn::Sqrt,
                    "Exp" => PointwiseFn::Exp,
                    "Log" => PointwiseFn::Log,
                    "Neg" => PointwiseFn::Neg,
                    "Reciprocal" => PointwiseFn::Reciprocal,
                    "Pow" => {
                        let e = match self.get(inp(1)?)? {
                            Entry::Const(t, _) if t.values.len() == 1 => t.values[0],
                            _ => {
                                return Err(unsupported(
                                    "Pow with an exponent that is not one constant",
                                ))
                            }
                        };
                        PointwiseFn::Pow(e)
                    }
                    _ => {
                        let bound = |k: usize, name: &str, default: f64| -> NodeResult<f64> {
                            match Self::opt_input(n, k) {
                                Some(i) => match self.get(i)? {
                                    Entry::Const(t, _) if t.values.len() == 1 => Ok(t.values[0]),
                                    _ => Err(unsupported("Clip with computed bounds")),
                                },
                                None => Ok(attr(n, name).map(|a| a.f as f64).unwrap_or(default)),
                            }
                        };
                        PointwiseFn::Clip {
                            min: bound(1, "min", f64::NEG_INFINITY)?,
                            max: bound(2, "max", f64::INFINITY)?,
                        }
                    }
                };
                let y = self.push(&n.name, Op::Pointwise(f), &[x.node], &[]);
                self.set(out, Value { node: y, ..x });
            }
            "ReduceMean" | "ReduceSum" => {
                let x = self.operand(inp(0)?)?;
                let r = x.shape.len();
                let axes: Vec<i64> = match Self::opt_input(n, 1) {
                    Some(a) => self.ints(a)?,
                    None => attr_ints(n, "axes").unwrap_or_default(),
                };
                let mut axes: Vec<usize> = if axes.is_empty() {
                    if attr_i(n, "noop_with_empty_axes", 0) != 0 {
                        self.set(out, x);
                        return Ok(true);
                    }
                    (0..r).collect()
                } else {
                    axes.iter()
                        .map(|&a| norm_axis(a, r))
                        .collect::<Result<_, _>>()?
                };
                axes.sort_unstable();
                axes.dedup();
                if axes.iter().any(|&a| x.batch == Some(a)) {
                    return Err(unsupported("a reduction over the batch axis"));
                }
                let keepdims = attr_i(n, "keepdims", 1) != 0;
                let x = self.plain(x);
                let mut shape = vec![];
                let mut batch = None;
                for i in 0..r {
                    if axes.contains(&i) {
                        if keepdims {
                            shape.push(1);
                        }
                    } else {
                        if x.batch == Some(i) {
                            batch = Some(shape.len());
                        }
                        shape.push(x.shape[i]);
                    }
                }
                let kind = if n.op_type == "ReduceMean" {
                    ReduceKind::Mean
                } else {
                    ReduceKind::Sum
                };
                let y = self.push(
                    &n.name,
                    Op::Reduce(Reduce {
                        kind,
                        axes,
                        keepdims,
                    }),
                    &[x.node],
                    &[],
                );
                self.set(
                    out,
                    Value {
                        node: y,
                        shape,
                        batch,
                        squeezed: false,
                        image: false,
                    },
                );
            }
            "Split" => {
                let x = self.operand(inp(0)?)?;
                let r = x.shape.len();
                let a = norm_axis(attr_i(n, "axis", 0), r)?;
                if x.batch == Some(a) {
                    return Err(unsupported("Split along the batch axis"));
                }
                let d = x.shape[a];
                let sizes: Vec<usize> = match Self::opt_input(n, 1) {
                    Some(s) => self.ints(s)?.iter().map(|&v| v.max(0) as usize).collect(),
                    None => match attr_ints(n, "split") {
                        Some(s) => s.iter().map(|&v| v.max(0) as usize).collect(),
                        None => {
                            let k = n.output.len().max(1);
                            let each = d.div_ceil(k);
                            (0..k)
                                .map(|i| each.min(d.saturating_sub(i * each)))
                                .collect()
                        }
                    },
                };
                if sizes.len() != n.output.len() || sizes.iter().sum::<usize>() != d {
                    return Err(unsupported(format!(
                        "split sizes {sizes:?} of an axis of size {d}"
                    )));
                }
                let x = if x.squeezed { self.plain(x) } else { x };
                let ea = if x.image { image_axis(a) } else { a };
                let mut at = 0;
                for (o, &s) in n.output.iter().zip(&sizes) {
                    let sl = SliceAxis {
                        axis: ea,
                        start: at,
                        end: at + s,
                        step: 1,
                    };
                    at += s;
                    let y = self.push(&n.name, Op::Slice(sl), &[x.node], &[]);
                    let mut shape = x.shape.clone();
                    shape[a] = s;
                    if !o.is_empty() {
                        self.set(
                            o,
                            Value {
                                node: y,
                                shape,
                                ..x.clone()
                            },
                        );
                    }
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The affine parameters of a normalization: scale at input `ks`, bias at `kb`, as
    /// parameters when they are a module's tensors, or dropped when they are the
    /// exporter's ones and zeros. `(params, affine, bias)`.
    fn norm_affine(
        &mut self,
        n: &NodeProto,
        dims: &[usize],
        ks: usize,
        kb: usize,
    ) -> NodeResult<(Vec<usize>, bool, bool)> {
        let numel: usize = dims.iter().product();
        let mut params = vec![];
        let mut is_param =
            |imp: &mut Self, k: usize, role: Role, neutral: f64| -> NodeResult<Option<bool>> {
                let Some(name) = Self::opt_input(n, k) else {
                    return Ok(None);
                };
                let (t, init) = imp.konst(name)?;
                if t.values.len() != numel {
                    return Err(OnnxNodeError::ChannelShape {
                        name: name.to_string(),
                        dims: t.dims.clone(),
                        channels: numel,
                    });
                }
                if init.is_some() && !exporter_made(name) {
                    params.push(imp.param(name, role, false)?);
                    Ok(Some(true))
                } else if t.values.iter().all(|&v| v == neutral) {
                    Ok(Some(false))
                } else {
                    Err(unsupported(format!(
                        "normalization with constant (not parameter) scale or bias '{name}'"
                    )))
                }
            };
        let scale = is_param(self, ks, Role::BnScale, 1.0)?;
        let shift = is_param(self, kb, Role::BnShift, 0.0)?;
        match (scale, shift) {
            (Some(true), Some(true)) => Ok((params, true, true)),
            (Some(true), None | Some(false)) => Ok((params, true, false)),
            (None | Some(false), None | Some(false)) => Ok((params, false, false)),
            _ => Err(unsupported(
                "normalization with a bias parameter but a constant scale",
            )),
        }
    }
}

/// ε of a normalization, as its shortest decimal (1e-5, not the f32 9.99999974e-6).
fn eps_of(n: &NodeProto) -> f64 {
    format!("{}", attr_f(n, "epsilon", 1e-5))
        .parse()
        .unwrap_or(1e-5)
}

/// The module path of a normalization from its scale's name.
fn norm_module(imp: &Importer, n: &NodeProto, ks: usize) -> String {
    let _ = imp;
    match Importer::opt_input(n, ks).and_then(|s| s.strip_suffix(".weight")) {
        Some(m) if !exporter_made(m) => m.to_string(),
        _ => n.name.clone(),
    }
}
