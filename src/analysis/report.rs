//! `metrics.json`, `report.md` and a self-contained `report.html` (inline style, images
//! referenced beside it) for an analysis. The findings are computed from the numbers:
//! each sentence compares a residual network with its plain twin of the same depth and
//! says what the measurement shows, whichever way it goes.

use std::fmt::Write as _;
use std::path::Path;

use super::error::{AnalysisError, AnalysisResult};
use super::runner::{AnalysisOutcome, ModelResult};

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    match v {
        Some(x) if x.is_finite() => {
            if x != 0.0 && (x.abs() >= 1e4 || x.abs() < 1e-3) {
                format!("{x:.prec$e}")
            } else {
                format!("{x:.prec$}")
            }
        }
        _ => "–".into(),
    }
}

/// `Hessian`, `GGN`, … : the curvature matrix of the results' Hessian step.
pub fn curvature(results: &[ModelResult]) -> String {
    let op = results
        .iter()
        .find_map(|r| r.hessian.as_ref().map(|h| h.operator.clone()))
        .unwrap_or_else(|| "hessian".into());
    super::runner::curvature_label(&op)
}

/// Rows of the comparison table.
pub fn table_rows(results: &[ModelResult]) -> (Vec<String>, Vec<Vec<String>>) {
    let op = curvature(results);
    let (lmax, trace) = match op.as_str() {
        "Hessian" => ("λmax".to_string(), "trace".to_string()),
        _ => (format!("λmax ({op})"), format!("trace ({op})")),
    };
    let mut header: Vec<String> = [
        "model",
        "depth",
        "shortcut",
        "train acc %",
        "test acc %",
        "train loss",
        "λmax",
        "trace",
        "center loss (surface)",
        "basin radius",
        "roughness",
        "non-convex fraction",
        "curvature x: surface / exact dᵀHd",
        "grad ratio first/last (trained)",
        "grad ratio first/last (init)",
        "act. std last/first (init)",
    ]
    .iter()
    .map(|h| match *h {
        "λmax" => lmax.clone(),
        "trace" => trace.clone(),
        other => other.to_string(),
    })
    .collect();
    let sharp = results.iter().any(|r| r.sharpness.is_some());
    if sharp {
        header.extend(["ε-sharpness %".to_string(), "β-smoothness max".to_string()]);
    }
    let rows = results
        .iter()
        .map(|r| {
            let mut row = vec![
                r.label.clone(),
                r.depth.to_string(),
                if r.residual {
                    "yes".into()
                } else {
                    "none".into()
                },
                format!("{:.2}", r.eval.train.accuracy),
                r.eval
                    .test
                    .map(|t| format!("{:.2}", t.accuracy))
                    .unwrap_or_else(|| "–".into()),
                fmt_opt(Some(r.eval.train.loss), 4),
                fmt_opt(
                    r.hessian
                        .as_ref()
                        .and_then(|h| h.eigenvalues.first().copied()),
                    3,
                ),
                fmt_opt(r.hessian.as_ref().and_then(|h| h.trace), 1),
                fmt_opt(Some(r.center_loss), 4),
                fmt_opt(
                    r.metrics
                        .as_ref()
                        .and_then(|m| m.surface.basin_radius.as_ref().map(|b| b.mean)),
                    3,
                ),
                fmt_opt(r.metrics.as_ref().and_then(|m| m.surface.roughness), 3),
                fmt_opt(
                    r.metrics
                        .as_ref()
                        .and_then(|m| m.surface.non_convex_fraction),
                    3,
                ),
                r.metrics
                    .as_ref()
                    .map(|m| {
                        format!(
                            "{} / {}",
                            fmt_opt(m.surface.curvature_x, 3),
                            fmt_opt(Some(m.exact_curvature_x), 3)
                        )
                    })
                    .unwrap_or_else(|| "–".into()),
                fmt_opt(r.probe.as_ref().map(|p| p.grad_ratio_trained), 3),
                fmt_opt(r.probe.as_ref().map(|p| p.grad_ratio_init), 3),
                fmt_opt(r.probe.as_ref().map(|p| p.act_std_ratio_init), 3),
            ];
            if sharp {
                row.push(fmt_opt(r.sharpness.as_ref().map(|s| s.eps_sharpness), 2));
                row.push(fmt_opt(r.sharpness.as_ref().map(|s| s.beta_max), 3));
            }
            row
        })
        .collect();
    (header, rows)
}

/// "Run time …", saying how many steps came from earlier runs (a rerun only redoes what changed).
fn run_time(o: &AnalysisOutcome) -> String {
    if o.steps_reused == 0 {
        format!("Run time {:.0} s.", o.seconds)
    } else {
        format!(
            "This run took {:.0} s; {} of its {} steps were up to date from earlier runs and not redone.",
            o.seconds, o.steps_reused, o.steps_total
        )
    }
}

fn ratio_words(a: f64, b: f64) -> String {
    if !(a.is_finite() && b.is_finite()) || b == 0.0 {
        return "not comparable".into();
    }
    let r = a / b;
    if r > 1.0 {
        format!("{r:.2}×")
    } else {
        format!("{:.2}× lower than", 1.0 / r)
    }
}

/// The results grouped by [`ModelResult::family`], families in order of first appearance.
pub fn families(results: &[ModelResult]) -> Vec<(String, Vec<ModelResult>)> {
    let mut groups: Vec<(String, Vec<ModelResult>)> = Vec::new();
    for r in results {
        match groups.iter_mut().find(|g| g.0 == r.family) {
            Some(g) => g.1.push(r.clone()),
            None => groups.push((r.family.clone(), vec![r.clone()])),
        }
    }
    groups
}

/// Sentences comparing each plain network with the residual one of the same depth and
/// family (named when the analysis spans several), the chaos measure and λmax against
/// depth per family, then the transformer verdicts ([`super::transformer::findings`]).
pub fn findings(results: &[ModelResult]) -> Vec<String> {
    let groups = families(results);
    let named = groups.len() > 1;
    let mut out = Vec::new();
    for (family, members) in &groups {
        out.extend(family_findings(members, named.then_some(family.as_str())));
    }
    out.extend(super::transformer::findings(results));
    out
}

/// [`findings`] within one family; `family` prefixes the sentences when given.
fn family_findings(results: &[ModelResult], family: Option<&str>) -> Vec<String> {
    let op = curvature(results);
    // transformers have residual connections, ResNets shortcuts
    let skips = if results.iter().any(|r| r.family.starts_with("ViT")) {
        "residual connections"
    } else {
        "shortcuts"
    };
    let depth_word = match family {
        Some(f) => format!("{f}, depth"),
        None => "Depth".into(),
    };
    let mut out = Vec::new();
    let mut depths: Vec<usize> = results.iter().map(|r| r.depth).collect();
    depths.sort_unstable();
    depths.dedup();
    for d in depths {
        let res = results.iter().find(|r| r.depth == d && r.residual);
        let plain = results.iter().find(|r| r.depth == d && !r.residual);
        let (Some(res), Some(plain)) = (res, plain) else {
            continue;
        };
        let mut s = format!(
            "{depth_word} {d}: the plain network reaches {:.1}% train / {} test accuracy, the residual one {:.1}% / {}.",
            plain.eval.train.accuracy,
            plain.eval.test.map(|t| format!("{:.1}%", t.accuracy)).unwrap_or_else(|| "–".into()),
            res.eval.train.accuracy,
            res.eval.test.map(|t| format!("{:.1}%", t.accuracy)).unwrap_or_else(|| "–".into()),
        );
        if let (Some(hp), Some(hr)) = (&plain.hessian, &res.hessian) {
            if let (Some(&lp), Some(&lr)) = (hp.eigenvalues.first(), hr.eigenvalues.first()) {
                let _ = write!(s, " The plain network's top {op} eigenvalue ({lp:.3}) is {} the residual one's ({lr:.3})", ratio_words(lp, lr));
                match (hp.trace, hr.trace) {
                    (Some(tp), Some(tr)) => {
                        let _ = write!(
                            s,
                            "; its {op} trace ({tp:.1}) is {} the residual one's ({tr:.1}).",
                            ratio_words(tp, tr)
                        );
                    }
                    _ => s.push('.'),
                }
            }
        }
        if let (Some(mp), Some(mr)) = (&plain.metrics, &res.metrics) {
            if let (Some(bp), Some(br)) = (&mp.surface.basin_radius, &mr.surface.basin_radius) {
                let _ = write!(
                    s,
                    " On the filter-normalized surface the basin (loss within +{} of the center) has mean radius {:.3} without {skips} and {:.3} with them; the share of non-convex points near the center is {} vs {}, the roughness {} vs {}.",
                    mp.surface.delta,
                    bp.mean,
                    br.mean,
                    fmt_opt(mp.surface.non_convex_fraction, 2),
                    fmt_opt(mr.surface.non_convex_fraction, 2),
                    fmt_opt(mp.surface.roughness, 3),
                    fmt_opt(mr.surface.roughness, 3)
                );
            }
        }
        if let (Some(sp), Some(sr)) = (&plain.sharpness, &res.sharpness) {
            let _ = write!(
                s,
                " Within a box of relative size ε = {} (Keskar et al.) the loss rises by {}% without {skips} and {}% with them; the largest gradient change per unit step along the gradient (β-smoothness, Santurkar et al.) is {} vs {}.",
                sp.eps,
                fmt_opt(Some(sp.eps_sharpness), 2),
                fmt_opt(Some(sr.eps_sharpness), 2),
                fmt_opt(Some(sp.beta_max), 3),
                fmt_opt(Some(sr.beta_max), 3)
            );
        }
        if let (Some(pp), Some(pr)) = (&plain.probe, &res.probe) {
            let _ = write!(
                s,
                " At a fresh He initialization the gradient norm of the first layer relative to the last is {:.3} without {skips} and {:.3} with them, and the last block's activation std relative to the first is {:.3} vs {:.3}.",
                pp.grad_ratio_init, pr.grad_ratio_init, pp.act_std_ratio_init, pr.act_std_ratio_init
            );
        }
        out.push(s);
    }
    out.extend(chaos_finding(results).map(|c| match family {
        Some(f) => format!("{f}: {c}"),
        None => c,
    }));
    // how curvature changes with depth, per family
    for residual in [false, true] {
        let mut fam: Vec<&ModelResult> = results
            .iter()
            .filter(|r| r.residual == residual && r.hessian.is_some())
            .collect();
        fam.sort_by_key(|r| r.depth);
        if fam.len() >= 2 {
            let (a, b) = (fam[0], fam[fam.len() - 1]);
            let la = a
                .hessian
                .as_ref()
                .and_then(|h| h.eigenvalues.first().copied())
                .unwrap_or(f64::NAN);
            let lb = b
                .hessian
                .as_ref()
                .and_then(|h| h.eigenvalues.first().copied())
                .unwrap_or(f64::NAN);
            let which = if residual { "Residual" } else { "Plain" };
            out.push(format!(
                "{}networks: λmax goes from {la:.3} at depth {} to {lb:.3} at depth {} ({}).",
                match family {
                    Some(f) => format!("{f}: {} ", which.to_lowercase()),
                    None => format!("{which} "),
                },
                a.depth,
                b.depth,
                if lb > la {
                    format!("×{:.2}", lb / la)
                } else {
                    format!("÷{:.2}", la / lb)
                }
            ));
        }
    }
    out
}

/// The depth from which a family's landscape is chaotic: the smallest depth `d` such that
/// the surface of every network of depth ≥ `d` has more than one strict local minimum
/// (it is no longer a single basin). `minima` holds (depth, strict local minima) sorted by
/// depth; `None` when the deepest network's surface is still a single basin (or empty).
pub fn chaotic_from(minima: &[(usize, usize)]) -> Option<usize> {
    let mut onset = None;
    for &(d, n) in minima.iter().rev() {
        if n <= 1 {
            break;
        }
        onset = Some(d);
    }
    onset
}

/// Surface metrics of one family (residual or plain) by depth: (depth, minima, non-convex
/// fraction, roughness), sorted by depth.
type ChaosRow = (usize, usize, Option<f64>, Option<f64>);
type FamilyChaos = Vec<ChaosRow>;

fn family_chaos(results: &[ModelResult], residual: bool) -> FamilyChaos {
    let mut fam: FamilyChaos = results
        .iter()
        .filter(|r| r.residual == residual)
        .filter_map(|r| {
            let m = &r.metrics.as_ref()?.surface;
            (m.dims == 2).then_some((r.depth, m.local_minima, m.non_convex_fraction, m.roughness))
        })
        .collect();
    fam.sort_by_key(|f| f.0);
    fam
}

/// The measured answer to "does the plain landscape turn chaotic with depth?" (Li et al.
/// 2018 show it in pictures): the strict local minima of each 2-D surface (grid points
/// below all 8 neighbours; one means a single basin) against depth for both families,
/// the depth from which the plain family has more than one ([`chaotic_from`]), and the
/// non-convex fraction and roughness near the center beside them. `None` unless a family
/// spans at least two depths of 2-D surfaces.
pub fn chaos_finding(results: &[ModelResult]) -> Option<String> {
    let plain = family_chaos(results, false);
    let res = family_chaos(results, true);
    if plain.len() < 2 && res.len() < 2 {
        return None;
    }
    let points = results
        .iter()
        .find_map(|r| r.metrics.as_ref().map(|m| m.surface.points))
        .unwrap_or(0);
    let side = (points as f64).sqrt().round() as usize;
    let grid = if side * side == points {
        format!("{side} × {side}")
    } else {
        format!("{points}-point")
    };
    let list = |f: &FamilyChaos| {
        f.iter()
            .map(|(d, n, _, _)| format!("{n} at depth {d}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let trend = |f: &FamilyChaos, pick: &dyn Fn(&ChaosRow) -> Option<f64>, prec: usize| {
        f.iter()
            .map(|x| fmt_opt(pick(x), prec))
            .collect::<Vec<_>>()
            .join(" → ")
    };
    let mut s = format!(
        "Does the plain landscape turn chaotic with depth? Counting strict local minima of each {grid} surface (grid points below all 8 neighbours; 1 = a single basin, more = chaotic):"
    );
    for (name, f) in [("plain", &plain), ("residual", &res)] {
        if !f.is_empty() {
            let _ = write!(s, " {name}: {};", list(f));
        }
    }
    s.pop();
    s.push('.');
    let verdict = |name: &str, f: &FamilyChaos| -> String {
        let deepest = f.last().map_or(0, |x| x.0);
        let minima: Vec<(usize, usize)> = f.iter().map(|x| (x.0, x.1)).collect();
        let many: Vec<String> = f
            .iter()
            .filter(|x| x.1 > 1)
            .map(|x| x.0.to_string())
            .collect();
        match chaotic_from(&minima) {
            Some(d) if d == f[0].0 => format!(
                " The {name} surfaces have more than one minimum at every depth measured ({}–{deepest}): no onset within this range.",
                f[0].0
            ),
            Some(d) => format!(
                " The {name} family turns chaotic at depth {d}: from there up to {deepest} every surface has more than one minimum."
            ),
            None if many.is_empty() => format!(
                " The {name} family never turns chaotic on these data: every surface up to depth {deepest} is a single basin."
            ),
            None => format!(
                " The {name} family does not turn chaotic with depth on these data: the deepest surface (depth {deepest}) is a single basin, though depth {} had more than one minimum.",
                many.join(", ")
            ),
        }
    };
    if plain.len() >= 2 {
        s.push_str(&verdict("plain", &plain));
    }
    if res.len() >= 2 {
        s.push_str(&verdict("residual", &res));
    }
    for (name, f) in [("plain", &plain), ("residual", &res)] {
        if f.len() >= 2 {
            let _ = write!(
                s,
                " Non-convex fraction near the center, {name}: {}; roughness {}.",
                trend(f, &|x| x.2, 2),
                trend(f, &|x| x.3, 3)
            );
        }
    }
    Some(s)
}

/// Writes metrics.json, report.md and report.html; `images` are (file name, caption) pairs
/// that exist in the output folder.
pub fn write_report(o: &AnalysisOutcome, images: &[(String, String)]) -> AnalysisResult<()> {
    let dir = &o.out_dir;
    let json = serde_json::to_vec_pretty(o)?;
    crate::io::output::write_atomic(&dir.join("metrics.json"), |f| {
        std::io::Write::write_all(f, &json)
    })?;
    let (header, rows) = table_rows(&o.results);
    let found = findings(&o.results);

    let mut md = String::new();
    let _ = writeln!(md, "# {}\n", o.name);
    if !o.description.is_empty() {
        let _ = writeln!(md, "{}\n", o.description);
    }
    let _ = writeln!(
        md,
        "Data: `{}` ({} samples for surfaces and probes); grid {}; {}; BN in eval mode. {}\n",
        o.data,
        o.samples
            .map(|s| s.to_string())
            .unwrap_or_else(|| "all".into()),
        o.grid,
        o.directions,
        run_time(o)
    );
    let _ = writeln!(md, "| {} |", header.join(" | "));
    let _ = writeln!(
        md,
        "|{}|",
        header.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    for r in &rows {
        let _ = writeln!(md, "| {} |", r.join(" | "));
    }
    let _ = writeln!(md, "\n## What the numbers show\n");
    for f in &found {
        let _ = writeln!(md, "- {f}");
    }
    if !images.is_empty() {
        let _ = writeln!(md, "\n## Plots\n");
        for (file, caption) in images {
            let _ = writeln!(md, "![{caption}]({file})\n");
        }
    }
    let _ = writeln!(md, "\nFiles: per-model `*.surface.h5` (loss-landscape layout), `*.directions.h5`, `*.eval.json`, `*.hessian.json`, `*.probe.json`; all numbers in `metrics.json`.");
    crate::io::output::write_atomic(&dir.join("report.md"), |f| {
        std::io::Write::write_all(f, md.as_bytes())
    })?;

    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>\
         body{{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;color:#222;padding:0 1em}}\
         table{{border-collapse:collapse;font-size:0.78em}}.wide{{overflow-x:auto}}td,th{{border:1px solid #bbb;padding:4px 8px;text-align:right}}\
         th{{background:#eee}}td:first-child,th:first-child{{text-align:left}}img{{max-width:100%;border:1px solid #ddd;margin:0.5em 0}}\
         figure{{margin:1em 0}}figcaption{{color:#555;font-size:0.9em}}</style></head><body>",
        esc(&o.name)
    );
    let _ = write!(html, "<h1>{}</h1>", esc(&o.name));
    if !o.description.is_empty() {
        let _ = write!(html, "<p>{}</p>", esc(&o.description));
    }
    let _ = write!(
        html,
        "<p>Data: <code>{}</code> ({} samples for surfaces and probes); grid {}; {}; BN in eval mode. {}</p><div class=\"wide\"><table><tr>",
        esc(&o.data),
        o.samples.map(|s| s.to_string()).unwrap_or_else(|| "all".into()),
        esc(&o.grid),
        esc(&o.directions),
        esc(&run_time(o))
    );
    for h in &header {
        let _ = write!(html, "<th>{}</th>", esc(h));
    }
    html.push_str("</tr>");
    for r in &rows {
        html.push_str("<tr>");
        for c in r {
            let _ = write!(html, "<td>{}</td>", esc(c));
        }
        html.push_str("</tr>");
    }
    html.push_str("</table></div><h2>What the numbers show</h2><ul>");
    for f in &found {
        let _ = write!(html, "<li>{}</li>", esc(f));
    }
    html.push_str("</ul>");
    if !images.is_empty() {
        html.push_str("<h2>Plots</h2>");
        for (file, caption) in images {
            let _ = write!(
                html,
                "<figure><img src=\"{}\" alt=\"{}\"><figcaption>{}</figcaption></figure>",
                esc(file),
                esc(caption),
                esc(caption)
            );
        }
    }
    html.push_str("</body></html>\n");
    let path = dir.join("report.html");
    crate::io::output::write_atomic(&path, |f| std::io::Write::write_all(f, html.as_bytes()))
        .map_err(|source| AnalysisError::Write { path, source })?;
    Ok(())
}

/// Every `src="…"` in an HTML file names a file that exists beside it.
pub fn html_references_exist(html_path: &Path) -> AnalysisResult<Vec<String>> {
    let html = std::fs::read_to_string(html_path)?;
    let dir = html_path.parent().unwrap_or(Path::new("."));
    let mut missing = Vec::new();
    for part in html.split("src=\"").skip(1) {
        let name = part.split('"').next().unwrap_or("");
        if !dir.join(name).exists() {
            missing.push(name.to_string());
        }
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::chaotic_from;

    #[test]
    fn chaos_onset_is_the_depth_from_which_every_surface_has_several_minima() {
        assert_eq!(chaotic_from(&[(8, 1), (14, 1), (20, 3), (56, 2)]), Some(20));
        assert_eq!(chaotic_from(&[(8, 2), (14, 3)]), Some(8));
        // a deeper single basin ends any run of chaotic surfaces
        assert_eq!(chaotic_from(&[(8, 1), (20, 4), (56, 1)]), None);
        assert_eq!(chaotic_from(&[(8, 2), (20, 1), (56, 2)]), Some(56));
        assert_eq!(chaotic_from(&[(8, 1), (110, 1)]), None);
        assert_eq!(chaotic_from(&[]), None);
    }
}
