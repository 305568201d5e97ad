//! Report sentences on vision transformers (zoo `vit`): what residual connections and the
//! LayerNorm placement change, each set against the effect the literature expects and
//! saying plainly when the numbers do not show it.
//!
//! - Rank collapse: pure self-attention loses token rank doubly exponentially with depth,
//!   skip connections prevent it (Dong, Cordonnier & Loukas 2021, arXiv:2103.03404),
//!   measured as the last block's ‖X − 1x̄ᵀ‖_F/‖X‖_F ([`crate::probe`]).
//! - Gradient scale at initialization: post-LN gradients grow toward the output, pre-LN
//!   ones stay level across layers (Xiong et al. 2020, arXiv:2002.04745), measured as the
//!   last block's gradient norm over the first's at a fresh initialization.
//! - Trainability and the landscape: accuracy, λmax, trace, basin, roughness, non-convex
//!   fraction and ε-sharpness of the residual network against its twin without skips.
//!
//! The criteria (a factor of 10 for "collapsed", chance accuracy from the class count)
//! are stated in the sentences themselves.

use std::fmt::Write as _;

use super::runner::ModelResult;

/// A model at chance: train accuracy within 2 points of 100/classes % and train loss
/// within 2 % of ln(classes) (the loss of uniform predictions).
pub fn at_chance(r: &ModelResult) -> bool {
    if r.classes < 2 {
        return false;
    }
    let k = r.classes as f64;
    (r.eval.train.accuracy - 100.0 / k).abs() <= 2.0
        && (r.eval.train.loss - k.ln()).abs() <= 0.02 * k.ln()
}

/// How much smaller `small` is than `big`: "12.3× smaller" or "not smaller (×0.8)".
fn times_smaller(small: f64, big: f64) -> String {
    if !(small.is_finite() && big.is_finite()) || big <= 0.0 {
        return "not comparable".into();
    }
    if small <= 0.0 {
        return "zero".into();
    }
    let f = big / small;
    if f >= 1.0 {
        format!("{}× smaller", num(f))
    } else {
        format!("{}× larger", num(1.0 / f))
    }
}

/// A number for prose: 3 significant digits, scientific below 1e-3 or above 1e4.
fn num(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let a = x.abs();
    if a != 0.0 && !(1e-3..1e4).contains(&a) {
        format!("{x:.2e}")
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn test_acc(r: &ModelResult) -> f64 {
    r.eval.test.map_or(f64::NAN, |t| t.accuracy)
}

fn lmax(r: &ModelResult) -> Option<f64> {
    r.hessian
        .as_ref()
        .and_then(|h| h.eigenvalues.first().copied())
}

/// The last block output's rank residual at a fresh initialization and trained.
fn last_rank(r: &ModelResult) -> Option<(f64, f64)> {
    let p = r.probe.as_ref()?;
    Some((
        *p.rank_residual_init.last()?,
        *p.rank_residual_trained.last()?,
    ))
}

/// The last block's gradient norm over the first's at a fresh initialization.
fn block_grad_spread(r: &ModelResult) -> Option<f64> {
    let g = &r.probe.as_ref()?.block_grad_init;
    match (g.first(), g.last()) {
        (Some(&f), Some(&l)) if g.len() >= 2 && f > 0.0 => Some(l / f),
        _ => None,
    }
}

/// The first block output (0 = the embedding) where the rank residual at initialization
/// falls below `frac` of the embedding's.
fn collapse_block(r: &ModelResult, frac: f64) -> Option<usize> {
    let v = &r.probe.as_ref()?.rank_residual_init;
    let first = *v.first()?;
    v.iter().position(|&x| x < frac * first)
}

fn vits(results: &[ModelResult]) -> Vec<&ModelResult> {
    results
        .iter()
        .filter(|r| r.family.starts_with("ViT"))
        .collect()
}

/// The transformer sentences; empty when the analysis holds no ViT.
pub fn findings(results: &[ModelResult]) -> Vec<String> {
    let v = vits(results);
    if v.is_empty() {
        return Vec::new();
    }
    let mut depths: Vec<usize> = v.iter().map(|r| r.depth).collect();
    depths.sort_unstable();
    depths.dedup();
    let mut out = Vec::new();
    for &d in &depths {
        let at = |family: &str, residual: bool| {
            v.iter()
                .copied()
                .find(|r| r.depth == d && r.family == family && r.residual == residual)
        };
        for family in ["ViT (pre-LN)", "ViT (post-LN)"] {
            if let (Some(res), Some(plain)) = (at(family, true), at(family, false)) {
                out.push(skips_sentence(d, family, res, plain));
            }
        }
        if let (Some(pre), Some(post)) = (at("ViT (pre-LN)", true), at("ViT (post-LN)", true)) {
            out.push(norm_sentence(d, pre, post));
        }
    }
    out.extend(depth_sentence(&v));
    out
}

/// Residual connections vs none at one depth and LayerNorm placement.
fn skips_sentence(d: usize, family: &str, res: &ModelResult, plain: &ModelResult) -> String {
    let mut s = format!(
        "Transformer, depth {d}, {family} with vs without residual connections: test accuracy {:.1}% vs {:.1}%",
        test_acc(res),
        test_acc(plain)
    );
    let plain_chance = at_chance(plain);
    if plain_chance {
        let k = plain.classes as f64;
        let _ = write!(
            s,
            "; without them the network did not train (train loss {} against ln {} = {} for uniform predictions, chance accuracy {:.0}%)",
            num(plain.eval.train.loss),
            plain.classes,
            num(k.ln()),
            100.0 / k
        );
    } else if test_acc(plain) >= test_acc(res) {
        s.push_str(
            " — the expected advantage of residual connections in accuracy does not show here",
        );
    }
    s.push('.');
    // rank collapse
    if let (Some((ri, rt)), Some((pi, pt))) = (last_rank(res), last_rank(plain)) {
        let _ = write!(
            s,
            " Rank collapse (Dong et al. 2021): the last block's tokens are at relative distance {} from rank one without residual connections and {} with them at a fresh initialization ({}), {} vs {} trained.",
            num(pi),
            num(ri),
            times_smaller(pi, ri),
            num(pt),
            num(rt)
        );
        if pi * 10.0 < ri {
            s.push_str(" The expected collapse of pure attention shows");
            match collapse_block(plain, 0.01) {
                Some(b) => {
                    let _ = write!(
                        s,
                        ": without skips the distance falls below 1% of the embedding's from the output of block {b} of {d} on."
                    );
                }
                None => s.push('.'),
            }
        } else {
            s.push_str(" The expected collapse does not show: the stack without skips is not 10× closer to rank one.");
        }
    }
    // gradient flow, trained
    if let (Some(pr), Some(pp)) = (&res.probe, &plain.probe) {
        let (gr, gp) = (pr.grad_ratio_trained, pp.grad_ratio_trained);
        let _ = write!(
            s,
            " Trained, the first layer's gradient norm is {}× the last layer's without residual connections and {}× with them",
            num(gp),
            num(gr)
        );
        if gp * 10.0 < gr {
            s.push_str(": the gradient vanishes toward the input without them, as expected.");
        } else {
            s.push_str(": no vanishing gradient toward the input shows without them.");
        }
    }
    // landscape: which measures favour which network
    let mut favour_res = Vec::new();
    let mut favour_plain = Vec::new();
    let mut cmp = |name: &str, r: Option<f64>, p: Option<f64>, lower_is_smoother: bool| {
        if let (Some(r), Some(p)) = (r, p) {
            if r.is_finite() && p.is_finite() && r != p {
                let res_smoother = (r < p) == lower_is_smoother;
                let item = format!("{name} {} vs {}", num(r), num(p));
                if res_smoother {
                    favour_res.push(item);
                } else {
                    favour_plain.push(item);
                }
            }
        }
    };
    cmp("λmax", lmax(res), lmax(plain), true);
    let tr = |r: &ModelResult| r.hessian.as_ref().and_then(|h| h.trace);
    cmp("trace", tr(res), tr(plain), true);
    let m = |r: &ModelResult, f: &dyn Fn(&crate::metrics::SurfaceMetrics) -> Option<f64>| {
        r.metrics.as_ref().and_then(|m| f(&m.surface))
    };
    cmp(
        "basin radius",
        m(res, &|s| s.basin_radius.as_ref().map(|b| b.mean)),
        m(plain, &|s| s.basin_radius.as_ref().map(|b| b.mean)),
        false,
    );
    cmp(
        "roughness",
        m(res, &|s| s.roughness),
        m(plain, &|s| s.roughness),
        true,
    );
    cmp(
        "non-convex fraction",
        m(res, &|s| s.non_convex_fraction),
        m(plain, &|s| s.non_convex_fraction),
        true,
    );
    let sh = |r: &ModelResult| r.sharpness.as_ref().map(|s| s.eps_sharpness);
    cmp("ε-sharpness %", sh(res), sh(plain), true);
    if !favour_res.is_empty() || !favour_plain.is_empty() {
        s.push_str(" Landscape (residual vs without):");
        if !favour_res.is_empty() {
            let _ = write!(
                s,
                " smoother or flatter with residual connections in {};",
                favour_res.join(", ")
            );
        }
        if !favour_plain.is_empty() {
            let _ = write!(
                s,
                " the expected smoother residual landscape does not show in {};",
                favour_plain.join(", ")
            );
        }
        s.pop();
        s.push('.');
        if plain_chance && !favour_plain.is_empty() {
            let _ = write!(
                s,
                " The network without residual connections sits at chance on a plateau (loss {} at the center of its surface): its flatness is that of weights that never left the plateau, not of a well-conditioned minimum.",
                num(plain.center_loss)
            );
        }
    }
    s
}

/// Pre-LN vs post-LN (both residual) at one depth.
fn norm_sentence(d: usize, pre: &ModelResult, post: &ModelResult) -> String {
    let mut s = format!(
        "Transformer, depth {d}, pre-LN vs post-LN (both residual): test accuracy {:.1}% vs {:.1}%",
        test_acc(pre),
        test_acc(post)
    );
    if let (Some(a), Some(b)) = (lmax(pre), lmax(post)) {
        let _ = write!(s, ", λmax {} vs {}", num(a), num(b));
    }
    s.push('.');
    if let (Some(gp), Some(gq)) = (block_grad_spread(pre), block_grad_spread(post)) {
        let _ = write!(
            s,
            " At a fresh initialization the last block's gradient norm is {}× the first block's in pre-LN and {}× in post-LN",
            num(gp),
            num(gq)
        );
        if gq > gp {
            s.push_str(": relative to the first block, post-LN's gradients are larger toward the output than pre-LN's, as Xiong et al. (2020) expect.");
        } else {
            s.push_str(": the larger post-LN gradients toward the output that Xiong et al. (2020) expect do not show (relative to the first block they are not larger than pre-LN's).");
        }
    }
    s
}

/// How accuracy and rank collapse change from the shallowest to the deepest ViT of each
/// variant (LayerNorm placement × residual), when a variant spans two depths.
fn depth_sentence(v: &[&ModelResult]) -> Option<String> {
    let mut variants: Vec<(String, bool)> = Vec::new();
    for r in v {
        if !variants.contains(&(r.family.clone(), r.residual)) {
            variants.push((r.family.clone(), r.residual));
        }
    }
    let mut parts = Vec::new();
    let mut collapse_deepens = None;
    // residual variants whose last-block rank distance falls > 10× with depth, and not
    let (mut skips_fail, mut skips_hold) = (Vec::new(), Vec::new());
    for (family, residual) in &variants {
        let mut fam: Vec<&ModelResult> = v
            .iter()
            .copied()
            .filter(|r| &r.family == family && r.residual == *residual)
            .collect();
        fam.sort_by_key(|r| r.depth);
        let (Some(a), Some(b)) = (fam.first(), fam.last()) else {
            continue;
        };
        if a.depth == b.depth {
            continue;
        }
        let mut p = format!(
            "{family} {}: test accuracy {:.1}% → {:.1}%",
            if *residual {
                "with residual connections"
            } else {
                "without"
            },
            test_acc(a),
            test_acc(b)
        );
        if let (Some((ai, _)), Some((bi, _))) = (last_rank(a), last_rank(b)) {
            let _ = write!(
                p,
                ", last-block rank distance at initialization {} → {}",
                num(ai),
                num(bi)
            );
            if !residual {
                collapse_deepens = Some(bi * 10.0 < ai);
            } else if bi * 10.0 < ai {
                skips_fail.push(format!("{family} ({} → {})", num(ai), num(bi)));
            } else {
                skips_hold.push(family.clone());
            }
        }
        parts.push(p);
    }
    if parts.is_empty() {
        return None;
    }
    let depths = {
        let mut d: Vec<usize> = v.iter().map(|r| r.depth).collect();
        d.sort_unstable();
        d.dedup();
        d
    };
    let mut s = format!(
        "Transformers from depth {} to {}: {}.",
        depths[0],
        depths[depths.len() - 1],
        parts.join("; ")
    );
    match collapse_deepens {
        Some(true) => s.push_str(" Without residual connections the tokens end more than 10× closer to rank one in the deeper stack, the growth of collapse with depth that Dong et al. predict."),
        Some(false) => s.push_str(" Without residual connections the deeper stack does not end 10× closer to rank one: the growth of collapse with depth that Dong et al. predict does not show between these depths."),
        None => {}
    }
    if !skips_hold.is_empty() {
        let _ = write!(
            s,
            " With residual connections the distance stays within 10× from the shallow to the deep stack in {}, as expected.",
            skips_hold.join(" and ")
        );
    }
    if !skips_fail.is_empty() {
        let _ = write!(
            s,
            " With residual connections it still falls more than 10× in {} at initialization: there the skips alone do not keep the tokens apart.",
            skips_fail.join(" and ")
        );
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::runner::{Evals, HessianResult, ProbeSummary};
    use crate::objective::Evaluation;
    use std::f64::consts::LN_10;

    fn model(
        family: &str,
        depth: usize,
        residual: bool,
        acc: f64,
        loss: f64,
        rank: (f64, f64),
        lmax: f64,
    ) -> ModelResult {
        let ev = Evaluation {
            loss,
            accuracy: acc,
            correct: acc as usize,
            samples: 100,
        };
        ModelResult {
            label: format!("{family}-{depth}-{residual}"),
            file: String::new(),
            description: String::new(),
            depth,
            residual,
            family: family.into(),
            classes: 10,
            params: 1,
            eval: Evals {
                train: ev,
                test: Some(ev),
            },
            surface_file: String::new(),
            eigen_surface_file: None,
            center_loss: loss,
            metrics: None,
            hessian: Some(HessianResult {
                operator: "hessian".into(),
                eigenvalues: vec![lmax],
                residuals: vec![0.0],
                converged: vec![true],
                trace: None,
                trace_stderr: None,
                samples: 1,
                hvps: 1,
                seconds: 0.0,
                blocks: Vec::new(),
                file: None,
            }),
            probe: Some(ProbeSummary {
                grad_ratio_trained: 1.0,
                grad_ratio_init: 1.0,
                act_std_ratio_trained: 1.0,
                act_std_ratio_init: 1.0,
                grad_norms_init: vec![1.0],
                grad_norms_trained: vec![1.0],
                act_std_init: vec![1.0],
                act_std_trained: vec![1.0],
                rank_residual_init: vec![0.8, rank.0],
                rank_residual_trained: vec![0.8, rank.1],
                token_cosine_init: Vec::new(),
                token_cosine_trained: Vec::new(),
                block_grad_init: vec![1.0, 2.0],
                block_grad_trained: vec![1.0, 1.0],
            }),
            sharpness: None,
        }
    }

    #[test]
    fn chance_is_judged_from_the_class_count() {
        let m = model("ViT (pre-LN)", 8, false, 10.2, LN_10, (0.0, 0.0), 1.0);
        assert!(at_chance(&m));
        let m = model("ViT (pre-LN)", 8, false, 60.0, 1.2, (0.0, 0.0), 1.0);
        assert!(!at_chance(&m));
    }

    #[test]
    fn sentences_follow_the_numbers_either_way() {
        // collapse without skips, chance accuracy, flatter plain landscape
        let res = model("ViT (pre-LN)", 8, true, 97.0, 0.1, (0.5, 0.6), 600.0);
        let plain = model("ViT (pre-LN)", 8, false, 10.0, LN_10, (1e-7, 1e-9), 8.0);
        let f = findings(&[res.clone(), plain]);
        let s = &f[0];
        assert!(s.contains("did not train"), "{s}");
        assert!(
            s.contains("The expected collapse of pure attention shows"),
            "{s}"
        );
        assert!(s.contains("from the output of block 1 of 8 on"), "{s}");
        assert!(
            s.contains("does not show in λmax 600 vs 8.00") && s.contains("plateau"),
            "{s}"
        );
        // no collapse, plain better: both expectations reported as not shown
        let plain = model("ViT (pre-LN)", 8, false, 98.0, 0.05, (0.4, 0.5), 700.0);
        let f = findings(&[res.clone(), plain]);
        let s = &f[0];
        assert!(s.contains("advantage of residual connections in accuracy does not show"));
        assert!(s.contains("The expected collapse does not show"), "{s}");
        assert!(s.contains("smoother or flatter with residual connections in λmax 600 vs 700"));
        assert!(!s.contains("plateau"), "{s}");
        // pre- vs post-LN: the gradient spread decides the Xiong sentence
        let mut post = model("ViT (post-LN)", 8, true, 96.0, 0.1, (0.5, 0.6), 300.0);
        post.probe.as_mut().unwrap().block_grad_init = vec![1.0, 5.0];
        let f = findings(&[res.clone(), post.clone()]);
        assert!(f[0].contains("2.00× the first block's in pre-LN and 5.00× in post-LN"));
        assert!(f[0].contains("as Xiong et al. (2020) expect"), "{}", f[0]);
        post.probe.as_mut().unwrap().block_grad_init = vec![1.0, 1.5];
        let f = findings(&[res, post]);
        assert!(f[0].contains("that Xiong et al. (2020) expect do not show"));
    }

    #[test]
    fn collapse_with_depth_is_judged_per_family() {
        let v = [
            model("ViT (pre-LN)", 2, false, 88.0, 0.4, (0.3, 0.3), 5.0),
            model("ViT (pre-LN)", 8, false, 10.0, LN_10, (1e-7, 1e-7), 5.0),
            model("ViT (pre-LN)", 2, true, 93.0, 0.2, (0.6, 0.6), 5.0),
            model("ViT (pre-LN)", 8, true, 92.0, 0.2, (0.5, 0.6), 5.0),
        ];
        let f = findings(&v);
        let s = f.last().unwrap();
        assert!(s.starts_with("Transformers from depth 2 to 8"), "{s}");
        assert!(
            s.contains("rank distance at initialization 0.300 → 1.00e-7"),
            "{s}"
        );
        assert!(s.contains("the growth of collapse with depth that Dong et al. predict."));
        assert!(s.contains("stays within 10× from the shallow to the deep stack in ViT (pre-LN)"));
        let mut w = v.to_vec();
        w.push(model("ViT (post-LN)", 2, true, 90.0, 0.3, (0.3, 0.3), 5.0));
        w.push(model(
            "ViT (post-LN)",
            8,
            true,
            94.0,
            0.2,
            (0.008, 0.3),
            5.0,
        ));
        let f = findings(&w);
        assert!(
            f.last()
                .unwrap()
                .contains("still falls more than 10× in ViT (post-LN) (0.300 → 0.008)"),
            "{}",
            f.last().unwrap()
        );
        let mut v = v;
        v[1] = model("ViT (pre-LN)", 8, false, 80.0, 0.6, (0.2, 0.2), 5.0);
        let f = findings(&v);
        assert!(f.last().unwrap().contains("predict does not show"));
        // no transformers: nothing
        let mut r = model("ResNet", 20, true, 99.0, 0.01, (0.5, 0.5), 1.0);
        r.probe.as_mut().unwrap().rank_residual_init.clear();
        assert!(findings(&[r]).is_empty());
    }
}
