//! `losscape metrics F.h5`: smoothness metrics of a surface (see [`crate::metrics`]).

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use clap::Args;

use crate::io::surface::read_surface;
use crate::metrics::{file_metrics, MetricParams};

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Surface file (losscape's or loss-landscape's).
    #[arg(value_name = "F.h5")]
    pub file: PathBuf,
    /// Which dataset of the file.
    #[arg(long, default_value = "train_loss")]
    pub surf_name: String,
    /// Loss rise that ends the basin (default 0.5).
    #[arg(long)]
    pub delta: Option<f64>,
    /// Radius of the disc for roughness and non-convexity (default: half the smaller half-width).
    #[arg(long)]
    pub radius: Option<f64>,
    /// Rays for the basin radius of 2-D surfaces (default 16).
    #[arg(long)]
    pub rays: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &MetricsArgs) -> Result<()> {
    let f = read_surface(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let p = MetricParams {
        delta: args.delta,
        radius: args.radius,
        rays: args.rays,
    };
    let m = file_metrics(&f, &args.surf_name, &p).ok_or_else(|| {
        anyhow!(
            "{}: no dataset '{}' (it has {:?}); choose one with --surf-name",
            args.file.display(),
            args.surf_name,
            f.values.names
        )
    })?;
    if args.json {
        return super::print_json(&m);
    }
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_else(|| "–".into());
    println!("{} ({})", args.file.display(), args.surf_name);
    println!(
        "  center loss           {:.6} at {:?}",
        m.center_loss, m.center
    );
    println!(
        "  minimum               {:.6} at {:?}",
        m.min_loss, m.min_at
    );
    match &m.basin_radius {
        Some(b) => println!(
            "  basin radius (δ={})   mean {:.4}, min {:.4} over {} rays ({} censored)",
            m.delta, b.mean, b.min, b.rays, b.censored
        ),
        None => println!("  basin radius          –"),
    }
    println!("  roughness (ρ={:.3})    {}", m.radius, opt(m.roughness));
    println!("  non-convex fraction   {}", opt(m.non_convex_fraction));
    println!("  strict local minima   {}", m.local_minima);
    println!(
        "  curvature at center   x {}  y {}",
        opt(m.curvature_x),
        opt(m.curvature_y)
    );
    for n in &m.notes {
        println!("  note: {n}");
    }
    Ok(())
}
