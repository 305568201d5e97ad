//! An append-only journal of finished grid points, so that a run killed at any moment
//! (even `kill -9`) loses no finished point and resumes where it stopped.
//!
//! ```text
//! line 1:  {"losscape_journal":1,"fingerprint":"<hex>","points":N,"values":V}
//! line k:  <point index> <value bits as 16 hex digits> × V
//! ```
//! Values are stored as the hex of their f64 bits, so a resumed surface is bit-identical to
//! an uninterrupted one. Each line is written with one `write` call and flushed; a line cut
//! short by a crash has fewer fields than it should and is ignored (that point is simply
//! recomputed). Alternatives considered: rewriting the HDF5 file after every point (too
//! slow for big grids, and HDF5 files are not robust to a kill mid-write) and SQLite (an
//! extra dependency for what is an append-only log).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, PartialEq)]
struct Header {
    losscape_journal: u32,
    fingerprint: String,
    points: usize,
    values: usize,
}

/// Journal format version.
const JOURNAL_VERSION: u32 = 1;

/// Errors of the journal.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Occurs when the journal cannot be created, read or appended to.
    #[error("journal {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// Occurs when a journal belongs to another computation (other model, grid, directions or data).
    #[error("journal {path} belongs to a different computation (model, grid, directions, data or options differ); delete it or choose another `out`")]
    Mismatch { path: PathBuf },
}

pub struct Journal {
    path: PathBuf,
    file: File,
    values: usize,
}

impl Journal {
    /// Opens (or creates) the journal at `path` for a computation identified by
    /// `fingerprint`; returns it with the points already finished.
    #[allow(clippy::type_complexity)]
    pub fn open(
        path: &Path,
        fingerprint: &str,
        points: usize,
        values: usize,
    ) -> Result<(Self, BTreeMap<usize, Vec<f64>>), JournalError> {
        let io = |cause| JournalError::Io {
            path: path.to_path_buf(),
            cause,
        };
        let header = Header {
            losscape_journal: JOURNAL_VERSION,
            fingerprint: fingerprint.into(),
            points,
            values,
        };
        let mut done = BTreeMap::new();
        if path.exists() {
            let reader = BufReader::new(File::open(path).map_err(io)?);
            let mut lines = reader.lines();
            let first = lines.next().transpose().map_err(io)?.unwrap_or_default();
            match serde_json::from_str::<Header>(&first) {
                Ok(h) if h == header => {}
                Ok(_) => {
                    return Err(JournalError::Mismatch {
                        path: path.to_path_buf(),
                    })
                }
                // an empty or cut header: nothing was recorded yet
                Err(_) if first.trim().is_empty() || !first.ends_with('}') => {}
                Err(_) => {
                    return Err(JournalError::Mismatch {
                        path: path.to_path_buf(),
                    })
                }
            }
            for line in lines {
                let Ok(line) = line else { break };
                if let Some((k, v)) = parse_line(&line, points, values) {
                    done.insert(k, v);
                }
            }
            if !first.ends_with('}') {
                std::fs::remove_file(path).map_err(io)?;
            }
        }
        let fresh = !path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        if fresh {
            writeln!(
                file,
                "{}",
                serde_json::to_string(&header).expect("serializable")
            )
            .map_err(io)?;
            file.sync_all().map_err(io)?;
        } else {
            // a crash may have left a partial last line: start ours on a fresh line
            file.write_all(b"\n").map_err(io)?;
        }
        Ok((
            Self {
                path: path.to_path_buf(),
                file,
                values,
            },
            done,
        ))
    }

    /// Records a finished point (one write call, flushed to the OS).
    ///
    /// # Panics
    /// If `values` has another length than the journal was opened with.
    pub fn append(&mut self, point: usize, values: &[f64]) -> Result<(), JournalError> {
        assert_eq!(values.len(), self.values);
        let mut line = point.to_string();
        for v in values {
            line.push_str(&format!(" {:016x}", v.to_bits()));
        }
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(|cause| JournalError::Io {
                path: self.path.clone(),
                cause,
            })
    }

    /// Forces the journal to disk (survives power loss, not only a killed process).
    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.file.sync_data().map_err(|cause| JournalError::Io {
            path: self.path.clone(),
            cause,
        })
    }

    /// Deletes the journal once its contents are safely in the final file.
    pub fn remove(self) -> Result<(), JournalError> {
        drop(self.file);
        std::fs::remove_file(&self.path).map_err(|cause| JournalError::Io {
            path: self.path,
            cause,
        })
    }
}

fn parse_line(line: &str, points: usize, values: usize) -> Option<(usize, Vec<f64>)> {
    let mut it = line.split_ascii_whitespace();
    let k: usize = it.next()?.parse().ok()?;
    if k >= points {
        return None;
    }
    let v: Vec<f64> = it
        .map(|s| {
            if s.len() == 16 {
                u64::from_str_radix(s, 16).ok().map(f64::from_bits)
            } else {
                None
            }
        })
        .collect::<Option<Vec<f64>>>()?;
    (v.len() == values).then_some((k, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_partial_lines_and_rejects_other_fingerprints() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        let (mut j, done) = Journal::open(&p, "abc", 10, 2).unwrap();
        assert!(done.is_empty());
        j.append(3, &[1.5, f64::NAN]).unwrap();
        j.append(7, &[-0.0, 2.0]).unwrap();
        drop(j);
        // simulate a kill in the middle of a line
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"5 3ff00000000").unwrap();
        drop(f);
        let (mut j, done) = Journal::open(&p, "abc", 10, 2).unwrap();
        assert_eq!(done.len(), 2);
        assert!(done[&3][1].is_nan());
        assert_eq!(done[&7][0].to_bits(), (-0.0f64).to_bits());
        j.append(5, &[1.0, 1.0]).unwrap();
        drop(j);
        let (_, done) = Journal::open(&p, "abc", 10, 2).unwrap();
        assert_eq!(done.keys().copied().collect::<Vec<_>>(), vec![3, 5, 7]);
        assert!(matches!(
            Journal::open(&p, "other", 10, 2),
            Err(JournalError::Mismatch { .. })
        ));
    }
}
