//! Values between the ops: the layout each is held in (images channel-major, the rest as
//! ONNX has them), inputs as values (parameters and constants as source nodes),
//! broadcasting, and reshapes whose batch axis may move or merge.

use super::generic::exporter_made;
use super::*;
use crate::engine::ops::{BinaryKind, Constant, Param, Reshape, Transpose};

impl Importer {
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

    pub(super) fn const_value(&mut self, t: &Tensor) -> Value {
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

    pub(super) fn unbatched(node: usize, shape: Vec<usize>) -> Value {
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
    pub(super) fn reshape_target(
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
            if known == 0 || !m.is_multiple_of(known) {
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
}
