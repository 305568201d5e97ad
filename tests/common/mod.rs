//! Helpers shared by the integration tests that read PyTorch reference files.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

/// Tensor name → (shape, values widened to f64).
pub type Tensors = HashMap<String, (Vec<usize>, Vec<f64>)>;

/// Every tensor of a safetensors file's bytes (f64, f32 or i64) as f64; `path` names the
/// file in panics.
pub fn decode_f64(bytes: &[u8], path: &Path) -> Tensors {
    let st = SafeTensors::deserialize(bytes)
        .unwrap_or_else(|e| panic!("{}: not safetensors: {e}", path.display()));
    let mut tensors = HashMap::new();
    for (name, t) in st.tensors() {
        let d = t.data();
        let v: Vec<f64> = match t.dtype() {
            Dtype::F64 => d
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            Dtype::F32 => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            Dtype::I64 => d
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            other => panic!("{}: unexpected dtype {other:?} for {name}", path.display()),
        };
        tensors.insert(name, (t.shape().to_vec(), v));
    }
    tensors
}
