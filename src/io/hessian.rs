//! Hessian files (HDF5), written by `losscape hessian`.
//!
//! ```text
//! group (the root for the whole subset; /blocks/<name>/ per block with --per-block,
//!        their order in the network in the root attribute block_order, a string array)
//!   eigenvalues          f64 (k)        largest eigenvalues, decreasing
//!   residuals            f64 (k)        ‖Hv − λv‖ / |λ| of each pair
//!   converged            u8  (k)        1 where the residual met --tol (power: its own rule)
//!   eigenvectors         f32 (dim, k)   with --save-vectors; rows in subset order
//!       attrs tensors (string array: the tensor names, in that order),
//!             tensor_offsets (i64 array: first row of each tensor)
//!   bottom_eigenvalues, bottom_residuals, bottom_converged, bottom_eigenvectors
//!                                       with --bottom: most negative first
//!   trace_samples        f64 (probes)   per-probe quadratic forms zᵀHz (Hutch++: g'ᵀHg')
//!   slq_nodes            f64 (runs, steps)   Ritz values of each SLQ run
//!   slq_weights          f64 (runs, steps)   squared first components (sum to 1 per run)
//!   density_grid         f64 (points)   t of the smoothed density
//!   density              f64 (points)   φ(t), Gaussian-smoothed, integrates to ≈ 1
//!   attrs params_dim, hvps, seconds; trace, trace_stderr, trace_probes, trace_method
//! root attributes: model, model_sha256, data, samples, seed, operator (hessian, ggn,
//!   fisher, empirical-fisher), operator_definition, fisher_samples (fisher), method, tol,
//!   max_iter, params, weight_decay, bn_mode, precision, hvps, seconds, losscape_version,
//!   hvp_normalization ("per-sample mean (PyHessian convention; loss-landscape sums
//!   per-batch means)"), …
//! ```
//! Files are written whole to a temporary sibling and renamed into place, so a reader or a
//! crash never sees a half-written file. [`read_eigenvectors`] reads the eigenvectors back
//! (for surfaces along them); [`read_spectra`] the eigenvalues and densities of every
//! group (for per-block spectrum plots).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hdf5::types::VarLenUnicode;
use ndarray::{Array1, Array2};

use super::surface::{read_attrs, write_attr, Attr};

/// Why a Hessian file could not be written or read.
#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum HessianFileError {
    /// Occurs when libhdf5 crashes, hangs or over-allocates on the file (see [`super::contain`]).
    #[error(transparent)]
    Contained(#[from] super::contain::ContainError),
    /// Occurs when the HDF5 library fails to create, fill or read the file.
    #[error("{path}: {why}")]
    Hdf5 { path: PathBuf, why: String },
    /// Occurs when the file does not exist.
    #[error("{path}: no such file")]
    NotFound { path: PathBuf },
    /// Occurs when a group holds no eigenvectors (or no such group exists).
    #[error(
        "{path}: {group} holds no eigenvectors; write them with `losscape hessian --save-vectors`"
    )]
    NoVectors { path: PathBuf, group: String },
    /// Occurs when a group has fewer eigenvectors than wanted.
    #[error("{path}: {group} holds {got} eigenvector(s) but {wanted} are needed; run `losscape hessian --save-vectors --top-k {wanted}`")]
    TooFewVectors {
        path: PathBuf,
        group: String,
        got: usize,
        wanted: usize,
    },
    /// Occurs when the stored eigenvectors are inconsistent with their own attributes.
    #[error("{path}: {group}: {why}")]
    Corrupt {
        path: PathBuf,
        group: String,
        why: String,
    },
}

/// Eigenpairs of one end of the spectrum.
#[derive(Clone, Debug, Default)]
pub struct EigenData {
    pub values: Vec<f64>,
    pub residuals: Vec<f64>,
    pub converged: Vec<bool>,
    /// Unit eigenvectors as columns (dim × k).
    pub vectors: Option<Array2<f64>>,
}

/// A trace estimate and its samples.
#[derive(Clone, Debug, Default)]
pub struct TraceData {
    pub estimate: f64,
    pub stderr: f64,
    pub probes: usize,
    /// `hutchinson` or `hutchpp`.
    pub method: String,
    pub samples: Vec<f64>,
}

/// SLQ quadrature and the smoothed density.
#[derive(Clone, Debug, Default)]
pub struct DensityData {
    /// Ritz values (runs × steps).
    pub nodes: Array2<f64>,
    /// Quadrature weights (runs × steps).
    pub weights: Array2<f64>,
    pub grid: Vec<f64>,
    pub density: Vec<f64>,
}

/// Everything written into one group (the root, or one block).
#[derive(Clone, Debug, Default)]
pub struct HessianGroup {
    pub params_dim: usize,
    /// Selected tensor names and their lengths, in operator order.
    pub tensors: Vec<(String, usize)>,
    pub top: Option<EigenData>,
    pub bottom: Option<EigenData>,
    pub trace: Option<TraceData>,
    pub density: Option<DensityData>,
    pub hvps: usize,
    pub seconds: f64,
}

fn h5(path: &Path) -> impl Fn(hdf5::Error) -> HessianFileError + '_ {
    move |e| HessianFileError::Hdf5 {
        path: path.to_path_buf(),
        why: e.to_string(),
    }
}

fn write_vec(g: &hdf5::Group, name: &str, v: &[f64]) -> hdf5::Result<()> {
    g.new_dataset_builder()
        .with_data(&Array1::from(v.to_vec()))
        .create(name)
        .map(|_| ())
}

fn write_eigen(
    g: &hdf5::Group,
    prefix: &str,
    e: &EigenData,
    tensors: &[(String, usize)],
) -> hdf5::Result<()> {
    write_vec(g, &format!("{prefix}eigenvalues"), &e.values)?;
    write_vec(g, &format!("{prefix}residuals"), &e.residuals)?;
    let conv: Array1<u8> = e.converged.iter().map(|&c| c as u8).collect();
    g.new_dataset_builder()
        .with_data(&conv)
        .create(format!("{prefix}converged").as_str())?;
    if let Some(v) = &e.vectors {
        let ds = g
            .new_dataset_builder()
            .with_data(&v.mapv(|x| x as f32))
            .create(format!("{prefix}eigenvectors").as_str())?;
        let names = tensors
            .iter()
            .map(|(n, _)| n.parse::<VarLenUnicode>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| hdf5::Error::from(format!("{e:?}")))?;
        ds.new_attr_builder()
            .with_data(&Array1::from(names))
            .create("tensors")?;
        let mut offsets = Vec::with_capacity(tensors.len());
        let mut at = 0i64;
        for (_, len) in tensors {
            offsets.push(at);
            at += *len as i64;
        }
        ds.new_attr_builder()
            .with_data(&Array1::from(offsets))
            .create("tensor_offsets")?;
    }
    Ok(())
}

fn write_group(g: &hdf5::Group, a: &HessianGroup) -> hdf5::Result<()> {
    if let Some(e) = &a.top {
        write_eigen(g, "", e, &a.tensors)?;
    }
    if let Some(e) = &a.bottom {
        write_eigen(g, "bottom_", e, &a.tensors)?;
    }
    if let Some(t) = &a.trace {
        write_vec(g, "trace_samples", &t.samples)?;
        write_attr(g, "trace", &t.estimate.into())?;
        write_attr(g, "trace_stderr", &t.stderr.into())?;
        write_attr(g, "trace_probes", &t.probes.into())?;
        write_attr(g, "trace_method", &t.method.as_str().into())?;
    }
    if let Some(d) = &a.density {
        g.new_dataset_builder()
            .with_data(&d.nodes)
            .create("slq_nodes")?;
        g.new_dataset_builder()
            .with_data(&d.weights)
            .create("slq_weights")?;
        write_vec(g, "density_grid", &d.grid)?;
        write_vec(g, "density", &d.density)?;
    }
    write_attr(g, "params_dim", &a.params_dim.into())?;
    write_attr(g, "hvps", &a.hvps.into())?;
    write_attr(g, "seconds", &a.seconds.into())?;
    Ok(())
}

/// Writes a Hessian file atomically: `whole` at the root, each block under `/blocks/<name>`,
/// `attrs` on the root (after the group's own `params_dim`, `hvps`, `seconds`).
pub fn write_hessian(
    path: &Path,
    whole: &HessianGroup,
    blocks: &[(String, HessianGroup)],
    attrs: &BTreeMap<String, Attr>,
) -> Result<(), HessianFileError> {
    let e = h5(path);
    let io = |x: std::io::Error| HessianFileError::Hdf5 {
        path: path.into(),
        why: x.to_string(),
    };
    crate::io::output::replace_atomically(path, false, io, |tmp| {
        crate::io::hdf5_init();
        let f = hdf5::File::create(tmp).map_err(&e)?;
        write_group(&f, whole).map_err(&e)?;
        if !blocks.is_empty() {
            let b = f.create_group("blocks").map_err(&e)?;
            for (name, g) in blocks {
                write_group(&b.create_group(name).map_err(&e)?, g).map_err(&e)?;
            }
            // the blocks' order (the network's), which HDF5's listing by name loses
            let order = blocks
                .iter()
                .map(|(n, _)| n.parse::<VarLenUnicode>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|x| e(hdf5::Error::from(format!("{x:?}"))))?;
            f.new_attr_builder()
                .with_data(&Array1::from(order))
                .create("block_order")
                .map_err(&e)?;
        }
        for (k, v) in attrs {
            if !matches!(k.as_str(), "params_dim" | "hvps" | "seconds") {
                write_attr(&f, k, v).map_err(&e)?;
            }
        }
        f.flush().map_err(&e)?;
        Ok(())
    })
}

/// Eigenvectors written by `losscape hessian --save-vectors`, with what they belong to.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SavedEigenvectors {
    /// The eigenvalues of the columns of `vectors`, largest first.
    pub values: Vec<f64>,
    /// Unit eigenvectors as columns (dim × k), rows in `tensors` order.
    pub vectors: Array2<f32>,
    /// The tensors of the rows: (name, number of entries), in order.
    pub tensors: Vec<(String, usize)>,
    /// `hessian`, `ggn`, `fisher` or `empirical-fisher` (files without the attribute were
    /// all Hessians).
    pub operator: String,
    pub model_sha256: Option<String>,
}

/// Whether `path` is a Hessian file (eigenvalues at the root, no direction groups).
pub fn is_hessian_file(path: &Path) -> bool {
    path.is_file()
        && super::contain::contain(path, || {
            crate::io::hdf5_init();
            hdf5::File::open(path)
                .is_ok_and(|f| f.dataset("eigenvalues").is_ok() && f.group("xdirection").is_err())
        })
        .unwrap_or(false)
}

/// Reads the largest eigenvectors of a Hessian file's root (`block` None) or of
/// `/blocks/<block>`; at least `wanted` of them.
pub fn read_eigenvectors(
    path: &Path,
    block: Option<&str>,
    wanted: usize,
) -> Result<SavedEigenvectors, HessianFileError> {
    if !path.exists() {
        return Err(HessianFileError::NotFound { path: path.into() });
    }
    super::contain::contain(path, || read_eigenvectors_here(path, block, wanted))?
}

/// [`read_eigenvectors`] in this process.
fn read_eigenvectors_here(
    path: &Path,
    block: Option<&str>,
    wanted: usize,
) -> Result<SavedEigenvectors, HessianFileError> {
    let e = h5(path);
    crate::io::hdf5_init();
    let f = hdf5::File::open(path).map_err(&e)?;
    let group_name = match block {
        Some(b) => format!("/blocks/{b}"),
        None => "/".into(),
    };
    let no_vectors = || HessianFileError::NoVectors {
        path: path.into(),
        group: group_name.clone(),
    };
    let g = f.group(&group_name).map_err(|_| no_vectors())?;
    let ds = g.dataset("eigenvectors").map_err(|_| no_vectors())?;
    let corrupt = |why: String| HessianFileError::Corrupt {
        path: path.into(),
        group: group_name.clone(),
        why,
    };
    super::check_fits(&ds, super::file_bytes(path))
        .map_err(|why| corrupt(format!("eigenvectors: {why}")))?;
    let vectors: Array2<f32> = ds.read_2d().map_err(&e)?;
    let values: Vec<f64> = g
        .dataset("eigenvalues")
        .and_then(|d| d.read_raw())
        .map_err(&e)?;
    let (dim, k) = vectors.dim();
    if values.len() != k {
        return Err(corrupt(format!(
            "{k} eigenvectors but {} eigenvalues",
            values.len()
        )));
    }
    if k < wanted {
        return Err(HessianFileError::TooFewVectors {
            path: path.into(),
            group: group_name.clone(),
            got: k,
            wanted,
        });
    }
    let names: Vec<VarLenUnicode> = ds.attr("tensors").and_then(|a| a.read_raw()).map_err(&e)?;
    let offsets: Vec<i64> = ds
        .attr("tensor_offsets")
        .and_then(|a| a.read_raw())
        .map_err(&e)?;
    if names.len() != offsets.len() || offsets.first().is_some_and(|&o| o != 0) {
        return Err(corrupt(format!(
            "{} tensor names but {} offsets (the first must be 0)",
            names.len(),
            offsets.len()
        )));
    }
    let mut tensors = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let end = offsets.get(i + 1).copied().unwrap_or(dim as i64);
        if end < offsets[i] || end > dim as i64 {
            return Err(corrupt(format!(
                "tensor_offsets {offsets:?} do not fit {dim} rows"
            )));
        }
        tensors.push((name.to_string(), (end - offsets[i]) as usize));
    }
    let attrs = read_attrs(&f);
    let s = |k: &str| attrs.get(k).and_then(Attr::as_str).map(str::to_owned);
    Ok(SavedEigenvectors {
        values,
        vectors,
        tensors,
        operator: s("operator").unwrap_or_else(|| "hessian".into()),
        model_sha256: s("model_sha256").filter(|h| !h.is_empty()),
    })
}

/// The eigenvalues and density of one group of a Hessian file.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct GroupSpectrum {
    /// `all` for the root, else the block's name.
    pub name: String,
    pub params_dim: usize,
    /// Largest eigenvalues, decreasing (empty when absent).
    pub top: Vec<f64>,
    /// Most negative eigenvalues (empty when absent).
    pub bottom: Vec<f64>,
    /// The smoothed density (grid, φ) when the file has one.
    pub density: Option<(Vec<f64>, Vec<f64>)>,
    /// SLQ's Ritz values and weights (runs × steps) behind the density.
    pub slq: Option<(Array2<f64>, Array2<f64>)>,
    pub trace: Option<f64>,
}

/// The spectra of a Hessian file.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Spectra {
    /// The root group (the whole parameter subset), named `all`.
    pub whole: GroupSpectrum,
    /// Every block, in the network's order.
    pub blocks: Vec<GroupSpectrum>,
    /// The root attributes (model, data, operator, …).
    pub attrs: BTreeMap<String, Attr>,
}

/// Spectra of the root and of every block of a Hessian file (blocks in the order they
/// were written, which is the network's order), with the root attributes.
pub fn read_spectra(path: &Path) -> Result<Spectra, HessianFileError> {
    if !path.exists() {
        return Err(HessianFileError::NotFound { path: path.into() });
    }
    super::contain::contain(path, || read_spectra_here(path))?
}

/// [`read_spectra`] in this process.
fn read_spectra_here(path: &Path) -> Result<Spectra, HessianFileError> {
    let e = h5(path);
    crate::io::hdf5_init();
    let f = hdf5::File::open(path).map_err(&e)?;
    let read_group = |g: &hdf5::Group, name: &str| -> GroupSpectrum {
        let vec = |n: &str| g.dataset(n).and_then(|d| d.read_raw::<f64>()).ok();
        let attrs = read_attrs(g);
        GroupSpectrum {
            name: name.into(),
            params_dim: match attrs.get("params_dim") {
                Some(Attr::Int(d)) => *d as usize,
                _ => 0,
            },
            top: vec("eigenvalues").unwrap_or_default(),
            bottom: vec("bottom_eigenvalues").unwrap_or_default(),
            density: vec("density_grid").zip(vec("density")),
            slq: {
                let m = |n: &str| g.dataset(n).and_then(|d| d.read_2d::<f64>()).ok();
                m("slq_nodes")
                    .zip(m("slq_weights"))
                    .filter(|(n, w)| n.dim() == w.dim() && !n.is_empty())
            },
            trace: match attrs.get("trace") {
                Some(Attr::Float(t)) => Some(*t),
                _ => None,
            },
        }
    };
    let root = read_group(&f, "all");
    let mut blocks = Vec::new();
    if let Ok(b) = f.group("blocks") {
        // HDF5 lists members by name; the order of creation is the network's
        let mut names = b.member_names().map_err(&e)?;
        let order: Vec<String> = match f.attr("block_order") {
            Ok(a) => a
                .read_raw::<VarLenUnicode>()
                .map(|v| v.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        names.sort_by_key(|n| order.iter().position(|o| o == n).unwrap_or(usize::MAX));
        for n in names {
            let g = b.group(&n).map_err(&e)?;
            blocks.push(read_group(&g, &n));
        }
    }
    Ok(Spectra {
        whole: root,
        blocks,
        attrs: read_attrs(&f),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.h5");
        let g = HessianGroup {
            params_dim: 3,
            tensors: vec![("a.weight".into(), 2), ("a.bias".into(), 1)],
            top: Some(EigenData {
                values: vec![2.0],
                residuals: vec![1e-9],
                converged: vec![true],
                vectors: Some(Array2::from_shape_vec((3, 1), vec![1.0, 0.0, 0.0]).unwrap()),
            }),
            trace: Some(TraceData {
                estimate: 3.0,
                stderr: 0.1,
                probes: 2,
                method: "hutchinson".into(),
                samples: vec![2.9, 3.1],
            }),
            hvps: 7,
            seconds: 0.5,
            ..Default::default()
        };
        let mut attrs = BTreeMap::new();
        attrs.insert("seed".to_string(), Attr::Int(4));
        write_hessian(&path, &g, &[("a".into(), g.clone())], &attrs).unwrap();
        crate::io::hdf5_init();
        let f = hdf5::File::open(&path).unwrap();
        let ev: Vec<f64> = f.dataset("eigenvalues").unwrap().read_raw().unwrap();
        assert_eq!(ev, [2.0]);
        let vecs = f.dataset("blocks/a/eigenvectors").unwrap();
        assert_eq!(vecs.shape(), [3, 1]);
        let names: Vec<VarLenUnicode> = vecs.attr("tensors").unwrap().read_raw().unwrap();
        assert_eq!(names[1].as_str(), "a.bias");
        let off: Vec<i64> = vecs.attr("tensor_offsets").unwrap().read_raw().unwrap();
        assert_eq!(off, [0, 2]);
        assert_eq!(f.attr("seed").unwrap().read_scalar::<i64>().unwrap(), 4);
        assert_eq!(f.attr("hvps").unwrap().read_scalar::<i64>().unwrap(), 7);
        let ts: Vec<f64> = f.dataset("trace_samples").unwrap().read_raw().unwrap();
        assert_eq!(ts.len(), 2);
        assert!(!dir.path().join(".h.h5.tmp").exists());
    }
}
