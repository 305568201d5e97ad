//! Model weights in safetensors files, as `safetensors.torch.save_file(model.state_dict())`
//! writes them, with the architecture as JSON under the metadata key `losscape_arch`.
//!
//! Every tensor of the architecture's [`crate::engine::Layout`] must be present with its
//! exact shape; BN `num_batches_tracked` counters are accepted and ignored on load, and
//! written as 0 on save (PyTorch's `load_state_dict` wants them). F32, F64, F16 and BF16
//! tensors load (converted to f32).

use std::collections::{BTreeMap, HashMap};
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
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let metadata: BTreeMap<String, String> = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let arch = match arch {
        Some(a) => a.clone(),
        None => {
            let json = metadata.get(ARCH_METADATA_KEY).ok_or(ModelError::NoArch {
                path: path.to_path_buf(),
                key: ARCH_METADATA_KEY,
            })?;
            json.parse::<Arch>()?
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
fn f16_to_f32(h: u16) -> f32 {
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

/// Writes `model` with its architecture in the metadata, atomically (temp file + rename).
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
    let mut meta: HashMap<String, String> = model.metadata.clone().into_iter().collect();
    meta.insert(
        ARCH_METADATA_KEY.into(),
        serde_json::to_string(&model.arch).expect("serializable"),
    );
    meta.insert("losscape_version".into(), env!("CARGO_PKG_VERSION").into());
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| err(e.to_string()))?;
    crate::util::write_atomic(path, |f| f.write_all(&bytes)).map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::zoo::Mlp;

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
