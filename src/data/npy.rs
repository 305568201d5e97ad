//! A strict `.npy` reader working on bytes already in memory.
//!
//! The header's shape is checked against the actual byte count before anything is
//! allocated, so a lying header cannot trigger a huge allocation.

use std::path::Path;

use super::error::DataError;

/// Element types accepted in `.npy` data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Float,
    Signed,
    Unsigned,
}

/// A parsed dtype descriptor such as `<f4` or `|u1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Dtype {
    pub kind: Kind,
    pub size: usize,
    pub big_endian: bool,
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let k = match self.kind {
            Kind::Float => "float",
            Kind::Signed => "int",
            Kind::Unsigned => "uint",
        };
        write!(f, "{k}{}", self.size * 8)
    }
}

/// One array, borrowing its data bytes.
pub(crate) struct NpyArray<'a> {
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    pub fortran: bool,
    data: &'a [u8],
}

/// Where an array came from, for error messages.
#[derive(Clone, Copy)]
pub(crate) struct Origin<'p> {
    pub path: &'p Path,
    pub field: &'p str,
}

impl Origin<'_> {
    fn corrupt(&self, at: impl std::fmt::Display, reason: impl Into<String>) -> DataError {
        DataError::corrupt(self.path, format!("array `{}`, {at}", self.field), reason)
    }
}

/// Parses a complete `.npy` file image.
pub(crate) fn parse<'a>(bytes: &'a [u8], o: Origin<'_>) -> Result<NpyArray<'a>, DataError> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(o.corrupt("byte 0", "missing the \\x93NUMPY magic of a .npy file"));
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(o.corrupt("byte 8", "header length cut off"));
            }
            let l = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (l as usize, 12)
        }
        v => return Err(o.corrupt("byte 6", format!("unsupported .npy version {v}"))),
    };
    let end = start
        .checked_add(hlen)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| {
            o.corrupt(
                format!("byte {start}"),
                format!(
                    "header claims {hlen} bytes but only {} remain",
                    bytes.len() - start
                ),
            )
        })?;
    let text = std::str::from_utf8(&bytes[start..end])
        .map_err(|_| o.corrupt(format!("byte {start}"), "header is not text"))?;
    let dict = match Lit::parse(text) {
        Some(Lit::Dict(d)) => d,
        _ => {
            return Err(o.corrupt(
                format!("byte {start}"),
                format!("header is not a Python dict: {:?}", text.trim_end()),
            ))
        }
    };
    let get = |k: &str| dict.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    let descr = match get("descr") {
        Some(Lit::Str(s)) => s.clone(),
        Some(_) => {
            return Err(DataError::WrongDtype {
                path: o.path.to_path_buf(),
                field: o.field.to_string(),
                found: "a structured dtype".into(),
                expected: "a plain numeric dtype".into(),
            })
        }
        None => return Err(o.corrupt("header", "no 'descr' key")),
    };
    let fortran = match get("fortran_order") {
        Some(Lit::Bool(b)) => *b,
        _ => return Err(o.corrupt("header", "no boolean 'fortran_order' key")),
    };
    let shape = match get("shape") {
        Some(Lit::Tuple(items)) => items
            .iter()
            .map(|v| match v {
                Lit::Int(n) => usize::try_from(*n).ok(),
                _ => None,
            })
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| o.corrupt("header", "'shape' holds a non-integer or negative"))?,
        _ => return Err(o.corrupt("header", "no tuple 'shape' key")),
    };
    let dtype = parse_descr(&descr).ok_or_else(|| DataError::WrongDtype {
        path: o.path.to_path_buf(),
        field: o.field.to_string(),
        found: format!("'{descr}'"),
        expected: "a numeric dtype (float32/float64, or an integer type)".into(),
    })?;
    let data = &bytes[end..];
    let need = shape
        .iter()
        .try_fold(dtype.size, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| o.corrupt("header", format!("shape {shape:?} overflows")))?;
    if need != data.len() {
        return Err(o.corrupt(
            format!("byte {end}"),
            format!(
                "shape {shape:?} of {dtype} needs {need} data bytes but the file holds {}",
                data.len()
            ),
        ));
    }
    Ok(NpyArray {
        shape,
        dtype,
        fortran,
        data,
    })
}

fn parse_descr(d: &str) -> Option<Dtype> {
    let mut chars = d.chars();
    let (order, rest) = match chars.next()? {
        c @ ('<' | '>' | '|' | '=') => (c, chars.as_str()),
        _ => ('=', d),
    };
    let kind = match rest.chars().next()? {
        'f' => Kind::Float,
        'i' => Kind::Signed,
        'u' => Kind::Unsigned,
        _ => return None,
    };
    let size: usize = rest[1..].parse().ok()?;
    let ok = match kind {
        Kind::Float => matches!(size, 4 | 8),
        _ => matches!(size, 1 | 2 | 4 | 8),
    };
    ok.then_some(Dtype {
        kind,
        size,
        big_endian: order == '>' || (order == '=' && cfg!(target_endian = "big")),
    })
}

impl NpyArray<'_> {
    fn element_bytes(&self) -> impl Iterator<Item = [u8; 8]> + '_ {
        let (size, be) = (self.dtype.size, self.dtype.big_endian);
        self.data.chunks_exact(size).map(move |c| {
            // Little-endian, zero-padded to 8 bytes; sign extension is done by the caller.
            let mut b = [0u8; 8];
            for (i, &v) in c.iter().enumerate() {
                b[if be { size - 1 - i } else { i }] = v;
            }
            b
        })
    }

    /// Elements in file order (row-major unless `fortran`), as `f64` for floats.
    fn floats(&self) -> Vec<f64> {
        let size = self.dtype.size;
        self.element_bytes()
            .map(|b| {
                if size == 4 {
                    f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64
                } else {
                    f64::from_le_bytes(b)
                }
            })
            .collect()
    }

    /// Integer elements in file order, widened to `i128` so every type fits.
    fn ints(&self) -> Vec<i128> {
        let bits = self.dtype.size * 8;
        let signed = self.dtype.kind == Kind::Signed;
        self.element_bytes()
            .map(|b| {
                let u = u64::from_le_bytes(b);
                if signed && bits < 64 {
                    let shift = 64 - bits;
                    (((u << shift) as i64) >> shift) as i128
                } else if signed {
                    u as i64 as i128
                } else {
                    u as i128
                }
            })
            .collect()
    }

    /// Reorders Fortran-ordered values into row-major order.
    fn row_major<T: Clone>(&self, v: Vec<T>) -> Vec<T> {
        if !self.fortran || self.shape.len() < 2 {
            return v;
        }
        use ndarray::ShapeBuilder;
        let a = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&self.shape).f(), v)
            .expect("length checked in parse");
        a.as_standard_layout().iter().cloned().collect()
    }

    /// Inputs as `f32` in row-major order: floats as they are, `uint8` scaled by 1/255.
    pub fn to_inputs(&self, o: Origin<'_>) -> Result<ndarray::ArrayD<f32>, DataError> {
        let v: Vec<f32> = match (self.dtype.kind, self.dtype.size) {
            (Kind::Float, _) => self.floats().into_iter().map(|x| x as f32).collect(),
            (Kind::Unsigned, 1) => self.data.iter().map(|&b| b as f32 / 255.0).collect(),
            _ => {
                return Err(DataError::WrongDtype {
                    path: o.path.to_path_buf(),
                    field: o.field.to_string(),
                    found: self.dtype.to_string(),
                    expected: "float32, float64 or uint8".into(),
                })
            }
        };
        let v = self.row_major(v);
        Ok(
            ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&self.shape), v)
                .expect("length checked in parse"),
        )
    }

    /// Labels of a 1-D integer array (range is checked by the caller).
    pub fn to_labels(&self, o: Origin<'_>) -> Result<Vec<i128>, DataError> {
        if self.dtype.kind == Kind::Float {
            return Err(DataError::WrongDtype {
                path: o.path.to_path_buf(),
                field: o.field.to_string(),
                found: self.dtype.to_string(),
                expected: "an integer type (e.g. int64)".into(),
            });
        }
        if self.shape.len() != 1 {
            return Err(DataError::BadShape {
                path: o.path.to_path_buf(),
                field: o.field.to_string(),
                shape: self.shape.clone(),
                expected: "one dimension [N]".into(),
            });
        }
        Ok(self.ints())
    }
}

/// The subset of Python literals found in `.npy` headers.
#[derive(Debug, PartialEq)]
enum Lit {
    Str(String),
    Int(i128),
    Bool(bool),
    None,
    Tuple(Vec<Lit>),
    List(Vec<Lit>),
    Dict(Vec<(String, Lit)>),
}

impl Lit {
    fn parse(s: &str) -> Option<Lit> {
        let mut p = LitParser {
            s: s.as_bytes(),
            i: 0,
        };
        let v = p.value(0)?;
        p.ws();
        (p.i == p.s.len()).then_some(v)
    }
}

struct LitParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl LitParser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Comma-separated items up to `close`, trailing comma allowed.
    fn seq(&mut self, close: u8, depth: usize) -> Option<Vec<Lit>> {
        let mut items = Vec::new();
        loop {
            if self.eat(close) {
                return Some(items);
            }
            items.push(self.value(depth + 1)?);
            if !self.eat(b',') {
                return self.eat(close).then_some(items);
            }
        }
    }

    fn value(&mut self, depth: usize) -> Option<Lit> {
        if depth > 16 {
            return None;
        }
        match self.peek()? {
            b'{' => {
                self.i += 1;
                let mut entries = Vec::new();
                loop {
                    if self.eat(b'}') {
                        return Some(Lit::Dict(entries));
                    }
                    let Lit::Str(k) = self.value(depth + 1)? else {
                        return None;
                    };
                    if !self.eat(b':') {
                        return None;
                    }
                    entries.push((k, self.value(depth + 1)?));
                    if !self.eat(b',') {
                        return self.eat(b'}').then_some(Lit::Dict(entries));
                    }
                }
            }
            b'(' => {
                self.i += 1;
                // numpy writes 1-tuples as `(3,)`; a bare `(3)` is accepted as well.
                Some(Lit::Tuple(self.seq(b')', depth)?))
            }
            b'[' => {
                self.i += 1;
                Some(Lit::List(self.seq(b']', depth)?))
            }
            q @ (b'\'' | b'"') => {
                self.i += 1;
                let start = self.i;
                while self.i < self.s.len() && self.s[self.i] != q {
                    if self.s[self.i] == b'\\' {
                        return None; // escapes never occur in numeric dtype headers
                    }
                    self.i += 1;
                }
                let out = std::str::from_utf8(self.s.get(start..self.i)?).ok()?;
                self.i += 1;
                Some(Lit::Str(out.to_string()))
            }
            c if c == b'-' || c.is_ascii_digit() => {
                let start = self.i;
                self.i += 1;
                while self.i < self.s.len()
                    && (self.s[self.i].is_ascii_digit() || self.s[self.i] == b'L')
                {
                    self.i += 1;
                }
                let t = std::str::from_utf8(&self.s[start..self.i]).ok()?;
                t.trim_end_matches('L').parse().ok().map(Lit::Int)
            }
            _ => {
                let rest = &self.s[self.i..];
                for (word, lit) in [
                    (&b"True"[..], Lit::Bool(true)),
                    (b"False", Lit::Bool(false)),
                    (b"None", Lit::None),
                ] {
                    if rest.starts_with(word) {
                        self.i += word.len();
                        return Some(lit);
                    }
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut h = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        while (h.len() + 11) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn origin() -> Origin<'static> {
        Origin {
            path: Path::new("t.npy"),
            field: "x",
        }
    }

    #[test]
    fn literal_parser() {
        assert_eq!(
            Lit::parse("{'a': (1, 2,), \"b\": False, 'c': [], 'd': ()}"),
            Some(Lit::Dict(vec![
                ("a".into(), Lit::Tuple(vec![Lit::Int(1), Lit::Int(2)])),
                ("b".into(), Lit::Bool(false)),
                ("c".into(), Lit::List(vec![])),
                ("d".into(), Lit::Tuple(vec![])),
            ]))
        );
        assert_eq!(Lit::parse("{'a': 1"), None);
        assert_eq!(Lit::parse("{'a': 1} x"), None);
    }

    #[test]
    fn big_endian_and_signed_labels() {
        let data: Vec<u8> = [-2i16, 7].iter().flat_map(|v| v.to_be_bytes()).collect();
        let bytes = npy(">i2", false, "(2,)", &data);
        let a = parse(&bytes, origin()).unwrap();
        assert_eq!(a.to_labels(origin()).unwrap(), vec![-2, 7]);
        let data: Vec<u8> = [u64::MAX].iter().flat_map(|v| v.to_le_bytes()).collect();
        let bytes = npy("<u8", false, "(1,)", &data);
        let a = parse(&bytes, origin()).unwrap();
        assert_eq!(a.to_labels(origin()).unwrap(), vec![u64::MAX as i128]);
    }

    #[test]
    fn fortran_order_is_transposed() {
        // Column-major [[1,2,3],[4,5,6]] is stored 1,4,2,5,3,6.
        let data: Vec<u8> = [1f64, 4., 2., 5., 3., 6.]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let bytes = npy("<f8", true, "(2, 3)", &data);
        let x = parse(&bytes, origin())
            .unwrap()
            .to_inputs(origin())
            .unwrap();
        assert_eq!(x.shape(), &[2, 3]);
        assert_eq!(
            x.iter().copied().collect::<Vec<_>>(),
            [1., 2., 3., 4., 5., 6.]
        );
    }

    #[test]
    fn lying_shape_is_rejected_before_allocation() {
        let bytes = npy("<f4", false, "(100000000000, 1000000)", &[0; 8]);
        let e = parse(&bytes, origin()).err().unwrap();
        assert!(matches!(e, DataError::Corrupt { .. }), "{e}");
        let bytes = npy("<f4", false, "(3,)", &[0; 8]);
        assert!(matches!(
            parse(&bytes, origin()),
            Err(DataError::Corrupt { .. })
        ));
        let bytes = npy("<c8", false, "(1,)", &[0; 8]);
        assert!(matches!(
            parse(&bytes, origin()),
            Err(DataError::WrongDtype { .. })
        ));
    }
}
