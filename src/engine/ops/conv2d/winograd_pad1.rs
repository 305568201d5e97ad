//! The padding-1 input transform `Bᵀ d B` of [`super::super::Winograd`] in registers
//! (`input_pad1` in [`super::super`]): every 3×3 stride-1 layer of ResNet-cifar, whose
//! padded rows split into four column planes; one tile row to a vector ([`pad1_zmm`],
//! [`pad1_avx2`]), or several where an image is narrow. The same additions in the same
//! order as the general transform, so the same bits.

use super::pair_masks;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The tile rows of the padding-1 register kernels: `$planes(r)` gives the planes [A, B,
/// C, D] of padded row `r + 1`; rows are carried from one tile row to the next; `$store(a,
/// b, t, v)` writes row `4a + b` of `Bᵀ d B` for tile row t.
macro_rules! pad1_rows {
    ($planes:ident, $top:ident, $nt:ident, $vec:ty, $add:ident, $sub:ident, $store:expr) => {{
        let store = $store;
        let (mut r0, mut r1) = ($planes($top), $planes($top + 1));
        for t in 0..$nt {
            let (r2, r3) = (
                $planes($top + 2 * t as isize + 2),
                $planes($top + 2 * t as isize + 3),
            );
            pad1_tile!([&r0, &r1, &r2, &r3], $vec, $add, $sub, |a, b, o| store(
                a, b, t, o
            ));
            (r0, r1) = (r2, r3);
        }
    }};
}

/// `Bᵀ d B` of one row of tiles from the planes `[A, B, C, D]` of its four padded rows:
/// each output `(a, b)` handed to `store(a, b, value)`, in the order and with the
/// operations of every form (so the same bits).
macro_rules! pad1_tile {
    ([$r0:expr, $r1:expr, $r2:expr, $r3:expr], $vec:ty, $add:ident, $sub:ident, $store:expr) => {{
        let store = $store;
        let (r0, r1, r2, r3) = ($r0, $r1, $r2, $r3);
        for (a, (x, y, add)) in [
            (r0, r2, false),
            (r1, r2, true),
            (r2, r1, false),
            (r1, r3, false),
        ]
        .into_iter()
        .enumerate()
        {
            let z: [$vec; 4] = std::array::from_fn(|q| {
                if add {
                    $add(x[q], y[q])
                } else {
                    $sub(x[q], y[q])
                }
            });
            let out = [
                $sub(z[0], z[2]),
                $add(z[1], z[2]),
                $sub(z[2], z[1]),
                $sub(z[1], z[3]),
            ];
            for (b, o) in out.into_iter().enumerate() {
                store(a, b, o);
            }
        }
    }};
}

/// The padding-1 input transform (`input_pad1` in [`super::super`]) of tile rows `ty0 .. ty0 +
/// nt` of one image `src [h, 2·tw]`, `tw ≤ 16`, in zmm registers: each source row is loaded
/// once and split into its four column planes (B, C its even and odd columns, A and D
/// those shifted by a lane with a zero at the padding), with the planes' arithmetic and
/// so their bits. Tile row t goes to `v[(4a + b)·stride + t·tw ..][..tw]`. Images 4, 8
/// or 16 columns wide go to [`pad1_zmm_packed`] (several tile rows to a vector).
///
/// # Safety
/// AVX-512F must be present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(in super::super) unsafe fn pad1_zmm(
    src: &[f32],
    (h, tw): (usize, usize),
    (ty0, nt): (usize, usize),
    v: &mut [f32],
    stride: usize,
) {
    let w = 2 * tw;
    assert!((1..=16).contains(&tw) && src.len() >= h * w);
    assert!(nt == 0 || v.len() >= 15 * stride + nt * tw);
    match tw {
        2 => return pad1_zmm_packed::<2>(src, h, (ty0, nt), v, stride),
        4 => return pad1_zmm_packed::<4>(src, h, (ty0, nt), v, stride),
        8 => return pad1_zmm_packed::<8>(src, h, (ty0, nt), v, stride),
        _ => {}
    }
    let (m_tw, m_lo, m_hi) = pair_masks(tw);
    let ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let right = _mm512_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14);
    let left = _mm512_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0);
    let (m_a, m_d) = (m_tw & !1, m_tw >> 1);
    // the planes [A, B, C, D] of padded row `r + 1` (source row r; zero outside)
    let planes = |r: isize| -> [__m512; 4] {
        if r < 0 || r as usize >= h {
            return [_mm512_setzero_ps(); 4];
        }
        let p = src.as_ptr().add(r as usize * w);
        let lo = _mm512_maskz_loadu_ps(m_lo, p);
        let hi = _mm512_maskz_loadu_ps(m_hi, p.add(16));
        let b = _mm512_permutex2var_ps(lo, ie, hi);
        let c = _mm512_permutex2var_ps(lo, io, hi);
        let a = _mm512_maskz_permutexvar_ps(m_a, right, c);
        let d = _mm512_maskz_permutexvar_ps(m_d, left, b);
        [a, b, c, d]
    };
    let vp = v.as_mut_ptr();
    let top = 2 * ty0 as isize - 1;
    pad1_rows!(
        planes,
        top,
        nt,
        __m512,
        _mm512_add_ps,
        _mm512_sub_ps,
        |a, b, t, o| { _mm512_mask_storeu_ps(vp.add((4 * a + b) * stride + t * tw), m_tw, o) }
    );
}

/// [`pad1_zmm`] for images `2·TW` = 4, 8 or 16 columns wide, where one tile row fills
/// only part of a vector: `16 / TW` consecutive tile rows to a vector (their source rows
/// laid side by side, so the planes' split and shifts are the same per row, with a zero
/// at each row's padding; a source row shared by two tile rows is loaded for each).
/// Tile rows are contiguous in `v`, so each output is one store for them all; the same
/// arithmetic and bits. Rows outside the image get a zero mask: no memory is read for
/// them, whatever their (wrapping) address.
///
/// # Safety
/// AVX-512F must be present; the sizes as [`pad1_zmm`] asserts.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pad1_zmm_packed<const TW: usize>(
    src: &[f32],
    h: usize,
    (ty0, nt): (usize, usize),
    v: &mut [f32],
    stride: usize,
) {
    let (w, per) = (2 * TW, 16 / TW);
    assert!(TW < 16 && 16 % TW == 0 && src.len() >= h * w);
    assert!(nt == 0 || v.len() >= 15 * stride + nt * TW);
    let lanes = |n: usize| if n >= 16 { !0u16 } else { (1u16 << n) - 1 };
    // A and D keep every lane but each row's first (A) and last (D) tile: the padding
    let (mut m_a, mut m_d) = (0u16, 0u16);
    for l in 0..16 {
        m_a |= u16::from(l % TW != 0) << l;
        m_d |= u16::from(l % TW != TW - 1) << l;
    }
    let ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let right = _mm512_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14);
    let left = _mm512_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0);
    // source row k of a vector at lanes (k·w) % 16 .. + w of its half
    let at: [u16; 16] = std::array::from_fn(|k| lanes(w) << ((k * w) % 16));
    let (sp, vp) = (src.as_ptr(), v.as_mut_ptr());
    let top = 2 * ty0 as isize - 1;
    for t0 in (0..nt).step_by(per) {
        let rows = per.min(nt - t0);
        // the planes of padded row j of tile rows t0 .. t0 + rows, side by side
        let planes = |j: isize| -> [__m512; 4] {
            let (mut lo, mut hi) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            for (k, &mk) in at.iter().enumerate().take(per) {
                let r = top + 2 * (t0 + k) as isize + j;
                // rows outside the image (or past the last tile row): no lanes read; the
                // lanes below the row's are masked off too
                let m = if k < rows && r >= 0 && (r as usize) < h {
                    mk
                } else {
                    0
                };
                let p = sp
                    .wrapping_offset(r * w as isize)
                    .wrapping_sub((k * w) % 16);
                let x = _mm512_castps_si512(_mm512_maskz_loadu_ps(m, p));
                if k * w < 16 {
                    lo = _mm512_or_si512(lo, x);
                } else {
                    hi = _mm512_or_si512(hi, x);
                }
            }
            let (lo, hi) = (_mm512_castsi512_ps(lo), _mm512_castsi512_ps(hi));
            let b = _mm512_permutex2var_ps(lo, ie, hi);
            let c = _mm512_permutex2var_ps(lo, io, hi);
            let a = _mm512_maskz_permutexvar_ps(m_a, right, c);
            let d = _mm512_maskz_permutexvar_ps(m_d, left, b);
            [a, b, c, d]
        };
        let (r0, r1, r2, r3) = (planes(0), planes(1), planes(2), planes(3));
        let m = lanes(rows * TW);
        pad1_tile!(
            [&r0, &r1, &r2, &r3],
            __m512,
            _mm512_add_ps,
            _mm512_sub_ps,
            |a, b, o| _mm512_mask_storeu_ps(vp.add((4 * a + b) * stride + t0 * TW), m, o)
        );
    }
}

/// [`pad1_zmm`] with AVX2: groups of 8 tiles (16 source columns, two ymm), the planes'
/// shifts completed across groups from the neighbouring source columns; the same
/// arithmetic and bits, any `tw` (images 2, 4 or 8 columns wide go to
/// [`pad1_avx2_packed`]).
///
/// # Safety
/// AVX2 must be present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(in super::super) unsafe fn pad1_avx2(
    src: &[f32],
    (h, tw): (usize, usize),
    (ty0, nt): (usize, usize),
    v: &mut [f32],
    stride: usize,
) {
    let w = 2 * tw;
    assert!(tw >= 1 && src.len() >= h * w);
    assert!(nt == 0 || v.len() >= 15 * stride + nt * tw);
    match tw {
        1 => return pad1_avx2_packed::<1>(src, h, (ty0, nt), v, stride),
        2 => return pad1_avx2_packed::<2>(src, h, (ty0, nt), v, stride),
        4 => return pad1_avx2_packed::<4>(src, h, (ty0, nt), v, stride),
        _ => {}
    }
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    // the first `n` lanes (as a maskload / maskstore mask)
    let first = |n: usize| _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(8) as i32), lane);
    let right = _mm256_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6);
    let left = _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 7);
    let vp = v.as_mut_ptr();
    let top = 2 * ty0 as isize - 1;
    for g in 0..tw.div_ceil(8) {
        let k0 = 8 * g;
        let n = (tw - k0).min(8);
        let (m_lo, m_hi, m_out) = (first(2 * n), first((2 * n).saturating_sub(8)), first(n));
        // the planes [A, B, C, D] of this group's tiles in padded row `r + 1`
        let planes = |r: isize| -> [__m256; 4] {
            if r < 0 || r as usize >= h {
                return [_mm256_setzero_ps(); 4];
            }
            let row = src.as_ptr().add(r as usize * w);
            let p = row.add(2 * k0);
            let lo = _mm256_maskload_ps(p, m_lo);
            let hi = _mm256_maskload_ps(p.add(8), m_hi);
            let even = _mm256_shuffle_ps::<0x88>(lo, hi);
            let odd = _mm256_shuffle_ps::<0xDD>(lo, hi);
            let b = _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(even)));
            let c = _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(odd)));
            // A[k] = C[k − 1]: lane 0 from the column before the group (0: padding)
            let before = if k0 > 0 { *row.add(2 * k0 - 1) } else { 0.0 };
            let a =
                _mm256_blend_ps::<1>(_mm256_permutevar8x32_ps(c, right), _mm256_set1_ps(before));
            // D[k] = B[k + 1]: lane 7 from the column after the group (0: padding)
            let after = if 2 * k0 + 16 < w {
                *row.add(2 * k0 + 16)
            } else {
                0.0
            };
            let d =
                _mm256_blend_ps::<0x80>(_mm256_permutevar8x32_ps(b, left), _mm256_set1_ps(after));
            [a, b, c, d]
        };
        pad1_rows!(
            planes,
            top,
            nt,
            __m256,
            _mm256_add_ps,
            _mm256_sub_ps,
            |a, b, t, o| {
                let at = vp.add((4 * a + b) * stride + t * tw + k0);
                if n == 8 {
                    _mm256_storeu_ps(at, o);
                } else {
                    _mm256_maskstore_ps(at, m_out, o);
                }
            }
        );
    }
}

/// [`pad1_zmm_packed`] with AVX2, for images `2·TW` = 2, 4 or 8 columns wide: `8 / TW`
/// tile rows to a vector; the same arithmetic and bits.
///
/// # Safety
/// AVX2 must be present; the sizes as [`pad1_avx2`] asserts.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pad1_avx2_packed<const TW: usize>(
    src: &[f32],
    h: usize,
    (ty0, nt): (usize, usize),
    v: &mut [f32],
    stride: usize,
) {
    let (w, per, tw) = (2 * TW, 8 / TW, TW);
    assert!(TW < 8 && 8 % TW == 0 && src.len() >= h * w);
    assert!(nt == 0 || v.len() >= 15 * stride + nt * tw);
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    // the first `n` lanes (as a maskload / maskstore mask)
    let first = |n: usize| _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(8) as i32), lane);
    // lanes of A and D kept: all but each row's first (A) and last (D) tile, the padding
    // (each lane's tile within its row: TW is a power of two)
    let col = _mm256_and_si256(lane, _mm256_set1_epi32(tw as i32 - 1));
    let keep_a = _mm256_castsi256_ps(_mm256_cmpgt_epi32(col, _mm256_setzero_si256()));
    let keep_d = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(tw as i32 - 1), col));
    let right = _mm256_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6);
    let left = _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 7);
    // source row k of a vector at lanes (k·w) % 8 .. + w of its half
    let at: [__m256i; 8] = std::array::from_fn(|k| {
        let l = (k * w) % 8;
        _mm256_andnot_si256(first(l), first(l + w))
    });
    let (sp, vp) = (src.as_ptr(), v.as_mut_ptr());
    let top = 2 * ty0 as isize - 1;
    for t0 in (0..nt).step_by(per) {
        let rows = per.min(nt - t0);
        // the planes of padded row j of tile rows t0 .. t0 + rows, side by side
        let planes = |j: isize| -> [__m256; 4] {
            let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            for (k, &mk) in at.iter().enumerate().take(per) {
                let r = top + 2 * (t0 + k) as isize + j;
                // rows outside the image (or past the last tile row): no lanes read; the
                // lanes below the row's are masked off too
                let m = if k < rows && r >= 0 && (r as usize) < h {
                    mk
                } else {
                    _mm256_setzero_si256()
                };
                let p = sp.wrapping_offset(r * w as isize).wrapping_sub((k * w) % 8);
                if k * w < 8 {
                    lo = _mm256_or_ps(lo, _mm256_maskload_ps(p, m));
                } else {
                    hi = _mm256_or_ps(hi, _mm256_maskload_ps(p, m));
                }
            }
            let even = _mm256_shuffle_ps::<0x88>(lo, hi);
            let odd = _mm256_shuffle_ps::<0xDD>(lo, hi);
            let b = _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(even)));
            let c = _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(odd)));
            let a = _mm256_and_ps(_mm256_permutevar8x32_ps(c, right), keep_a);
            let d = _mm256_and_ps(_mm256_permutevar8x32_ps(b, left), keep_d);
            [a, b, c, d]
        };
        let (r0, r1, r2, r3) = (planes(0), planes(1), planes(2), planes(3));
        let (n, m) = (rows * tw, first(rows * tw));
        pad1_tile!(
            [&r0, &r1, &r2, &r3],
            __m256,
            _mm256_add_ps,
            _mm256_sub_ps,
            |a, b, o| {
                let at = vp.add((4 * a + b) * stride + t0 * tw);
                if n == 8 {
                    _mm256_storeu_ps(at, o);
                } else {
                    _mm256_maskstore_ps(at, m, o);
                }
            }
        );
    }
}
