//! The zoo's vision transformer (timm-style names): its architecture types and graph builder.

use serde::{Deserialize, Serialize};

use super::*;

/// What a ViT reads: images `[C, H, W]` cut into `patch × patch` squares, or 1-D inputs
/// `[L]` cut into runs of `patch` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VitInput {
    Image,
    Seq,
}

/// Where a ViT block's LayerNorms sit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VitNorm {
    /// Before attention and MLP, inside the residual branch (Xiong et al. 2020,
    /// arXiv:2002.04745), plus a final `norm`.
    Pre,
    /// After each residual sum (the original transformer, Vaswani et al. 2017).
    Post,
}

/// What the classifier head reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VitPool {
    /// A learned class token prepended to the patches.
    Cls,
    /// The mean over the tokens (no class token).
    Mean,
}

/// A vision transformer (see the module docs for the graph and the names).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vit {
    #[serde(default = "default_vit_input")]
    pub input: VitInput,
    /// Image channels (`input = image`; 1 for `seq`).
    #[serde(default = "default_vit_channels")]
    pub in_channels: usize,
    /// Image side, or sequence length for `input = seq`.
    pub input_size: usize,
    /// Patch side (image) or values per token (seq); divides `input_size`.
    pub patch: usize,
    pub depth: usize,
    /// Token width D.
    pub width: usize,
    pub heads: usize,
    /// MLP hidden width = `mlp_ratio · width`.
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: usize,
    #[serde(default = "default_vit_norm")]
    pub norm: VitNorm,
    /// Both skips of every block (attention and MLP); false: a pure stack.
    #[serde(default = "default_true")]
    pub residual: bool,
    #[serde(default = "default_vit_pool")]
    pub pool: VitPool,
    #[serde(default = "default_classes")]
    pub num_classes: usize,
}

impl Vit {
    /// Patch tokens T (without the class token).
    pub fn patches(&self) -> usize {
        let per_side = self.input_size / self.patch.max(1);
        match self.input {
            VitInput::Image => per_side * per_side,
            VitInput::Seq => per_side,
        }
    }

    /// Tokens the blocks see (patches, plus the class token with `pool = cls`).
    pub fn tokens(&self) -> usize {
        self.patches() + usize::from(self.pool == VitPool::Cls)
    }
}

fn default_vit_input() -> VitInput {
    VitInput::Image
}
fn default_vit_channels() -> usize {
    1
}
fn default_mlp_ratio() -> usize {
    4
}
fn default_vit_norm() -> VitNorm {
    VitNorm::Pre
}
fn default_true() -> bool {
    true
}
fn default_vit_pool() -> VitPool {
    VitPool::Cls
}

/// LayerNorm ε of the zoo's ViT (PyTorch's `nn.LayerNorm` default).
pub const LN_EPS: f64 = 1e-5;

/// Multi-head self-attention of tokens `x [N, T, D]` (timm's `Attention`).
fn attention(b: &mut Builder, p: &str, x: usize, t: usize, d: usize, heads: usize) -> usize {
    let hd = d / heads;
    let qkv = b.linear(&format!("{p}.qkv"), x, d, 3 * d); // [N, T, 3D] = (3, H, hd)
    let mut parts = [0; 3];
    for (k, part) in parts.iter_mut().enumerate() {
        let s = b.op(
            Op::Slice(SliceAxis {
                axis: 2,
                start: k * d,
                end: (k + 1) * d,
                step: 1,
            }),
            &[qkv],
        );
        let s = b.op(Op::Reshape(Reshape::per_sample(vec![t, heads, hd])), &[s]);
        // q, v: [N, H, T, hd]; k: [N, H, hd, T]
        let perm = if k == 1 { [0, 2, 3, 1] } else { [0, 2, 1, 3] };
        *part = b.op(
            Op::Transpose(Transpose {
                perm: perm.to_vec(),
            }),
            &[s],
        );
    }
    let scale = b.op(
        Op::Constant(Constant {
            shape: vec![1],
            values: Arc::new(vec![1.0 / (hd as f64).sqrt()]),
        }),
        &[],
    );
    let q = b.op(Op::Binary(BinaryKind::Mul), &[parts[0], scale]);
    let scores = b.op(Op::MatMul, &[q, parts[1]]); // [N, H, T, T]
    let att = b.op(
        Op::Softmax(Softmax {
            axis: 3,
            log: false,
        }),
        &[scores],
    );
    let o = b.op(Op::MatMul, &[att, parts[2]]); // [N, H, T, hd]
    let o = b.op(
        Op::Transpose(Transpose {
            perm: vec![0, 2, 1, 3],
        }),
        &[o],
    );
    let o = b.op(Op::Reshape(Reshape::per_sample(vec![t, d])), &[o]);
    b.linear(&format!("{p}.proj"), o, d, d)
}

/// The ViT graph (module docs), parameters in timm's `parameters()` order: the model's
/// own tensors (`cls_token`, `pos_embed`) before its submodules'.
pub(super) fn build_vit(b: &mut Builder, v: &Vit) {
    let (d, t) = (v.width, v.tokens());
    let cls_param = (v.pool == VitPool::Cls).then(|| {
        b.layout
            .push("cls_token".to_string(), &[1, 1, d], Role::Bias)
    });
    let pos_param = b
        .layout
        .push("pos_embed".to_string(), &[1, t, d], Role::Weight);
    let patches = v.patches();
    let mut h = match v.input {
        VitInput::Image => {
            let w = b.layout.push(
                "patch_embed.proj.weight".to_string(),
                &[d, v.in_channels, v.patch, v.patch],
                Role::Weight,
            );
            let bias = b
                .layout
                .push("patch_embed.proj.bias".to_string(), &[d], Role::Bias);
            let conv = Op::Conv2d(Conv2d {
                in_channels: v.in_channels,
                out_channels: d,
                kernel: v.patch,
                stride: v.patch,
                padding: 0,
                bias: true,
                groups: 1,
            });
            let c = b.g.push("patch_embed.proj", conv, &[0], &[w, bias]); // [D, N, h, w]
            let c = b.op(
                Op::Transpose(Transpose {
                    perm: vec![1, 2, 3, 0],
                }),
                &[c],
            ); // [N, h, w, D]
            b.op(Op::Reshape(Reshape::per_sample(vec![patches, d])), &[c])
        }
        VitInput::Seq => {
            let x = b.op(
                Op::Reshape(Reshape::per_sample(vec![patches, v.patch])),
                &[0],
            );
            b.linear("patch_embed.proj", x, v.patch, d)
        }
    };
    if let Some(p) = cls_param {
        let cls = b.g.push(
            "cls_token",
            Op::Param(Param {
                shape: vec![1, 1, d],
            }),
            &[],
            &[p],
        );
        let cls = b.op(
            Op::Expand(Expand {
                shape: vec![0, 1, d],
                ref_axis: 0,
            }),
            &[cls, h],
        );
        h = b.op(Op::Concat(Concat { axis: 1 }), &[cls, h]);
    }
    let pos = b.g.push(
        "pos_embed",
        Op::Param(Param {
            shape: vec![1, t, d],
        }),
        &[],
        &[pos_param],
    );
    h = b.op(Op::Binary(BinaryKind::Add), &[h, pos]);
    b.tap("embed", h);
    let hidden = v.mlp_ratio * d;
    for i in 0..v.depth {
        let p = format!("blocks.{i}");
        let pre = v.norm == VitNorm::Pre;
        let (n1, n2) = (format!("{p}.norm1"), format!("{p}.norm2"));
        // attention sub-block (parameters in registration order: norm1, attn, norm2, mlp)
        let ln1 = b.ln_params(&n1, d);
        let a_in = match pre {
            true => b.layer_norm(&n1, h, ln1),
            false => h,
        };
        let a = attention(b, &format!("{p}.attn"), a_in, t, d, v.heads);
        let ln2 = b.ln_params(&n2, d);
        let mut s = if v.residual { b.add(h, a) } else { a };
        if !pre {
            s = b.layer_norm(&n1, s, ln1);
        }
        h = s;
        // MLP sub-block
        let m_in = match pre {
            true => b.layer_norm(&n2, h, ln2),
            false => h,
        };
        let m = b.linear(&format!("{p}.mlp.fc1"), m_in, d, hidden);
        let m = b.op(Op::Pointwise(PointwiseFn::GeluErf), &[m]);
        let m = b.linear(&format!("{p}.mlp.fc2"), m, hidden, d);
        let mut s = if v.residual { b.add(h, m) } else { m };
        if !pre {
            s = b.layer_norm(&n2, s, ln2);
        }
        h = s;
        b.tap(&p, h);
    }
    if v.norm == VitNorm::Pre {
        let ln = b.ln_params("norm", d);
        h = b.layer_norm("norm", h, ln);
    }
    h = match v.pool {
        VitPool::Cls => b.op(
            Op::Gather(Gather {
                axis: 1,
                indices: vec![0],
                keep_axis: false,
            }),
            &[h],
        ),
        VitPool::Mean => b.op(
            Op::Reduce(Reduce {
                kind: ReduceKind::Mean,
                axes: vec![1],
                keepdims: false,
            }),
            &[h],
        ),
    };
    b.linear("head", h, d, v.num_classes);
}
