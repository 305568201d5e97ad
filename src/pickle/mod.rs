//! A restricted unpickler: reads Python pickle streams (protocols 0–5, the opcodes that
//! `torch.save` and NumPy's `ndarray.__reduce__` emit) into plain [`Value`]s without
//! executing anything.
//!
//! Only the callables a [`Policy`] names may appear (`GLOBAL`/`STACK_GLOBAL`); every other
//! global is refused with an error naming it. `REDUCE`/`NEWOBJ`/`BUILD` act only on those
//! known callables, with Rust code that builds data (an ordered dict, a tensor view of a
//! storage, a NumPy array). Persistent ids (`BINPERSID`) are handed to the caller.
//!
//! **Bounds.** Every length is checked against the bytes left before anything is
//! allocated; the stack and memo grow by at most one entry per opcode; containers are
//! reference-counted so `GET` never copies; dropping a deeply nested value is iterative.

mod value;

use std::collections::HashMap;
use std::rc::Rc;

pub use value::{describe, Elem, Global, NdArray, NpDtype, Object, StorageRef, TensorRef, Value};

/// Why a pickle stream could not be read.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    /// Occurs when the stream ends inside an opcode or before `STOP`.
    #[error("pickle ends early at byte {at} (reading {what}); the file is truncated")]
    Truncated { at: usize, what: &'static str },
    /// Occurs when a global that the policy does not allow is named.
    #[error("pickle byte {at}: global `{module}.{name}` is not allowed (only tensors, storages, ordered dicts, lists, tuples, numbers and strings are read; no code is run)")]
    Forbidden {
        at: usize,
        module: String,
        name: String,
    },
    /// Occurs when an opcode is unknown or unsupported.
    #[error("pickle byte {at}: unsupported opcode 0x{op:02x}")]
    Opcode { at: usize, op: u8 },
    /// Occurs when an opcode's operands are not what it needs.
    #[error("pickle byte {at} ({op}): {why}")]
    Bad {
        at: usize,
        op: &'static str,
        why: String,
    },
}

/// Which globals a stream may name, and how persistent ids are resolved.
pub trait Policy {
    /// The callable `module.name`, or `None` to refuse it.
    fn global(&self, module: &str, name: &str) -> Option<Global>;
    /// Resolves a persistent id (`BINPERSID`); `at` is the byte offset for errors.
    fn persistent(&mut self, pid: &Value, at: usize) -> Result<Value, PickleError>;
}

/// Reads one pickle from the start of `bytes`; returns the value and the number of bytes
/// it took (the `STOP` opcode included), so that several pickles can follow each other.
pub fn load(bytes: &[u8], policy: &mut dyn Policy) -> Result<(Value, usize), PickleError> {
    Machine {
        b: bytes,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    }
    .run(policy)
}

struct Machine<'a> {
    b: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
}

type R<T> = Result<T, PickleError>;

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> R<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(PickleError::Truncated { at: self.pos, what })?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> R<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> R<u16> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn u32(&mut self, what: &'static str) -> R<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &'static str) -> R<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    fn len64(&mut self, what: &'static str) -> R<usize> {
        let n = self.u64(what)?;
        usize::try_from(n).map_err(|_| PickleError::Truncated { at: self.pos, what })
    }
    /// A text line (protocol 0 operands), without its `\n`.
    fn line(&mut self, what: &'static str) -> R<&'a str> {
        let rest = &self.b[self.pos..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or(PickleError::Truncated { at: self.pos, what })?;
        let at = self.pos;
        self.pos += n + 1;
        std::str::from_utf8(&rest[..n]).map_err(|_| PickleError::Bad {
            at,
            op: what,
            why: "text operand is not UTF-8".into(),
        })
    }
    fn utf8(&self, at: usize, op: &'static str, s: &[u8]) -> R<Value> {
        std::str::from_utf8(s)
            .map(|s| Value::Str(Rc::from(s)))
            .map_err(|_| PickleError::Bad {
                at,
                op,
                why: "string is not UTF-8".into(),
            })
    }

    fn pop(&mut self, at: usize, op: &'static str) -> R<Value> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(bad(at, op, "stack is empty above the mark"));
        }
        self.stack
            .pop()
            .ok_or_else(|| bad(at, op, "stack is empty"))
    }
    fn top(&mut self, at: usize, op: &'static str) -> R<&mut Value> {
        self.stack
            .last_mut()
            .ok_or_else(|| bad(at, op, "stack is empty"))
    }
    fn pop_mark(&mut self, at: usize, op: &'static str) -> R<Vec<Value>> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| bad(at, op, "no MARK before it"))?;
        Ok(self.stack.split_off(m.min(self.stack.len())))
    }

    fn run(mut self, policy: &mut dyn Policy) -> R<(Value, usize)> {
        loop {
            let at = self.pos;
            let op = self.u8("an opcode")?;
            match op {
                0x80 => {
                    let p = self.u8("PROTO")?;
                    if p > 5 {
                        return Err(bad(at, "PROTO", &format!("protocol {p} is unknown")));
                    }
                }
                0x95 => {
                    self.u64("FRAME")?;
                }
                b'.' => {
                    let v = self.pop(at, "STOP")?;
                    return Ok((v, self.pos));
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop(at, "POP")?;
                }
                b'1' => {
                    self.pop_mark(at, "POP_MARK")?;
                }
                b'2' => {
                    let v = self.top(at, "DUP")?.clone();
                    self.stack.push(v);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = self.u32("BININT")? as i32;
                    self.stack.push(Value::Int(v as i128));
                }
                b'K' => {
                    let v = self.u8("BININT1")?;
                    self.stack.push(Value::Int(v as i128));
                }
                b'M' => {
                    let v = self.u16("BININT2")?;
                    self.stack.push(Value::Int(v as i128));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        self.u8("LONG1")? as usize
                    } else {
                        self.u32("LONG4")? as usize
                    };
                    let digits = self.take(n, "a long integer")?;
                    self.stack.push(long(digits));
                }
                b'I' | b'L' => {
                    let s = self.line("INT")?.trim_end_matches('L');
                    let v = match s {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        _ => Value::Int(
                            s.parse()
                                .map_err(|_| bad(at, "INT", &format!("`{s}` is not an integer")))?,
                        ),
                    };
                    self.stack.push(v);
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8, "BINFLOAT")?.try_into().unwrap());
                    self.stack.push(Value::Float(v));
                }
                b'F' => {
                    let s = self.line("FLOAT")?;
                    let v = s
                        .parse()
                        .map_err(|_| bad(at, "FLOAT", &format!("`{s}` is not a number")))?;
                    self.stack.push(Value::Float(v));
                }
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => self.u32("BINUNICODE")? as usize,
                        0x8c => self.u8("SHORT_BINUNICODE")? as usize,
                        _ => self.len64("BINUNICODE8")?,
                    };
                    let s = self.take(n, "a string")?;
                    let v = self.utf8(at, "BINUNICODE", s)?;
                    self.stack.push(v);
                }
                b'V' => {
                    let s = self.line("UNICODE")?;
                    self.stack.push(Value::Str(Rc::from(s)));
                }
                // Python 2 `str` and Python 3 `bytes`: read as bytes (`encoding='bytes'`).
                b'T' | b'U' | b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'T' | b'B' => self.u32("BINBYTES")? as usize,
                        b'U' | b'C' => self.u8("SHORT_BINBYTES")? as usize,
                        _ => self.len64("BINBYTES8")?,
                    };
                    let s = self.take(n, "a byte string")?;
                    self.stack.push(Value::Bytes(Rc::from(s)));
                }
                b'S' => {
                    let s = self.line("STRING")?;
                    let inner = s
                        .strip_prefix(['\'', '"'])
                        .and_then(|s| s.strip_suffix(['\'', '"']))
                        .ok_or_else(|| bad(at, "STRING", "unquoted string"))?;
                    self.stack.push(Value::Bytes(Rc::from(inner.as_bytes())));
                }
                b']' => self.stack.push(Value::list(vec![])),
                b'}' => self.stack.push(Value::dict(vec![])),
                b')' => self.stack.push(Value::Tuple(Rc::new(Vec::new()))),
                0x8f => self.stack.push(Value::list(vec![])),
                b'l' => {
                    let items = self.pop_mark(at, "LIST")?;
                    self.stack.push(Value::list(items));
                }
                b't' | 0x91 => {
                    let items = self.pop_mark(at, "TUPLE")?;
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n
                        || self.marks.last().is_some_and(|&m| m > self.stack.len() - n)
                    {
                        return Err(bad(at, "TUPLEn", "too few items on the stack"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                b'd' => {
                    let items = self.pop_mark(at, "DICT")?;
                    let pairs = pairs(items, at, "DICT")?;
                    self.stack.push(Value::dict(pairs));
                }
                b'a' => {
                    let v = self.pop(at, "APPEND")?;
                    append(self.top(at, "APPEND")?, vec![v], at)?;
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark(at, "APPENDS")?;
                    append(self.top(at, "APPENDS")?, items, at)?;
                }
                b's' => {
                    let v = self.pop(at, "SETITEM")?;
                    let k = self.pop(at, "SETITEM")?;
                    set_items(self.top(at, "SETITEM")?, vec![(k, v)], at)?;
                }
                b'u' => {
                    let items = self.pop_mark(at, "SETITEMS")?;
                    let p = pairs(items, at, "SETITEMS")?;
                    set_items(self.top(at, "SETITEMS")?, p, at)?;
                }
                b'q' | b'r' | 0x94 | b'p' => {
                    let key = match op {
                        b'q' => self.u8("BINPUT")? as u64,
                        b'r' => self.u32("LONG_BINPUT")? as u64,
                        b'p' => {
                            let s = self.line("PUT")?;
                            s.parse()
                                .map_err(|_| bad(at, "PUT", &format!("`{s}` is not an index")))?
                        }
                        _ => self.memo.len() as u64,
                    };
                    let v = self.top(at, "PUT")?.clone();
                    self.memo.insert(key, v);
                }
                b'h' | b'j' | b'g' => {
                    let key = match op {
                        b'h' => self.u8("BINGET")? as u64,
                        b'j' => self.u32("LONG_BINGET")? as u64,
                        _ => {
                            let s = self.line("GET")?;
                            s.parse()
                                .map_err(|_| bad(at, "GET", &format!("`{s}` is not an index")))?
                        }
                    };
                    let v = self
                        .memo
                        .get(&key)
                        .ok_or_else(|| bad(at, "GET", &format!("memo entry {key} is not set")))?
                        .clone();
                    self.stack.push(v);
                }
                b'c' => {
                    let module = self.line("GLOBAL")?.to_string();
                    let name = self.line("GLOBAL")?.to_string();
                    let g = policy
                        .global(&module, &name)
                        .ok_or(PickleError::Forbidden { at, module, name })?;
                    self.stack.push(Value::Global(g));
                }
                0x93 => {
                    let name = self.pop(at, "STACK_GLOBAL")?;
                    let module = self.pop(at, "STACK_GLOBAL")?;
                    let (Some(m), Some(n)) = (module.as_str(), name.as_str()) else {
                        return Err(bad(at, "STACK_GLOBAL", "module and name must be strings"));
                    };
                    let g = policy.global(m, n).ok_or_else(|| PickleError::Forbidden {
                        at,
                        module: m.to_string(),
                        name: n.to_string(),
                    })?;
                    self.stack.push(Value::Global(g));
                }
                b'R' | 0x81 => {
                    let args = self.pop(at, "REDUCE")?;
                    let f = self.pop(at, "REDUCE")?;
                    let v = value::call(&f, &args, at)?;
                    self.stack.push(v);
                }
                0x92 => {
                    let _kwargs = self.pop(at, "NEWOBJ_EX")?;
                    let args = self.pop(at, "NEWOBJ_EX")?;
                    let f = self.pop(at, "NEWOBJ_EX")?;
                    let v = value::call(&f, &args, at)?;
                    self.stack.push(v);
                }
                b'b' => {
                    let state = self.pop(at, "BUILD")?;
                    value::build(self.top(at, "BUILD")?, state, at)?;
                }
                b'Q' => {
                    let pid = self.pop(at, "BINPERSID")?;
                    let v = policy.persistent(&pid, at)?;
                    self.stack.push(v);
                }
                b'P' => {
                    let s = self.line("PERSID")?;
                    let v = policy.persistent(&Value::Str(Rc::from(s)), at)?;
                    self.stack.push(v);
                }
                _ => return Err(PickleError::Opcode { at, op }),
            }
        }
    }
}

pub(crate) fn bad(at: usize, op: &'static str, why: &str) -> PickleError {
    PickleError::Bad {
        at,
        op,
        why: why.to_string(),
    }
}

/// A little-endian two's-complement integer (LONG1/LONG4); wider than 128 bits → `BigInt`.
fn long(digits: &[u8]) -> Value {
    if digits.is_empty() {
        return Value::Int(0);
    }
    if digits.len() > 16 {
        return Value::BigInt;
    }
    let neg = digits[digits.len() - 1] & 0x80 != 0;
    let mut buf = [if neg { 0xff } else { 0 }; 16];
    buf[..digits.len()].copy_from_slice(digits);
    Value::Int(i128::from_le_bytes(buf))
}

fn pairs(items: Vec<Value>, at: usize, op: &'static str) -> R<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        return Err(bad(at, op, "odd number of items for key/value pairs"));
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn append(target: &mut Value, items: Vec<Value>, at: usize) -> R<()> {
    match target {
        Value::List(l) => {
            l.borrow_mut().extend(items);
            Ok(())
        }
        other => Err(bad(
            at,
            "APPEND",
            &format!("cannot append to {}", describe(other)),
        )),
    }
}

fn set_items(target: &mut Value, items: Vec<(Value, Value)>, at: usize) -> R<()> {
    match target {
        Value::Dict(d) => {
            d.borrow_mut().extend(items);
            Ok(())
        }
        other => Err(bad(
            at,
            "SETITEM",
            &format!("cannot set items of {}", describe(other)),
        )),
    }
}

#[cfg(test)]
mod tests;
