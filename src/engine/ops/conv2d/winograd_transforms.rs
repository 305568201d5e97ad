//! The transforms of [`super::Winograd`] in zmm (AVX-512F), ymm (AVX2) and scalar forms:
//! a row split by column parity and merged back ([`deinterleave`], [`interleave`]),
//! `Bᵀ d B` for runs of tiles ([`bt_row`], [`bt_tiles`], and the register kernels of
//! padding-1 layers [`pad1_zmm`], [`pad1_avx2`]), `Aᵀ M A` ([`at_rows`], [`at_tiles_zmm`]).
//! They only add and subtract, in the same order in every form, so the bits do not
//! depend on the instruction set.

use super::super::kernels::Kernel;
use super::epilogue::ChannelEpi;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

#[path = "winograd_pad1.rs"]
mod pad1;
#[cfg(target_arch = "x86_64")]
pub(super) use pad1::{pad1_avx2, pad1_zmm};

/// `even[k] = src[2k]`, `odd[k] = src[2k + 1]` for `k < even.len()` (`odd` as long, `src`
/// at least twice): the input transform's split of a padded row by column parity, and
/// the direct kernels' stride-2 polyphase copy (`Plan::fill`).
pub(in super::super) fn deinterleave(
    kernel: Kernel,
    src: &[f32],
    even: &mut [f32],
    odd: &mut [f32],
) {
    let n = even.len();
    let (src, odd) = (&src[..2 * n], &mut odd[..n]);
    let done = match kernel {
        // SAFETY: the kernel's features were detected; the bounds are checked above.
        #[cfg(target_arch = "x86_64")]
        Kernel::Zmm => unsafe { deinterleave_zmm(src, even, odd) },
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 | Kernel::Avx512 => unsafe { deinterleave_avx2(src, even, odd) },
        _ => 0,
    };
    for k in done..n {
        even[k] = src[2 * k];
        odd[k] = src[2 * k + 1];
    }
}

/// `dst[2k] = a[k]`, `dst[2k + 1] = b[k]` for `k < a.len()` (`b` as long, `dst` twice):
/// the output transform's merge of a row's two column parities (and the stride-2 dx's of
/// its phases, `Plan::dx_phases`).
pub(in super::super) fn interleave(
    kernel: Kernel,
    a: &[f32],
    b: &[f32],
    dst: &mut [MaybeUninit<f32>],
) {
    let n = a.len();
    let (b, dst) = (&b[..n], &mut dst[..2 * n]);
    let done = match kernel {
        // SAFETY: as in `deinterleave`.
        #[cfg(target_arch = "x86_64")]
        Kernel::Zmm => unsafe { interleave_zmm(a, b, dst) },
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 | Kernel::Avx512 => unsafe { interleave_avx2(a, b, dst) },
        _ => 0,
    };
    for k in done..n {
        dst[2 * k].write(a[k]);
        dst[2 * k + 1].write(b[k]);
    }
}

/// For `left ≤ 16` pairs: the mask of `left` lanes, and those of the `2·left` lanes over
/// two vectors (first, second).
#[cfg(target_arch = "x86_64")]
fn pair_masks(left: usize) -> (u16, u16, u16) {
    let lanes = |n: usize| if n >= 16 { !0u16 } else { (1u16 << n) - 1 };
    (
        lanes(left),
        lanes(2 * left),
        lanes((2 * left).saturating_sub(16)),
    )
}

/// All of `even`, masked for the last partial vector; returns `even.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn deinterleave_zmm(src: &[f32], even: &mut [f32], odd: &mut [f32]) -> usize {
    let n = even.len();
    let ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let (s, e, o) = (src.as_ptr(), even.as_mut_ptr(), odd.as_mut_ptr());
    let mut k = 0;
    while k < n {
        let left = (n - k).min(16);
        let (m_out, m_lo, m_hi) = pair_masks(left);
        let lo = _mm512_maskz_loadu_ps(m_lo, s.add(2 * k));
        let hi = _mm512_maskz_loadu_ps(m_hi, s.add(2 * k + 16));
        _mm512_mask_storeu_ps(e.add(k), m_out, _mm512_permutex2var_ps(lo, ie, hi));
        _mm512_mask_storeu_ps(o.add(k), m_out, _mm512_permutex2var_ps(lo, io, hi));
        k += left;
    }
    n
}

/// Whole vectors of 8, then of 4; returns how many outputs were written.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn deinterleave_avx2(src: &[f32], even: &mut [f32], odd: &mut [f32]) -> usize {
    let n = even.len();
    let (s, e, o) = (src.as_ptr(), even.as_mut_ptr(), odd.as_mut_ptr());
    let mut k = 0;
    while k + 8 <= n {
        let (a, b) = (
            _mm256_loadu_ps(s.add(2 * k)),
            _mm256_loadu_ps(s.add(2 * k + 8)),
        );
        // within 128-bit lanes, then the 64-bit quarters back in order
        let ev = _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(
            _mm256_shuffle_ps::<0x88>(a, b),
        )));
        let od = _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(
            _mm256_shuffle_ps::<0xDD>(a, b),
        )));
        _mm256_storeu_ps(e.add(k), ev);
        _mm256_storeu_ps(o.add(k), od);
        k += 8;
    }
    while k + 4 <= n {
        let (a, b) = (_mm_loadu_ps(s.add(2 * k)), _mm_loadu_ps(s.add(2 * k + 4)));
        _mm_storeu_ps(e.add(k), _mm_shuffle_ps::<0x88>(a, b));
        _mm_storeu_ps(o.add(k), _mm_shuffle_ps::<0xDD>(a, b));
        k += 4;
    }
    k
}

/// All of `a`, masked for the last partial vector; returns `a.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn interleave_zmm(a: &[f32], b: &[f32], dst: &mut [MaybeUninit<f32>]) -> usize {
    let n = a.len();
    let il = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let ih = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let (pa, pb, d) = (a.as_ptr(), b.as_ptr(), dst.as_mut_ptr() as *mut f32);
    let mut k = 0;
    while k < n {
        let left = (n - k).min(16);
        let (m_in, m_lo, m_hi) = pair_masks(left);
        let (va, vb) = (
            _mm512_maskz_loadu_ps(m_in, pa.add(k)),
            _mm512_maskz_loadu_ps(m_in, pb.add(k)),
        );
        _mm512_mask_storeu_ps(d.add(2 * k), m_lo, _mm512_permutex2var_ps(va, il, vb));
        _mm512_mask_storeu_ps(d.add(2 * k + 16), m_hi, _mm512_permutex2var_ps(va, ih, vb));
        k += left;
    }
    n
}

/// Whole vectors of 8, then of 4; returns how many pairs were written.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn interleave_avx2(a: &[f32], b: &[f32], dst: &mut [MaybeUninit<f32>]) -> usize {
    let n = a.len();
    let (pa, pb, d) = (a.as_ptr(), b.as_ptr(), dst.as_mut_ptr() as *mut f32);
    let mut k = 0;
    while k + 8 <= n {
        let (va, vb) = (_mm256_loadu_ps(pa.add(k)), _mm256_loadu_ps(pb.add(k)));
        let (lo, hi) = (_mm256_unpacklo_ps(va, vb), _mm256_unpackhi_ps(va, vb));
        _mm256_storeu_ps(d.add(2 * k), _mm256_permute2f128_ps::<0x20>(lo, hi));
        _mm256_storeu_ps(d.add(2 * k + 8), _mm256_permute2f128_ps::<0x31>(lo, hi));
        k += 8;
    }
    while k + 4 <= n {
        let (va, vb) = (_mm_loadu_ps(pa.add(k)), _mm_loadu_ps(pb.add(k)));
        _mm_storeu_ps(d.add(2 * k), _mm_unpacklo_ps(va, vb));
        _mm_storeu_ps(d.add(2 * k + 4), _mm_unpackhi_ps(va, vb));
        k += 4;
    }
    k
}

/// The input transform's row of `Bᵀ d B` for a run of tiles (see `input_row` in
/// [`super`]): `z_q = x_q ± y_q`, then `z₀ − z₂, z₁ + z₂, z₂ − z₁, z₁ − z₃` into `out`.
/// The same operations in every kernel, so the same bits.
pub(super) fn bt_row(
    kernel: Kernel,
    add: bool,
    x: [&[f32]; 4],
    y: [&[f32]; 4],
    out: [&mut [f32]; 4],
) {
    let n = out[0].len();
    assert!(x.iter().chain(&y).all(|s| s.len() >= n) && out.iter().all(|s| s.len() >= n));
    let (xp, yp) = (x.map(<[f32]>::as_ptr), y.map(<[f32]>::as_ptr));
    let op = out.map(<[f32]>::as_mut_ptr);
    // SAFETY: every pointer holds `n` floats (asserted); the kernel's features were detected.
    let done = unsafe {
        match (kernel, add) {
            #[cfg(target_arch = "x86_64")]
            (Kernel::Zmm, false) => bt_zmm::<false>(xp, yp, op, n),
            #[cfg(target_arch = "x86_64")]
            (Kernel::Zmm, true) => bt_zmm::<true>(xp, yp, op, n),
            #[cfg(target_arch = "x86_64")]
            (Kernel::Avx2 | Kernel::Avx512, false) => bt_avx2::<false>(xp, yp, op, n),
            #[cfg(target_arch = "x86_64")]
            (Kernel::Avx2 | Kernel::Avx512, true) => bt_avx2::<true>(xp, yp, op, n),
            _ => 0,
        }
    };
    let rest = |p: *const f32| p.wrapping_add(done);
    let (xr, yr) = (xp.map(rest), yp.map(rest));
    let or = op.map(|p| p.wrapping_add(done));
    // SAFETY: the pointers hold `n − done` floats from `done` on.
    unsafe {
        if add {
            bt_scalar::<true>(xr, yr, or, n - done)
        } else {
            bt_scalar::<false>(xr, yr, or, n - done)
        }
    }
}

/// The load, store, add and subtract of one vector type: `zmm`, `ymm`, `xmm`, or
/// `(masked m)` for the zmm lanes of mask `m`.
macro_rules! vops {
    (zmm) => {
        (
            |p: *const f32| _mm512_loadu_ps(p),
            |p: *mut f32, v| _mm512_storeu_ps(p, v),
            |a, b| _mm512_add_ps(a, b),
            |a, b| _mm512_sub_ps(a, b),
        )
    };
    ((masked $m:ident)) => {
        (
            |p: *const f32| _mm512_maskz_loadu_ps($m, p),
            |p: *mut f32, v| _mm512_mask_storeu_ps(p, $m, v),
            |a, b| _mm512_add_ps(a, b),
            |a, b| _mm512_sub_ps(a, b),
        )
    };
    (ymm) => {
        (
            |p: *const f32| _mm256_loadu_ps(p),
            |p: *mut f32, v| _mm256_storeu_ps(p, v),
            |a, b| _mm256_add_ps(a, b),
            |a, b| _mm256_sub_ps(a, b),
        )
    };
    (xmm) => {
        (
            |p: *const f32| _mm_loadu_ps(p),
            |p: *mut f32, v| _mm_storeu_ps(p, v),
            |a, b| _mm_add_ps(a, b),
            |a, b| _mm_sub_ps(a, b),
        )
    };
}

/// One step of [`bt_row`] at offset `$k` with the vectors of `$isa` (see [`vops`]).
macro_rules! bt_step {
    ($isa:tt, $x:ident, $y:ident, $o:ident, $k:expr, $add:ident) => {{
        let (ld, st, plus, minus) = vops!($isa);
        let z = |q: usize| {
            let (a, b) = (ld($x[q].add($k)), ld($y[q].add($k)));
            if $add {
                plus(a, b)
            } else {
                minus(a, b)
            }
        };
        let (z0, z1, z2, z3) = (z(0), z(1), z(2), z(3));
        st($o[0].add($k), minus(z0, z2));
        st($o[1].add($k), plus(z1, z2));
        st($o[2].add($k), minus(z2, z1));
        st($o[3].add($k), minus(z1, z3));
    }};
}

/// All `n`, the last partial vector masked.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn bt_zmm<const ADD: bool>(
    x: [*const f32; 4],
    y: [*const f32; 4],
    o: [*mut f32; 4],
    n: usize,
) -> usize {
    let mut k = 0;
    while k + 16 <= n {
        bt_step!(zmm, x, y, o, k, ADD);
        k += 16;
    }
    if k < n {
        let m: __mmask16 = (1u16 << (n - k)) - 1;
        bt_step!((masked m), x, y, o, k, ADD);
    }
    n
}

/// Whole vectors of 8, then of 4; returns how many were done.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn bt_avx2<const ADD: bool>(
    x: [*const f32; 4],
    y: [*const f32; 4],
    o: [*mut f32; 4],
    n: usize,
) -> usize {
    let mut k = 0;
    while k + 8 <= n {
        bt_step!(ymm, x, y, o, k, ADD);
        k += 8;
    }
    while k + 4 <= n {
        bt_step!(xmm, x, y, o, k, ADD);
        k += 4;
    }
    k
}

/// The output transform `Aᵀ M A` for a run of tiles: `m[4a + b]` the 16 products,
/// `y = [y₀₀, y₀₁, y₁₀, y₁₁]` the 2 × 2 outputs (the order of operations in `output_rows`
/// of [`super`]).
pub(super) fn at_rows(kernel: Kernel, m: [&[f32]; 16], y: [&mut [f32]; 4]) {
    let n = y[0].len();
    assert!(m.iter().all(|s| s.len() >= n) && y.iter().all(|s| s.len() >= n));
    let mp = m.map(<[f32]>::as_ptr);
    let yp = y.map(<[f32]>::as_mut_ptr);
    // SAFETY: as in `bt_row`.
    let done = unsafe {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Zmm => at_zmm(mp, yp, n),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 | Kernel::Avx512 => at_avx2(mp, yp, n),
            _ => 0,
        }
    };
    for j in done..n {
        // SAFETY: j < n.
        unsafe {
            let v = |xi: usize| *mp[xi].add(j);
            let t0: [f32; 4] = std::array::from_fn(|b| v(b) + v(4 + b) + v(8 + b));
            let t1: [f32; 4] = std::array::from_fn(|b| v(4 + b) - v(8 + b) - v(12 + b));
            *yp[0].add(j) = t0[0] + t0[1] + t0[2];
            *yp[1].add(j) = t0[1] - t0[2] - t0[3];
            *yp[2].add(j) = t1[0] + t1[1] + t1[2];
            *yp[3].add(j) = t1[1] - t1[2] - t1[3];
        }
    }
}

/// One step of [`at_rows`] at offset `$k` with the vectors of `$isa` (see [`vops`]).
macro_rules! at_step {
    ($isa:tt, $m:ident, $y:ident, $k:expr) => {{
        let (ld, st, plus, minus) = vops!($isa);
        let v = |xi: usize| ld($m[xi].add($k));
        let t0 = |b: usize| plus(plus(v(b), v(4 + b)), v(8 + b));
        let t1 = |b: usize| minus(minus(v(4 + b), v(8 + b)), v(12 + b));
        let (a0, a1, a2, a3) = (t0(0), t0(1), t0(2), t0(3));
        st($y[0].add($k), plus(plus(a0, a1), a2));
        st($y[1].add($k), minus(minus(a1, a2), a3));
        let (b0, b1, b2, b3) = (t1(0), t1(1), t1(2), t1(3));
        st($y[2].add($k), plus(plus(b0, b1), b2));
        st($y[3].add($k), minus(minus(b1, b2), b3));
    }};
}

/// All `n`, the last partial vector masked.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn at_zmm(m: [*const f32; 16], y: [*mut f32; 4], n: usize) -> usize {
    let mut k = 0;
    while k + 16 <= n {
        at_step!(zmm, m, y, k);
        k += 16;
    }
    if k < n {
        let mk: __mmask16 = (1u16 << (n - k)) - 1;
        at_step!((masked mk), m, y, k);
    }
    n
}

/// Whole vectors of 8; returns how many were done.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn at_avx2(m: [*const f32; 16], y: [*mut f32; 4], n: usize) -> usize {
    let mut k = 0;
    while k + 8 <= n {
        at_step!(ymm, m, y, k);
        k += 8;
    }
    k
}

/// [`bt_row`] for tile rows `0..nt` at once: the planes hold rows of `tw` in natural order
/// (tile row t reads rows 2t .. 2t + 3), row a of `Bᵀ` goes to `v[(4a + b)·stride + t·tw]`.
pub(super) fn bt_tiles(
    kernel: Kernel,
    planes: [&[f32]; 4],
    (nt, tw): (usize, usize),
    v: &mut [f32],
    stride: usize,
) {
    if nt == 0 || tw == 0 {
        return;
    }
    assert!(planes.iter().all(|p| p.len() >= (2 * nt + 2) * tw));
    assert!(v.len() >= 15 * stride + nt * tw && stride >= nt * tw);
    let pp = planes.map(<[f32]>::as_ptr);
    let vp = v.as_mut_ptr();
    // SAFETY: the bounds are asserted above; the kernel's features were detected.
    unsafe {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Zmm => bt_tiles_zmm(pp, (nt, tw), vp, stride),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 | Kernel::Avx512 => bt_tiles_avx2(pp, (nt, tw), vp, stride),
            _ => bt_tiles_with(
                pp,
                (nt, tw),
                vp,
                stride,
                bt_scalar::<false>,
                bt_scalar::<true>,
            ),
        }
    }
}

/// The loop of [`bt_tiles`] with a row function per sign.
///
/// # Safety
/// As [`bt_tiles`] asserts.
#[inline(always)]
unsafe fn bt_tiles_with(
    pp: [*const f32; 4],
    (nt, tw): (usize, usize),
    vp: *mut f32,
    stride: usize,
    sub: unsafe fn([*const f32; 4], [*const f32; 4], [*mut f32; 4], usize),
    add: unsafe fn([*const f32; 4], [*const f32; 4], [*mut f32; 4], usize),
) {
    for t in 0..nt {
        let r = |i: usize| pp.map(|p| p.add((2 * t + i) * tw));
        let (r0, r1, r2, r3) = (r(0), r(1), r(2), r(3));
        let o = |a: usize| -> [*mut f32; 4] {
            let at = 4 * a * stride + t * tw;
            [
                vp.add(at),
                vp.add(at + stride),
                vp.add(at + 2 * stride),
                vp.add(at + 3 * stride),
            ]
        };
        sub(r0, r2, o(0), tw);
        add(r1, r2, o(1), tw);
        sub(r2, r1, o(2), tw);
        sub(r1, r3, o(3), tw);
    }
}

/// [`bt_row`]'s scalar form on pointers.
///
/// # Safety
/// Every pointer holds `n` floats.
#[inline(always)]
unsafe fn bt_scalar<const ADD: bool>(
    x: [*const f32; 4],
    y: [*const f32; 4],
    o: [*mut f32; 4],
    n: usize,
) {
    for i in 0..n {
        let z: [f32; 4] = std::array::from_fn(|q| {
            let (a, b) = (*x[q].add(i), *y[q].add(i));
            if ADD {
                a + b
            } else {
                a - b
            }
        });
        *o[0].add(i) = z[0] - z[2];
        *o[1].add(i) = z[1] + z[2];
        *o[2].add(i) = z[2] - z[1];
        *o[3].add(i) = z[1] - z[3];
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn bt_tiles_zmm(pp: [*const f32; 4], dims: (usize, usize), vp: *mut f32, stride: usize) {
    bt_tiles_with(
        pp,
        dims,
        vp,
        stride,
        bt_zmm_all::<false>,
        bt_zmm_all::<true>,
    )
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn bt_tiles_avx2(pp: [*const f32; 4], dims: (usize, usize), vp: *mut f32, stride: usize) {
    bt_tiles_with(
        pp,
        dims,
        vp,
        stride,
        bt_avx2_all::<false>,
        bt_avx2_all::<true>,
    )
}

#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn bt_zmm_all<const ADD: bool>(
    x: [*const f32; 4],
    y: [*const f32; 4],
    o: [*mut f32; 4],
    n: usize,
) {
    bt_zmm::<ADD>(x, y, o, n);
}

#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn bt_avx2_all<const ADD: bool>(
    x: [*const f32; 4],
    y: [*const f32; 4],
    o: [*mut f32; 4],
    n: usize,
) {
    let done = bt_avx2::<ADD>(x, y, o, n);
    bt_scalar::<ADD>(
        x.map(|p| p.add(done)),
        y.map(|p| p.add(done)),
        o.map(|p| p.add(done)),
        n - done,
    );
}

/// The output transform (`output_rows` in [`super`]) of one output channel for the tile
/// rows `r0..r1` (row r: image r / th, tile row r % th) when each output row is
/// `wo = 2·tw ≤ 32` wide, in zmm registers: per tile row the 16 products, `Aᵀ M A` as
/// [`at_rows`] computes it (the same bits), and the two output rows stored interleaved;
/// with `epi`, each output `y` stored as `relu?(γ·((y − μ)·s) + β [+ r])`, batch norm's
/// epilogue's operations in its order (the same bits as its pass over the stored rows).
///
/// # Safety
/// AVX-512F must be present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn at_tiles_zmm(
    m: &[f32],
    stride: usize,
    (r0, r1, th): (usize, usize, usize),
    (tw, ho): (usize, usize),
    dst: &mut [MaybeUninit<f32>],
    epi: Option<ChannelEpi>,
) {
    let wo = 2 * tw;
    assert!((1..=16).contains(&tw) && ho <= 2 * th);
    assert!(r1 <= r0 || m.len() >= 15 * stride + (r1 - r0) * tw);
    assert!(dst.len() >= r1.div_ceil(th) * ho * wo);
    if let Some(r) = epi.and_then(|e| e.residual) {
        assert!(
            r.len() >= r1.div_ceil(th) * ho * wo,
            "winograd: residual size"
        );
    }
    let k = epi.map_or([0.0; 4], |e| e.k).map(|v| _mm512_set1_ps(v));
    // the epilogue of outputs at `at` in the channel (lanes in `mask`)
    let finish = |y: __m512, at: usize, mask: __mmask16| match &epi {
        None => y,
        Some(e) => e.zmm(&k, y, at, |r| _mm512_maskz_loadu_ps(mask, r)),
    };
    let (m_tw, m_lo, m_hi) = pair_masks(tw);
    let il = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let ih = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let (mp, dp) = (m.as_ptr(), dst.as_mut_ptr() as *mut f32);
    for r in r0..r1 {
        let (img, ty) = (r / th, r % th);
        let at = (r - r0) * tw;
        let v = |xi: usize| _mm512_maskz_loadu_ps(m_tw, mp.add(xi * stride + at));
        let (plus, minus) = (|a, b| _mm512_add_ps(a, b), |a, b| _mm512_sub_ps(a, b));
        let t0 = |b: usize| plus(plus(v(b), v(4 + b)), v(8 + b));
        let t1 = |b: usize| minus(minus(v(4 + b), v(8 + b)), v(12 + b));
        for i in 0..2 {
            let oh = 2 * ty + i;
            if oh >= ho {
                break;
            }
            let t = |b: usize| if i == 0 { t0(b) } else { t1(b) };
            let (a0, a1, a2, a3) = (t(0), t(1), t(2), t(3));
            let (ya, yb) = (plus(plus(a0, a1), a2), minus(minus(a1, a2), a3));
            let at = (img * ho + oh) * wo;
            let (lo, hi) = (
                _mm512_permutex2var_ps(ya, il, yb),
                _mm512_permutex2var_ps(ya, ih, yb),
            );
            _mm512_mask_storeu_ps(dp.add(at), m_lo, finish(lo, at, m_lo));
            _mm512_mask_storeu_ps(dp.add(at + 16), m_hi, finish(hi, at + 16, m_hi));
        }
    }
}

/// `G g Gᵀ` of a vector of filters (f64 lanes, `$v` the vector type) as a closure over
/// the nine taps, for [`filters_avx2`] and [`filters_zmm`] (`R = 4`: F(2×2)'s `G`, `R = 6`:
/// F(4×4)'s), from that width's intrinsics: `(set1, setzero)` and `(add, sub, mul, xor)`.
/// G's rows on a column (a₀, a₁, a₂): F(2×2) a₀, ½((a₀ + a₁) + a₂), ½((a₀ − a₁) + a₂), a₂;
/// F(4×4) a₀·¼, −(p·⅙), −(m·⅙), (q₀ + q₁) + q₂, (q₀ − q₁) + q₂, a₂ with p = (a₀ + a₁) + a₂,
/// m = (a₀ − a₁) + a₂, q = (a₀·⅙/4, a₁·⅙/2, a₂·⅙); G on the columns, then on the rows of
/// the result. The same f64 operations in the same order at every width (so the same bits
/// as the generic loop).
#[cfg(target_arch = "x86_64")]
macro_rules! filter_transform {
    (($r:ident, $x:ident, $v:ty), ($set1:ident, $zero:ident), ($add:ident, $sub:ident, $mul:ident, $xor:ident)) => {{
        const SIXTH: f64 = 1.0 / 6.0;
        let (half, quarter, sixth) = ($set1(0.5), $set1(0.25), $set1(SIXTH));
        let (sixth4, sixth2) = ($set1(SIXTH / 4.0), $set1(SIXTH / 2.0));
        let sign = $set1(-0.0);
        let gr = move |a0: $v, a1: $v, a2: $v| {
            let mut r = [a0; $r];
            if $r == 4 {
                r[1] = $mul(half, $add($add(a0, a1), a2));
                r[2] = $mul(half, $add($sub(a0, a1), a2));
                r[3] = a2;
            } else {
                let p = $add($add(a0, a1), a2);
                let m = $add($sub(a0, a1), a2);
                let (q0, q1) = ($mul(a0, sixth4), $mul(a1, sixth2));
                let q2 = $mul(a2, sixth);
                r[0] = $mul(a0, quarter);
                r[1] = $xor($mul(p, sixth), sign);
                r[2] = $xor($mul(m, sixth), sign);
                r[3] = $add($add(q0, q1), q2);
                r[4] = $add($sub(q0, q1), q2);
                r[5] = a2;
            }
            r
        };
        move |g: [$v; 9]| {
            let cols: [[$v; $r]; 3] = std::array::from_fn(|j| gr(g[j], g[3 + j], g[6 + j]));
            let mut t = [$zero(); $x];
            for a in 0..$r {
                t[a * $r..][..$r].copy_from_slice(&gr(cols[0][a], cols[1][a], cols[2][a]));
            }
            t
        }
    }};
}

/// The filter transforms `U_ξ = G g Gᵀ` of [`super::Winograd::new`] (`R = 4`, `X = 16`,
/// F(2×2)'s `G`, [`super::g3`]) and [`super::f4::Winograd4::new`] (`R = 6`, `X = 36`,
/// F(4×4)'s, `g6`) for input channels `0..8·⌊c/8⌋` (returned; the caller does the rest):
/// eight filters of one output channel at a time, their taps gathered into vectors and
/// widened to f64 (two ymm of four), the written-out `G` rows (the same f64 operations in
/// the same order, so the same bits as the generic loop), each ξ rounded to f32 and stored
/// as eight contiguous values of `u [X, O, C]`.
///
/// # Safety
/// AVX2 must be present; `wts` holds `o·c·9` floats and `u` `X·o·c`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn filters_avx2<const R: usize, const X: usize>(
    o: usize,
    c: usize,
    wts: &[f32],
    u: &mut [MaybeUninit<f32>],
) -> usize {
    assert!(R * R == X && (R == 4 || R == 6), "filters_avx2: G");
    assert!(wts.len() >= o * c * 9 && u.len() >= X * o * c);
    let full = c / 8 * 8;
    // tap k of filters l = 0..8 lies at 9·l + k
    let idx = _mm256_setr_epi32(0, 9, 18, 27, 36, 45, 54, 63);
    let transform = filter_transform!(
        (R, X, __m256d),
        (_mm256_set1_pd, _mm256_setzero_pd),
        (_mm256_add_pd, _mm256_sub_pd, _mm256_mul_pd, _mm256_xor_pd)
    );
    let (wp, up) = (wts.as_ptr(), u.as_mut_ptr() as *mut f32);
    for oc in 0..o {
        for ci0 in (0..full).step_by(8) {
            let base = wp.add((oc * c + ci0) * 9);
            let taps: [__m256; 9] =
                std::array::from_fn(|k| _mm256_i32gather_ps::<4>(base.add(k), idx));
            let lo = transform(taps.map(|t| _mm256_cvtps_pd(_mm256_castps256_ps128(t))));
            let hi = transform(taps.map(|t| _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(t))));
            for xi in 0..X {
                let v = _mm256_set_m128(_mm256_cvtpd_ps(hi[xi]), _mm256_cvtpd_ps(lo[xi]));
                _mm256_storeu_ps(up.add((xi * o + oc) * c + ci0), v);
            }
        }
    }
    full
}

/// [`filters_avx2`] sixteen filters at a time on AVX-512 (gathered into one zmm, widened
/// to two zmm of eight f64): the same f64 operations in the same order on each filter, so
/// the same bits, for input channels `0..16·⌊c/16⌋` (returned; the caller does the rest).
///
/// # Safety
/// AVX-512F and DQ must be present; `wts` holds `o·c·9` floats and `u` `X·o·c`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
pub(super) unsafe fn filters_zmm<const R: usize, const X: usize>(
    o: usize,
    c: usize,
    wts: &[f32],
    u: &mut [MaybeUninit<f32>],
) -> usize {
    assert!(R * R == X && (R == 4 || R == 6), "filters_zmm: G");
    assert!(wts.len() >= o * c * 9 && u.len() >= X * o * c);
    let full = c / 16 * 16;
    // tap k of filters l = 0..16 lies at 9·l + k
    let idx = _mm512_setr_epi32(
        0, 9, 18, 27, 36, 45, 54, 63, 72, 81, 90, 99, 108, 117, 126, 135,
    );
    let transform = filter_transform!(
        (R, X, __m512d),
        (_mm512_set1_pd, _mm512_setzero_pd),
        (_mm512_add_pd, _mm512_sub_pd, _mm512_mul_pd, _mm512_xor_pd)
    );
    let (wp, up) = (wts.as_ptr(), u.as_mut_ptr() as *mut f32);
    for oc in 0..o {
        for ci0 in (0..full).step_by(16) {
            let base = wp.add((oc * c + ci0) * 9);
            let taps: [__m512; 9] =
                std::array::from_fn(|k| _mm512_i32gather_ps::<4>(idx, base.add(k)));
            let lo = transform(taps.map(|t| _mm512_cvtps_pd(_mm512_castps512_ps256(t))));
            let hi = transform(taps.map(|t| _mm512_cvtps_pd(_mm512_extractf32x8_ps::<1>(t))));
            for xi in 0..X {
                let v = _mm512_insertf32x8::<1>(
                    _mm512_castps256_ps512(_mm512_cvtpd_ps(lo[xi])),
                    _mm512_cvtpd_ps(hi[xi]),
                );
                _mm512_storeu_ps(up.add((xi * o + oc) * c + ci0), v);
            }
        }
    }
    full
}
