//! Models: the zoo of architectures and their weights on disk.

pub mod error;
pub mod infer;
pub mod info;
pub mod onnx;
pub mod safetensors_io;
pub mod torch_pickle;
pub mod zoo;

use std::path::{Path, PathBuf};

pub use error::{ArchError, ExternalDataError, ModelError, OnnxError, OnnxNodeError, TensorError};
pub use zoo::{Arch, Mlp, ResnetCifar, Shortcut, Vit, VitInput, VitNorm, VitPool};

use crate::engine::{Graph, ParamVec};

/// A network ready to evaluate: its architecture, graph and weights (f32, as trained).
#[derive(Clone, Debug)]
pub struct Model {
    pub arch: Arch,
    pub graph: Graph,
    pub theta: ParamVec<f32>,
    /// The file it was loaded from, if any.
    pub path: Option<PathBuf>,
    /// SHA-256 of the file's bytes (hex), if loaded from a file.
    pub sha256: Option<String>,
    /// Metadata found in the file (training accuracies, torch version, …).
    pub metadata: std::collections::BTreeMap<String, String>,
    /// How the architecture was inferred from the tensors, when the file did not say.
    pub inference: Option<infer::Inference>,
}

impl Model {
    /// For a model whose parameters are not the trained network's own (an ONNX export
    /// with BatchNorm folded into its convolutions): what changed and how to export
    /// instead. Jobs that act on the parameters (surface, hessian, sharpness) warn with it.
    pub fn parameterization_warning(&self) -> Option<String> {
        match &self.arch {
            Arch::Onnx(o) if o.bn_folded => o.notes.first().cloned(),
            _ => None,
        }
    }

    /// A freshly initialized model (PyTorch default init, or He init with `he`).
    pub fn init(arch: Arch, seed: u64, he: bool) -> Self {
        let graph = arch.build();
        let theta = zoo::init_params(&graph.layout, seed, he);
        Self {
            arch,
            graph,
            theta,
            path: None,
            sha256: None,
            metadata: Default::default(),
            inference: None,
        }
    }

    /// The same network re-initialized (PyTorch default init, or He init with `he`): works
    /// for imported ONNX networks too, from their layout alone.
    pub fn fresh(&self, seed: u64, he: bool) -> Self {
        Self {
            arch: self.arch.clone(),
            graph: self.graph.clone(),
            theta: zoo::init_params(&self.graph.layout, seed, he),
            path: None,
            sha256: None,
            metadata: Default::default(),
            inference: None,
        }
    }

    /// Loads a model file (`.safetensors`, `.onnx`, or a `torch.save` checkpoint `.pt`,
    /// `.pth`, `.t7`, `.tar`, `.ckpt`); `arch` overrides the architecture stored in (or
    /// inferred from) it.
    pub fn load(path: &Path, arch: Option<&Arch>) -> Result<Self, ModelError> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => safetensors_io::load(path, arch),
            Some("onnx") => onnx::load(path, arch),
            Some("pt" | "pth" | "t7" | "tar" | "ckpt") => torch_pickle::load(path, arch),
            _ => Err(ModelError::Format {
                path: path.to_path_buf(),
            }),
        }
    }

    /// Fits the input size to the data's per-sample shape `[C, H, H]` when the architecture
    /// was inferred from a checkpoint (whose weights do not fix it) and the channels agree;
    /// otherwise leaves the model as it is (a mismatch is then reported by the objective).
    pub fn fit_input(&mut self, sample: &[usize]) {
        let free = self.inference.as_ref().is_some_and(|i| i.input_from_data);
        if let (true, Arch::ResnetCifar(r), &[c, h, w]) = (free, &mut self.arch, sample) {
            if c == r.in_channels && h == w && h >= 4 && h != r.input_size {
                r.input_size = h;
                let options = self.graph.options;
                let layout = self.graph.layout.clone();
                self.graph = self.arch.build().with_options(options);
                self.graph.layout = layout;
                if let Some(i) = &mut self.inference {
                    i.arch = self.arch.clone();
                }
            }
        }
    }

    /// Why the network takes no other input shape than its own, when its weights fix it
    /// (a ViT's `pos_embed` holds one embedding per token): appended to a shape mismatch.
    pub fn input_note(&self) -> Option<String> {
        let Arch::Vit(v) = &self.arch else {
            return None;
        };
        let side = match v.input {
            VitInput::Image => format!(
                "{0}×{0} patches of {1}×{1}",
                v.input_size / v.patch,
                v.patch
            ),
            VitInput::Seq => format!("{} runs of {} values", v.patches(), v.patch),
        };
        Some(format!(
            "; a ViT's pos_embed fixes its input: {} tokens = {side}{}",
            v.tokens(),
            if v.pool == VitPool::Cls {
                " + the class token"
            } else {
                ""
            }
        ))
    }

    /// Writes weights and architecture to a safetensors file (atomically: temp + rename).
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        safetensors_io::save(self, path)
    }
}
