//! Networks exported from PyTorch as ONNX (`torch.onnx.export`, current or legacy
//! exporter): the ONNX graph becomes an engine [`Graph`](crate::engine::Graph), its
//! initializers the parameters, named as in the file (the PyTorch `state_dict` names
//! unless the exporter renamed them, e.g. `onnx::Conv_89` for BN folded into a conv).
//!
//! Parsing is pure Rust ([`proto`], `prost`). Tensor data may be inline or in external
//! files next to the model (`model.onnx.data`); every declared size is checked against
//! the bytes actually present before anything is allocated.

mod fold;
mod import;
pub mod proto;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::{ExternalDataError, OnnxError, TensorError};
use super::{Arch, Model, ModelError};
use proto::{dtype, TensorProto};

/// What an imported network is, in place of a zoo architecture (see [`Arch::Onnx`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnnxArch {
    /// File name of the model.
    pub file: String,
    /// `producer_name producer_version` of the exporter.
    pub producer: String,
    /// Default-domain opset.
    pub opset: i64,
    /// Number of convolution and linear layers.
    pub depth: usize,
    /// Whether two computed activations are ever added (a residual connection).
    pub residual: bool,
    /// No BatchNormalization left but convolutions carry exporter-named weights and biases:
    /// BN was folded into them, so filter normalization acts on the folded weights.
    pub bn_folded: bool,
    pub num_classes: usize,
    pub input_shape: Vec<usize>,
    /// Things the importer did that change what the parameters mean (folded BN, weights
    /// stored transposed in the file, a stripped output softmax, renamed initializers).
    pub notes: Vec<String>,
}

/// Loads an ONNX model. A zoo `arch` cannot apply to an ONNX file and is refused.
pub fn load(path: &Path, arch: Option<&Arch>) -> Result<Model, ModelError> {
    if let Some(a) = arch {
        if !matches!(a, Arch::Onnx(_)) {
            return Err(ModelError::Onnx {
                path: path.to_path_buf(),
                why: OnnxError::ArchGiven,
            });
        }
    }
    let bytes = std::fs::read(path).map_err(|cause| ModelError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    let err = |why: OnnxError| ModelError::Onnx {
        path: path.to_path_buf(),
        why,
    };
    let proto = proto::ModelProto::decode(bytes.as_slice())
        .map_err(|e| err(OnnxError::Protobuf { why: e.to_string() }))?;
    let mut data = DataFiles::new(path);
    let (graph, theta, onnx_arch) =
        import::import(&proto, path, &mut data).map_err(|e| match e {
            import::ImportError::Node { node, op, why } => ModelError::OnnxNode {
                path: path.to_path_buf(),
                node,
                op,
                why,
            },
            import::ImportError::Graph(why) => err(why),
        })?;
    let mut metadata = std::collections::BTreeMap::new();
    metadata.insert("onnx_producer".into(), onnx_arch.producer.clone());
    metadata.insert("onnx_opset".into(), onnx_arch.opset.to_string());
    for (i, n) in onnx_arch.notes.iter().enumerate() {
        metadata.insert(format!("onnx_note_{i}"), n.clone());
    }
    Ok(Model {
        arch: Arch::Onnx(onnx_arch),
        graph,
        theta,
        path: Some(path.to_path_buf()),
        sha256: Some(format!("{:x}", Sha256::digest(&bytes))),
        metadata,
        inference: None,
    })
}

/// External data files, read once each, resolved next to the model.
pub(crate) struct DataFiles {
    dir: PathBuf,
    files: HashMap<String, Vec<u8>>,
}

impl DataFiles {
    fn new(model: &Path) -> Self {
        Self {
            dir: model.parent().map(Path::to_path_buf).unwrap_or_default(),
            files: HashMap::new(),
        }
    }

    fn get(&mut self, location: &str) -> Result<&[u8], ExternalDataError> {
        let rel = Path::new(location);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(ExternalDataError::Location {
                location: location.to_string(),
            });
        }
        if !self.files.contains_key(location) {
            let p = self.dir.join(rel);
            let b = std::fs::read(&p).map_err(|cause| ExternalDataError::Read {
                path: p.clone(),
                cause,
            })?;
            self.files.insert(location.to_string(), b);
        }
        Ok(&self.files[location])
    }
}

/// A constant tensor: shape and values (floats and integers both as f64; integers also
/// exactly as i64).
#[derive(Clone, Debug)]
pub(crate) struct Tensor {
    pub dims: Vec<usize>,
    pub values: Vec<f64>,
    pub ints: Vec<i64>,
}

/// Decodes a tensor's values, checking every declared size against the bytes present.
pub(crate) fn decode_tensor(t: &TensorProto, data: &mut DataFiles) -> Result<Tensor, TensorError> {
    let name = if t.name.is_empty() {
        "(unnamed)"
    } else {
        &t.name
    };
    let named = || name.to_string();
    let overflow = || TensorError::Overflow {
        name: named(),
        dims: t.dims.clone(),
    };
    let mut dims = Vec::with_capacity(t.dims.len().min(8));
    let mut numel: usize = 1;
    for &d in &t.dims {
        let d = usize::try_from(d).map_err(|_| TensorError::NegativeDim {
            name: named(),
            dim: d,
        })?;
        numel = numel.checked_mul(d).ok_or_else(overflow)?;
        dims.push(d);
    }
    let width = match t.data_type {
        dtype::BOOL | dtype::UINT8 | dtype::INT8 => 1,
        dtype::FLOAT | dtype::INT32 => 4,
        dtype::DOUBLE | dtype::INT64 => 8,
        other => {
            return Err(TensorError::DataType {
                name: named(),
                data_type: other,
            })
        }
    };
    let nbytes = numel.checked_mul(width).ok_or_else(overflow)?;
    let raw: Option<&[u8]> = if t.data_location == 1 {
        let get = |k: &str| {
            t.external_data
                .iter()
                .find(|e| e.key == k)
                .map(|e| e.value.as_str())
        };
        let location = get("location").ok_or_else(|| TensorError::NoLocation { name: named() })?;
        let parse = |k: &str| -> Result<Option<usize>, TensorError> {
            get(k)
                .map(|v| {
                    v.parse::<usize>().map_err(|_| TensorError::NotNumber {
                        name: named(),
                        key: k.to_string(),
                        value: v.to_string(),
                    })
                })
                .transpose()
        };
        let offset = parse("offset")?.unwrap_or(0);
        let length = parse("length")?;
        if let Some(l) = length {
            if l != nbytes {
                return Err(TensorError::Length {
                    name: named(),
                    length: l,
                    dims,
                    bytes: nbytes,
                });
            }
        }
        let file = data
            .get(location)
            .map_err(|why| TensorError::External { name: named(), why })?;
        let end = offset.checked_add(nbytes).filter(|&e| e <= file.len());
        let Some(end) = end else {
            return Err(TensorError::BeyondEnd {
                name: named(),
                offset,
                end: offset.saturating_add(nbytes),
                location: location.to_string(),
                len: file.len(),
            });
        };
        Some(&file[offset..end])
    } else if !t.raw_data.is_empty() || numel == 0 {
        if t.raw_data.len() != nbytes {
            return Err(TensorError::RawData {
                name: named(),
                got: t.raw_data.len(),
                dims,
                bytes: nbytes,
            });
        }
        Some(&t.raw_data)
    } else {
        None
    };
    let (values, ints): (Vec<f64>, Vec<i64>) = match raw {
        Some(b) => match t.data_type {
            dtype::FLOAT => (
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                vec![],
            ),
            dtype::DOUBLE => (
                b.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                vec![],
            ),
            dtype::BOOL | dtype::UINT8 => {
                let i: Vec<i64> = b.iter().map(|&v| v as i64).collect();
                (i.iter().map(|&v| v as f64).collect(), i)
            }
            dtype::INT8 => {
                let i: Vec<i64> = b.iter().map(|&v| v as i8 as i64).collect();
                (i.iter().map(|&v| v as f64).collect(), i)
            }
            dtype::INT32 => {
                let i: Vec<i64> = b
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                    .collect();
                (i.iter().map(|&v| v as f64).collect(), i)
            }
            _ => {
                let i: Vec<i64> = b
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                (i.iter().map(|&v| v as f64).collect(), i)
            }
        },
        None => {
            let (v, i): (Vec<f64>, Vec<i64>) = match t.data_type {
                dtype::FLOAT => (t.float_data.iter().map(|&v| v as f64).collect(), vec![]),
                dtype::DOUBLE => (t.double_data.clone(), vec![]),
                dtype::INT32 | dtype::BOOL | dtype::UINT8 | dtype::INT8 => {
                    let i: Vec<i64> = t.int32_data.iter().map(|&v| v as i64).collect();
                    (i.iter().map(|&v| v as f64).collect(), i)
                }
                _ => (
                    t.int64_data.iter().map(|&v| v as f64).collect(),
                    t.int64_data.clone(),
                ),
            };
            if v.len() != numel {
                return Err(TensorError::Values {
                    name: named(),
                    got: v.len(),
                    dims,
                    numel,
                });
            }
            (v, i)
        }
    };
    Ok(Tensor { dims, values, ints })
}
