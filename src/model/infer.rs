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
//! - **vit**: not in the zoo yet; when it is, its detector joins [`FAMILIES`] and [`infer`].
//!
//! The input size is not in the weights (global average pooling makes a ResNet work at any
//! size): it comes from the data ([`Inference::input_from_data`]).

use serde::Serialize;

use super::zoo::{Arch, Mlp, ResnetCifar, Shortcut};

/// The families inference knows, with the tensor that identifies each.
pub const FAMILIES: [(&str, &str); 2] = [
    (
        "resnet-cifar",
        "conv1.weight + layer1.0.conv1.weight + linear.weight",
    ),
    ("mlp", "fc_in.weight + fc_out.weight"),
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
    // vit: add its detector here once the zoo has it.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(arch: &str) -> Vec<(String, Vec<usize>)> {
        let g = arch.parse::<Arch>().unwrap().build();
        g.layout
            .tensors()
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect()
    }

    #[test]
    fn resnet_projection_is_inferred() {
        let inf = infer(
            &names("resnet-cifar:depth=20,width=8,in_channels=1,num_classes=7"),
            &[],
        )
        .unwrap();
        let Arch::ResnetCifar(r) = inf.arch else {
            panic!()
        };
        assert_eq!(
            (r.depth, r.width, r.in_channels, r.num_classes, r.shortcut),
            (20, 8, 1, 7, Shortcut::Projection)
        );
        assert!(inf.input_from_data);
    }

    #[test]
    fn parameter_free_shortcuts_need_a_hint() {
        let t = names("resnet-cifar:depth=14,shortcut=option-a");
        assert_eq!(t, names("resnet-cifar:depth=14,shortcut=none"));
        let e = infer(&t, &[]).unwrap_err().to_string();
        assert!(
            e.contains("shortcut=option-a") && e.contains("shortcut=none"),
            "{e}"
        );
        let a = infer(&t, &["resnet14_optionA.pt".into()]).unwrap();
        assert!(matches!(
            a.arch,
            Arch::ResnetCifar(ResnetCifar {
                shortcut: Shortcut::OptionA,
                depth: 14,
                ..
            })
        ));
        let n = infer(&t, &["arch=resnet14_noshort".into()]).unwrap();
        assert!(matches!(
            n.arch,
            Arch::ResnetCifar(ResnetCifar {
                shortcut: Shortcut::None,
                ..
            })
        ));
        assert!(n.reasons.iter().any(|r| r.contains("noshort")));
    }

    #[test]
    fn mlp_is_inferred_and_inconsistent_stages_are_refused() {
        let t =
            names("mlp:in_features=40,depth=3,width=16,residual=true,batchnorm=true,num_classes=5");
        let inf = infer(&t, &["mlp-res.pt".into()]).unwrap();
        assert_eq!(
            inf.arch,
            "mlp:in_features=40,depth=3,width=16,residual=true,batchnorm=true,num_classes=5"
                .parse()
                .unwrap()
        );
        assert!(matches!(infer(&t, &[]), Err(InferError::Ambiguous { .. })));
        let mut r = names("resnet-cifar:depth=20");
        r.retain(|(n, _)| !n.starts_with("layer3.2."));
        assert!(matches!(
            infer(&r, &[]),
            Err(InferError::Inconsistent { .. })
        ));
        assert!(matches!(
            infer(&[("w".into(), vec![3])], &[]),
            Err(InferError::Unknown { .. })
        ));
    }
}
