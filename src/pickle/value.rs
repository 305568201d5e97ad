//! What an unpickled stream holds, and the few callables a [`super::Policy`] may allow.

use std::cell::RefCell;
use std::rc::Rc;

use super::{bad, PickleError};

/// A value of the pickle machine. Containers are shared (`GET` does not copy).
#[derive(Clone)]
pub enum Value {
    None,
    Bool(bool),
    Int(i128),
    /// An integer wider than 128 bits (never needed for data; kept as a marker).
    BigInt,
    Float(f64),
    Str(Rc<str>),
    /// Python 3 `bytes` and Python 2 `str`.
    Bytes(Rc<[u8]>),
    /// Lists and sets.
    List(Rc<RefCell<Vec<Value>>>),
    Tuple(Rc<Vec<Value>>),
    /// Dicts and ordered dicts, in insertion order (a later equal key wins on lookup).
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    /// An allowed callable.
    Global(Global),
    Object(Rc<RefCell<Object>>),
}

/// Element type of a torch storage (`torch.FloatStorage`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl Elem {
    pub fn size(self) -> usize {
        match self {
            Elem::F64 | Elem::I64 => 8,
            Elem::F32 | Elem::I32 => 4,
            Elem::F16 | Elem::BF16 | Elem::I16 => 2,
            Elem::I8 | Elem::U8 | Elem::Bool => 1,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, Elem::F32 | Elem::F64 | Elem::F16 | Elem::BF16)
    }

    /// The storage class name, e.g. `FloatStorage`.
    pub fn from_storage_name(name: &str) -> Option<Elem> {
        Some(match name {
            "FloatStorage" => Elem::F32,
            "DoubleStorage" => Elem::F64,
            "HalfStorage" => Elem::F16,
            "BFloat16Storage" => Elem::BF16,
            "LongStorage" => Elem::I64,
            "IntStorage" => Elem::I32,
            "ShortStorage" => Elem::I16,
            "CharStorage" => Elem::I8,
            "ByteStorage" => Elem::U8,
            "BoolStorage" => Elem::Bool,
            _ => return None,
        })
    }
}

/// A callable that a policy allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Global {
    /// `collections.OrderedDict`
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, …)`
    RebuildTensorV2,
    /// `torch._utils._rebuild_parameter(tensor, requires_grad, hooks)`
    RebuildParameter,
    /// A storage class, only ever an argument of a persistent id.
    Storage(Elem),
    /// `numpy.core.multiarray._reconstruct(ndarray, shape, dtype-char)`
    NpReconstruct,
    /// `numpy.ndarray`
    NpNdarray,
    /// `numpy.dtype(str, align, copy)`
    NpDtype,
    /// `_codecs.encode(str, 'latin1')`: how Python 3 pickles `bytes` at protocol 2.
    CodecsEncode,
}

/// A storage as a persistent id names it: its key, element type and length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageRef {
    pub key: String,
    pub elem: Elem,
    pub numel: usize,
    /// A legacy storage view: (offset, length) in elements of the root storage.
    pub view: Option<(usize, usize)>,
}

/// A tensor as `_rebuild_tensor_v2` describes it: a strided view of a storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorRef {
    pub storage: StorageRef,
    pub offset: usize,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
}

/// A NumPy dtype (`numpy.dtype('u1')` and its `__setstate__`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpDtype {
    /// e.g. `u1`, `i8`, `f4`.
    pub code: String,
    /// Byte order from the state: `|`, `<`, `>` or `=`.
    pub order: char,
}

/// A NumPy array (`ndarray.__reduce__`): shape, dtype, order and raw bytes.
#[derive(Clone, Debug, Default)]
pub struct NdArray {
    pub shape: Vec<usize>,
    pub dtype: Option<NpDtype>,
    pub fortran: bool,
    pub data: Option<Rc<[u8]>>,
    /// Elements given as a list of Python objects instead of raw bytes.
    pub list: Option<Vec<i128>>,
}

/// Objects that allowed callables build.
#[derive(Clone, Debug)]
pub enum Object {
    Storage(StorageRef),
    Tensor(TensorRef),
    NdArray(NdArray),
    Dtype(NpDtype),
}

impl Value {
    pub fn list(v: Vec<Value>) -> Value {
        Value::List(Rc::new(RefCell::new(v)))
    }
    pub fn dict(v: Vec<(Value, Value)>) -> Value {
        Value::Dict(Rc::new(RefCell::new(v)))
    }
    pub fn object(o: Object) -> Value {
        Value::Object(Rc::new(RefCell::new(o)))
    }
    /// A `str`, or `bytes` that are UTF-8 (Python 2 strings).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i128> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i128),
            _ => None,
        }
    }
    pub fn as_usize(&self) -> Option<usize> {
        self.as_int().and_then(|i| usize::try_from(i).ok())
    }
    /// Items of a tuple or list.
    pub fn items(&self) -> Option<Vec<Value>> {
        match self {
            Value::Tuple(t) => Some(t.to_vec()),
            Value::List(l) => Some(l.borrow().clone()),
            _ => None,
        }
    }
    /// A dict's value under a `str` (or equal `bytes`) key.
    pub fn get(&self, key: &str) -> Option<Value> {
        match self {
            Value::Dict(d) => d
                .borrow()
                .iter()
                .rev()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v.clone()),
            _ => None,
        }
    }
    /// The tensor this value is, if it is one.
    pub fn tensor(&self) -> Option<TensorRef> {
        match self {
            Value::Object(o) => match &*o.borrow() {
                Object::Tensor(t) => Some(t.clone()),
                _ => None,
            },
            _ => None,
        }
    }
}

/// A short description of a value's type for messages.
pub fn describe(v: &Value) -> String {
    match v {
        Value::None => "None".into(),
        Value::Bool(_) => "a bool".into(),
        Value::Int(_) | Value::BigInt => "an int".into(),
        Value::Float(_) => "a float".into(),
        Value::Str(_) => "a str".into(),
        Value::Bytes(_) => "bytes".into(),
        Value::List(_) => "a list".into(),
        Value::Tuple(_) => "a tuple".into(),
        Value::Dict(_) => "a dict".into(),
        Value::Global(g) => format!("the callable {g:?}"),
        Value::Object(o) => match &*o.borrow() {
            Object::Storage(_) => "a storage".into(),
            Object::Tensor(_) => "a tensor".into(),
            Object::NdArray(_) => "a NumPy array".into(),
            Object::Dtype(_) => "a NumPy dtype".into(),
        },
    }
}

impl Drop for Value {
    /// Iterative: a deeply nested value (a hostile pickle) must not overflow the stack.
    fn drop(&mut self) {
        let mut work: Vec<Value> = Vec::new();
        take_children(self, &mut work);
        while let Some(mut v) = work.pop() {
            take_children(&mut v, &mut work);
        }
    }
}

/// Moves the children of a container that is about to be freed into `work`.
fn take_children(v: &mut Value, work: &mut Vec<Value>) {
    match v {
        Value::List(l) if Rc::strong_count(l) == 1 => work.append(&mut l.borrow_mut()),
        Value::Dict(d) if Rc::strong_count(d) == 1 => {
            for (k, v) in d.borrow_mut().drain(..) {
                work.push(k);
                work.push(v);
            }
        }
        Value::Tuple(t) if Rc::strong_count(t) == 1 => {
            let t = std::mem::replace(t, Rc::new(Vec::new()));
            if let Ok(items) = Rc::try_unwrap(t) {
                work.extend(items);
            }
        }
        _ => {}
    }
}

fn args_of(args: &Value, at: usize, op: &'static str) -> Result<Vec<Value>, PickleError> {
    args.items()
        .ok_or_else(|| bad(at, op, "arguments are not a tuple"))
}

/// A list of non-negative integers (a tensor size or stride, an array shape).
fn dims(v: &Value, at: usize, what: &str) -> Result<Vec<usize>, PickleError> {
    let items = v
        .items()
        .ok_or_else(|| bad(at, "REDUCE", &format!("{what} is not a tuple")))?;
    items
        .iter()
        .map(|d| {
            d.as_usize().ok_or_else(|| {
                bad(
                    at,
                    "REDUCE",
                    &format!("{what} holds a non-integer or negative value"),
                )
            })
        })
        .collect()
}

/// `REDUCE`/`NEWOBJ`: applies an allowed callable to its arguments.
pub(super) fn call(f: &Value, args: &Value, at: usize) -> Result<Value, PickleError> {
    let Value::Global(g) = f else {
        return Err(bad(
            at,
            "REDUCE",
            &format!("{} is not callable", describe(f)),
        ));
    };
    let a = args_of(args, at, "REDUCE")?;
    Ok(match g {
        Global::OrderedDict => {
            let mut pairs = Vec::new();
            if let Some(items) = a.first().and_then(Value::items) {
                for p in items {
                    match p.items().as_deref() {
                        Some([k, v]) => pairs.push((k.clone(), v.clone())),
                        _ => return Err(bad(at, "REDUCE", "OrderedDict item is not a pair")),
                    }
                }
            }
            Value::dict(pairs)
        }
        Global::RebuildTensorV2 => {
            if a.len() < 4 {
                return Err(bad(
                    at,
                    "REDUCE",
                    "_rebuild_tensor_v2 needs (storage, offset, size, stride, …)",
                ));
            }
            let storage = match &a[0] {
                Value::Object(o) => match &*o.borrow() {
                    Object::Storage(s) => s.clone(),
                    _ => {
                        return Err(bad(
                            at,
                            "REDUCE",
                            "_rebuild_tensor_v2: first argument is not a storage",
                        ))
                    }
                },
                other => {
                    return Err(bad(
                        at,
                        "REDUCE",
                        &format!(
                            "_rebuild_tensor_v2: first argument is {}, not a storage",
                            describe(other)
                        ),
                    ))
                }
            };
            let offset = a[1]
                .as_usize()
                .ok_or_else(|| bad(at, "REDUCE", "tensor offset is not a non-negative integer"))?;
            let size = dims(&a[2], at, "tensor size")?;
            let stride = dims(&a[3], at, "tensor stride")?;
            if size.len() != stride.len() {
                return Err(bad(at, "REDUCE", "tensor size and stride differ in length"));
            }
            Value::object(Object::Tensor(TensorRef {
                storage,
                offset,
                size,
                stride,
            }))
        }
        Global::RebuildParameter => match a.first() {
            Some(t) if t.tensor().is_some() => t.clone(),
            _ => {
                return Err(bad(
                    at,
                    "REDUCE",
                    "_rebuild_parameter: first argument is not a tensor",
                ))
            }
        },
        Global::Storage(_) | Global::NpNdarray => {
            return Err(bad(
                at,
                "REDUCE",
                &format!("{g:?} is not called in a data pickle"),
            ))
        }
        Global::NpReconstruct => {
            if !matches!(a.first(), Some(Value::Global(Global::NpNdarray))) {
                return Err(bad(at, "REDUCE", "_reconstruct builds only numpy.ndarray"));
            }
            Value::object(Object::NdArray(NdArray::default()))
        }
        Global::NpDtype => {
            let code = a
                .first()
                .and_then(Value::as_str)
                .ok_or_else(|| bad(at, "REDUCE", "numpy.dtype needs a type code string"))?;
            Value::object(Object::Dtype(NpDtype {
                code: code.to_string(),
                order: '=',
            }))
        }
        Global::CodecsEncode => {
            let s = a
                .first()
                .and_then(|v| match v {
                    Value::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .ok_or_else(|| bad(at, "REDUCE", "_codecs.encode needs a str"))?;
            if a.get(1).and_then(Value::as_str) != Some("latin1") {
                return Err(bad(at, "REDUCE", "_codecs.encode: only latin1 is read"));
            }
            let bytes: Option<Vec<u8>> = s.chars().map(|c| u8::try_from(c as u32).ok()).collect();
            Value::Bytes(Rc::from(bytes.ok_or_else(|| {
                bad(at, "REDUCE", "latin1 text holds a character above U+00FF")
            })?))
        }
    })
}

/// `BUILD`: sets an object's state (NumPy arrays and dtypes; an ordered dict's attributes
/// such as `_metadata` are dropped).
pub(super) fn build(target: &mut Value, state: Value, at: usize) -> Result<(), PickleError> {
    match target {
        Value::Dict(_) => Ok(()),
        Value::Object(o) => {
            let mut o = o.borrow_mut();
            match &mut *o {
                Object::Dtype(d) => {
                    let st = state
                        .items()
                        .ok_or_else(|| bad(at, "BUILD", "dtype state is not a tuple"))?;
                    if let Some(order) = st.get(1).and_then(Value::as_str) {
                        d.order = order.chars().next().unwrap_or('=');
                    }
                    Ok(())
                }
                Object::NdArray(arr) => {
                    let st = state
                        .items()
                        .ok_or_else(|| bad(at, "BUILD", "ndarray state is not a tuple"))?;
                    // (version, shape, dtype, is_fortran, data)
                    if st.len() != 5 {
                        return Err(bad(
                            at,
                            "BUILD",
                            "ndarray state is not (version, shape, dtype, fortran, data)",
                        ));
                    }
                    arr.shape = dims(&st[1], at, "array shape")?;
                    arr.dtype = match &st[2] {
                        Value::Object(d) => match &*d.borrow() {
                            Object::Dtype(d) => Some(d.clone()),
                            _ => None,
                        },
                        _ => None,
                    };
                    if arr.dtype.is_none() {
                        return Err(bad(at, "BUILD", "ndarray dtype is not a numpy.dtype"));
                    }
                    arr.fortran = matches!(st[3], Value::Bool(true));
                    match &st[4] {
                        Value::Bytes(b) => arr.data = Some(b.clone()),
                        Value::List(l) => {
                            let ints: Option<Vec<i128>> =
                                l.borrow().iter().map(Value::as_int).collect();
                            arr.list = Some(ints.ok_or_else(|| {
                                bad(at, "BUILD", "array elements are not integers")
                            })?);
                        }
                        other => {
                            return Err(bad(
                                at,
                                "BUILD",
                                &format!("array data is {}, not bytes", describe(other)),
                            ))
                        }
                    }
                    Ok(())
                }
                _ => Err(bad(
                    at,
                    "BUILD",
                    "cannot set the state of a storage or tensor",
                )),
            }
        }
        other => Err(bad(
            at,
            "BUILD",
            &format!("cannot set the state of {}", describe(other)),
        )),
    }
}

impl std::fmt::Debug for Value {
    /// The value's type only (a value may be nested arbitrarily deep, or hold a cycle).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&describe(self))
    }
}
