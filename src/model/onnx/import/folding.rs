//! Constant folding of the shape subgraphs at import (see [`crate::model::onnx::fold`]):
//! which nodes fold, their constant inputs, and `Shape` of a value with a symbolic batch.

use super::generic::exporter_made;
use super::*;
use crate::model::onnx::fold::{fold, FoldNode, FOLDABLE};

impl Importer {
    /// A folded view of a constant input (`None`: a computed value).
    pub(super) fn folded(&self, name: &str) -> NodeResult<Option<Folded>> {
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

    pub(super) fn store(&mut self, out: &str, f: Folded) {
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

    pub(super) fn shape_of(
        dims: &[usize],
        batch: Option<usize>,
        n: &NodeProto,
    ) -> NodeResult<Folded> {
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
}
