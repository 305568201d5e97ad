//! Architecture inference: which zoo network a state_dict is, from its tensor names and
//! shapes alone, with the reasons (`losscape info` prints them).
//!
//! - **resnet-cifar** (`conv1.weight`, `layer{1,2,3}.{i}.conv1.weight`, `linear.weight`):
//!   width and input channels from `conv1.weight` `[w, C, 3, 3]`, blocks per stage n from
//!   the `layerS.i` indices (depth 6n+2), classes from `linear.weight`. A
//!   `layer2.0.shortcut.0.weight` means projection shortcuts. Without it the network has
//!   either option-A (parameter-free) shortcuts or none — the parameters are the same — so
//!   a hint must decide: `noshort`/`plain` or `option-a`/`optiona`/`lambda` in the file
//!   name or in a string the checkpoint stores (e.g. an `arch` entry); otherwise inference
//!   is ambiguous and the error lists both candidates.
//! - **mlp** (`fc_in.weight`, `blocks.{i}.fc.weight`, `fc_out.weight`): input features,
//!   width, depth, classes, batch norm from `blocks.0.bn.weight`. Residual and plain blocks
//!   have the same parameters: for depth ≥ 1 a hint (`residual`, `-res`, `_res` or
//!   `plain`, `noshort`) decides, else the candidates are listed.
//! - **vit** (`patch_embed.proj.weight`, `pos_embed`, `head.weight`): width D, input
//!   channels and patch from `patch_embed.proj.weight` (`[D, C, p, p]`: images; `[D, p]`:
//!   1-D inputs, `input = seq`), the class token from `cls_token` (`pool = cls`; without
//!   it `pool = mean`), the tokens T from `pos_embed [1, T, D]` and with them the input
//!   size (T − 1 or T patches: a square of side T/p for images, T·p values for sequences),
//!   depth from `blocks.{i}.attn.qkv.weight`, the MLP ratio from `blocks.0.mlp.fc1.weight`
//!   `[r·D, D]`, classes from `head.weight`, and the norm placement from the final
//!   `norm.weight` (pre-LN has it, post-LN does not). Every other tensor is then checked
//!   against the zoo's layout. The heads (`qkv` packs all heads in `[3D, D]` for any count)
//!   and the skips (`residual = false` has the same parameters) come from hints: `heads=4`,
//!   `num_heads=4`, `4heads` or a token `h4`; `nores`, `noshort`, `plain`,
//!   `residual=false` or `residual`, `-res`, `residual=true`. Undecided, the error lists
//!   the candidates: every head count h with width % h = 0 and 8 ≤ D/h ≤ 128 (all
//!   divisors when none is), with and without skips.
//!
//! Hints are the file name and the strings a checkpoint stores (a `torch.save` dict's
//! string entries, a safetensors file's metadata).
//!
//! A ResNet's input size is not in the weights (global average pooling makes it work at
//! any size): it comes from the data ([`Inference::input_from_data`]). A ViT's is: the data
//! must have it (the engine refuses another per-sample shape, naming both).

use serde::Serialize;

use super::zoo::{Arch, Mlp, ResnetCifar, Shortcut, Vit, VitInput, VitNorm, VitPool};

/// The families inference knows, with the tensor that identifies each.
pub const FAMILIES: [(&str, &str); 3] = [
    (
        "resnet-cifar",
        "conv1.weight + layer1.0.conv1.weight + linear.weight",
    ),
    ("mlp", "fc_in.weight + fc_out.weight"),
    ("vit", "patch_embed.proj.weight + pos_embed + head.weight"),
];

/// An inferred architecture and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Inference {
    pub arch: Arch,
    /// One line per decision: which tensor or hint gave which hyper-parameter.
    pub reasons: Vec<String>,
    /// The input size is a placeholder that the data replaces.
    pub input_from_data: bool,
}

/// Why no single architecture fits.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// Occurs when the names match no family of the zoo.
    #[error("the tensor names match no known family ({}); first names: {}; pass `arch`, or convert the network to ONNX", families(), first.join(", "))]
    Unknown { first: Vec<String> },
    /// Occurs when a family's tensors are inconsistent (a missing stage, an odd shape).
    #[error("looks like {family} but {why}; pass `arch` explicitly")]
    Inconsistent { family: &'static str, why: String },
    /// Occurs when several architectures have exactly these tensors.
    #[error("the tensors fit {} architectures ({why}); pass one as `arch`:{}", candidates.len(), candidates.iter().map(|c| format!("\n  {c}")).collect::<String>())]
    Ambiguous {
        why: String,
        candidates: Vec<String>,
    },
}

fn families() -> String {
    FAMILIES
        .iter()
        .map(|(f, t)| format!("{f}: {t}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Infers the zoo architecture of tensors `(name, shape)`; `hints` are free texts (the
/// file name, strings stored in the checkpoint) that may settle what shapes cannot.
pub fn infer(tensors: &[(String, Vec<usize>)], hints: &[String]) -> Result<Inference, InferError> {
    let shape = |n: &str| tensors.iter().find(|(k, _)| k == n).map(|(_, s)| s.clone());
    if shape("conv1.weight").is_some()
        && shape("layer1.0.conv1.weight").is_some()
        && shape("linear.weight").is_some()
    {
        return resnet(&shape, tensors, hints);
    }
    if shape("fc_in.weight").is_some() && shape("fc_out.weight").is_some() {
        return mlp(&shape, tensors, hints);
    }
    if shape("patch_embed.proj.weight").is_some()
        && shape("pos_embed").is_some()
        && shape("head.weight").is_some()
    {
        return vit(tensors, hints);
    }
    Err(InferError::Unknown {
        first: tensors
            .iter()
            .take(5)
            .map(|(n, s)| format!("{n} {s:?}"))
            .collect(),
    })
}

fn lower_hints(hints: &[String]) -> Vec<String> {
    hints.iter().map(|h| h.to_ascii_lowercase()).collect()
}

/// The hint among `words` found first, with the text that had it.
fn hint_with<'a>(hints: &'a [String], words: &[&str]) -> Option<&'a String> {
    hints.iter().find(|h| words.iter().any(|w| h.contains(w)))
}

/// Number of consecutive `{prefix}{i}{suffix}` tensors from i = 0.
fn count(tensors: &[(String, Vec<usize>)], prefix: &str, suffix: &str) -> usize {
    (0..)
        .take_while(|i| {
            tensors
                .iter()
                .any(|(n, _)| *n == format!("{prefix}{i}{suffix}"))
        })
        .count()
}

fn resnet(
    shape: &dyn Fn(&str) -> Option<Vec<usize>>,
    tensors: &[(String, Vec<usize>)],
    hints: &[String],
) -> Result<Inference, InferError> {
    let bad = |why: String| InferError::Inconsistent {
        family: "resnet-cifar",
        why,
    };
    let conv1 = shape("conv1.weight").unwrap_or_default();
    let [width, in_channels, 3, 3] = conv1[..] else {
        return Err(bad(format!(
            "conv1.weight has shape {conv1:?}, not [width, C, 3, 3]"
        )));
    };
    let linear = shape("linear.weight").unwrap_or_default();
    let [num_classes, feat] = linear[..] else {
        return Err(bad(format!(
            "linear.weight has shape {linear:?}, not [classes, features]"
        )));
    };
    if feat != 4 * width {
        return Err(bad(format!(
            "linear.weight has {feat} inputs, but a width-{width} network ends with {}",
            4 * width
        )));
    }
    let n: Vec<usize> = (1..=3)
        .map(|s| count(tensors, &format!("layer{s}."), ".conv1.weight"))
        .collect();
    if n[0] == 0 || n.iter().any(|&k| k != n[0]) {
        return Err(bad(format!(
            "the stages have {}, {} and {} blocks; a CIFAR ResNet has the same number in each",
            n[0], n[1], n[2]
        )));
    }
    let depth = 6 * n[0] + 2;
    let mut reasons = vec![
        format!("conv1.weight {conv1:?}: width {width}, {in_channels} input channels"),
        format!(
            "layer1/2/3 hold {} blocks each: depth 6·{}+2 = {depth}",
            n[0], n[0]
        ),
        format!("linear.weight {linear:?}: {num_classes} classes"),
    ];
    let shortcut = if let Some(s) = shape("layer2.0.shortcut.0.weight") {
        reasons.push(format!(
            "layer2.0.shortcut.0.weight {s:?}: 1×1 projection shortcuts"
        ));
        Shortcut::Projection
    } else {
        let lower = lower_hints(hints);
        let plain = hint_with(&lower, &["noshort", "plain"]);
        let opt_a = hint_with(&lower, &["option-a", "optiona", "option_a", "lambda"]);
        match (plain, opt_a) {
            (Some(h), None) => {
                reasons.push(format!(
                    "no shortcut tensors, and '{h}' says plain: no shortcuts"
                ));
                Shortcut::None
            }
            (None, Some(h)) => {
                reasons.push(format!(
                    "no shortcut tensors, and '{h}' says option A: parameter-free shortcuts"
                ));
                Shortcut::OptionA
            }
            _ => {
                let cand = |s: &str| {
                    format!("resnet-cifar:depth={depth},width={width},shortcut={s},in_channels={in_channels},num_classes={num_classes}")
                };
                return Err(InferError::Ambiguous {
                    why: "no shortcut tensors: option-A (parameter-free) shortcuts and no shortcuts have the same parameters".into(),
                    candidates: vec![cand("option-a"), cand("none")],
                });
            }
        }
    };
    reasons.push("input size: from the data (global average pooling fits any size)".into());
    Ok(Inference {
        arch: Arch::ResnetCifar(ResnetCifar {
            depth,
            width,
            shortcut,
            in_channels,
            input_size: 32,
            num_classes,
        }),
        reasons,
        input_from_data: true,
    })
}

fn mlp(
    shape: &dyn Fn(&str) -> Option<Vec<usize>>,
    tensors: &[(String, Vec<usize>)],
    hints: &[String],
) -> Result<Inference, InferError> {
    let bad = |why: String| InferError::Inconsistent { family: "mlp", why };
    let fc_in = shape("fc_in.weight").unwrap_or_default();
    let [width, in_features] = fc_in[..] else {
        return Err(bad(format!(
            "fc_in.weight has shape {fc_in:?}, not [width, features]"
        )));
    };
    let fc_out = shape("fc_out.weight").unwrap_or_default();
    let [num_classes, w2] = fc_out[..] else {
        return Err(bad(format!(
            "fc_out.weight has shape {fc_out:?}, not [classes, width]"
        )));
    };
    if w2 != width {
        return Err(bad(format!(
            "fc_out.weight has {w2} inputs but fc_in.weight {width} outputs"
        )));
    }
    let depth = count(tensors, "blocks.", ".fc.weight");
    let batchnorm = shape("blocks.0.bn.weight").is_some();
    let mut reasons = vec![
        format!("fc_in.weight {fc_in:?}: {in_features} inputs, width {width}"),
        format!(
            "blocks.0..{depth} .fc: depth {depth}{}",
            if batchnorm {
                ", with batch norm (blocks.0.bn)"
            } else {
                ""
            }
        ),
        format!("fc_out.weight {fc_out:?}: {num_classes} classes"),
    ];
    let residual = if depth == 0 {
        false
    } else {
        let lower = lower_hints(hints);
        let plain = hint_with(&lower, &["plain", "noshort"]);
        let res = hint_with(&lower, &["residual", "-res", "_res"]);
        match (plain, res) {
            (Some(h), None) => {
                reasons.push(format!("'{h}' says plain blocks"));
                false
            }
            (None, Some(h)) => {
                reasons.push(format!("'{h}' says residual blocks"));
                true
            }
            _ => {
                let cand = |r: bool| {
                    format!("mlp:in_features={in_features},depth={depth},width={width},residual={r},batchnorm={batchnorm},num_classes={num_classes}")
                };
                return Err(InferError::Ambiguous {
                    why: "residual and plain blocks have the same parameters".into(),
                    candidates: vec![cand(true), cand(false)],
                });
            }
        }
    };
    Ok(Inference {
        arch: Arch::Mlp(Mlp {
            in_features,
            depth,
            width,
            residual,
            batchnorm,
            num_classes,
        }),
        reasons,
        input_from_data: false,
    })
}

/// A hint lower-cased, without quotes and spaces, `:` read as `=` (so `"heads": 4` in a
/// stored JSON config reads as `heads=4`).
fn normalized(hint: &str) -> String {
    hint.to_ascii_lowercase()
        .chars()
        .filter(|c| !matches!(c, '"' | '\'' | ' '))
        .map(|c| if c == ':' { '=' } else { c })
        .collect()
}

/// Head counts the hints name (`heads=4`, `num_heads=4`, `heads4`, `4heads`, `4-heads`, or
/// a token `h4`), each with the hint that names it.
fn heads_hints(hints: &[String]) -> Vec<(usize, &String)> {
    let mut out = Vec::new();
    for hint in hints {
        let t = normalized(hint);
        let b = t.as_bytes();
        for (i, _) in t.match_indices("heads") {
            let mut j = i + "heads".len();
            if b.get(j).is_some_and(|c| matches!(c, b'=' | b'_' | b'-')) {
                j += 1;
            }
            let after: String = t[j..].chars().take_while(char::is_ascii_digit).collect();
            if let Ok(n) = after.parse() {
                out.push((n, hint));
                continue;
            }
            let mut k = i;
            if k > 0 && matches!(b[k - 1], b'_' | b'-') {
                k -= 1;
            }
            let start = t[..k].trim_end_matches(|c: char| c.is_ascii_digit()).len();
            if let Ok(n) = t[start..k].parse() {
                out.push((n, hint));
            }
        }
        for tok in t.split(|c: char| !c.is_ascii_alphanumeric()) {
            if let Some(d) = tok.strip_prefix('h') {
                if !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()) {
                    if let Ok(n) = d.parse() {
                        out.push((n, hint));
                    }
                }
            }
        }
    }
    out
}

/// The hints that say "no skips" and those that say "skips" (a hint saying both counts as
/// the first).
fn residual_hints(hints: &[String]) -> (Option<&String>, Option<&String>) {
    const PLAIN: [&str; 7] = [
        "nores",
        "no-res",
        "no_res",
        "noshort",
        "noskip",
        "plain",
        "residual=false",
    ];
    const RES: [&str; 3] = ["residual", "-res", "_res"];
    let norm: Vec<String> = hints.iter().map(|h| normalized(h)).collect();
    let plain = (0..hints.len()).find(|&i| PLAIN.iter().any(|w| norm[i].contains(w)));
    let res = (0..hints.len()).find(|&i| {
        !PLAIN.iter().any(|w| norm[i].contains(w)) && RES.iter().any(|w| norm[i].contains(w))
    });
    (plain.map(|i| &hints[i]), res.map(|i| &hints[i]))
}

fn vit(tensors: &[(String, Vec<usize>)], hints: &[String]) -> Result<Inference, InferError> {
    let bad = |why: String| InferError::Inconsistent { family: "vit", why };
    // by name: a file may hold many tensors (the other families' linear look-ups are short)
    let have: std::collections::HashMap<&str, &Vec<usize>> =
        tensors.iter().map(|(n, s)| (n.as_str(), s)).collect();
    let shape = |n: &str| have.get(n).map(|s| s.to_vec());
    let pe = shape("patch_embed.proj.weight").unwrap_or_default();
    let (width, in_channels, patch, input) = match pe[..] {
        [d, c, p, q] if p == q => (d, c, p, VitInput::Image),
        [d, p] => (d, 1, p, VitInput::Seq),
        _ => {
            return Err(bad(format!(
                "patch_embed.proj.weight has shape {pe:?}, not [width, C, p, p] (images) or [width, p] (sequences)"
            )))
        }
    };
    if width == 0 || in_channels == 0 || patch == 0 {
        // a zero dimension holds no values: the others could claim any size
        return Err(bad(format!(
            "patch_embed.proj.weight has shape {pe:?}, with a zero dimension"
        )));
    }
    let mut reasons = vec![match input {
        VitInput::Image => format!(
            "patch_embed.proj.weight {pe:?}: width {width}, {in_channels} input channels, {patch}×{patch} patches (images)"
        ),
        VitInput::Seq => format!(
            "patch_embed.proj.weight {pe:?}: width {width}, tokens of {patch} consecutive values (1-D inputs, input=seq)"
        ),
    }];
    let pool = match shape("cls_token") {
        Some(c) if c == [1, 1, width] => {
            reasons.push(format!(
                "cls_token {c:?}: a class token, which the head reads (pool=cls)"
            ));
            VitPool::Cls
        }
        Some(c) => {
            return Err(bad(format!(
                "cls_token has shape {c:?}, not [1, 1, {width}]"
            )))
        }
        None => {
            reasons.push("no cls_token: the head reads the mean of the tokens (pool=mean)".into());
            VitPool::Mean
        }
    };
    let pos = shape("pos_embed").unwrap_or_default();
    let cls = usize::from(pool == VitPool::Cls);
    let tokens = match pos[..] {
        [1, t, d] if d == width && t > cls => t,
        _ => {
            return Err(bad(format!(
                "pos_embed has shape {pos:?}, not [1, tokens, {width}] with at least {} tokens",
                cls + 1
            )))
        }
    };
    let patches = tokens - cls;
    let plus = if cls == 1 { " + the class token" } else { "" };
    let input_size = match input {
        VitInput::Image => {
            let side = patches.isqrt();
            if side * side != patches {
                return Err(bad(format!(
                    "pos_embed {pos:?} has {patches} patch tokens{plus}, not a square number (the zoo's images are square)"
                )));
            }
            let size = side
                .checked_mul(patch)
                .ok_or_else(|| bad("pos_embed and patch_embed overflow the input size".into()))?;
            reasons.push(format!(
                "pos_embed {pos:?}: {tokens} tokens = {side}×{side} patches{plus}: {in_channels}×{size}×{size} inputs"
            ));
            size
        }
        VitInput::Seq => {
            let size = patches
                .checked_mul(patch)
                .ok_or_else(|| bad("pos_embed and patch_embed overflow the input size".into()))?;
            reasons.push(format!(
                "pos_embed {pos:?}: {tokens} tokens = {patches} patches{plus}: inputs of {size} values"
            ));
            size
        }
    };
    let depth = (0..)
        .take_while(|i| have.contains_key(format!("blocks.{i}.attn.qkv.weight").as_str()))
        .count();
    if depth == 0 {
        return Err(bad(
            "it has no blocks.0.attn.qkv.weight (a ViT has at least one block)".into(),
        ));
    }
    reasons.push(format!("blocks.0..{depth} (attn.qkv): depth {depth}"));
    let fc1 = shape("blocks.0.mlp.fc1.weight").unwrap_or_default();
    let mlp_ratio = match fc1[..] {
        [h, d] if d == width && h > 0 && h % width == 0 => h / width,
        _ => {
            return Err(bad(format!(
                "blocks.0.mlp.fc1.weight has shape {fc1:?}, not [r·{width}, {width}] (the zoo's MLP hidden width is a whole multiple r of the width)"
            )))
        }
    };
    reasons.push(format!(
        "blocks.0.mlp.fc1.weight {fc1:?}: MLP hidden {} = {mlp_ratio}·{width}",
        fc1[0]
    ));
    let norm = match shape("norm.weight") {
        Some(n) => {
            reasons.push(format!(
                "norm.weight {n:?}: a final LayerNorm, so pre-LN blocks (norm=pre)"
            ));
            VitNorm::Pre
        }
        None => {
            reasons.push(
                "no final norm.weight: post-LN blocks (norm=post; pre-LN ends with `norm`)".into(),
            );
            VitNorm::Post
        }
    };
    let says = |words: &[&str]| {
        hints
            .iter()
            .find(|h| words.iter().any(|w| normalized(h).contains(w)))
    };
    let (pre_words, post_words) = (
        ["preln", "pre-ln", "pre_ln", "norm=pre"],
        ["postln", "post-ln", "post_ln", "norm=post"],
    );
    let contradicts = match norm {
        VitNorm::Pre => says(&post_words).filter(|_| says(&pre_words).is_none()),
        VitNorm::Post => says(&pre_words).filter(|_| says(&post_words).is_none()),
    };
    if let Some(h) = contradicts {
        return Err(bad(match norm {
            VitNorm::Pre => format!("'{h}' says post-LN, but the tensors have the final norm.weight of the zoo's pre-LN ViT (a different norm placement)"),
            VitNorm::Post => format!("'{h}' says pre-LN, but the tensors lack the final norm.weight that the zoo's pre-LN ViT has (a different norm placement)"),
        }));
    }
    let head = shape("head.weight").unwrap_or_default();
    let num_classes = match head[..] {
        [k, d] if d == width => k,
        _ => {
            return Err(bad(format!(
                "head.weight has shape {head:?}, not [classes, {width}]"
            )))
        }
    };
    reasons.push(format!("head.weight {head:?}: {num_classes} classes"));
    let mut v = Vit {
        input,
        in_channels,
        input_size,
        patch,
        depth,
        width,
        heads: 1,
        mlp_ratio,
        norm,
        residual: true,
        pool,
        num_classes,
    };
    // every tensor, against the zoo's layout (heads and skips do not change it)
    let arch = Arch::Vit(v.clone());
    arch.check()
        .map_err(|e| bad(format!("the tensors give {e}")))?;
    let layout = arch.build().layout;
    let want: std::collections::HashSet<&str> =
        layout.tensors().iter().map(|t| t.name.as_str()).collect();
    for t in layout.tensors() {
        match have.get(t.name.as_str()) {
            None => {
                return Err(bad(format!(
                    "it lacks {} {:?}, which the ViT the other tensors describe has",
                    t.name, t.shape
                )))
            }
            Some(s) if **s != t.shape => {
                return Err(bad(format!(
                    "{} has shape {s:?}, where the ViT the other tensors describe has {:?}",
                    t.name, t.shape
                )))
            }
            Some(_) => {}
        }
    }
    if let Some((n, s)) = tensors.iter().find(|(n, _)| !want.contains(n.as_str())) {
        return Err(bad(format!(
            "it holds {n} {s:?}, which the zoo's ViT (timm names) does not have"
        )));
    }
    // heads: any divisor of the width packs into the same qkv
    let named = heads_hints(hints);
    let mut values: Vec<usize> = named.iter().map(|(n, _)| *n).collect();
    values.sort_unstable();
    values.dedup();
    let heads_choice: Vec<usize> = match values[..] {
        [h] => {
            let (_, hint) = named[0];
            if h == 0 || width % h != 0 {
                return Err(bad(format!(
                    "'{hint}' says {h} heads, which do not divide the width {width}"
                )));
            }
            reasons.push(format!(
                "'{hint}' says {h} heads (head dim {}; qkv is [3·{width}, {width}] for any count)",
                width / h
            ));
            vec![h]
        }
        _ => {
            let mut divisors: Vec<usize> = (1..=width.isqrt())
                .filter(|h| width % h == 0)
                .flat_map(|h| [h, width / h])
                .collect();
            divisors.sort_unstable();
            divisors.dedup();
            let plausible: Vec<usize> = divisors
                .iter()
                .copied()
                .filter(|h| (8..=128).contains(&(width / h)))
                .collect();
            match values.is_empty() {
                false => values
                    .into_iter()
                    .filter(|h| *h > 0 && width % h == 0)
                    .collect(),
                true if plausible.is_empty() => divisors,
                true => plausible,
            }
        }
    };
    if heads_choice.is_empty() {
        return Err(bad(format!(
            "the hints name head counts that do not divide the width {width}: {}",
            named
                .iter()
                .map(|(n, h)| format!("{n} ('{h}')"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let (plain, res) = residual_hints(hints);
    let residual_choice: Vec<bool> = match (plain, res) {
        (Some(h), None) => {
            reasons.push(format!("'{h}' says no skips (residual=false)"));
            vec![false]
        }
        (None, Some(h)) => {
            reasons.push(format!("'{h}' says residual blocks (residual=true)"));
            vec![true]
        }
        _ => vec![true, false],
    };
    if let ([h], [r]) = (&heads_choice[..], &residual_choice[..]) {
        v.heads = *h;
        v.residual = *r;
        return Ok(Inference {
            arch: Arch::Vit(v),
            reasons,
            input_from_data: false,
        });
    }
    let mut why = Vec::new();
    if heads_choice.len() != 1 {
        why.push(match named.is_empty() {
            true => format!(
                "qkv [3·{width}, {width}] packs any number of heads and no hint names it (listed: head dims 8 to 128)"
            ),
            false => format!(
                "the hints name several head counts: {}",
                named
                    .iter()
                    .map(|(n, h)| format!("{n} ('{h}')"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    if residual_choice.len() != 1 {
        why.push(
            "skips have no parameters: residual and plain blocks have the same tensors (hint: nores or residual)"
                .into(),
        );
    }
    let candidates = heads_choice
        .iter()
        .flat_map(|&h| {
            residual_choice.iter().map(move |&r| {
                format!(
                    "vit:input={},in_channels={in_channels},input_size={input_size},patch={patch},depth={depth},width={width},heads={h},mlp_ratio={mlp_ratio},norm={},residual={r},pool={},num_classes={num_classes}",
                    if input == VitInput::Image { "image" } else { "seq" },
                    if norm == VitNorm::Pre { "pre" } else { "post" },
                    if pool == VitPool::Cls { "cls" } else { "mean" },
                )
            })
        })
        .collect();
    Err(InferError::Ambiguous {
        why: why.join("; "),
        candidates,
    })
}

#[cfg(test)]
mod tests;
