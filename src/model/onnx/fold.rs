//! Constant folding of the shape arithmetic exporters put in graphs (`Shape → Gather →
//! Unsqueeze → Concat → Reshape`, `ConstantOfShape`, `Where(Equal(…))` before an Expand,
//! the `√d` of attention), given the input's shape.
//!
//! The batch size N stays unknown: every folded entry is `n·N + c`, so a dynamic batch
//! axis and `optimize=False` exports fold to targets such as `[N, T, 3, H, D/H]` or
//! `[T, N·H, D/H]`, whose batch-carrying entry the importer then leaves to be inferred at
//! run time. Products of two batch-dependent entries, and comparisons that would need N's
//! value, are refused. `Equal` of an entry with N against one without is false: N is taken
//! to be generic (no exporter compares the batch size with a literal other than −1 / 0).

use super::Tensor;
use crate::model::error::OnnxNodeError;

/// One folded entry: `n·N + c`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Sym {
    pub n: f64,
    pub c: f64,
}

impl Sym {
    pub fn konst(c: f64) -> Self {
        Sym { n: 0.0, c }
    }
    pub fn batch(mult: f64) -> Self {
        Sym { n: mult, c: 0.0 }
    }
    fn fixed(self) -> Result<f64, OnnxNodeError> {
        if self.n == 0.0 {
            Ok(self.c)
        } else {
            Err(fail("an operation that needs the batch size's value"))
        }
    }
}

/// A folded tensor: shape, entries, and whether it is an integer (or boolean) tensor.
#[derive(Clone, Debug)]
pub(crate) struct Folded {
    pub dims: Vec<usize>,
    pub v: Vec<Sym>,
    pub int: bool,
}

fn fail(what: &str) -> OnnxNodeError {
    OnnxNodeError::Unsupported {
        what: format!("constant folding: {what} is not supported"),
    }
}

/// Largest folded tensor (shape arithmetic is tiny; a damaged file may ask for more).
const MAX_FOLD: usize = 1 << 24;

impl Folded {
    pub fn from_tensor(t: &Tensor) -> Self {
        Folded {
            dims: t.dims.clone(),
            v: t.values.iter().map(|&c| Sym::konst(c)).collect(),
            int: !t.ints.is_empty(),
        }
    }

    /// The constant tensor, when no entry depends on N.
    pub fn to_tensor(&self) -> Option<Tensor> {
        if self.v.iter().any(|s| s.n != 0.0) {
            return None;
        }
        let values: Vec<f64> = self.v.iter().map(|s| s.c).collect();
        let ints = if self.int {
            values.iter().map(|&v| v as i64).collect()
        } else {
            vec![]
        };
        Some(Tensor {
            dims: self.dims.clone(),
            values,
            ints,
        })
    }

    /// Integer entries that do not depend on N.
    pub fn ints(&self) -> Result<Vec<i64>, OnnxNodeError> {
        self.v.iter().map(|s| s.fixed().map(|c| c as i64)).collect()
    }

    fn new(dims: Vec<usize>, v: Vec<Sym>, int: bool) -> Result<Self, OnnxNodeError> {
        if v.len() > MAX_FOLD {
            return Err(fail("a folded tensor of more than 2^24 entries"));
        }
        Ok(Folded { dims, v, int })
    }
}

fn numel(dims: &[usize]) -> Result<usize, OnnxNodeError> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_FOLD)
        .ok_or_else(|| fail("a folded tensor of more than 2^24 entries"))
}

/// numpy broadcasting of two shapes.
pub(crate) fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = if i + a.len() >= r {
                a[i + a.len() - r]
            } else {
                1
            };
            let db = if i + b.len() >= r {
                b[i + b.len() - r]
            } else {
                1
            };
            match (da, db) {
                (x, y) if x == y => Some(x),
                (1, y) => Some(y),
                (x, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

/// Row-major strides of `dims`.
fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// The entries of `t` broadcast to `out` (a shape `t` broadcasts to).
fn spread(t: &Folded, out: &[usize]) -> Result<Vec<Sym>, OnnxNodeError> {
    let n = numel(out)?;
    let r = out.len();
    let off = r - t.dims.len();
    let ts = strides(&t.dims);
    let os = strides(out);
    Ok((0..n)
        .map(|flat| {
            let mut src = 0;
            for a in 0..t.dims.len() {
                let i = (flat / os[a + off]) % out[a + off];
                if t.dims[a] != 1 {
                    src += i * ts[a];
                }
            }
            t.v[src]
        })
        .collect())
}

fn elementwise(
    a: &Folded,
    b: &Folded,
    int: bool,
    f: impl Fn(Sym, Sym) -> Result<Sym, OnnxNodeError>,
) -> Result<Folded, OnnxNodeError> {
    let dims = broadcast(&a.dims, &b.dims).ok_or_else(|| fail("operands that do not broadcast"))?;
    let (x, y) = (spread(a, &dims)?, spread(b, &dims)?);
    let v = x
        .into_iter()
        .zip(y)
        .map(|(p, q)| f(p, q))
        .collect::<Result<_, _>>()?;
    Folded::new(dims, v, int)
}

fn truth(b: bool) -> Sym {
    Sym::konst(if b { 1.0 } else { 0.0 })
}

/// ONNX data types that are integers or booleans.
fn is_int_type(t: i64) -> bool {
    matches!(t, 2..=7 | 9 | 12 | 13)
}

/// Normalized axis.
fn axis(a: i64, rank: usize) -> Result<usize, OnnxNodeError> {
    let x = if a < 0 { a + rank as i64 } else { a };
    if x < 0 || x >= rank.max(1) as i64 {
        return Err(OnnxNodeError::Axis { axis: a, rank });
    }
    Ok(x as usize)
}

/// What a folding rule needs of its node.
pub(crate) struct FoldNode<'a> {
    pub op: &'a str,
    pub ints: &'a dyn Fn(&str) -> Option<Vec<i64>>,
    pub int: &'a dyn Fn(&str) -> Option<i64>,
    /// `ConstantOfShape`'s `value`.
    pub value: Option<Folded>,
}

/// The ops [`fold`] evaluates.
pub(crate) const FOLDABLE: &[&str] = &[
    "Identity",
    "Cast",
    "CastLike",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Neg",
    "Equal",
    "Less",
    "Greater",
    "Not",
    "And",
    "Or",
    "Where",
    "Min",
    "Max",
    "Abs",
    "Sqrt",
    "Reciprocal",
    "Pow",
    "Floor",
    "Ceil",
    "Mod",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Slice",
    "Range",
    "ConstantOfShape",
    "Expand",
    "Reshape",
    "Transpose",
    "ReduceProd",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "Size",
];

/// Evaluates one node whose inputs are all folded (`x[k]` is `None` for an absent optional
/// input).
pub(crate) fn fold(n: &FoldNode, x: &[Option<Folded>]) -> Result<Folded, OnnxNodeError> {
    let get = |k: usize| -> Result<&Folded, OnnxNodeError> {
        x.get(k)
            .and_then(|v| v.as_ref())
            .ok_or(OnnxNodeError::MissingInput { index: k })
    };
    let a = get(0)?;
    let fixed2 = |f: fn(f64, f64) -> f64| {
        move |p: Sym, q: Sym| Ok::<_, OnnxNodeError>(Sym::konst(f(p.fixed()?, q.fixed()?)))
    };
    let unary = |f: fn(f64) -> f64| -> Result<Folded, OnnxNodeError> {
        let v =
            a.v.iter()
                .map(|s| s.fixed().map(|c| Sym::konst(f(c))))
                .collect::<Result<_, _>>()?;
        Folded::new(a.dims.clone(), v, a.int)
    };
    match n.op {
        "Identity" => Ok(a.clone()),
        "CastLike" => {
            let like = get(1)?;
            let v = if like.int && !a.int {
                a.v.iter()
                    .map(|s| Sym {
                        n: s.n.trunc(),
                        c: s.c.trunc(),
                    })
                    .collect()
            } else {
                a.v.clone()
            };
            Folded::new(a.dims.clone(), v, like.int)
        }
        "Cast" => {
            let to = (n.int)("to").unwrap_or(1);
            let int = is_int_type(to);
            let v = if int && !a.int {
                a.v.iter()
                    .map(|s| Sym {
                        n: s.n.trunc(),
                        c: s.c.trunc(),
                    })
                    .collect()
            } else {
                a.v.clone()
            };
            Folded::new(a.dims.clone(), v, int)
        }
        "Add" => elementwise(a, get(1)?, a.int, |p, q| {
            Ok(Sym {
                n: p.n + q.n,
                c: p.c + q.c,
            })
        }),
        "Sub" => elementwise(a, get(1)?, a.int, |p, q| {
            Ok(Sym {
                n: p.n - q.n,
                c: p.c - q.c,
            })
        }),
        "Mul" => elementwise(a, get(1)?, a.int, |p, q| {
            if p.n != 0.0 && q.n != 0.0 {
                return Err(fail("a product of two batch-dependent sizes"));
            }
            Ok(Sym {
                n: p.n * q.c + q.n * p.c,
                c: p.c * q.c,
            })
        }),
        "Div" => {
            let int = a.int;
            elementwise(a, get(1)?, int, move |p, q| {
                let d = q.fixed()?;
                if d == 0.0 {
                    return Err(fail("a division by zero"));
                }
                if int {
                    if p.n != 0.0 && (p.n / d).fract() != 0.0 {
                        return Err(fail("dividing a batch-dependent size unevenly"));
                    }
                    Ok(Sym {
                        n: p.n / d,
                        c: (p.c / d).trunc(),
                    })
                } else {
                    Ok(Sym {
                        n: p.n / d,
                        c: p.c / d,
                    })
                }
            })
        }
        "Neg" => Folded::new(
            a.dims.clone(),
            a.v.iter().map(|s| Sym { n: -s.n, c: -s.c }).collect(),
            a.int,
        ),
        "Equal" => elementwise(a, get(1)?, true, |p, q| Ok(truth(p.n == q.n && p.c == q.c))),
        "Less" => elementwise(a, get(1)?, true, fixed2(|p, q| (p < q) as u8 as f64)),
        "Greater" => elementwise(a, get(1)?, true, fixed2(|p, q| (p > q) as u8 as f64)),
        "And" => elementwise(
            a,
            get(1)?,
            true,
            fixed2(|p, q| (p != 0.0 && q != 0.0) as u8 as f64),
        ),
        "Or" => elementwise(
            a,
            get(1)?,
            true,
            fixed2(|p, q| (p != 0.0 || q != 0.0) as u8 as f64),
        ),
        "Not" => unary(|p| (p == 0.0) as u8 as f64),
        "Min" | "Max" => {
            let max = n.op == "Max";
            elementwise(a, get(1)?, a.int, move |p, q| {
                // Slice ends clamp with INT_MAX: N is smaller than any such bound
                let huge = |s: Sym| s.n == 0.0 && s.c.abs() >= 2147483647.0;
                match (p.n == 0.0, q.n == 0.0) {
                    (true, true) => Ok(Sym::konst(if max { p.c.max(q.c) } else { p.c.min(q.c) })),
                    (false, true) if huge(q) => Ok(if (q.c > 0.0) != max { p } else { q }),
                    (true, false) if huge(p) => Ok(if (p.c > 0.0) != max { q } else { p }),
                    _ => Err(fail("Min/Max of a batch-dependent size")),
                }
            })
        }
        "Abs" => unary(f64::abs),
        "Sqrt" => unary(f64::sqrt),
        "Reciprocal" => unary(|v| 1.0 / v),
        "Floor" => unary(f64::floor),
        "Ceil" => unary(f64::ceil),
        "Pow" => elementwise(a, get(1)?, a.int, fixed2(f64::powf)),
        "Mod" => {
            let fmod = (n.int)("fmod").unwrap_or(0) != 0;
            let r = elementwise(a, get(1)?, a.int, fixed2(|p, q| p % q))?;
            let b = get(1)?;
            let (bs, rs) = (spread(b, &r.dims)?, r.v.clone());
            // integer Mod takes the divisor's sign (Python's %), fmod the dividend's
            let v = rs
                .into_iter()
                .zip(bs)
                .map(|(m, q)| {
                    if !fmod && m.c != 0.0 && (m.c < 0.0) != (q.c < 0.0) {
                        Sym::konst(m.c + q.c)
                    } else {
                        m
                    }
                })
                .collect();
            if b.v.iter().any(|q| q.c == 0.0) {
                return Err(fail("a Mod by zero"));
            }
            Folded::new(r.dims, v, a.int)
        }
        "Where" => {
            let (b, c) = (get(1)?, get(2)?);
            let d1 = broadcast(&a.dims, &b.dims).ok_or_else(|| fail("Where operands"))?;
            let dims = broadcast(&d1, &c.dims).ok_or_else(|| fail("Where operands"))?;
            let (m, p, q) = (spread(a, &dims)?, spread(b, &dims)?, spread(c, &dims)?);
            let v = m
                .iter()
                .zip(p.iter().zip(&q))
                .map(|(m, (p, q))| Ok(if m.fixed()? != 0.0 { *p } else { *q }))
                .collect::<Result<_, OnnxNodeError>>()?;
            Folded::new(dims, v, b.int)
        }
        "Gather" => {
            let idx = get(1)?;
            let ax = axis((n.int)("axis").unwrap_or(0), a.dims.len())?;
            let d = a.dims[ax];
            let ids: Vec<usize> = idx
                .ints()?
                .into_iter()
                .map(|i| {
                    let j = if i < 0 { i + d as i64 } else { i };
                    usize::try_from(j)
                        .ok()
                        .filter(|&j| j < d)
                        .ok_or_else(|| fail("a Gather index out of range"))
                })
                .collect::<Result<_, _>>()?;
            let outer: usize = a.dims[..ax].iter().product();
            let inner: usize = a.dims[ax + 1..].iter().product();
            let mut v = Vec::with_capacity(outer * ids.len() * inner);
            for o in 0..outer {
                for &i in &ids {
                    let base = (o * d + i) * inner;
                    v.extend_from_slice(&a.v[base..base + inner]);
                }
            }
            let mut dims = a.dims[..ax].to_vec();
            dims.extend(&idx.dims);
            dims.extend(&a.dims[ax + 1..]);
            Folded::new(dims, v, a.int)
        }
        "Unsqueeze" | "Squeeze" => {
            let axes = match x.get(1).and_then(|v| v.as_ref()) {
                Some(t) => t.ints()?,
                None => (n.ints)("axes").unwrap_or_default(),
            };
            let dims = if n.op == "Unsqueeze" {
                let r = a.dims.len() + axes.len();
                let mut ax: Vec<usize> =
                    axes.iter().map(|&x| axis(x, r)).collect::<Result<_, _>>()?;
                ax.sort_unstable();
                let mut dims = a.dims.clone();
                for &x in &ax {
                    dims.insert(x.min(dims.len()), 1);
                }
                dims
            } else if axes.is_empty() {
                a.dims.iter().copied().filter(|&d| d != 1).collect()
            } else {
                let ax: Vec<usize> = axes
                    .iter()
                    .map(|&x| axis(x, a.dims.len()))
                    .collect::<Result<_, _>>()?;
                a.dims
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !ax.contains(i))
                    .map(|(_, &d)| d)
                    .collect()
            };
            Folded::new(dims, a.v.clone(), a.int)
        }
        "Concat" => {
            let parts: Vec<&Folded> = x.iter().flatten().collect();
            let r = parts[0].dims.len();
            let ax = axis((n.int)("axis").unwrap_or(0), r)?;
            if parts.iter().any(|p| {
                p.dims.len() != r || (0..r).any(|i| i != ax && p.dims[i] != parts[0].dims[i])
            }) {
                return Err(fail("Concat of tensors of different shapes"));
            }
            let outer: usize = parts[0].dims[..ax].iter().product();
            let mut v = vec![];
            for o in 0..outer {
                for p in &parts {
                    let chunk: usize = p.dims[ax..].iter().product();
                    v.extend_from_slice(&p.v[o * chunk..(o + 1) * chunk]);
                }
            }
            let mut dims = parts[0].dims.clone();
            dims[ax] = parts.iter().map(|p| p.dims[ax]).sum();
            Folded::new(dims, v, parts.iter().all(|p| p.int))
        }
        "Slice" => {
            let starts = get(1)?.ints()?;
            let ends = get(2)?.ints()?;
            let r = a.dims.len();
            let axes: Vec<usize> = match x.get(3).and_then(|v| v.as_ref()) {
                Some(t) => t
                    .ints()?
                    .iter()
                    .map(|&x| axis(x, r))
                    .collect::<Result<_, _>>()?,
                None => (0..starts.len()).collect(),
            };
            let steps = match x.get(4).and_then(|v| v.as_ref()) {
                Some(t) => t.ints()?,
                None => vec![1; starts.len()],
            };
            if ends.len() != starts.len()
                || axes.len() != starts.len()
                || steps.len() != starts.len()
            {
                return Err(fail(
                    "Slice with starts, ends, axes and steps of different lengths",
                ));
            }
            let mut sel: Vec<Vec<usize>> = a.dims.iter().map(|&d| (0..d).collect()).collect();
            for i in 0..starts.len() {
                let d = a.dims[axes[i]] as i64;
                let st = steps[i];
                if st == 0 {
                    return Err(fail("a Slice step of 0"));
                }
                let norm = |v: i64| if v < 0 { v + d } else { v };
                let mut picked = vec![];
                if st > 0 {
                    let (s, e) = (norm(starts[i]).clamp(0, d), norm(ends[i]).clamp(0, d));
                    let mut j = s;
                    while j < e {
                        picked.push(j as usize);
                        j += st;
                    }
                } else {
                    let (s, e) = (
                        norm(starts[i]).clamp(-1, d - 1),
                        norm(ends[i]).clamp(-1, d - 1),
                    );
                    let mut j = s;
                    while j > e {
                        picked.push(j as usize);
                        j += st;
                    }
                }
                sel[axes[i]] = picked;
            }
            let dims: Vec<usize> = sel.iter().map(Vec::len).collect();
            let total = numel(&dims)?;
            let st = strides(&a.dims);
            let os = strides(&dims);
            let v = (0..total)
                .map(|flat| {
                    let src: usize = (0..r)
                        .map(|k| sel[k][(flat / os[k]) % dims[k]] * st[k])
                        .sum();
                    a.v[src]
                })
                .collect();
            Folded::new(dims, v, a.int)
        }
        "Range" => {
            let s =
                a.v.first()
                    .ok_or_else(|| fail("an empty Range start"))?
                    .fixed()?;
            let l = get(1)?
                .v
                .first()
                .ok_or_else(|| fail("an empty Range limit"))?
                .fixed()?;
            let d = get(2)?
                .v
                .first()
                .ok_or_else(|| fail("an empty Range delta"))?
                .fixed()?;
            if d == 0.0 {
                return Err(fail("a Range delta of 0"));
            }
            let count = ((l - s) / d).ceil().max(0.0);
            if count > MAX_FOLD as f64 {
                return Err(fail("a Range of more than 2^24 entries"));
            }
            let v = (0..count as usize)
                .map(|i| Sym::konst(s + i as f64 * d))
                .collect();
            Folded::new(vec![count as usize], v, a.int)
        }
        "ConstantOfShape" => {
            let dims: Vec<usize> = a
                .ints()?
                .into_iter()
                .map(|d| usize::try_from(d).map_err(|_| fail("a negative ConstantOfShape size")))
                .collect::<Result<_, _>>()?;
            let (val, int) = match &n.value {
                Some(t) => (t.v.first().copied().unwrap_or(Sym::konst(0.0)), t.int),
                None => (Sym::konst(0.0), false),
            };
            Folded::new(dims.clone(), vec![val; numel(&dims)?], int)
        }
        "Expand" => {
            let shape: Vec<usize> = get(1)?
                .ints()?
                .into_iter()
                .map(|d| usize::try_from(d).map_err(|_| fail("a negative Expand size")))
                .collect::<Result<_, _>>()?;
            let dims = broadcast(&a.dims, &shape)
                .ok_or_else(|| fail("an Expand that does not broadcast"))?;
            let v = spread(a, &dims)?;
            Folded::new(dims, v, a.int)
        }
        "Reshape" => {
            let target = get(1)?.ints()?;
            let total = a.v.len();
            let mut dims = vec![];
            let mut infer = None;
            for (i, &t) in target.iter().enumerate() {
                match t {
                    -1 if infer.is_none() => {
                        infer = Some(i);
                        dims.push(1)
                    }
                    0 => dims.push(
                        *a.dims
                            .get(i)
                            .ok_or_else(|| fail("a Reshape 0 beyond the rank"))?,
                    ),
                    t if t > 0 => dims.push(t as usize),
                    _ => return Err(fail("a Reshape target entry < -1 or two −1")),
                }
            }
            let known: usize = dims.iter().product();
            if let Some(i) = infer {
                if known == 0 || total % known != 0 {
                    return Err(fail("a Reshape whose −1 cannot be inferred"));
                }
                dims[i] = total / known;
            }
            if dims.iter().product::<usize>() != total {
                return Err(fail("a Reshape to another element count"));
            }
            Folded::new(dims, a.v.clone(), a.int)
        }
        "Transpose" => {
            let r = a.dims.len();
            let perm: Vec<usize> = match (n.ints)("perm") {
                Some(p) => p.iter().map(|&x| axis(x, r)).collect::<Result<_, _>>()?,
                None => (0..r).rev().collect(),
            };
            let dims: Vec<usize> = perm.iter().map(|&p| a.dims[p]).collect();
            let st = strides(&a.dims);
            let os = strides(&dims);
            let v = (0..a.v.len())
                .map(|flat| {
                    let src: usize = (0..r)
                        .map(|k| ((flat / os[k]) % dims[k]) * st[perm[k]])
                        .sum();
                    a.v[src]
                })
                .collect();
            Folded::new(dims, v, a.int)
        }
        "ReduceProd" | "ReduceSum" | "ReduceMax" | "ReduceMin" => {
            let axes = match x.get(1).and_then(|v| v.as_ref()) {
                Some(t) => Some(t.ints()?),
                None => (n.ints)("axes"),
            };
            if axes.as_ref().is_some_and(|ax| !ax.is_empty()) && a.dims.len() > 1 {
                return Err(fail("a reduction of a multi-dimensional constant"));
            }
            let keep = (n.int)("keepdims").unwrap_or(1) != 0;
            let vals = a.v.iter().map(|s| s.fixed()).collect::<Result<Vec<_>, _>>();
            let r = match n.op {
                "ReduceSum" => a.v.iter().fold(Sym::konst(0.0), |s, t| Sym {
                    n: s.n + t.n,
                    c: s.c + t.c,
                }),
                "ReduceProd" => {
                    let mut p = Sym::konst(1.0);
                    for t in &a.v {
                        if p.n != 0.0 && t.n != 0.0 {
                            return Err(fail("a product of two batch-dependent sizes"));
                        }
                        p = Sym {
                            n: p.n * t.c + t.n * p.c,
                            c: p.c * t.c,
                        };
                    }
                    p
                }
                "ReduceMax" => Sym::konst(vals?.into_iter().fold(f64::NEG_INFINITY, f64::max)),
                _ => Sym::konst(vals?.into_iter().fold(f64::INFINITY, f64::min)),
            };
            let dims = if keep { vec![1; a.dims.len()] } else { vec![] };
            Folded::new(dims, vec![r], a.int)
        }
        "Size" => Folded::new(vec![], vec![Sym::konst(a.v.len() as f64)], true),
        other => Err(fail(&format!("op {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(v: &[i64]) -> Folded {
        Folded {
            dims: vec![v.len()],
            v: v.iter().map(|&c| Sym::konst(c as f64)).collect(),
            int: true,
        }
    }

    fn node<'a>(
        op: &'a str,
        ints: &'a dyn Fn(&str) -> Option<Vec<i64>>,
        int: &'a dyn Fn(&str) -> Option<i64>,
    ) -> FoldNode<'a> {
        FoldNode {
            op,
            ints,
            int,
            value: None,
        }
    }

    #[test]
    fn batch_symbol_flows_through_the_exporters_shape_arithmetic() {
        let none_i = |_: &str| None;
        let none_v = |_: &str| None;
        // Shape([N, 3, 8, 8]) → Gather(0) → Unsqueeze → Concat with [-1]
        let shape = Folded {
            dims: vec![4],
            v: vec![
                Sym::batch(1.0),
                Sym::konst(3.0),
                Sym::konst(8.0),
                Sym::konst(8.0),
            ],
            int: true,
        };
        let zero = Folded {
            dims: vec![],
            v: vec![Sym::konst(0.0)],
            int: true,
        };
        let g = fold(
            &node("Gather", &none_i, &none_v),
            &[Some(shape.clone()), Some(zero)],
        )
        .unwrap();
        assert_eq!(g.dims, Vec::<usize>::new());
        assert_eq!(g.v, vec![Sym::batch(1.0)]);
        let axes0 = |k: &str| (k == "axes").then(|| vec![0]);
        let u = fold(&node("Unsqueeze", &axes0, &none_v), &[Some(g.clone())]).unwrap();
        assert_eq!(u.dims, vec![1]);
        let c = fold(
            &node("Concat", &none_i, &none_v),
            &[Some(u.clone()), Some(ints(&[-1]))],
        )
        .unwrap();
        assert_eq!(c.v, vec![Sym::batch(1.0), Sym::konst(-1.0)]);
        assert!(c.to_tensor().is_none());
        // N·H then /H gives N back; N·N is refused
        let h = ints(&[2]);
        let nh = fold(
            &node("Mul", &none_i, &none_v),
            &[Some(u.clone()), Some(h.clone())],
        )
        .unwrap();
        assert_eq!(nh.v, vec![Sym::batch(2.0)]);
        let back = fold(&node("Div", &none_i, &none_v), &[Some(nh), Some(h)]).unwrap();
        assert_eq!(back.v, vec![Sym::batch(1.0)]);
        assert!(fold(
            &node("Mul", &none_i, &none_v),
            &[Some(u.clone()), Some(u.clone())]
        )
        .is_err());
        // Equal(shape, -1) is false for N; Where keeps the shape
        let eq = fold(
            &node("Equal", &none_i, &none_v),
            &[Some(shape.clone()), Some(ints(&[-1]))],
        )
        .unwrap();
        assert_eq!(eq.ints().unwrap(), vec![0, 0, 0, 0]);
        let ones = ints(&[1, 1, 1, 1]);
        let w = fold(
            &node("Where", &none_i, &none_v),
            &[Some(eq), Some(ones), Some(shape.clone())],
        )
        .unwrap();
        assert_eq!(w.v, shape.v);
        // Slice [2:] of the shape: constants again
        let sl = fold(
            &node("Slice", &none_i, &none_v),
            &[Some(shape), Some(ints(&[2])), Some(ints(&[i64::MAX]))],
        )
        .unwrap();
        assert_eq!(sl.to_tensor().unwrap().ints, vec![8, 8]);
    }

    #[test]
    fn float_folding_of_the_attention_scale() {
        let none_i = |_: &str| None;
        let to_float = |k: &str| (k == "to").then_some(1);
        let d = ints(&[16]);
        let f = fold(&node("Cast", &none_i, &to_float), &[Some(d)]).unwrap();
        assert!(!f.int);
        let s = fold(&node("Sqrt", &none_i, &to_float), &[Some(f)]).unwrap();
        let r = fold(&node("Reciprocal", &none_i, &to_float), &[Some(s)]).unwrap();
        assert_eq!(r.to_tensor().unwrap().values, vec![0.25]);
        // Range and ConstantOfShape
        let none_v = |_: &str| None;
        let rg = fold(
            &node("Range", &none_i, &none_v),
            &[Some(ints(&[0])), Some(ints(&[5])), Some(ints(&[2]))],
        )
        .unwrap();
        assert_eq!(rg.to_tensor().unwrap().ints, vec![0, 2, 4]);
        let cs = fold(
            &node("ConstantOfShape", &none_i, &none_v),
            &[Some(ints(&[2, 3]))],
        )
        .unwrap();
        assert_eq!(cs.dims, vec![2, 3]);
        // a huge ConstantOfShape from a damaged file is refused, not allocated
        assert!(fold(
            &node("ConstantOfShape", &none_i, &none_v),
            &[Some(ints(&[1 << 20, 1 << 20]))]
        )
        .is_err());
    }

    #[test]
    fn transpose_and_reshape_of_constants() {
        let none_v = |_: &str| None;
        let perm = |k: &str| (k == "perm").then(|| vec![1, 0]);
        let t = Folded {
            dims: vec![2, 3],
            v: (0..6).map(|i| Sym::konst(i as f64)).collect(),
            int: false,
        };
        let tt = fold(&node("Transpose", &perm, &none_v), &[Some(t.clone())]).unwrap();
        assert_eq!(tt.dims, vec![3, 2]);
        assert_eq!(
            tt.to_tensor().unwrap().values,
            vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
        );
        let none_i = |_: &str| None;
        let r = fold(
            &node("Reshape", &none_i, &none_v),
            &[Some(t), Some(ints(&[-1, 2]))],
        )
        .unwrap();
        assert_eq!(r.dims, vec![3, 2]);
    }
}
