//! `losscape metrics F.h5`: smoothness metrics of a surface (see [`crate::metrics`]).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use crate::io::surface::read_surface;
use crate::metrics::{surface_file_metrics, MetricParams, MetricsError, SurfaceMetrics};

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Surface file (losscape's or loss-landscape's).
    #[arg(value_name = "F.h5")]
    pub file: PathBuf,
    /// Which dataset of the file.
    #[arg(long, default_value = "train_loss")]
    pub surf_name: String,
    /// Loss rise δ above the center that ends the basin, in loss units [default: 0.5].
    #[arg(long, value_parser = positive)]
    pub delta: Option<f64>,
    /// Radius ρ (grid coordinates) of the disc around the center for roughness and
    /// non-convexity [default: half the smaller half-width of the grid].
    #[arg(long, value_parser = positive)]
    pub radius: Option<f64>,
    /// Rays for the basin radius of a 2-D surface [default: 16; 1-D always uses 2].
    #[arg(long, value_parser = super::numbers::positive::<u64>)]
    pub rays: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number")),
    }
}

/// What `--json` prints.
#[derive(Serialize)]
struct Report<'a> {
    file: String,
    dataset: &'a str,
    #[serde(flatten)]
    metrics: &'a SurfaceMetrics,
}

pub fn run(args: &MetricsArgs) -> Result<()> {
    let f = read_surface(&args.file)?;
    let p = MetricParams {
        delta: args.delta,
        radius: args.radius,
        rays: args.rays.map(|r| r as usize),
    };
    let file = args.file.display().to_string();
    let m = surface_file_metrics(&f, &args.surf_name, &p).map_err(|e| match e {
        MetricsError::Missing { .. } => anyhow::Error::new(e).context(file.clone()),
        e => anyhow::Error::new(e).context(format!("{file}, dataset '{}'", args.surf_name)),
    })?;
    // written through a handle so a closed pipe is an error main maps to exit 0
    let mut out = std::io::stdout().lock();
    if args.json {
        let report = Report {
            file,
            dataset: &args.surf_name,
            metrics: &m,
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        write!(out, "{}", text_table(&file, &args.surf_name, &m))?;
    }
    out.flush()?;
    Ok(())
}

fn text_table(file: &str, dataset: &str, m: &SurfaceMetrics) -> String {
    use std::fmt::Write;
    let num = |v: Option<f64>| v.map_or_else(|| "–".to_string(), |v| format!("{v:.6}"));
    let why = |k: &str| {
        m.undefined
            .get(k)
            .map_or_else(String::new, |w| format!("  ({w})"))
    };
    let at = |p: Option<(f64, f64)>| match (p, m.dims) {
        (Some((a, _)), 1) => format!(" at α = {a}"),
        (Some((a, b)), _) => format!(" at (α, β) = ({a}, {b})"),
        (None, _) => String::new(),
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{file} ({dataset}): {}-D, {} of {} points finite",
        m.dims, m.finite_points, m.points
    );
    let _ = writeln!(
        s,
        "  center loss          {}{}{}",
        num(m.center_loss),
        at(Some(m.center)),
        why("center_loss")
    );
    let _ = writeln!(
        s,
        "  minimum              {}{}{}",
        num(m.min_loss),
        at(m.min_at),
        why("min_loss")
    );
    match &m.basin_radius {
        Some(b) => {
            let _ = writeln!(
                s,
                "  basin radius         mean {:.4}, min {:.4} over {} rays, {} censored  (δ = {})",
                b.mean, b.min, b.rays, b.censored, m.delta
            );
        }
        None => {
            let _ = writeln!(s, "  basin radius         –{}", why("basin_radius"));
        }
    }
    let _ = writeln!(
        s,
        "  roughness            {}{}  (ρ = {}, {} points)",
        num(m.roughness),
        why("roughness"),
        m.radius,
        m.disc_points
    );
    let tau = m.tau.map_or_else(String::new, |t| format!("τ = {t:.3e}, "));
    let _ = writeln!(
        s,
        "  non-convex fraction  {}{}  ({tau}{} points)",
        num(m.non_convex_fraction),
        why("non_convex_fraction"),
        m.convexity_points
    );
    let _ = writeln!(s, "  strict local minima  {}", m.local_minima);
    let _ = writeln!(
        s,
        "  f''(0) along α       {}{}",
        num(m.curvature_x),
        why("curvature_x")
    );
    if m.dims == 2 {
        let _ = writeln!(
            s,
            "  f''(0) along β       {}{}",
            num(m.curvature_y),
            why("curvature_y")
        );
    }
    s
}
