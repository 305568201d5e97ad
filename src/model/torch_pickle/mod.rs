//! `torch.save` checkpoints (`.pt`, `.pth`, `.t7`) read without Python, through the
//! restricted unpickler of [`crate::pickle`]: nothing in the file is executed.
//!
//! Two container formats:
//! - **zip** (torch ≥ 1.6): `PREFIX/data.pkl` is the pickle; storage `KEY` lives in
//!   `PREFIX/data/KEY`; persistent ids are `('storage', StorageClass, KEY, location, numel)`.
//! - **legacy** (torch < 1.6, or `_use_new_zipfile_serialization=False`): five pickles in a
//!   row — the magic number `0x1950a86a20f9469cfc6c`, protocol version 1001, `sys_info`, the
//!   object, the list of storage keys — then each storage in that order as an 8-byte
//!   little-endian element count and its raw bytes. Persistent ids are
//!   `('storage', StorageClass, KEY, location, numel, view_metadata)`.
//!
//! Tensors come from `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, …)`:
//! any strides (non-contiguous views, shared storages), every index checked against the
//! storage. Floating tensors (f32, f64, f16, bf16) become f32; integer and bool tensors
//! (`num_batches_tracked`) keep only their shape. The elements materialized in all are
//! capped at the file's length, so a hostile file cannot make us allocate beyond it.
//!
//! The state_dict is the top-level dict when its values are tensors, else the dict under
//! `state_dict`, `model`, `model_state_dict` or `net`; a `module.` (DataParallel) or
//! `_orig_mod.` (torch.compile) prefix shared by all names is stripped.

use std::collections::HashMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::infer::{infer, Inference};
use super::{Arch, Model, ModelError};
use crate::engine::ParamVec;

use crate::pickle::{
    self, describe, Elem, Global, Object, PickleError, Policy, StorageRef, TensorRef, Value,
};

/// Keys under which checkpoints commonly keep the state_dict, in the order tried.
pub const STATE_DICT_KEYS: [&str; 4] = ["state_dict", "model", "model_state_dict", "net"];
/// Name prefixes stripped when every tensor name has them.
pub const PREFIXES: [&str; 2] = ["module.", "_orig_mod."];
const MAGIC: i128 = 0x1950a86a20f9469cfc6c;
const LEGACY_PROTOCOL: i128 = 1001;

/// Why a `torch.save` file could not be read.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TorchError {
    /// Occurs when a pickle inside the file cannot be read (truncated, a forbidden global).
    #[error("{part}: {source}")]
    Pickle {
        part: &'static str,
        #[source]
        source: PickleError,
    },
    /// Occurs when the zip container is damaged.
    #[error("zip container: {why}")]
    Zip { why: String },
    /// Occurs when the bytes are neither a zip nor a legacy torch.save stream.
    #[error("not a torch.save file ({why}); save it with torch.save(model.state_dict(), path)")]
    NotTorch { why: String },
    /// Occurs when the file was written on a big-endian machine.
    #[error("storages are big-endian; re-save the checkpoint on a little-endian machine")]
    BigEndian,
    /// Occurs when a persistent id or a storage's bytes are malformed or missing.
    #[error("storage '{key}': {why}")]
    Storage { key: String, why: String },
    /// Occurs when a tensor's view does not fit its storage, or the file would need more
    /// memory than its size justifies.
    #[error("tensor '{name}': {why}")]
    Tensor { name: String, why: String },
    /// Occurs when no state_dict is found.
    #[error("no state_dict found: the file holds {found}; save model.state_dict() (or a dict with it under one of 'state_dict', 'model', 'model_state_dict', 'net')")]
    NoStateDict { found: String },
}

/// One tensor of a state_dict.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub elem: Elem,
    /// The values in row-major order as f32; `None` for integer and bool tensors.
    pub values: Option<Vec<f32>>,
}

/// The state_dict of a checkpoint and how it was found.
#[derive(Clone, Debug)]
pub struct StateDict {
    pub tensors: Vec<Tensor>,
    /// `zip` or `legacy`.
    pub format: &'static str,
    /// The key the state_dict was under, if not top level.
    pub found_under: Option<String>,
    /// The prefix stripped from every name.
    pub stripped: Option<String>,
    /// Top-level string values of the checkpoint (e.g. `arch`), hints for inference.
    pub hints: Vec<(String, String)>,
}

impl StateDict {
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// Reads the state_dict of the `torch.save` file at `path`; also returns the file's bytes
/// (for its digest).
pub fn read(path: &Path) -> Result<(StateDict, Vec<u8>), ModelError> {
    let bytes = std::fs::read(path).map_err(|cause| ModelError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    let sd = read_bytes(&bytes).map_err(|why| ModelError::Torch {
        path: path.to_path_buf(),
        why,
    })?;
    Ok((sd, bytes))
}

/// Reads a state_dict from the bytes of a `torch.save` file.
pub fn read_bytes(bytes: &[u8]) -> Result<StateDict, TorchError> {
    if bytes.starts_with(b"PK\x03\x04") {
        read_zip(bytes)
    } else if bytes.starts_with(&[0x80]) {
        read_legacy(bytes)
    } else if bytes.starts_with(b"T7") || bytes.first().is_some_and(|&b| b < 8) {
        Err(TorchError::NotTorch {
            why: "it looks like a Lua Torch7 file, which torch.save does not write".into(),
        })
    } else {
        Err(TorchError::NotTorch {
            why: "neither a zip archive nor a pickle stream".into(),
        })
    }
}

/// The unpickling policy of checkpoints: tensors, storages, ordered dicts.
struct TorchPolicy {
    legacy: bool,
    /// Every storage named by a persistent id (key → element type and length).
    storages: HashMap<String, (Elem, usize)>,
}

impl Policy for TorchPolicy {
    fn global(&self, module: &str, name: &str) -> Option<Global> {
        match (module, name) {
            ("collections", "OrderedDict") => Some(Global::OrderedDict),
            ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
            ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
            ("torch", n) => Elem::from_storage_name(n).map(Global::Storage),
            _ => None,
        }
    }

    fn persistent(&mut self, pid: &Value, at: usize) -> Result<Value, PickleError> {
        let bad = |why: &str| PickleError::Bad {
            at,
            op: "BINPERSID",
            why: why.to_string(),
        };
        let items = pid
            .items()
            .ok_or_else(|| bad("persistent id is not a tuple"))?;
        let want = if self.legacy { 6 } else { 5 };
        if items.len() != want || items[0].as_str() != Some("storage") {
            return Err(bad(&format!(
                "persistent id is not ('storage', class, key, location, numel{})",
                if self.legacy { ", view" } else { "" }
            )));
        }
        let Value::Global(Global::Storage(elem)) = &items[1] else {
            return Err(bad(&format!("storage class is {}", describe(&items[1]))));
        };
        let key = items[2]
            .as_str()
            .ok_or_else(|| bad("storage key is not a string"))?
            .to_string();
        let numel = items[4]
            .as_usize()
            .ok_or_else(|| bad("storage size is not a non-negative integer"))?;
        let view = if self.legacy {
            match &items[5] {
                Value::None => None,
                v => match v.items().as_deref() {
                    Some([_, off, len]) => Some((
                        off.as_usize().ok_or_else(|| bad("view offset"))?,
                        len.as_usize().ok_or_else(|| bad("view size"))?,
                    )),
                    _ => return Err(bad("storage view is not (key, offset, size)")),
                },
            }
        } else {
            None
        };
        if let Some((e, n)) = self.storages.get(&key) {
            if *e != *elem || *n != numel {
                return Err(bad(&format!(
                    "storage '{key}' is named with two types or sizes"
                )));
            }
        }
        self.storages.insert(key.clone(), (*elem, numel));
        Ok(Value::object(Object::Storage(StorageRef {
            key,
            elem: *elem,
            numel,
            view,
        })))
    }
}

fn read_zip(bytes: &[u8]) -> Result<StateDict, TorchError> {
    let path = Path::new("checkpoint");
    let zip_err = |e: crate::data::DataError| TorchError::Zip { why: e.to_string() };
    let archive = crate::data::zip::Archive::parse(bytes, path).map_err(zip_err)?;
    let pkl = archive
        .entries
        .iter()
        .find(|e| e.name.ends_with("/data.pkl") || e.name == "data.pkl")
        .ok_or_else(|| TorchError::NotTorch {
            why: "the zip archive has no data.pkl".into(),
        })?;
    let prefix = pkl.name.trim_end_matches("data.pkl").to_string();
    if let Some(bo) = archive.find(&format!("{prefix}byteorder")) {
        if archive.read(bo).map_err(zip_err)? == b"big" {
            return Err(TorchError::BigEndian);
        }
    }
    let data = archive.read(pkl).map_err(zip_err)?;
    let mut policy = TorchPolicy {
        legacy: false,
        storages: HashMap::new(),
    };
    let (root, _) = pickle::load(&data, &mut policy).map_err(|source| TorchError::Pickle {
        part: "data.pkl",
        source,
    })?;
    let mut store: HashMap<String, Vec<u8>> = HashMap::new();
    for (key, (elem, numel)) in &policy.storages {
        let name = format!("{prefix}data/{key}");
        let entry = archive.find(&name).ok_or_else(|| TorchError::Storage {
            key: key.clone(),
            why: format!("the archive has no entry {name}"),
        })?;
        let b = archive.read(entry).map_err(zip_err)?;
        check_len(key, *elem, *numel, b.len())?;
        store.insert(key.clone(), b);
    }
    extract(&root, &store, bytes.len(), "zip")
}

fn check_len(key: &str, elem: Elem, numel: usize, have: usize) -> Result<(), TorchError> {
    let need = numel.checked_mul(elem.size());
    if need.is_none_or(|n| n > have) {
        return Err(TorchError::Storage {
            key: key.to_string(),
            why: format!(
                "{numel} elements of {} bytes need more than the {have} bytes present",
                elem.size()
            ),
        });
    }
    Ok(())
}

fn read_legacy(bytes: &[u8]) -> Result<StateDict, TorchError> {
    let mut none = TorchPolicy {
        legacy: true,
        storages: HashMap::new(),
    };
    let mut pos = 0;
    let mut next = |part: &'static str, policy: &mut TorchPolicy| -> Result<Value, TorchError> {
        let (v, used) = pickle::load(&bytes[pos..], policy)
            .map_err(|source| TorchError::Pickle { part, source })?;
        pos += used;
        Ok(v)
    };
    let magic = next("magic number", &mut none)?;
    if magic.as_int() != Some(MAGIC) {
        return Err(TorchError::NotTorch {
            why: "a pickle, but without torch's legacy magic number".into(),
        });
    }
    let proto = next("protocol version", &mut none)?;
    if proto.as_int() != Some(LEGACY_PROTOCOL) {
        return Err(TorchError::NotTorch {
            why: format!(
                "legacy protocol version {:?} (only 1001 is known)",
                proto.as_int()
            ),
        });
    }
    let sys_info = next("sys_info", &mut none)?;
    if matches!(sys_info.get("little_endian"), Some(Value::Bool(false))) {
        return Err(TorchError::BigEndian);
    }
    let mut policy = TorchPolicy {
        legacy: true,
        storages: HashMap::new(),
    };
    let root = next("the main pickle", &mut policy)?;
    let keys = next("storage keys", &mut none)?;
    let keys = keys.items().ok_or_else(|| TorchError::NotTorch {
        why: "the storage key list is not a list".into(),
    })?;
    let mut store: HashMap<String, Vec<u8>> = HashMap::new();
    for k in keys {
        let key = k
            .as_str()
            .ok_or_else(|| TorchError::NotTorch {
                why: "a storage key is not a string".into(),
            })?
            .to_string();
        let (elem, numel) = *policy
            .storages
            .get(&key)
            .ok_or_else(|| TorchError::Storage {
                key: key.clone(),
                why: "listed in the key list but named by no tensor".into(),
            })?;
        let count = bytes
            .get(pos..pos + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
            .ok_or_else(|| TorchError::Storage {
                key: key.clone(),
                why: format!("file ends at byte {} before its element count", bytes.len()),
            })?;
        pos += 8;
        if count != numel as u64 {
            return Err(TorchError::Storage {
                key,
                why: format!("holds {count} elements but the pickle says {numel}"),
            });
        }
        check_len(&key, elem, numel, bytes.len() - pos)?;
        let n = numel * elem.size();
        store.insert(key, bytes[pos..pos + n].to_vec());
        pos += n;
    }
    extract(&root, &store, bytes.len(), "legacy")
}

/// Finds the state_dict in the unpickled object and materializes its tensors.
fn extract(
    root: &Value,
    store: &HashMap<String, Vec<u8>>,
    file_len: usize,
    format: &'static str,
) -> Result<StateDict, TorchError> {
    let is_state_dict = |v: &Value| match v {
        Value::Dict(d) => {
            let d = d.borrow();
            !d.is_empty()
                && d.iter().all(|(k, _)| matches!(k, Value::Str(_)))
                && d.iter().any(|(_, v)| v.tensor().is_some())
        }
        _ => false,
    };
    let mut hints = Vec::new();
    if let Value::Dict(d) = root {
        for (k, v) in d.borrow().iter() {
            if let (Value::Str(k), Value::Str(v)) = (k, v) {
                hints.push((k.to_string(), v.to_string()));
            }
        }
    }
    let (sd, found_under) = if is_state_dict(root) {
        (root.clone(), None)
    } else {
        STATE_DICT_KEYS
            .iter()
            .find_map(|k| {
                root.get(k)
                    .filter(is_state_dict)
                    .map(|v| (v, Some(k.to_string())))
            })
            .ok_or_else(|| TorchError::NoStateDict {
                found: summarize(root),
            })?
    };
    let Value::Dict(d) = &sd else {
        unreachable!("checked above")
    };
    let entries: Vec<(String, TensorRef)> = d
        .borrow()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.tensor()?)))
        .collect();
    let mut stripped = None;
    let mut names: Vec<String> = entries.iter().map(|(n, _)| n.clone()).collect();
    'strip: loop {
        for p in PREFIXES {
            if names.iter().all(|n| n.starts_with(p)) {
                names = names.iter().map(|n| n[p.len()..].to_string()).collect();
                stripped = Some(stripped.unwrap_or_default() + p);
                continue 'strip;
            }
        }
        break;
    }
    // Floating elements materialized in all may not exceed the file length.
    let mut budget = file_len;
    let mut tensors = Vec::with_capacity(entries.len());
    for ((_, t), name) in entries.iter().zip(names) {
        let bytes = store
            .get(&t.storage.key)
            .ok_or_else(|| TorchError::Storage {
                key: t.storage.key.clone(),
                why: "its data is missing".into(),
            })?;
        let values = if t.storage.elem.is_float() {
            Some(
                materialize(t, bytes, &mut budget).map_err(|why| TorchError::Tensor {
                    name: name.clone(),
                    why,
                })?,
            )
        } else {
            None
        };
        tensors.push(Tensor {
            name,
            shape: t.size.clone(),
            elem: t.storage.elem,
            values,
        });
    }
    Ok(StateDict {
        tensors,
        format,
        found_under,
        stripped,
        hints,
    })
}

/// What a value holds, for the "no state_dict" message.
fn summarize(v: &Value) -> String {
    match v {
        Value::Dict(d) => {
            let keys: Vec<String> = d
                .borrow()
                .iter()
                .take(12)
                .map(|(k, v)| format!("'{}' ({})", k.as_str().unwrap_or("?"), describe(v)))
                .collect();
            format!("a dict with keys {}", keys.join(", "))
        }
        other => describe(other),
    }
}

/// The elements of a strided view, row-major, as f32.
fn materialize(t: &TensorRef, root: &[u8], budget: &mut usize) -> Result<Vec<f32>, String> {
    let elem = t.storage.elem;
    let (base, len) = match t.storage.view {
        Some((off, len)) => {
            if off.checked_add(len).is_none_or(|e| e > t.storage.numel) {
                return Err(format!(
                    "storage view [{off}, {off}+{len}) exceeds its root's {} elements",
                    t.storage.numel
                ));
            }
            (off, len)
        }
        None => (0, t.storage.numel),
    };
    let numel = t
        .size
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("size overflows")?;
    if numel > *budget {
        return Err(format!(
            "{numel} elements exceed what the file's size allows ({} left)",
            *budget
        ));
    }
    *budget -= numel;
    if numel == 0 {
        return Ok(vec![]);
    }
    let mut last = t.offset;
    for (&s, &st) in t.size.iter().zip(&t.stride) {
        last = (s - 1)
            .checked_mul(st)
            .and_then(|x| last.checked_add(x))
            .ok_or("strides overflow")?;
    }
    if last >= len {
        return Err(format!(
            "offset {} with size {:?} and stride {:?} reaches element {last}, but the storage has {len}",
            t.offset, t.size, t.stride
        ));
    }
    let read = |i: usize| -> f32 {
        let at = (base + i) * elem.size();
        let b = &root[at..at + elem.size()];
        match elem {
            Elem::F32 => f32::from_le_bytes(b.try_into().unwrap()),
            Elem::F64 => f64::from_le_bytes(b.try_into().unwrap()) as f32,
            Elem::F16 => crate::model::safetensors_io::f16_to_f32(u16::from_le_bytes([b[0], b[1]])),
            Elem::BF16 => f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16),
            _ => unreachable!("only floating storages are materialized"),
        }
    };
    let mut out = Vec::with_capacity(numel);
    let mut idx = vec![0usize; t.size.len()];
    let mut at = t.offset;
    for _ in 0..numel {
        out.push(read(at));
        // advance the multi-index, last axis fastest
        for ax in (0..idx.len()).rev() {
            idx[ax] += 1;
            at += t.stride[ax];
            if idx[ax] < t.size[ax] {
                break;
            }
            at -= t.stride[ax] * t.size[ax];
            idx[ax] = 0;
        }
    }
    Ok(out)
}

const COUNTER_SUFFIX: &str = ".num_batches_tracked";

/// Loads a `torch.save` checkpoint as a model: the architecture is `arch` or inferred from
/// the tensors ([`super::infer`]); every tensor the architecture needs must be present with
/// its shape and a floating type; `num_batches_tracked` counters are ignored.
pub fn load(path: &Path, arch: Option<&Arch>) -> Result<Model, ModelError> {
    let (sd, bytes) = read(path)?;
    let shapes: Vec<(String, Vec<usize>)> = sd
        .tensors
        .iter()
        .filter(|t| !t.name.ends_with(COUNTER_SUFFIX))
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    let inference = match arch {
        Some(a) => Inference {
            arch: a.clone(),
            reasons: vec!["given as `arch`".into()],
            input_from_data: matches!(a, Arch::ResnetCifar(_)),
        },
        None => {
            let mut hints: Vec<String> = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .into_iter()
                .collect();
            hints.extend(sd.hints.iter().map(|(k, v)| format!("{k}={v}")));
            infer(&shapes, &hints).map_err(|why| ModelError::Infer {
                path: path.to_path_buf(),
                why,
            })?
        }
    };
    let arch = inference.arch.clone();
    arch.check().map_err(|why| ModelError::Arch {
        spec: arch.to_string(),
        why,
    })?;
    let graph = arch.build();
    let mut theta = ParamVec::<f32>::zeros(graph.layout.clone());
    let arch_name = arch.to_string();
    for (i, spec) in graph.layout.tensors().iter().enumerate() {
        let t = sd
            .get(&spec.name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: path.to_path_buf(),
                name: spec.name.clone(),
                shape: spec.shape.clone(),
                arch: arch_name.clone(),
            })?;
        if t.shape != spec.shape {
            return Err(ModelError::ShapeMismatch {
                path: path.to_path_buf(),
                name: spec.name.clone(),
                expected: spec.shape.clone(),
                got: t.shape.clone(),
                arch: arch_name.clone(),
            });
        }
        let values = t.values.as_ref().ok_or_else(|| ModelError::Dtype {
            path: path.to_path_buf(),
            name: spec.name.clone(),
            dtype: format!("{:?}", t.elem),
        })?;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(ModelError::NonFinite {
                path: path.to_path_buf(),
                name: spec.name.clone(),
            });
        }
        theta
            .tensor_mut(i)
            .as_slice_mut()
            .expect("contiguous")
            .copy_from_slice(values);
    }
    if let Some(t) = sd
        .tensors
        .iter()
        .find(|t| graph.layout.index_of(&t.name).is_none() && !t.name.ends_with(COUNTER_SUFFIX))
    {
        return Err(ModelError::ExtraTensor {
            path: path.to_path_buf(),
            name: t.name.clone(),
            arch: arch_name,
        });
    }
    let mut metadata = std::collections::BTreeMap::new();
    metadata.insert("torch_format".into(), sd.format.to_string());
    if let Some(k) = &sd.found_under {
        metadata.insert("torch_state_dict_key".into(), k.clone());
    }
    if let Some(p) = &sd.stripped {
        metadata.insert("torch_prefix_stripped".into(), p.clone());
    }
    Ok(Model {
        arch,
        graph,
        theta,
        path: Some(path.to_path_buf()),
        sha256: Some(format!("{:x}", Sha256::digest(&bytes))),
        metadata,
        inference: Some(inference),
    })
}

#[cfg(test)]
mod tests;
