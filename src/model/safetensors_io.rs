//! Model weights in safetensors files, as `safetensors.torch.save_file(model.state_dict())`
//! writes them, with the architecture as JSON under the metadata key `losscape_arch`.
//!
//! Every tensor of the architecture's [`crate::engine::Layout`] must be present with its
//! exact shape; BN `num_batches_tracked` counters are accepted and ignored on load, and
//! written as 0 on save (PyTorch's `load_state_dict` wants them). F32, F64, F16 and BF16
//! tensors load, converted to f32 (exactly for F16 and BF16: every half-precision value is
//! an f32), so half-precision checkpoints are used as they are stored.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use sha2::{Digest, Sha256};

use super::zoo::{Arch, ARCH_METADATA_KEY};
use super::{Model, ModelError};
use crate::engine::ParamVec;

const COUNTER_SUFFIX: &str = ".num_batches_tracked";

/// Loads a model; `arch` (from `--arch`) takes precedence over the file's metadata.
pub fn load(path: &Path, arch: Option<&Arch>) -> Result<Model, ModelError> {
    let bytes = std::fs::read(path).map_err(|cause| ModelError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    let corrupt = |why: String| ModelError::Corrupt {
        path: path.to_path_buf(),
        why,
    };
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad_tensor_length(path, &bytes).unwrap_or_else(|| corrupt(e.to_string())))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let metadata: BTreeMap<String, String> = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut inference = None;
    let arch = match (arch, metadata.get(ARCH_METADATA_KEY)) {
        (Some(a), _) => a.clone(),
        (None, Some(json)) => json.parse::<Arch>()?,
        (None, None) => {
            let inf = infer_arch(path, &st, &metadata)?;
            let a = inf.arch.clone();
            inference = Some(inf);
            a
        }
    };
    arch.check().map_err(|why| ModelError::Arch {
        spec: arch.to_string(),
        why,
    })?;
    check_fits(path, &arch, &st)?;
    let graph = arch.build();
    let mut theta = ParamVec::<f32>::zeros(graph.layout.clone());
    let arch_name = arch.to_string();
    for (i, spec) in graph.layout.tensors().iter().enumerate() {
        let t = st
            .tensor(&spec.name)
            .map_err(|_| ModelError::MissingTensor {
                path: path.to_path_buf(),
                name: spec.name.clone(),
                shape: spec.shape.clone(),
                arch: arch_name.clone(),
            })?;
        if t.shape() != spec.shape.as_slice() {
            return Err(ModelError::ShapeMismatch {
                path: path.to_path_buf(),
                name: spec.name.clone(),
                expected: spec.shape.clone(),
                got: t.shape().to_vec(),
                arch: arch_name.clone(),
            });
        }
        let values = to_f32(&t).ok_or_else(|| ModelError::Dtype {
            path: path.to_path_buf(),
            name: spec.name.clone(),
            dtype: format!("{:?}", t.dtype()),
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
            .copy_from_slice(&values);
    }
    for (name, _) in st.tensors() {
        if graph.layout.index_of(&name).is_none() && !name.ends_with(COUNTER_SUFFIX) {
            return Err(ModelError::ExtraTensor {
                path: path.to_path_buf(),
                name,
                arch: arch_name,
            });
        }
    }
    let sha256 = format!("{:x}", Sha256::digest(&bytes));
    Ok(Model {
        arch,
        graph,
        theta,
        path: Some(path.to_path_buf()),
        sha256: Some(sha256),
        metadata,
        inference,
    })
}

/// The architecture of a file without `losscape_arch` metadata (e.g. written by
/// `safetensors.torch.save_file(model.state_dict())`), inferred from its tensors
/// ([`super::infer`]); the file name and the metadata strings are the hints.
fn infer_arch(
    path: &Path,
    st: &SafeTensors<'_>,
    metadata: &BTreeMap<String, String>,
) -> Result<super::infer::Inference, ModelError> {
    let shapes: Vec<(String, Vec<usize>)> = st
        .iter()
        .filter(|(n, _)| !n.ends_with(COUNTER_SUFFIX))
        .map(|(n, t)| (n.to_string(), t.shape().to_vec()))
        .collect();
    let mut hints: Vec<String> = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .into_iter()
        .collect();
    hints.extend(metadata.iter().map(|(k, v)| format!("{k}={v}")));
    super::infer::infer(&shapes, &hints).map_err(|why| match why {
        super::infer::InferError::Unknown { .. } => ModelError::NoArch {
            path: path.to_path_buf(),
            key: ARCH_METADATA_KEY,
        },
        why => ModelError::Infer {
            path: path.to_path_buf(),
            why,
        },
    })
}

/// The first tensor of a readable header whose `data_offsets` span disagrees with
/// `dtype` × `shape` (safetensors itself only says "invalid shape, data type, or offset").
fn bad_tensor_length(path: &Path, bytes: &[u8]) -> Option<ModelError> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    header
        .iter()
        .filter(|(name, _)| name.as_str() != "__metadata__")
        .find_map(|(name, info)| {
            let dtype: Dtype = serde_json::from_value(info.get("dtype")?.clone()).ok()?;
            let shape: Vec<usize> = serde_json::from_value(info.get("shape")?.clone()).ok()?;
            let (begin, end): (u64, u64) =
                serde_json::from_value(info.get("data_offsets")?.clone()).ok()?;
            let elements = shape
                .iter()
                .try_fold(1u64, |n, &d| n.checked_mul(d as u64))?;
            let expected = elements.checked_mul(dtype.bitsize() as u64)?.div_ceil(8);
            let got = end.checked_sub(begin)?;
            (got != expected).then(|| ModelError::TensorLength {
                path: path.to_path_buf(),
                name: name.clone(),
                dtype: format!("{dtype:?}"),
                shape,
                expected,
                got,
            })
        })
}

/// Rejects an architecture that needs far more tensors or values than the file holds, before
/// anything is built (sizes in metadata are untrusted: a width of 4e9 or a depth of 6e8
/// would otherwise allocate or loop for as long as they say). Linear in the tensor count.
fn check_fits(path: &Path, arch: &Arch, st: &SafeTensors<'_>) -> Result<(), ModelError> {
    let Some((needs_tensors, needs_scalars)) = arch.min_size() else {
        return Ok(());
    };
    let has_tensors = st.len() as u128;
    let has_scalars: u128 = st
        .iter()
        .map(|(_, t)| {
            t.shape()
                .iter()
                .fold(1u128, |a, &d| a.saturating_mul(d as u128))
        })
        .fold(0u128, u128::saturating_add);
    // Slack lets a near miss (another width or depth) reach the per-tensor checks, whose
    // errors name the tensor; building costs at most twice the file's values plus this.
    const SLACK: u128 = 1 << 16;
    if needs_tensors > has_tensors.saturating_mul(2) + SLACK
        || needs_scalars > has_scalars.saturating_mul(2) + SLACK
    {
        let narrow = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
        return Err(ModelError::ArchExceedsFile {
            path: path.to_path_buf(),
            arch: arch.to_string(),
            needs_tensors: narrow(needs_tensors),
            needs_scalars: narrow(needs_scalars),
            has_tensors: narrow(has_tensors),
            has_scalars: narrow(has_scalars),
        });
    }
    Ok(())
}

/// Little-endian tensor bytes as f32, or `None` for a dtype that cannot hold weights.
fn to_f32(t: &TensorView<'_>) -> Option<Vec<f32>> {
    let d = t.data();
    Some(match t.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F64 => d
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        _ => return None,
    })
}

/// IEEE 754 half → single precision.
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // subnormal: normalize
            let mut e = 127 - 15 + 1;
            let mut f = f;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// Serializes tensors and metadata to safetensors bytes that depend only on their contents:
/// `safetensors::serialize` takes the metadata as a `HashMap` and writes it in the map's
/// (random) iteration order, so the same weights would get different bytes and SHA-256s
/// from run to run. The header is rewritten with every JSON object's keys sorted (padded
/// with spaces to 8 bytes as the format asks); tensor data and offsets are unchanged.
pub fn serialize_canonical<'a>(
    views: Vec<(String, TensorView<'a>)>,
    metadata: BTreeMap<String, String>,
) -> Result<Vec<u8>, safetensors::SafeTensorError> {
    let bytes = safetensors::serialize(views, Some(metadata.into_iter().collect()))?;
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).expect("safetensors writes a JSON object");
    let sorted: BTreeMap<&String, BTreeMap<String, serde_json::Value>> = header
        .iter()
        .map(|(k, v)| {
            let obj = v
                .as_object()
                .expect("header entries are objects")
                .iter()
                .map(|(a, b)| (a.clone(), b.clone()))
                .collect();
            (k, obj)
        })
        .collect();
    let mut json = serde_json::to_vec(&sorted).expect("serializable");
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}

/// Writes `model` with its architecture in the metadata, atomically (temp file + rename);
/// the same model always gives the same bytes ([`serialize_canonical`]).
pub fn save(model: &Model, path: &Path) -> Result<(), ModelError> {
    let err = |why: String| ModelError::Write {
        path: path.to_path_buf(),
        why,
    };
    let layout = &model.graph.layout;
    let mut buffers: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = Vec::new();
    for (i, spec) in layout.tensors().iter().enumerate() {
        let bytes: Vec<u8> = model
            .theta
            .tensor(i)
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        buffers.push((spec.name.clone(), spec.shape.clone(), Dtype::F32, bytes));
        if spec.name.ends_with(".running_var") {
            let base = spec.name.trim_end_matches(".running_var");
            buffers.push((
                format!("{base}{COUNTER_SUFFIX}"),
                vec![],
                Dtype::I64,
                0i64.to_le_bytes().to_vec(),
            ));
        }
    }
    let views: Vec<(String, TensorView<'_>)> = buffers
        .iter()
        .map(|(n, s, d, b)| {
            (
                n.clone(),
                TensorView::new(*d, s.clone(), b).expect("sizes agree"),
            )
        })
        .collect();
    let mut meta: BTreeMap<String, String> = model.metadata.clone();
    meta.insert(
        ARCH_METADATA_KEY.into(),
        serde_json::to_string(&model.arch).expect("serializable"),
    );
    meta.insert("losscape_version".into(), env!("CARGO_PKG_VERSION").into());
    let bytes = serialize_canonical(views, meta).map_err(|e| err(e.to_string()))?;
    crate::io::output::write_atomic(path, |f| f.write_all(&bytes)).map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::zoo::Mlp;
    use std::collections::HashMap;

    /// Architecture sizes from metadata (width 4e9, 2^32 classes, depth 6e8) are checked
    /// against the tensors present before anything is built: an error at once, no
    /// allocation, no loop over the depth. See: issue #19.
    #[test]
    fn oversized_architectures_are_rejected_before_building() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let data = vec![0u8; 16];
        for arch in [
            r#"{"kind":"mlp","in_features":4,"depth":1,"width":4000000000}"#,
            r#"{"kind":"mlp","in_features":4,"depth":1,"width":4,"num_classes":4294967296}"#,
            r#"{"kind":"mlp","in_features":4,"depth":600000000,"width":1}"#,
            r#"{"kind":"resnet-cifar","depth":3600000002,"width":1}"#,
            r#"{"kind":"resnet-cifar","depth":8,"width":4000000000}"#,
        ] {
            let view = TensorView::new(Dtype::F32, vec![4], &data).unwrap();
            let meta = HashMap::from([(ARCH_METADATA_KEY.to_string(), arch.to_string())]);
            let bytes = safetensors::serialize([("fc_in.weight", view)], Some(meta)).unwrap();
            std::fs::write(&path, bytes).unwrap();
            let t = std::time::Instant::now();
            let e = load(&path, None).unwrap_err();
            assert!(
                matches!(e, ModelError::ArchExceedsFile { .. }),
                "{arch}: {e}"
            );
            assert!(e.to_string().contains("needs at least"), "{e}");
            assert!(
                t.elapsed().as_secs_f64() < 1.0,
                "{arch}: took {:?}",
                t.elapsed()
            );
        }
    }

    #[test]
    fn f16_conversion() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7c00).is_infinite());
    }

    /// f16 bits → value by the IEEE 754 formula in f64: (−1)^s 2^(e−15) (1 + f/1024), or
    /// (−1)^s 2^−14 f/1024 for e = 0.
    fn f16_reference(h: u16) -> f64 {
        let sign = if h >> 15 == 1 { -1.0 } else { 1.0 };
        let (e, f) = (((h >> 10) & 0x1f) as i32, (h & 0x3ff) as f64);
        match e {
            0 => sign * 2f64.powi(-14) * f / 1024.0,
            e => sign * 2f64.powi(e - 15) * (1.0 + f / 1024.0),
        }
    }

    /// bf16 bits → value: (−1)^s 2^(e−127) (1 + f/128), or (−1)^s 2^−126 f/128 for e = 0.
    fn bf16_reference(h: u16) -> f64 {
        let sign = if h >> 15 == 1 { -1.0 } else { 1.0 };
        let (e, f) = (((h >> 7) & 0xff) as i32, (h & 0x7f) as f64);
        match e {
            0 => sign * 2f64.powi(-126) * f / 128.0,
            e => sign * 2f64.powi(e - 127) * (1.0 + f / 128.0),
        }
    }

    #[test]
    fn every_finite_f16_converts_exactly() {
        for h in 0..=u16::MAX {
            if (h >> 10) & 0x1f == 0x1f {
                let v = f16_to_f32(h);
                assert!(if h & 0x3ff == 0 {
                    v.is_infinite()
                } else {
                    v.is_nan()
                });
                continue;
            }
            let want = f16_reference(h);
            assert_eq!(f16_to_f32(h) as f64, want, "{h:#06x}");
            assert_eq!(f16_to_f32(h).is_sign_negative(), h >> 15 == 1, "{h:#06x}");
        }
    }

    /// A model stored in `dtype` (F16 or BF16) from raw 16-bit patterns `bits(i)`.
    fn half_file(path: &Path, arch: &Arch, dtype: Dtype, bits: impl Fn(usize) -> u16) -> Vec<f32> {
        let layout = arch.build().layout;
        let mut buffers = Vec::new();
        let mut values = Vec::new();
        let mut k = 0;
        for spec in layout.tensors() {
            let n: usize = spec.shape.iter().product();
            let mut bytes = Vec::with_capacity(2 * n);
            for _ in 0..n {
                let b = bits(k);
                k += 1;
                bytes.extend_from_slice(&b.to_le_bytes());
                values.push(match dtype {
                    Dtype::F16 => f16_reference(b),
                    _ => bf16_reference(b),
                } as f32);
            }
            buffers.push((spec.name.clone(), spec.shape.clone(), bytes));
        }
        let views: Vec<(String, TensorView<'_>)> = buffers
            .iter()
            .map(|(n, s, b)| (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap()))
            .collect();
        let meta = HashMap::from([(
            ARCH_METADATA_KEY.to_string(),
            serde_json::to_string(arch).unwrap(),
        )]);
        std::fs::write(path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
        values
    }

    #[test]
    fn half_precision_checkpoints_load_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let arch: Arch =
            "mlp:in_features=5,depth=2,width=4,residual=true,batchnorm=true,num_classes=3"
                .parse()
                .unwrap();
        // finite patterns spread over all exponents (normal and subnormal), both signs;
        // running variances stay positive because every value is allowed here
        let f16_bits = |k: usize| {
            let h = (k as u32).wrapping_mul(40503) as u16;
            if k % 7 == 3 {
                h & 0x83ff // subnormal (or zero)
            } else if (h >> 10) & 0x1f == 0x1f {
                h & !0x4000
            } else {
                h
            }
        };
        let p = dir.path().join("f16.safetensors");
        let want = half_file(&p, &arch, Dtype::F16, f16_bits);
        let m = Model::load(&p, None).unwrap();
        assert_eq!(m.theta.data.as_slice().unwrap(), want.as_slice());
        assert!(
            want.iter().any(|v| v.abs() < 6.1e-5 && *v != 0.0),
            "a subnormal"
        );
        let bf16_bits = |k: usize| {
            let h = (k as u32).wrapping_mul(40503) as u16;
            if k % 7 == 3 {
                h & 0x807f // subnormal (or zero)
            } else if (h >> 7) & 0xff == 0xff {
                h & !0x4000
            } else {
                h
            }
        };
        let p = dir.path().join("bf16.safetensors");
        let want = half_file(&p, &arch, Dtype::BF16, bf16_bits);
        let m = Model::load(&p, None).unwrap();
        assert_eq!(m.theta.data.as_slice().unwrap(), want.as_slice());
    }

    #[test]
    fn malformed_half_length_names_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        // 3 elements of F16 need 6 bytes; the header claims 12 (F32-sized data labelled F16)
        let header = r#"{"fc_in.weight":{"dtype":"F16","shape":[3],"data_offsets":[0,12]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[0u8; 12]);
        let p = dir.path().join("bad.safetensors");
        std::fs::write(&p, &bytes).unwrap();
        let e = Model::load(&p, None).unwrap_err();
        assert!(
            matches!(&e, ModelError::TensorLength { name, expected: 6, got: 12, .. } if name == "fc_in.weight"),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("bad.safetensors") && msg.contains("F16") && msg.contains("[3]"),
            "{msg}"
        );
    }

    #[test]
    fn the_same_model_always_gives_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let arch = Arch::Mlp(Mlp {
            in_features: 5,
            depth: 2,
            width: 4,
            residual: true,
            batchnorm: true,
            num_classes: 3,
        });
        let mut m = Model::init(arch, 3, false);
        for k in 0..12 {
            m.metadata.insert(format!("key{k}"), format!("value {k}"));
        }
        // a HashMap's order changes from map to map even in one process: many saves would
        // differ somewhere without the canonical header
        let first = dir.path().join("a.safetensors");
        m.save(&first).unwrap();
        let bytes = std::fs::read(&first).unwrap();
        for i in 0..8 {
            let p = dir.path().join(format!("b{i}.safetensors"));
            m.save(&p).unwrap();
            assert_eq!(std::fs::read(&p).unwrap(), bytes, "save {i} differs");
        }
        // a valid file: 8-byte aligned header, keys sorted, metadata and weights intact
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
        let k3 = header.find("\"key3\"").unwrap();
        let k11 = header.find("\"key11\"").unwrap();
        assert!(k11 < k3, "metadata keys sorted: {header}");
        let back = Model::load(&first, None).unwrap();
        assert_eq!(back.theta.data, m.theta.data);
        assert_eq!(
            back.metadata.get("key7").map(String::as_str),
            Some("value 7")
        );
    }

    #[test]
    fn save_load_roundtrip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let arch = Arch::Mlp(Mlp {
            in_features: 5,
            depth: 1,
            width: 4,
            residual: true,
            batchnorm: true,
            num_classes: 3,
        });
        let m = Model::init(arch.clone(), 3, false);
        let p = dir.path().join("m.safetensors");
        m.save(&p).unwrap();
        let back = Model::load(&p, None).unwrap();
        assert_eq!(back.arch, arch);
        assert_eq!(back.theta.data, m.theta.data);
        // truncated
        let bytes = std::fs::read(&p).unwrap();
        let t = dir.path().join("t.safetensors");
        std::fs::write(&t, &bytes[..bytes.len() - 7]).unwrap();
        assert!(matches!(
            Model::load(&t, None),
            Err(ModelError::Corrupt { .. })
        ));
        // wrong architecture: shape mismatch names the tensor
        let other: Arch =
            "mlp:in_features=6,depth=1,width=4,residual=true,batchnorm=true,num_classes=3"
                .parse()
                .unwrap();
        let e = Model::load(&p, Some(&other)).unwrap_err().to_string();
        assert!(e.contains("fc_in.weight") && e.contains("[4, 6]"), "{e}");
        // missing tensor
        let other: Arch =
            "mlp:in_features=5,depth=2,width=4,residual=true,batchnorm=true,num_classes=3"
                .parse()
                .unwrap();
        assert!(matches!(
            Model::load(&p, Some(&other)),
            Err(ModelError::MissingTensor { .. })
        ));
        // extra tensor
        let other: Arch =
            "mlp:in_features=5,depth=1,width=4,residual=true,batchnorm=false,num_classes=3"
                .parse()
                .unwrap();
        assert!(matches!(
            Model::load(&p, Some(&other)),
            Err(ModelError::ExtraTensor { .. })
        ));
        // NaN weights
        let mut bad = m.clone();
        bad.theta.data[2] = f32::NAN;
        let n = dir.path().join("nan.safetensors");
        bad.save(&n).unwrap();
        let e = Model::load(&n, None).unwrap_err().to_string();
        assert!(e.contains("fc_in.weight") && e.contains("NaN"), "{e}");
    }
}
