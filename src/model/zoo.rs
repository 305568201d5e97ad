//! The model zoo: CIFAR-style ResNets with and without shortcuts, and MLPs, with the
//! PyTorch `state_dict` names and parameter order of the reference implementations.
//!
//! ## resnet-cifar
//! He et al. 2016, "Deep residual learning for image recognition" (CVPR), §4.2: depth
//! 6n+2 (8, 14, 20, 32, 44, 56, 110), stages of n basic blocks with widths w, 2w, 4w
//! (w = 16), stride 2 at the start of stages 2 and 3, global average pooling, `linear`.
//! Names and structure follow loss-landscape's `ResNet_cifar` (Li et al. 2018,
//! arXiv:1712.09913): `conv1, bn1, layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}`, and where the
//! shape changes a projection shortcut `shortcut.0` (1×1 conv) + `shortcut.1` (BN).
//! `shortcut = none` is Li et al.'s "noshort" plain twin: the same network, no shortcuts.
//! `shortcut = option-a` is He et al.'s parameter-free option A: where the shape changes,
//! the input subsampled `x[:, :, ::2, ::2]` and zero-padded with `planes/4` channels on
//! each side, exactly as the `LambdaLayer` of akamaster's pytorch_resnet_cifar10.
//!
//! ## mlp
//! `fc_in` → ReLU → `depth` blocks (`blocks.{i}.fc`, optional `blocks.{i}.bn`; a residual
//! block computes relu(h + bn(fc(h))), a plain one relu(bn(fc(h)))) → `fc_out`.
//!
//! ## vit
//! A vision transformer (Dosovitskiy et al. 2021, arXiv:2010.11929) with timm's
//! `VisionTransformer` names and `parameters()` order: `cls_token [1, 1, D]` (with
//! `pool = cls`), `pos_embed [1, T, D]`, `patch_embed.proj` (a Conv2d with kernel = stride =
//! `patch`; for `input = seq` a Linear on `patch` consecutive values of a 1-D input),
//! `blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}`, then `norm` (pre-LN
//! only) and `head`. Attention is timm's: `qkv` packs q, k, v (each `heads × D/heads`),
//! weights softmax((q/√(D/heads)) kᵀ), exact-erf GELU in the MLP (hidden `mlp_ratio·D`),
//! LayerNorm ε = 1e-5 (PyTorch's default). A block is
//! ```text
//! pre-LN  (norm = pre):   x ← x + attn(norm1(x));   x ← x + mlp(norm2(x))   … final norm(x)
//! post-LN (norm = post):  x ← norm1(x + attn(x));   x ← norm2(x + mlp(x))   (Vaswani et al. 2017)
//! ```
//! and `residual = false` drops both `x +` skips of every block. The head reads the class
//! token (`pool = cls`) or the token mean (`pool = mean`, no class token). Each block's
//! output is a probe tap named `blocks.{i}` (the embedded tokens: `embed`).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::engine::ops::{
    BatchNorm, BinaryKind, Concat, Constant, Conv2d, Expand, Gather, LayerNorm, Linear, Pad, Param,
    PointwiseFn, Reduce, ReduceKind, Reshape, SliceAxis, Softmax, Transpose,
};
use crate::engine::{Graph, Layout, Loss, Op, ParamVec, Role, Scalar};

use super::error::{ArchError, ModelError};

mod vit;
use vit::build_vit;
pub use vit::{Vit, VitInput, VitNorm, VitPool, LN_EPS};

/// Shortcut of a residual block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shortcut {
    /// Identity, or a 1×1 conv + BN projection where the shape changes (loss-landscape's ResNet_cifar).
    Projection,
    /// No shortcut at all: the plain ("noshort") network.
    None,
    /// He et al.'s option A, parameter-free: identity, or where the shape changes
    /// `x[:, :, ::2, ::2]` zero-padded by `planes/4` channels on each side (the `LambdaLayer`
    /// of akamaster's pytorch_resnet_cifar10, used by many CIFAR ResNet checkpoints).
    #[serde(rename = "option-a")]
    OptionA,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResnetCifar {
    pub depth: usize,
    #[serde(default = "default_width")]
    pub width: usize,
    #[serde(default = "default_shortcut")]
    pub shortcut: Shortcut,
    #[serde(default = "default_in_channels")]
    pub in_channels: usize,
    #[serde(default = "default_input_size")]
    pub input_size: usize,
    #[serde(default = "default_classes")]
    pub num_classes: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mlp {
    pub in_features: usize,
    pub depth: usize,
    pub width: usize,
    #[serde(default)]
    pub residual: bool,
    #[serde(default)]
    pub batchnorm: bool,
    #[serde(default = "default_classes")]
    pub num_classes: usize,
}

fn default_width() -> usize {
    16
}
fn default_shortcut() -> Shortcut {
    Shortcut::Projection
}
fn default_in_channels() -> usize {
    3
}
fn default_input_size() -> usize {
    32
}
fn default_classes() -> usize {
    10
}

/// An architecture of the zoo; stored as JSON in a safetensors file's metadata
/// (key [`ARCH_METADATA_KEY`]), e.g. `{"kind":"resnet-cifar","depth":20,...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Arch {
    ResnetCifar(ResnetCifar),
    Mlp(Mlp),
    Vit(Vit),
    /// A network imported from an ONNX file: its graph lives in the file, not here, so it
    /// cannot be built from this description (see [`super::onnx`]).
    Onnx(super::onnx::OnnxArch),
}

/// The largest ResNet input side: the weights fit any size (global average pooling), but
/// one 16-channel activation of a larger image already takes gigabytes.
pub const MAX_INPUT_SIZE: usize = 1 << 14;

/// Metadata key of the architecture JSON in safetensors files.
pub const ARCH_METADATA_KEY: &str = "losscape_arch";

/// PyTorch's `BatchNorm` default ε.
pub const BN_EPS: f64 = 1e-5;

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arch::ResnetCifar(r) => write!(
                f,
                "resnet-cifar-{}{} (width {}, {}×{}×{} input, {} classes)",
                r.depth,
                match r.shortcut {
                    Shortcut::None => "-noshort",
                    Shortcut::OptionA => "-optionA",
                    Shortcut::Projection => "",
                },
                r.width,
                r.in_channels,
                r.input_size,
                r.input_size,
                r.num_classes
            ),
            Arch::Mlp(m) => write!(
                f,
                "mlp-{}x{}{}{} ({} inputs, {} classes)",
                m.depth,
                m.width,
                if m.residual { "-res" } else { "-plain" },
                if m.batchnorm { "-bn" } else { "" },
                m.in_features,
                m.num_classes
            ),
            Arch::Vit(v) => write!(
                f,
                "vit-{}x{}-{}{}{} ({} heads, mlp ×{}, {} of {} ({}), {} tokens, {} classes)",
                v.depth,
                v.width,
                if v.norm == VitNorm::Pre {
                    "preln"
                } else {
                    "postln"
                },
                if v.residual { "" } else { "-nores" },
                if v.pool == VitPool::Mean {
                    "-meanpool"
                } else {
                    ""
                },
                v.heads,
                v.mlp_ratio,
                match v.input {
                    VitInput::Image => format!("{0}×{0} patches", v.patch),
                    VitInput::Seq => format!("{}-value tokens", v.patch),
                },
                match v.input {
                    VitInput::Image =>
                        format!("{}×{}×{}", v.in_channels, v.input_size, v.input_size),
                    VitInput::Seq => format!("[{}]", v.input_size),
                },
                match v.input {
                    VitInput::Image => "image",
                    VitInput::Seq => "seq",
                },
                v.tokens(),
                v.num_classes
            ),
            Arch::Onnx(o) => write!(
                f,
                "onnx {} ({}, {} conv/linear layers{}{}, input {:?}, {} classes)",
                o.file,
                if o.producer.is_empty() {
                    "unknown exporter"
                } else {
                    &o.producer
                },
                o.depth,
                if o.residual { ", residual" } else { "" },
                if o.bn_folded {
                    ", BN folded into conv"
                } else {
                    ""
                },
                o.input_shape,
                o.num_classes
            ),
        }
    }
}

impl FromStr for Arch {
    type Err = ModelError;

    /// Parses `--arch`: JSON (as stored in files) or `NAME:key=value,...`, e.g.
    /// `resnet-cifar:depth=20,shortcut=none,in_channels=1,input_size=8` or
    /// `mlp:in_features=40,depth=4,width=64,residual=true` or
    /// `vit:input_size=8,patch=2,depth=2,width=32,heads=4,norm=post,residual=false`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad = |why: ArchError| ModelError::Arch {
            spec: s.to_string(),
            why,
        };
        let json = if s.starts_with('{') {
            s.to_string()
        } else {
            let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
            let mut obj = serde_json::Map::new();
            obj.insert("kind".into(), kind.trim().into());
            for kv in rest.split(',').filter(|kv| !kv.trim().is_empty()) {
                let (k, v) = kv.split_once('=').ok_or_else(|| {
                    bad(ArchError::KeyValue {
                        item: kv.to_string(),
                    })
                })?;
                let v = v.trim();
                let value = if let Ok(n) = v.parse::<u64>() {
                    n.into()
                } else if let Ok(b) = v.parse::<bool>() {
                    b.into()
                } else {
                    v.into()
                };
                obj.insert(k.trim().replace('-', "_"), value);
            }
            serde_json::Value::Object(obj).to_string()
        };
        let arch: Arch = serde_json::from_str(&json)
            .map_err(|e| bad(ArchError::Parse { why: e.to_string() }))?;
        arch.check().map_err(bad)?;
        Ok(arch)
    }
}

impl Arch {
    /// Rejects impossible hyper-parameters with a reason.
    pub fn check(&self) -> Result<(), ArchError> {
        match self {
            Arch::ResnetCifar(r) => {
                if r.depth < 8 || (r.depth - 2) % 6 != 0 {
                    return Err(ArchError::ResnetDepth { depth: r.depth });
                }
                if r.width == 0 || r.in_channels == 0 || r.num_classes == 0 {
                    return Err(ArchError::ResnetZero);
                }
                if r.shortcut == Shortcut::OptionA && !r.width.is_multiple_of(2) {
                    return Err(ArchError::OptionAWidth { width: r.width });
                }
                if r.input_size < 4 || r.input_size > MAX_INPUT_SIZE {
                    return Err(ArchError::ResnetInputSize {
                        input_size: r.input_size,
                    });
                }
            }
            Arch::Mlp(m) => {
                if m.in_features == 0 || m.width == 0 || m.num_classes == 0 {
                    return Err(ArchError::MlpZero);
                }
            }
            Arch::Vit(v) => {
                let zero = [
                    ("input_size", v.input_size),
                    ("patch", v.patch),
                    ("depth", v.depth),
                    ("width", v.width),
                    ("heads", v.heads),
                    ("mlp_ratio", v.mlp_ratio),
                    ("in_channels", v.in_channels),
                    ("num_classes", v.num_classes),
                ];
                if let Some((field, _)) = zero.iter().find(|(_, n)| *n == 0) {
                    return Err(ArchError::VitZero { field });
                }
                if v.input_size % v.patch != 0 {
                    return Err(ArchError::VitPatch {
                        input_size: v.input_size,
                        patch: v.patch,
                    });
                }
                if v.width % v.heads != 0 {
                    return Err(ArchError::VitHeads {
                        width: v.width,
                        heads: v.heads,
                    });
                }
                if v.input == VitInput::Seq && v.in_channels != 1 {
                    return Err(ArchError::VitSeqChannels {
                        in_channels: v.in_channels,
                    });
                }
            }
            Arch::Onnx(_) => return Err(ArchError::Onnx),
        }
        Ok(())
    }

    /// Lower bounds on the number of tensors and of values (scalars, running statistics
    /// included) the architecture's layout holds, in O(1) and saturating: a file that holds
    /// fewer cannot be this architecture, and the bound is checked before [`Arch::build`],
    /// whose cost grows with the sizes (`None` for ONNX networks, which are not built).
    pub fn min_size(&self) -> Option<(u128, u128)> {
        let u = |v: usize| v as u128;
        let mul = |a: u128, b: u128| a.saturating_mul(b);
        let add = |a: u128, b: u128| a.saturating_add(b);
        Some(match self {
            Arch::ResnetCifar(r) => {
                let n = u(r.depth.saturating_sub(2) / 6);
                let w = u(r.width);
                // stem conv + BN (4 tensors); per block two convs and two BNs; the linear layer
                let tensors = add(5 + 2, mul(n, 3 * 10));
                // stem conv 9·in·w, per block at least the second 3×3 conv of ≥ w channels,
                // the linear layer 4w·classes + classes
                let scalars = add(
                    add(
                        mul(9, mul(u(r.in_channels), w)),
                        mul(mul(3, n), mul(9, mul(w, w))),
                    ),
                    add(mul(mul(4, w), u(r.num_classes)), u(r.num_classes)),
                );
                (tensors, scalars)
            }
            Arch::Mlp(m) => {
                let (d, w) = (u(m.depth), u(m.width));
                let bn = u(usize::from(m.batchnorm));
                let tensors = add(4, mul(d, 2 + 4 * bn));
                let scalars = add(
                    add(mul(u(m.in_features), w), w),
                    add(
                        mul(d, add(mul(w, w), mul(w, 1 + 4 * bn))),
                        add(mul(w, u(m.num_classes)), u(m.num_classes)),
                    ),
                );
                (tensors, scalars)
            }
            Arch::Vit(v) => {
                let (d, w) = (u(v.depth), u(v.width));
                // per block: norm1, qkv, proj, norm2, fc1, fc2 (weight and bias each); the
                // position embedding, the patch embedding and the head
                let tensors = add(5, mul(d, 12));
                // per block at least qkv 3w² + proj w² + fc1 and fc2 2·ratio·w²; the head
                let per_block = mul(add(4, mul(2, u(v.mlp_ratio))), mul(w, w));
                let scalars = add(
                    mul(d, per_block),
                    add(mul(w, u(v.num_classes)), u(v.num_classes)),
                );
                (tensors, scalars)
            }
            Arch::Onnx(_) => return None,
        })
    }

    pub fn num_classes(&self) -> usize {
        match self {
            Arch::ResnetCifar(r) => r.num_classes,
            Arch::Mlp(m) => m.num_classes,
            Arch::Vit(v) => v.num_classes,
            Arch::Onnx(o) => o.num_classes,
        }
    }

    /// Per-sample input shape in PyTorch order.
    pub fn input_shape(&self) -> Vec<usize> {
        match self {
            Arch::ResnetCifar(r) => vec![r.in_channels, r.input_size, r.input_size],
            Arch::Mlp(m) => vec![m.in_features],
            Arch::Vit(v) => match v.input {
                VitInput::Image => vec![v.in_channels, v.input_size, v.input_size],
                VitInput::Seq => vec![v.input_size],
            },
            Arch::Onnx(o) => o.input_shape.clone(),
        }
    }

    /// Whether the network has residual connections.
    pub fn is_residual(&self) -> bool {
        match self {
            Arch::ResnetCifar(r) => r.shortcut != Shortcut::None,
            Arch::Mlp(m) => m.residual,
            Arch::Vit(v) => v.residual,
            Arch::Onnx(o) => o.residual,
        }
    }

    /// Builds the graph (with cross-entropy loss).
    ///
    /// # Panics
    /// For [`Arch::Onnx`], whose graph only its file holds; [`Arch::check`] rejects it, so
    /// parsed or loaded architectures never reach here.
    pub fn build(&self) -> Graph {
        let mut b = Builder::new(self.input_shape(), self.num_classes());
        let x = 0;
        match self {
            Arch::ResnetCifar(r) => {
                let n = (r.depth - 2) / 6;
                let w = r.width;
                let mut h = b.conv("conv1", x, r.in_channels, w, 3, 1, 1);
                h = b.bn("bn1", h, w);
                h = b.relu_named("stem", h);
                let mut in_planes = w;
                // spatial size of the block input (internal layout [C, N, H, W])
                let mut size = r.input_size;
                for (stage, planes) in [w, 2 * w, 4 * w].into_iter().enumerate() {
                    for i in 0..n {
                        let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                        let p = format!("layer{}.{}", stage + 1, i);
                        let mut o =
                            b.conv(&format!("{p}.conv1"), h, in_planes, planes, 3, stride, 1);
                        o = b.bn(&format!("{p}.bn1"), o, planes);
                        o = b.relu(o);
                        o = b.conv(&format!("{p}.conv2"), o, planes, planes, 3, 1, 1);
                        o = b.bn(&format!("{p}.bn2"), o, planes);
                        let reshape = stride != 1 || in_planes != planes;
                        match r.shortcut {
                            Shortcut::Projection => {
                                let s = if reshape {
                                    let s = b.conv(
                                        &format!("{p}.shortcut.0"),
                                        h,
                                        in_planes,
                                        planes,
                                        1,
                                        stride,
                                        0,
                                    );
                                    b.bn(&format!("{p}.shortcut.1"), s, planes)
                                } else {
                                    h
                                };
                                o = b.add(o, s);
                            }
                            Shortcut::OptionA => {
                                let s = if reshape {
                                    b.option_a(h, size, stride, in_planes, planes)
                                } else {
                                    h
                                };
                                o = b.add(o, s);
                            }
                            Shortcut::None => {}
                        }
                        h = b.relu_named(&p, o);
                        in_planes = planes;
                        size = size.div_ceil(stride);
                    }
                }
                h = b.g.push("", Op::GlobalAvgPool, &[h], &[]);
                b.linear("linear", h, 4 * w, r.num_classes);
            }
            Arch::Mlp(m) => {
                let mut h = b.linear("fc_in", x, m.in_features, m.width);
                h = b.relu_named("stem", h);
                for i in 0..m.depth {
                    let mut o = b.linear(&format!("blocks.{i}.fc"), h, m.width, m.width);
                    if m.batchnorm {
                        o = b.bn(&format!("blocks.{i}.bn"), o, m.width);
                    }
                    if m.residual {
                        o = b.add(h, o);
                    }
                    h = b.relu_named(&format!("blocks.{i}"), o);
                }
                b.linear("fc_out", h, m.width, m.num_classes);
            }
            Arch::Vit(v) => build_vit(&mut b, v),
            Arch::Onnx(o) => panic!("{} is an ONNX network: load its file instead", o.file),
        }
        b.finish()
    }
}

/// Appends layers and their parameters in PyTorch registration order.
struct Builder {
    g: Graph,
    layout: Layout,
}

impl Builder {
    fn new(input_shape: Vec<usize>, num_classes: usize) -> Self {
        let mut g = Graph {
            nodes: vec![],
            layout: Arc::new(Layout::new()),
            loss: Loss::CrossEntropy,
            input_shape,
            num_classes,
            options: Default::default(),
        };
        g.push("input", Op::Input, &[], &[]);
        Self {
            g,
            layout: Layout::new(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: &str,
        x: usize,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
    ) -> usize {
        let w = self
            .layout
            .push(format!("{name}.weight"), &[cout, cin, k, k], Role::Weight);
        let op = Conv2d {
            in_channels: cin,
            out_channels: cout,
            kernel: k,
            stride,
            padding,
            bias: false,
            groups: 1,
        };
        self.g.push(name, Op::Conv2d(op), &[x], &[w])
    }

    fn bn(&mut self, name: &str, x: usize, c: usize) -> usize {
        let p = [
            self.layout
                .push(format!("{name}.weight"), &[c], Role::BnScale),
            self.layout
                .push(format!("{name}.bias"), &[c], Role::BnShift),
            self.layout
                .push(format!("{name}.running_mean"), &[c], Role::RunningMean),
            self.layout
                .push(format!("{name}.running_var"), &[c], Role::RunningVar),
        ];
        self.g.push(
            name,
            Op::BatchNorm(BatchNorm {
                channels: c,
                eps: BN_EPS,
            }),
            &[x],
            &p,
        )
    }

    fn linear(&mut self, name: &str, x: usize, fin: usize, fout: usize) -> usize {
        let p = [
            self.layout
                .push(format!("{name}.weight"), &[fout, fin], Role::Weight),
            self.layout
                .push(format!("{name}.bias"), &[fout], Role::Bias),
        ];
        self.g.push(
            name,
            Op::Linear(Linear {
                in_features: fin,
                out_features: fout,
                bias: true,
            }),
            &[x],
            &p,
        )
    }

    fn relu(&mut self, x: usize) -> usize {
        self.g.push("", Op::Relu, &[x], &[])
    }

    /// A node with no parameters.
    fn op(&mut self, op: Op, inputs: &[usize]) -> usize {
        self.g.push("", op, inputs, &[])
    }

    /// A LayerNorm's weight and bias in the layout (registered where PyTorch registers
    /// the module, which may precede its use).
    fn ln_params(&mut self, name: &str, d: usize) -> [usize; 2] {
        [
            self.layout
                .push(format!("{name}.weight"), &[d], Role::BnScale),
            self.layout
                .push(format!("{name}.bias"), &[d], Role::BnShift),
        ]
    }

    fn layer_norm(&mut self, name: &str, x: usize, p: [usize; 2]) -> usize {
        let op = Op::LayerNorm(LayerNorm {
            axes_from: 2,
            eps: LN_EPS,
            affine: true,
            bias: true,
        });
        self.g.push(name, op, &[x], &p)
    }

    /// A probe tap: marks node `x`'s output as the block output `label`.
    fn tap(&mut self, label: &str, x: usize) {
        self.g.nodes[x].tap = Some(label.to_string());
    }

    /// A ReLU that ends a block; its name (the block's path) makes it a probe tap.
    fn relu_named(&mut self, name: &str, x: usize) -> usize {
        self.g.push(name, Op::Relu, &[x], &[])
    }

    /// Option-A shortcut: `F.pad(x[:, :, ::s, ::s], (0, 0, 0, 0, planes//4, planes//4))`
    /// on an input of `size`×`size` pixels and `cin` channels (internal layout
    /// `[C, N, H, W]`); only where `cin + 2·(planes/4) = planes`, as akamaster's blocks have.
    fn option_a(
        &mut self,
        x: usize,
        size: usize,
        stride: usize,
        cin: usize,
        planes: usize,
    ) -> usize {
        let mut h = x;
        for axis in [2, 3] {
            let sl = SliceAxis {
                axis,
                start: 0,
                end: size,
                step: stride,
            };
            h = self.g.push("", Op::Slice(sl), &[h], &[]);
        }
        let pad = planes / 4;
        debug_assert_eq!(
            cin + 2 * pad,
            planes,
            "Arch::check: option A needs an even width"
        );
        self.g.push(
            "",
            Op::Pad(Pad {
                before: vec![pad, 0, 0, 0],
                after: vec![pad, 0, 0, 0],
            }),
            &[h],
            &[],
        )
    }

    fn add(&mut self, a: usize, b: usize) -> usize {
        self.g.push("", Op::Add, &[a, b], &[])
    }

    fn finish(mut self) -> Graph {
        self.g.layout = Arc::new(self.layout);
        self.g
    }
}

/// PyTorch's default initialization, seeded: conv/linear weights and biases
/// U(−1/√fan_in, 1/√fan_in) (`kaiming_uniform_(a=√5)`), BN (and LayerNorm) γ = 1, β = 0,
/// running mean 0, running variance 1. With `he`, weights are instead N(0, 2/fan_in) (He
/// et al. 2015, arXiv:1502.01852), the initialization the ResNet paper uses. A ViT's
/// `cls_token` and `pos_embed` are N(0, 0.02²) either way (timm's `trunc_normal_(std=.02)`
/// without the truncation at ±2, which lies 100 standard deviations out).
pub fn init_params<T: Scalar>(layout: &Arc<Layout>, seed: u64, he: bool) -> ParamVec<T> {
    let mut p = ParamVec::<T>::zeros(layout.clone());
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut fan_in = 1usize;
    for (i, t) in layout.tensors().iter().enumerate() {
        let mut view = p.tensor_mut(i);
        if t.name == "cls_token" || t.name == "pos_embed" {
            view.mapv_inplace(|_| {
                let z: f64 =
                    rand_distr::Distribution::sample(&rand_distr::StandardNormal, &mut rng);
                T::from_f(0.02 * z)
            });
            continue;
        }
        match t.role {
            Role::Weight => {
                fan_in = t.shape[1..].iter().product();
                let bound = 1.0 / (fan_in as f64).sqrt();
                let std = (2.0 / fan_in as f64).sqrt();
                view.mapv_inplace(|_| {
                    let v = if he {
                        std * rand_distr::Distribution::<f64>::sample(
                            &rand_distr::StandardNormal,
                            &mut rng,
                        )
                    } else {
                        rng.random_range(-bound..bound)
                    };
                    T::from_f(v)
                });
            }
            Role::Bias => {
                let bound = 1.0 / (fan_in as f64).sqrt();
                view.mapv_inplace(|_| {
                    T::from_f(if he {
                        0.0
                    } else {
                        rng.random_range(-bound..bound)
                    })
                });
            }
            Role::BnScale | Role::RunningVar => view.fill(T::one()),
            Role::BnShift | Role::RunningMean => view.fill(T::zero()),
        }
    }
    p
}

/// Number of trainable scalars of an architecture (PyTorch's `sum(p.numel())`).
pub fn count_params(arch: &Arch) -> usize {
    arch.build().layout.trainable_len()
}

#[cfg(test)]
mod tests;
