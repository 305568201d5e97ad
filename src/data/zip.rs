//! A minimal read-only zip reader for `.npz` archives held in memory: stored and deflated
//! entries, Zip64 (which NumPy always uses), CRC-32 verified.
//!
//! Sizes come from the central directory and are checked against the archive's length;
//! inflated output grows only as data actually decompresses, capped at the declared size.

use std::io::Read;
use std::path::Path;

use super::error::DataError;

/// One entry of the central directory.
pub(crate) struct Entry {
    pub name: String,
    method: u16,
    crc: u32,
    compressed: u64,
    uncompressed: u64,
    local_offset: u64,
}

/// A parsed archive borrowing its bytes.
pub(crate) struct Archive<'a> {
    bytes: &'a [u8],
    path: &'a Path,
    pub entries: Vec<Entry>,
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;

impl<'a> Archive<'a> {
    pub fn parse(bytes: &'a [u8], path: &'a Path) -> Result<Self, DataError> {
        let bad =
            |at: u64, reason: &str| DataError::corrupt(path, format!("zip byte {at}"), reason);
        // End of central directory: 22 bytes plus a comment of up to 64 KiB.
        let lowest = bytes.len().saturating_sub(22 + 0xFFFF);
        let eocd = (lowest..=bytes.len().saturating_sub(22))
            .rev()
            .find(|&i| le32(bytes, i) == Some(EOCD_SIG))
            .ok_or_else(|| {
                bad(
                    0,
                    "no end-of-central-directory record (not a zip/.npz file)",
                )
            })?;
        let field = |at: usize| le16(bytes, eocd + at).unwrap_or(0);
        let mut count = field(10) as u64;
        let mut cd_size = le32(bytes, eocd + 12).unwrap_or(0) as u64;
        let mut cd_offset = le32(bytes, eocd + 16).unwrap_or(0) as u64;
        if count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
            let loc = eocd
                .checked_sub(20)
                .filter(|&l| le32(bytes, l) == Some(ZIP64_LOCATOR_SIG))
                .ok_or_else(|| bad(eocd as u64, "Zip64 locator missing"))?;
            let z = le64(bytes, loc + 8).unwrap_or(u64::MAX);
            let z = usize::try_from(z)
                .ok()
                .filter(|&z| le32(bytes, z) == Some(ZIP64_EOCD_SIG))
                .ok_or_else(|| bad(loc as u64, "Zip64 end record missing"))?;
            count = le64(bytes, z + 32).unwrap_or(u64::MAX);
            cd_size = le64(bytes, z + 40).unwrap_or(u64::MAX);
            cd_offset = le64(bytes, z + 48).unwrap_or(u64::MAX);
        }
        let cd_end = cd_offset.saturating_add(cd_size);
        if cd_end > bytes.len() as u64 || count > cd_size / 46 {
            return Err(bad(
                eocd as u64,
                "central directory lies outside the file (truncated download?)",
            ));
        }
        let mut entries = Vec::with_capacity(count as usize);
        let mut at = cd_offset as usize;
        for _ in 0..count {
            let h = |o: usize| le16(bytes, at + o).unwrap_or(0);
            if le32(bytes, at) != Some(CENTRAL_SIG) || at + 46 > cd_end as usize {
                return Err(bad(at as u64, "bad central directory entry"));
            }
            let (name_len, extra_len, comment_len) =
                (h(28) as usize, h(30) as usize, h(32) as usize);
            let name_bytes = bytes
                .get(at + 46..at + 46 + name_len)
                .ok_or_else(|| bad(at as u64, "entry name cut off"))?;
            let extra = bytes
                .get(at + 46 + name_len..at + 46 + name_len + extra_len)
                .ok_or_else(|| bad(at as u64, "entry extra field cut off"))?;
            let mut e = Entry {
                name: String::from_utf8_lossy(name_bytes).into_owned(),
                method: h(10),
                crc: le32(bytes, at + 16).unwrap_or(0),
                compressed: le32(bytes, at + 20).unwrap_or(0) as u64,
                uncompressed: le32(bytes, at + 24).unwrap_or(0) as u64,
                local_offset: le32(bytes, at + 42).unwrap_or(0) as u64,
            };
            // Zip64 extra field (id 1): the 0xFFFFFFFF fields, in this order.
            let mut x = 0;
            while x + 4 <= extra.len() {
                let (id, len) = (
                    le16(extra, x).unwrap_or(0),
                    le16(extra, x + 2).unwrap_or(0) as usize,
                );
                let body = extra.get(x + 4..x + 4 + len).unwrap_or(&[]);
                if id == 1 {
                    let mut p = 0;
                    for v in [&mut e.uncompressed, &mut e.compressed, &mut e.local_offset] {
                        if *v == 0xFFFF_FFFF {
                            *v = le64(body, p)
                                .ok_or_else(|| bad(at as u64, "Zip64 field cut off"))?;
                            p += 8;
                        }
                    }
                }
                x += 4 + len;
            }
            entries.push(e);
            at += 46 + name_len + extra_len + comment_len;
        }
        Ok(Archive {
            bytes,
            path,
            entries,
        })
    }

    /// Names with one `.npy` suffix stripped, as NumPy shows them.
    pub fn names(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|e| e.name.strip_suffix(".npy").unwrap_or(&e.name).to_string())
            .collect()
    }

    /// Finds `name` or `name.npy`.
    pub fn find(&self, name: &str) -> Option<&Entry> {
        let npy = format!("{name}.npy");
        self.entries
            .iter()
            .find(|e| e.name == name)
            .or_else(|| self.entries.iter().find(|e| e.name == npy))
    }

    /// Decompresses an entry and verifies its size and CRC-32.
    pub fn read(&self, e: &Entry) -> Result<Vec<u8>, DataError> {
        let bad = |reason: String| {
            DataError::corrupt(self.path, format!("zip entry `{}`", e.name), reason)
        };
        let lo = usize::try_from(e.local_offset).unwrap_or(usize::MAX);
        if le32(self.bytes, lo) != Some(LOCAL_SIG) {
            return Err(bad(format!("no local header at byte {lo}")));
        }
        let skip = 30
            + le16(self.bytes, lo + 26).unwrap_or(0) as usize
            + le16(self.bytes, lo + 28).unwrap_or(0) as usize;
        let start = lo + skip;
        let data = usize::try_from(e.compressed)
            .ok()
            .and_then(|c| self.bytes.get(start..start.checked_add(c)?))
            .ok_or_else(|| {
                bad(format!(
                    "{} compressed bytes at byte {start} run past the end of the file",
                    e.compressed
                ))
            })?;
        let out = match e.method {
            0 => data.to_vec(),
            8 => {
                let mut out = Vec::new();
                flate2::read::DeflateDecoder::new(data)
                    .take(e.uncompressed.saturating_add(1))
                    .read_to_end(&mut out)
                    .map_err(|err| bad(format!("deflate stream is damaged: {err}")))?;
                out
            }
            m => {
                return Err(bad(format!(
                    "compression method {m} is not supported (only stored and deflate; \
                     save with np.savez or np.savez_compressed)"
                )))
            }
        };
        if out.len() as u64 != e.uncompressed {
            return Err(bad(format!(
                "holds {} bytes but the directory says {}",
                out.len(),
                e.uncompressed
            )));
        }
        let mut crc = flate2::Crc::new();
        crc.update(&out);
        if crc.sum() != e.crc {
            return Err(bad("CRC-32 mismatch".into()));
        }
        Ok(out)
    }
}
