//! ParaView export (loss-landscape's `h52vtp.py`): the surface as PolyData XML (ASCII),
//! points (α, β, z) joined into two triangles per grid cell (one where a corner is
//! masked), the value as a point scalar. Any grid shape; a 1-D surface becomes a polyline
//! in the (α, z) plane. Masked points are left out, never written as 0.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::data::Loaded;
use super::PlotError;

/// What to export.
#[derive(Clone, Debug)]
pub struct VtpConfig {
    pub input: PathBuf,
    pub surf_name: String,
    /// Clip values above this.
    pub zmax: Option<f64>,
    /// Write log10 of the values (non-positive values are left out).
    pub log: bool,
    pub out: PathBuf,
}

/// What was written.
#[derive(Clone, Debug, Default)]
pub struct VtpReport {
    pub points: usize,
    pub triangles: usize,
    pub lines: usize,
    pub warnings: Vec<String>,
}

/// Writes the `.vtp` file whole (temporary sibling, then rename).
pub fn export_vtp(cfg: &VtpConfig) -> Result<VtpReport, PlotError> {
    let _lock = crate::io::output::prepare_output(&cfg.out)?;
    let f = Loaded::open(&cfg.input)?;
    let mut report = VtpReport {
        warnings: f.warnings(),
        ..Default::default()
    };
    let q = f.quantity(&cfg.surf_name)?;
    if cfg.log && cfg.zmax.is_some_and(|z| z <= 0.0) {
        return Err(PlotError::LogZmax);
    }
    let z = |v: f64| -> f64 {
        let v = match cfg.zmax {
            Some(m) if v > m => m,
            _ => v,
        };
        if cfg.log {
            if v > 0.0 {
                v.log10()
            } else {
                f64::NAN
            }
        } else {
            v
        }
    };
    let x = &f.file.x;
    let (ny, ys) = match &f.file.y {
        Some(y) => (y.len(), y.clone()),
        None => (1, vec![0.0]),
    };
    let nx = x.len();
    let flat: Vec<f64> = q.iter().map(|&v| z(v)).collect();
    // index of each written point, None where masked
    let mut id = vec![None; flat.len()];
    let mut points = String::new();
    let mut scalars = String::new();
    let mut n = 0usize;
    for (iy, yv) in ys.iter().enumerate() {
        for (ix, xv) in x.iter().enumerate() {
            let k = iy * nx + ix;
            if flat[k].is_finite() {
                id[k] = Some(n);
                n += 1;
                let _ = writeln!(points, "{xv} {yv} {}", flat[k]);
                let _ = writeln!(scalars, "{}", flat[k]);
            }
        }
    }
    let mut conn = String::new();
    let mut offsets = String::new();
    let mut count = 0usize;
    let mut push = |cell: &[usize]| {
        for c in cell {
            let _ = write!(conn, "{c} ");
        }
        conn.push('\n');
        count += cell.len();
        let _ = writeln!(offsets, "{count}");
    };
    if f.file.y.is_some() {
        for iy in 0..ny.saturating_sub(1) {
            for ix in 0..nx.saturating_sub(1) {
                let c = [
                    id[iy * nx + ix],
                    id[iy * nx + ix + 1],
                    id[(iy + 1) * nx + ix + 1],
                    id[(iy + 1) * nx + ix],
                ];
                match c {
                    [Some(a), Some(b), Some(cc), Some(d)] => {
                        push(&[a, b, cc]);
                        push(&[a, cc, d]);
                        report.triangles += 2;
                    }
                    _ => {
                        let live: Vec<usize> = c.iter().flatten().copied().collect();
                        if live.len() == 3 {
                            push(&live);
                            report.triangles += 1;
                        }
                    }
                }
            }
        }
    } else {
        let mut run: Vec<usize> = Vec::new();
        for k in id.iter().chain(std::iter::once(&None)) {
            match k {
                Some(i) => run.push(*i),
                None => {
                    if run.len() >= 2 {
                        push(&run);
                        report.lines += 1;
                    }
                    run.clear();
                }
            }
        }
    }
    report.points = n;
    if n == 0 {
        return Err(PlotError::Input {
            path: cfg.input.clone(),
            why: format!("dataset '{}' has no finite values to export", cfg.surf_name),
        });
    }
    let name = if cfg.log {
        format!("log10_{}", cfg.surf_name)
    } else {
        cfg.surf_name.clone()
    };
    let (polys, lines) = if f.file.y.is_some() {
        (report.triangles, 0)
    } else {
        (0, report.lines)
    };
    let cells_tag = if f.file.y.is_some() { "Polys" } else { "Lines" };
    let mut xml = String::new();
    let _ = write!(
        xml,
        "<?xml version=\"1.0\"?>\n\
<VTKFile type=\"PolyData\" version=\"0.1\" byte_order=\"LittleEndian\">\n\
<PolyData>\n\
<Piece NumberOfPoints=\"{n}\" NumberOfVerts=\"0\" NumberOfLines=\"{lines}\" NumberOfStrips=\"0\" NumberOfPolys=\"{polys}\">\n\
<PointData Scalars=\"{name}\">\n\
<DataArray type=\"Float64\" Name=\"{name}\" NumberOfComponents=\"1\" format=\"ascii\">\n{scalars}</DataArray>\n\
</PointData>\n\
<Points>\n\
<DataArray type=\"Float64\" Name=\"Points\" NumberOfComponents=\"3\" format=\"ascii\">\n{points}</DataArray>\n\
</Points>\n\
<{cells_tag}>\n\
<DataArray type=\"Int64\" Name=\"connectivity\" format=\"ascii\">\n{conn}</DataArray>\n\
<DataArray type=\"Int64\" Name=\"offsets\" format=\"ascii\">\n{offsets}</DataArray>\n\
</{cells_tag}>\n\
</Piece>\n\
</PolyData>\n\
</VTKFile>\n"
    );
    crate::io::output::write_atomic(&cfg.out, |f| std::io::Write::write_all(f, xml.as_bytes()))
        .map_err(|cause| PlotError::Write {
            path: cfg.out.clone(),
            cause,
        })?;
    Ok(report)
}
