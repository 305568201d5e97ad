//! Bytes on the wire: what ranks exchange (per-batch partial sums, grid points and their
//! values), encoded little-endian with the exact bits of every float.

use ndarray::Array1;

use crate::engine::ops::loss::LossValue;
use crate::engine::Scalar;

/// Why bytes from another rank could not be decoded (a protocol mismatch: ranks running
/// different builds of losscape).
#[derive(Debug, thiserror::Error)]
#[error(
    "a message from another rank is malformed ({what}); run the same losscape build on every rank"
)]
pub struct WireError {
    pub what: &'static str,
}

/// A value that can be sent to another rank and read back bit for bit.
pub trait Wire: Sized {
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads one value from the front of `bytes`, advancing it.
    fn decode(bytes: &mut &[u8]) -> Result<Self, WireError>;
}

fn take<'b>(bytes: &mut &'b [u8], n: usize, what: &'static str) -> Result<&'b [u8], WireError> {
    if bytes.len() < n {
        return Err(WireError { what });
    }
    let (head, tail) = bytes.split_at(n);
    *bytes = tail;
    Ok(head)
}

impl Wire for u64 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn decode(bytes: &mut &[u8]) -> Result<Self, WireError> {
        let b = take(bytes, 8, "u64")?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
}

impl Wire for usize {
    fn encode(&self, out: &mut Vec<u8>) {
        (*self as u64).encode(out)
    }
    fn decode(bytes: &mut &[u8]) -> Result<Self, WireError> {
        Ok(u64::decode(bytes)? as usize)
    }
}

impl Wire for f64 {
    fn encode(&self, out: &mut Vec<u8>) {
        self.to_bits().encode(out)
    }
    fn decode(bytes: &mut &[u8]) -> Result<Self, WireError> {
        Ok(f64::from_bits(u64::decode(bytes)?))
    }
}

impl<T: Wire> Wire for Vec<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        self.len().encode(out);
        for v in self {
            v.encode(out);
        }
    }
    fn decode(bytes: &mut &[u8]) -> Result<Self, WireError> {
        let n = usize::decode(bytes)?;
        if n > bytes.len() {
            return Err(WireError {
                what: "vector length",
            });
        }
        (0..n).map(|_| T::decode(bytes)).collect()
    }
}

impl Wire for LossValue {
    fn encode(&self, out: &mut Vec<u8>) {
        self.sum.encode(out);
        self.correct.encode(out);
    }
    fn decode(bytes: &mut &[u8]) -> Result<Self, WireError> {
        Ok(LossValue {
            sum: f64::decode(bytes)?,
            correct: usize::decode(bytes)?,
        })
    }
}

/// A vector of f32 or f64 with every bit kept (the value goes through f64 exactly).
impl<T: Scalar> Wire for Array1<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        let wide = std::mem::size_of::<T>() == 8;
        self.len().encode(out);
        out.reserve(self.len() * std::mem::size_of::<T>());
        for &v in self.iter() {
            if wide {
                out.extend_from_slice(&v.as_f64().to_le_bytes());
            } else {
                out.extend_from_slice(&(v.as_f64() as f32).to_le_bytes());
            }
        }
    }
    fn decode(bytes: &mut &[u8]) -> Result<Self, WireError> {
        let n = usize::decode(bytes)?;
        let w = std::mem::size_of::<T>();
        let b = take(
            bytes,
            n.checked_mul(w).ok_or(WireError {
                what: "array length",
            })?,
            "array",
        )?;
        Ok(if w == 8 {
            b.chunks_exact(8)
                .map(|c| T::from_f(f64::from_le_bytes(c.try_into().expect("8 bytes"))))
                .collect()
        } else {
            b.chunks_exact(4)
                .map(|c| T::from_f(f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64))
                .collect()
        })
    }
}

impl<A: Wire, B: Wire> Wire for (A, B) {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
        self.1.encode(out);
    }
    fn decode(bytes: &mut &[u8]) -> Result<Self, WireError> {
        Ok((A::decode(bytes)?, B::decode(bytes)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_round_trip_bit_for_bit() {
        let a = Array1::from(vec![1.0f32 / 3.0, -0.0, f32::MIN_POSITIVE / 2.0, f32::NAN]);
        let l = LossValue {
            sum: 0.1 + 0.2,
            correct: 7,
        };
        let mut out = Vec::new();
        (l, a.clone()).encode(&mut out);
        let (l2, a2) = <(LossValue, Array1<f32>)>::decode(&mut &out[..]).unwrap();
        assert_eq!(l2.sum.to_bits(), (0.1f64 + 0.2).to_bits());
        assert_eq!(l2.correct, 7);
        let bits = |v: &Array1<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a2), bits(&a));
        let v = Array1::from(vec![std::f64::consts::PI, -1e-300]);
        let mut out = Vec::new();
        v.encode(&mut out);
        assert_eq!(Array1::<f64>::decode(&mut &out[..]).unwrap(), v);
        assert!(Array1::<f64>::decode(&mut &out[..5]).is_err());
    }
}
