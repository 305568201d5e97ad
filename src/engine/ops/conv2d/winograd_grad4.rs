//! The weight gradient of F(4×4, 3×3) convolutions with padding 1 (Lavin & Gray 2016,
//! §4.1, as [`super::grad`] for F(2×2)): with `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`,
//!
//! `dW = Gᵀ M G`,  `M_ξ [C, O] = Σ_tiles V_ξ [C, ·] · U′_ξ [·, O]`,  `U′ = A dY Aᵀ`
//!
//! with `Bᵀ`, `G`, `Aᵀ` those of `winograd_f4.rs`, `V = Bᵀ d B` of each 6×6 input patch
//! and `dY` each 4×4 tile of the output gradient: 36 products per 16 outputs where
//! F(2×2)'s dual takes 64 (and 144 direct). Images whose sides are multiples of 4 and at
//! most 32 wide ([`applies`]).
//!
//! Layout: tiles along the image rows, as F(2×2)'s dual, so that the products are
//! [`super::simd`]'s register tiles over the block's tiles with vectors over output
//! channels (`U′_ξ [P, O']`, from dY transposed to `[position, O']`). `V` is formed in two
//! passes per input channel: down the columns (`Bᵀ` on six rows, lane-wise), then along
//! each row of the result, whose tiles start every 4 columns: a block's rows of one tile
//! row are contiguous across its images (`w = 4·tw`), so the six columns of tile `q` are
//! `4q − 1 … 4q + 4` of one flat array, split into vectors of 16 (or 8) tiles by
//! permutes, the padding columns masked to zero. Tiles are ordered `(ty, image, tx)`
//! within a block.
//!
//! Rounding: the transforms' additions and their products by 2, 4 and 5 are the same
//! operations in the same order in every kernel (zmm, AVX2, scalar; never contracted to
//! fused multiply-adds); each element of `M` is one FMA chain over the tiles in order,
//! continued from block to block ([`simd::products`] with `add`) for up to [`CHAIN`] tiles, then
//! added to f64 sums, and `Gᵀ M G` is formed in f64 and rounded once: the bits depend on
//! neither the instruction set nor the thread count. Error: each element of a chain's `M`
//! is within `γ_{P+10}` (`P` ≤ 512 its tiles) of the f64 sum of `|U′| ⊙ |V|` (`V`'s two
//! levels round a term up to 3 times each, `U′`'s up to 2 each, then `P` fused
//! multiply-adds; Higham §3.1), which `Gᵀ · G` carries into `dW` with `|G|` (the test
//! checks every weight against f64). `U′` carries entries up to 8 (`|A| dY |Aᵀ|` up to
//! 225 |dY|) where F(2×2)'s carries 1, and `G` entries of ⅙ and less: as for the forward,
//! the bound is a few times F(2×2)'s dual's.
//!
//! Speed (`losscape bench --kernels`, 32 images, one thread, 2-core Sapphire-Rapids-class
//! VM): zmm 0.84–0.89 / 0.56–0.57 / 0.58–0.59 ms on ResNet-cifar's 32×32×16, 16×16×32 and
//! 8×8×64 layers against F(2×2)'s dual's 1.04–1.10 / 0.71–0.76 / 0.73–0.78; AVX2-only
//! 0.94 / 0.72 / 0.80 against 1.31 / 1.07 / 1.12.

#[cfg(target_arch = "x86_64")]
use super::super::kernels::mask8;
use super::super::kernels::Kernel;
use super::grad::{accumulate, transpose_run};
use super::{simd, Aligned};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Transform positions per tile (6 × 6).
const XI: usize = 36;

/// Target floats of one block's `V` and `U′`, `36·(C + O')·tiles` (a block is whole
/// images): F(2×2)'s forward blocks (twice that was level on passes, 4 MiB more peak
/// memory in `hessian` on ResNet-56).
const BLOCK_FLOATS: usize = super::BLOCK_FLOATS;

/// The most tiles one f32 chain of `M` runs over before it is added to the f64 sums (a
/// block's products continue the previous block's chains up to this).
const CHAIN: usize = 512;

/// `G` of F(4×4, 3×3), 6 × 3.
pub(super) const G: [[f64; 3]; 6] = [
    [0.25, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// Whether [`weight_grad`] takes a padding-`p` convolution of `h × w` images: padding 1,
/// sides multiples of 4, and 1, 2, 4 or 8 tiles to a row (a whole number of rows to each
/// vector of 16 or 8 tiles, so that the padding columns fall on fixed lanes).
pub(in super::super) fn applies(h: usize, w: usize, p: usize) -> bool {
    p == 1 && h > 0 && h.is_multiple_of(4) && w.is_multiple_of(4) && matches!(w / 4, 1 | 2 | 4 | 8)
}

/// `dw [O, C·9] += Σ_terms dy ⋆ x` for a 3×3 stride-1 convolution with padding 1 on images
/// [`applies`] takes: each term is (dy `[O, N·H·W]`, x `[C, N, H, W]`), `dims = [N, H, W]`.
pub(in super::super) fn weight_grad(
    kernel: Kernel,
    (o, c): (usize, usize),
    [n, h, w]: [usize; 3],
    terms: &[(&[f32], &[f32])],
    dw: &mut [f32],
) {
    assert!(applies(h, w, 1), "winograd4: weight-gradient shape");
    assert_eq!(dw.len(), o * c * 9, "winograd4: weight-gradient size");
    let hw = h * w;
    let cols = n * hw;
    if cols == 0 || o == 0 || c == 0 {
        return;
    }
    let (th, tw) = (h / 4, w / 4);
    let ou = o.next_multiple_of(16);
    let nb = (BLOCK_FLOATS / (XI * (c + ou) * th * tw)).clamp(1, n);
    let kmax = nb * th * tw;
    let ld = kmax.next_multiple_of(16);
    // ξ's matrices one cache line further apart than their size (see `Winograd::run`)
    let (vs, us, ms) = (c * ld + 16, kmax * ou + 16, c * ou);
    let (mut v_buf, mut u_buf) = (Aligned::new(XI * vs), Aligned::new(XI * us));
    let (v, u) = (v_buf.get(), u_buf.get());
    let (mut mb_buf, mut dyt_buf) = (Aligned::new(XI * ms), Aligned::new(nb * hw * ou));
    let (mb, dyt) = (mb_buf.get(), dyt_buf.get());
    // the f64 sums, set by the first chain's flush where there are two or more chains
    let mut m64: Vec<f64> = Vec::new();
    // the columns' transform of one channel, `[a, ty, image, column]`, with 16 floats
    // before and 64 after that the row kernels may read (their lanes masked)
    let glen = 6 * th * nb * w;
    let mut g_buf = vec![0.0f32; glen + 80];
    // whether the sums are `mb`'s chains alone (one chain: `m64` is never formed)
    let mut alone = false;
    for (term, &(dy, x)) in terms.iter().enumerate() {
        assert!(dy.len() == o * cols, "winograd4: dy size");
        assert!(x.len() == c * cols, "winograd4: input size");
        // tiles in `mb`'s chains since they were last added to `m64`
        let mut chain = 0;
        for n0 in (0..n).step_by(nb) {
            let b = nb.min(n - n0);
            let k = b * th * tw;
            for ci in 0..c {
                let plane = &x[ci * cols + n0 * hw..][..b * hw];
                if ci + 1 < c {
                    prefetch(&x[(ci + 1) * cols + n0 * hw..][..b * hw]);
                }
                columns(
                    kernel,
                    plane,
                    (b, h, w),
                    &mut g_buf[16..16 + 6 * th * b * w],
                );
                rows(kernel, &g_buf, (b, th, tw), &mut v[ci * ld..], vs);
            }
            transpose_run(kernel, dy, (o, ou), cols, (n0 * hw, b * hw), dyt);
            dy_transform(kernel, dyt, (b, th, tw), ou, u, us);
            let onto = chain > 0;
            simd::products(
                kernel,
                XI,
                (c, k),
                (v, vs, ld),
                (u, us),
                (mb, ms),
                (ou, ou),
                onto,
            );
            chain += k;
            if chain + k > CHAIN || n0 + b == n {
                if m64.is_empty() && n0 + b == n && term + 1 == terms.len() {
                    alone = true;
                } else if m64.is_empty() {
                    m64.extend(mb[..XI * ms].iter().map(|&v| f64::from(v)));
                } else {
                    accumulate(kernel, &mut m64, mb);
                }
                chain = 0;
            }
        }
    }
    if alone {
        filter_grads(&mb[..XI * ms], (o, c, ou), dw);
    } else if !m64.is_empty() {
        filter_grads(&m64, (o, c, ou), dw);
    }
}

/// Asks for `s`'s cache lines (the next channel's rows, while this one's are transformed).
#[inline]
fn prefetch(s: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for i in (0..s.len()).step_by(16) {
        // SAFETY: a prefetch of an address inside `s`; SSE is baseline on x86-64.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(s.as_ptr().add(i).cast()) }
    }
}

/// `Bᵀ d` of six values (a column or row of a 6×6 patch): the operations of
/// `winograd_f4.rs`'s `bt6`, in its order.
#[inline(always)]
fn bt6(d0: f32, d1: f32, d2: f32, d3: f32, d4: f32, d5: f32) -> [f32; 6] {
    let (s12, m13) = (d1 + d2, d1 - d3);
    [
        (4.0 * d0 - 5.0 * d2) + d4,
        (d3 + d4) - 4.0 * s12,
        (d4 - d3) + 4.0 * (d1 - d2),
        (d4 - d2) - 2.0 * m13,
        (d4 - d2) + 2.0 * m13,
        (4.0 * d1 - 5.0 * d3) + d5,
    ]
}

/// [`bt6`] on vectors (the same operations, not fused).
macro_rules! bt6_vec {
    ($d:expr, $add:ident, $sub:ident, $mul:ident, $set1:ident) => {{
        let [d0, d1, d2, d3, d4, d5] = $d;
        let (c2, c4, c5) = ($set1(2.0), $set1(4.0), $set1(5.0));
        let (s12, m13) = ($add(d1, d2), $sub(d1, d3));
        let d42 = $sub(d4, d2);
        [
            $add($sub($mul(c4, d0), $mul(c5, d2)), d4),
            $sub($add(d3, d4), $mul(c4, s12)),
            $add($sub(d4, d3), $mul(c4, $sub(d1, d2))),
            $sub(d42, $mul(c2, m13)),
            $add(d42, $mul(c2, m13)),
            $add($sub($mul(c4, d1), $mul(c5, d3)), d5),
        ]
    }};
}

/// The columns' half of `V`: `g[((a·th + ty)·b + image)·w + col] = Σ_i Bᵀ[a][i] ·
/// x[image, 4ty − 1 + i, col]` (rows −1 and h zero), lane-wise over (image, column).
fn columns(kernel: Kernel, plane: &[f32], (b, h, w): (usize, usize, usize), g: &mut [f32]) {
    assert!(plane.len() >= b * h * w && g.len() >= 6 * (h / 4) * b * w);
    match kernel {
        // SAFETY: AVX-512F was detected; sizes asserted above.
        #[cfg(target_arch = "x86_64")]
        Kernel::Zmm => unsafe { columns_zmm(plane.as_ptr(), (b, h, w), g.as_mut_ptr()) },
        // SAFETY: AVX2 was detected; sizes asserted above.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 | Kernel::Avx512 => unsafe {
            columns_avx2(plane.as_ptr(), (b, h, w), g.as_mut_ptr())
        },
        _ => columns_scalar(plane, (b, h, w), g),
    }
}

/// The portable form of [`columns`]: the same operations.
fn columns_scalar(plane: &[f32], (b, h, w): (usize, usize, usize), g: &mut [f32]) {
    let (th, line) = (h / 4, b * w);
    for ty in 0..th {
        for f in 0..line {
            let (img, col) = (f / w, f % w);
            let d = |i: usize| match (4 * ty + i).checked_sub(1) {
                Some(y) if y < h => plane[(img * h + y) * w + col],
                _ => 0.0,
            };
            let z = bt6(d(0), d(1), d(2), d(3), d(4), d(5));
            for (a, &za) in z.iter().enumerate() {
                g[(a * th + ty) * line + f] = za;
            }
        }
    }
}

/// [`columns`] by vectors of `$lanes` of the flat (image, column) index, each gathered
/// from the images' rows by masked loads (one per image a vector spans), the padding
/// rows zero.
macro_rules! columns_kernel {
    ($name:ident, $features:literal, $lanes:literal, $vec:ty, $zero:ident, $load:expr,
     $store:expr, $add:ident, $sub:ident, $mul:ident, $set1:ident) => {
        /// # Safety
        /// The CPU has `$features`; `x` holds `b·h·w` floats, `g` `6·(h/4)·b·w`.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(x: *const f32, (b, h, w): (usize, usize, usize), g: *mut f32) {
            let (th, line, hw) = (h / 4, b * w, h * w);
            // lanes per image row segment: a vector is within one row, or whole rows of
            // consecutive images
            let seg = w.min($lanes);
            for ty in 0..th {
                // the vector's first (image, column)
                let (mut img, mut col) = (0, 0);
                let mut f = 0;
                while f < line {
                    let n = (line - f).min($lanes);
                    let mut d: [$vec; 6] = [$zero(); 6];
                    for (i, di) in d.iter_mut().enumerate() {
                        let Some(y) = (4 * ty + i).checked_sub(1).filter(|&y| y < h) else {
                            continue;
                        };
                        let row = x.add(img * hw + y * w + col);
                        let (mut l, mut at) = (0, row);
                        while l < n {
                            let len = seg.min(n - l);
                            // lanes l .. l + len from the image's row y
                            *di = $load(*di, at, l, len);
                            l += len;
                            at = at.add(hw);
                        }
                    }
                    let z = bt6_vec!(d, $add, $sub, $mul, $set1);
                    for (a, &za) in z.iter().enumerate() {
                        $store(g.add((a * th + ty) * line + f), za, n);
                    }
                    f += $lanes;
                    if w > $lanes {
                        col += $lanes;
                        if col == w {
                            (img, col) = (img + 1, 0);
                        }
                    } else {
                        img += $lanes / w;
                    }
                }
            }
        }
    };
}

/// Lanes `l .. l + len` of `v` from `p[0 .. len]` (a masked load: nothing else is read).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn zmm_part(v: __m512, p: *const f32, l: usize, len: usize) -> __m512 {
    let keep = ((1u32 << len) - 1) << l;
    _mm512_mask_loadu_ps(v, keep as u16, p.sub(l))
}

/// The first `n` lanes of `v` to `p`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn zmm_store(p: *mut f32, v: __m512, n: usize) {
    _mm512_mask_storeu_ps(p, ((1u32 << n) - 1) as u16, v)
}

/// As [`zmm_part`], for 8 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn ymm_part(v: __m256, p: *const f32, l: usize, len: usize) -> __m256 {
    if l == 0 && len == 8 {
        return _mm256_loadu_ps(p);
    }
    // lanes l .. l + len: set in the mask of l + len lanes and not in that of l
    let keep = _mm256_andnot_si256(mask8(l), mask8(l + len));
    let part = _mm256_maskload_ps(p.sub(l), keep);
    _mm256_blendv_ps(v, part, _mm256_castsi256_ps(keep))
}

/// As [`zmm_store`], for 8 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn ymm_store(p: *mut f32, v: __m256, n: usize) {
    if n == 8 {
        _mm256_storeu_ps(p, v);
    } else {
        _mm256_maskstore_ps(p, mask8(n), v);
    }
}

columns_kernel!(
    columns_zmm,
    "avx512f",
    16,
    __m512,
    _mm512_setzero_ps,
    zmm_part,
    zmm_store,
    _mm512_add_ps,
    _mm512_sub_ps,
    _mm512_mul_ps,
    _mm512_set1_ps
);
columns_kernel!(
    columns_avx2,
    "avx2",
    8,
    __m256,
    _mm256_setzero_ps,
    ymm_part,
    ymm_store,
    _mm256_add_ps,
    _mm256_sub_ps,
    _mm256_mul_ps,
    _mm256_set1_ps
);

/// The rows' half of `V`: for each (a, ty), the `b·tw` tiles `q` of the flat row
/// `g[(a·th + ty)·b·w ..]` (from `gb[16..]`) to `v[(6a + β)·vs + ty·b·tw + q] = Σ_j
/// Bᵀ[β][j] · g[4q − 1 + j]`, with `g[4q − 1]` zero for a row's first tile and `g[4q + 4]`
/// for its last.
fn rows(kernel: Kernel, gb: &[f32], (b, th, tw): (usize, usize, usize), v: &mut [f32], vs: usize) {
    let (w, q) = (4 * tw, b * tw);
    assert!(gb.len() >= 16 + 6 * th * b * w + 64 && v.len() > 35 * vs + (th - 1) * q + q - 1);
    let shape = (b, th, tw);
    match kernel {
        // SAFETY: AVX-512F was detected; `gb` holds 16 floats before each row and 64 after
        // the last (asserted above), `v` the 36 rows of `th·q` at `vs` apart.
        #[cfg(target_arch = "x86_64")]
        Kernel::Zmm => unsafe { rows_zmm(gb.as_ptr().add(16), shape, v.as_mut_ptr(), vs) },
        // SAFETY: AVX2 was detected; bounds as for zmm.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 | Kernel::Avx512 => unsafe {
            rows_avx2(gb.as_ptr().add(16), shape, v.as_mut_ptr(), vs)
        },
        _ => {
            for a in 0..6 {
                for ty in 0..th {
                    let src = 16 + (a * th + ty) * b * w;
                    let dst = 6 * a * vs + ty * q;
                    rows_scalar(&gb[src - 1..src + 4 * q + 1], (q, tw), &mut v[dst..], vs);
                }
            }
        }
    }
}

/// The portable form of [`rows`] for one flat row `g` (from column −1 to `4q`).
fn rows_scalar(g: &[f32], (q, tw): (usize, usize), v: &mut [f32], vs: usize) {
    for t in 0..q {
        let d = &g[4 * t..][..6];
        let d0 = if t % tw == 0 { 0.0 } else { d[0] };
        let d5 = if t % tw == tw - 1 { 0.0 } else { d[5] };
        let z = bt6(d0, d[1], d[2], d[3], d[4], d5);
        for (beta, &zb) in z.iter().enumerate() {
            v[beta * vs + t] = zb;
        }
    }
}

/// [`rows`] by vectors of 16 tiles: the four phases of 64 columns by two-source
/// permutes, the neighbours' columns by a one-lane rotation, the padding lanes (fixed:
/// 16 is a whole number of rows of `tw` tiles) masked to zero.
///
/// # Safety
/// AVX-512F; `g` readable from `g − 16` to `g + 6·th·b·4tw + 64`, `v` the 36 rows of
/// `th·b·tw` floats at `vs` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn rows_zmm(g: *const f32, (b, th, tw): (usize, usize, usize), v: *mut f32, vs: usize) {
    let q = b * tw;
    let (mut not_first, mut not_last) = (0u16, 0u16);
    let (mut ph, mut up, mut down) = ([[0u32; 16]; 4], [0u32; 16], [0u32; 16]);
    for l in 0..16 {
        not_first |= u16::from(l % tw != 0) << l;
        not_last |= u16::from(l % tw != tw - 1) << l;
        for (p, ix) in ph.iter_mut().enumerate() {
            ix[l] = (4 * (l % 8) + p) as u32;
        }
        up[l] = ((l + 15) % 16) as u32;
        down[l] = ((l + 1) % 16) as u32;
    }
    let ix = |a: &[u32; 16]| _mm512_loadu_si512(a.as_ptr().cast());
    let (p0, p1, p2, p3) = (ix(&ph[0]), ix(&ph[1]), ix(&ph[2]), ix(&ph[3]));
    let (up, down) = (ix(&up), ix(&down));
    for a in 0..6 {
        for ty in 0..th {
            let src = g.add((a * th + ty) * 4 * q);
            let dst = v.add(6 * a * vs + ty * q);
            let mut t = 0;
            while t < q {
                let s = src.add(4 * t);
                let (z0, z1) = (_mm512_loadu_ps(s), _mm512_loadu_ps(s.add(16)));
                let (z2, z3) = (_mm512_loadu_ps(s.add(32)), _mm512_loadu_ps(s.add(48)));
                let e0 = _mm512_mask_blend_ps(
                    0xFF00,
                    _mm512_permutex2var_ps(z0, p0, z1),
                    _mm512_permutex2var_ps(z2, p0, z3),
                );
                let e1 = _mm512_mask_blend_ps(
                    0xFF00,
                    _mm512_permutex2var_ps(z0, p1, z1),
                    _mm512_permutex2var_ps(z2, p1, z3),
                );
                let e2 = _mm512_mask_blend_ps(
                    0xFF00,
                    _mm512_permutex2var_ps(z0, p2, z1),
                    _mm512_permutex2var_ps(z2, p2, z3),
                );
                let e3 = _mm512_mask_blend_ps(
                    0xFF00,
                    _mm512_permutex2var_ps(z0, p3, z1),
                    _mm512_permutex2var_ps(z2, p3, z3),
                );
                let d0 = _mm512_maskz_permutexvar_ps(not_first, up, e3);
                let d5 = _mm512_maskz_permutexvar_ps(not_last, down, e0);
                let out = bt6_vec!(
                    [d0, e0, e1, e2, e3, d5],
                    _mm512_add_ps,
                    _mm512_sub_ps,
                    _mm512_mul_ps,
                    _mm512_set1_ps
                );
                let n = (q - t).min(16);
                for (beta, &ob) in out.iter().enumerate() {
                    zmm_store(dst.add(beta * vs + t), ob, n);
                }
                t += 16;
            }
        }
    }
}

/// [`rows`] by vectors of 8 tiles: columns `4q − 1 … 4q + 2` and `4q + 1 … 4q + 4` as
/// two 8 × 4 transposes of 4-float rows, the padding lanes masked to zero.
///
/// # Safety
/// AVX2; `g` readable from `g − 16` to `g + 6·th·b·4tw + 64`, `v` the 36 rows of
/// `th·b·tw` floats at `vs` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn rows_avx2(g: *const f32, (b, th, tw): (usize, usize, usize), v: *mut f32, vs: usize) {
    let q = b * tw;
    let (mut first, mut last) = ([0i32; 8], [0i32; 8]);
    for l in 0..8 {
        first[l] = if l % tw != 0 { -1 } else { 0 };
        last[l] = if l % tw != tw - 1 { -1 } else { 0 };
    }
    let not_first = _mm256_castsi256_ps(_mm256_loadu_si256(first.as_ptr().cast()));
    let not_last = _mm256_castsi256_ps(_mm256_loadu_si256(last.as_ptr().cast()));
    for a in 0..6 {
        for ty in 0..th {
            let src = g.add((a * th + ty) * 4 * q);
            let dst = v.add(6 * a * vs + ty * q);
            let mut t = 0;
            while t < q {
                // rows r and r + 4 of 4 floats from `s + 4r` as one vector, r < 4
                let s = src.add(4 * t).sub(1);
                let a0 = _mm256_loadu2_m128(s.add(16), s);
                let a1 = _mm256_loadu2_m128(s.add(20), s.add(4));
                let a2 = _mm256_loadu2_m128(s.add(24), s.add(8));
                let a3 = _mm256_loadu2_m128(s.add(28), s.add(12));
                let (lo01, hi01) = (_mm256_unpacklo_ps(a0, a1), _mm256_unpackhi_ps(a0, a1));
                let (lo23, hi23) = (_mm256_unpacklo_ps(a2, a3), _mm256_unpackhi_ps(a2, a3));
                let d0 = _mm256_shuffle_ps::<0x44>(lo01, lo23);
                let d1 = _mm256_shuffle_ps::<0xEE>(lo01, lo23);
                let d2 = _mm256_shuffle_ps::<0x44>(hi01, hi23);
                let d3 = _mm256_shuffle_ps::<0xEE>(hi01, hi23);
                let s = s.add(2);
                let b0 = _mm256_loadu2_m128(s.add(16), s);
                let b1 = _mm256_loadu2_m128(s.add(20), s.add(4));
                let b2 = _mm256_loadu2_m128(s.add(24), s.add(8));
                let b3 = _mm256_loadu2_m128(s.add(28), s.add(12));
                let (hb01, hb23) = (_mm256_unpackhi_ps(b0, b1), _mm256_unpackhi_ps(b2, b3));
                let d4 = _mm256_shuffle_ps::<0x44>(hb01, hb23);
                let d5 = _mm256_shuffle_ps::<0xEE>(hb01, hb23);
                let (d0, d5) = (_mm256_and_ps(d0, not_first), _mm256_and_ps(d5, not_last));
                let out = bt6_vec!(
                    [d0, d1, d2, d3, d4, d5],
                    _mm256_add_ps,
                    _mm256_sub_ps,
                    _mm256_mul_ps,
                    _mm256_set1_ps
                );
                let n = (q - t).min(8);
                for (beta, &ob) in out.iter().enumerate() {
                    ymm_store(dst.add(beta * vs + t), ob, n);
                }
                t += 8;
            }
        }
    }
}

/// `U′_ξ = (A dY Aᵀ)_ξ` of a block's `b` images of `th × tw` tiles from
/// [`transpose_run`]'s `t` (`[image, row, column, O']`), written to `u[ξ·us + k·ou + o]`
/// with `k = (ty·b + image)·tw + tx`: by vectors over the channels.
fn dy_transform(
    kernel: Kernel,
    t: &[f32],
    (b, th, tw): (usize, usize, usize),
    ou: usize,
    u: &mut [f32],
    us: usize,
) {
    let tiles = b * th * tw;
    assert!(ou.is_multiple_of(16) && t.len() >= tiles * 16 * ou);
    assert!(tiles == 0 || u.len() >= 35 * us + tiles * ou);
    match kernel {
        // SAFETY: AVX-512F is present (the kernel was detected); sizes asserted above.
        #[cfg(target_arch = "x86_64")]
        Kernel::Zmm => unsafe { dy_zmm(t.as_ptr(), (b, th, tw), ou, u.as_mut_ptr(), us) },
        // SAFETY: AVX2 is present; sizes asserted above.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 | Kernel::Avx512 => unsafe {
            dy_ymm(t.as_ptr(), (b, th, tw), ou, u.as_mut_ptr(), us)
        },
        _ => dy_scalar(t, (b, th, tw), ou, u, us),
    }
}

/// `A d` of four values (a column or row of a 4×4 dY tile): `[d0, Σ, alternating Σ,
/// d0 + 2d1 + 4d2 + 8d3, d0 − 2d1 + 4d2 − 8d3, d3]`.
#[inline(always)]
fn a4(d0: f32, d1: f32, d2: f32, d3: f32) -> [f32; 6] {
    let (p, m) = (d0 + d2, d1 + d3);
    let (p4, m4) = (d0 + 4.0 * d2, 2.0 * d1 + 8.0 * d3);
    [d0, p + m, p - m, p4 + m4, p4 - m4, d3]
}

/// The portable form of [`dy_transform`]: the same operations.
fn dy_scalar(t: &[f32], (b, th, tw): (usize, usize, usize), ou: usize, u: &mut [f32], us: usize) {
    let w = 4 * tw;
    for ty in 0..th {
        for img in 0..b {
            for tx in 0..tw {
                let k = (ty * b + img) * tw + tx;
                let base = (img * 4 * th + 4 * ty) * w + 4 * tx;
                for j in 0..ou {
                    let d = |r: usize, s: usize| t[(base + r * w + s) * ou + j];
                    // A dY down the columns, then · Aᵀ along each row
                    let cols: [[f32; 6]; 4] =
                        std::array::from_fn(|s| a4(d(0, s), d(1, s), d(2, s), d(3, s)));
                    for a in 0..6 {
                        let z = a4(cols[0][a], cols[1][a], cols[2][a], cols[3][a]);
                        for (beta, &zb) in z.iter().enumerate() {
                            u[(6 * a + beta) * us + k * ou + j] = zb;
                        }
                    }
                }
            }
        }
    }
}

/// [`dy_scalar`] by vectors of `$lanes` channels.
macro_rules! dy_kernel {
    ($name:ident, $features:literal, $lanes:literal, $load:ident, $store:ident,
     $add:ident, $sub:ident, $mul:ident, $set1:ident) => {
        /// # Safety
        /// The CPU has `$features`; `t` holds `b·th·tw·16·ou` floats, `u` `35·us +
        /// b·th·tw·ou`.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(
            t: *const f32,
            (b, th, tw): (usize, usize, usize),
            ou: usize,
            u: *mut f32,
            us: usize,
        ) {
            let w = 4 * tw;
            let (c2, c4, c8) = ($set1(2.0), $set1(4.0), $set1(8.0));
            macro_rules! a4 {
                ($d0:expr, $d1:expr, $d2:expr, $d3:expr) => {{
                    let (d0, d1, d2, d3) = ($d0, $d1, $d2, $d3);
                    let (p, m) = ($add(d0, d2), $add(d1, d3));
                    let (p4, m4) = ($add(d0, $mul(c4, d2)), $add($mul(c2, d1), $mul(c8, d3)));
                    [d0, $add(p, m), $sub(p, m), $add(p4, m4), $sub(p4, m4), d3]
                }};
            }
            for ty in 0..th {
                for img in 0..b {
                    for tx in 0..tw {
                        let k = (ty * b + img) * tw + tx;
                        let base = (img * 4 * th + 4 * ty) * w + 4 * tx;
                        let uk = u.add(k * ou);
                        for j in (0..ou).step_by($lanes) {
                            let tj = t.add(base * ou + j);
                            let r0 = tj;
                            let (r1, r2, r3) =
                                (r0.add(w * ou), r0.add(2 * w * ou), r0.add(3 * w * ou));
                            let mut cols = [[$set1(0.0); 6]; 4];
                            for (sc, col) in cols.iter_mut().enumerate() {
                                let o = sc * ou;
                                *col = a4!(
                                    $load(r0.add(o)),
                                    $load(r1.add(o)),
                                    $load(r2.add(o)),
                                    $load(r3.add(o))
                                );
                            }
                            for a in 0..6 {
                                let z = a4!(cols[0][a], cols[1][a], cols[2][a], cols[3][a]);
                                for (beta, &zb) in z.iter().enumerate() {
                                    $store(uk.add((6 * a + beta) * us + j), zb);
                                }
                            }
                        }
                    }
                }
            }
        }
    };
}

dy_kernel!(
    dy_zmm,
    "avx512f",
    16,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_add_ps,
    _mm512_sub_ps,
    _mm512_mul_ps,
    _mm512_set1_ps
);
dy_kernel!(
    dy_ymm,
    "avx2",
    8,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_add_ps,
    _mm256_sub_ps,
    _mm256_mul_ps,
    _mm256_set1_ps
);

/// `dw += Gᵀ M G` for each (output, input channel) pair, in f64 and rounded once to f32:
/// `N[a][j] = Σ_b M_{6a+b}[c, o] · G[b][j]`, then `dw[o, c, i, j] += Σ_a G[a][i] ·
/// N[a][j]`, each sum from zero in index order, terms with a zero factor of `G` skipped
/// where every `M` is finite (they add ±0 to a sum that is never −0); by vectors over
/// output channels. `M` is the f64 sums, or the f32 chains where one chain covers the call
/// (each converted exactly, so the same values).
fn filter_grads<T: Copy + Into<f64>>(m64: &[T], (o, c, ou): (usize, usize, usize), dw: &mut [f32]) {
    let ms = c * ou;
    let finite = crate::engine::ops::vmath::all_finite(m64);
    let (mut nb, mut t) = (vec![0.0f64; 18 * o], vec![0.0f64; 9 * o]);
    for ci in 0..c {
        nb.fill(0.0);
        t.fill(0.0);
        crate::engine::ops::vmath::wide!({
            for (aj, ns) in nb.chunks_exact_mut(o).enumerate() {
                let (a, j) = (aj / 3, aj % 3);
                for (b, gb) in G.iter().enumerate() {
                    let gb = gb[j];
                    if finite && gb == 0.0 {
                        continue;
                    }
                    let row = &m64[(a * 6 + b) * ms + ci * ou..][..o];
                    for (s, &m) in ns.iter_mut().zip(row) {
                        *s += m.into() * gb;
                    }
                }
            }
            for (ij, ts) in t.chunks_exact_mut(o).enumerate() {
                let (i, j) = (ij / 3, ij % 3);
                for (a, ga) in G.iter().enumerate() {
                    let ga = ga[i];
                    if finite && ga == 0.0 {
                        continue;
                    }
                    for (s, &n) in ts.iter_mut().zip(&nb[(a * 3 + j) * o..][..o]) {
                        *s += ga * n;
                    }
                }
            }
        });
        for (oc, w) in dw.chunks_exact_mut(c * 9).enumerate() {
            for (ij, d) in w[ci * 9..][..9].iter_mut().enumerate() {
                *d += t[ij * o + oc] as f32;
            }
        }
    }
}

#[cfg(test)]
#[path = "winograd_grad4_tests.rs"]
mod tests;
