//! The weight gradient of [`super::Winograd`]'s convolutions by the dual of F(2×2, 3×3)
//! (Lavin & Gray 2016, §4.1: "the same transforms compute the gradient with respect to
//! the filters"). The forward output tile is `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`, so
//! `⟨dY, Y⟩ = ⟨Gᵀ [(A dY Aᵀ) ⊙ (Bᵀ d B)] G, g⟩` and, summed over the tiles,
//!
//! `dW = Gᵀ M G`,  `M_ξ [C, O] = Σ_tiles V_ξ [C, ·] · U′_ξ [·, O]`,  `U′ = A dY Aᵀ`
//!
//! with `V = Bᵀ d B` the forward's input transform (the same code and bits), `A` = rows
//! `[1 0] [1 1] [1 −1] [0 −1]` and the 2×2 tile `dY` zero beyond the output's edge. The 16
//! products are the forward's register tiles (`winograd_simd.rs`) with `K` = the block's
//! tiles: 2.25× fewer multiplications than the direct weight gradient. dY is transposed
//! per block to `[position, O']` (O' = O rounded up to 16, the extra channels zero) so
//! that `U′` is formed by vectors over output channels. Each block's products are one FMA
//! chain per element over the block's tiles in order, from zero; the blocks are summed in
//! f64 and `Gᵀ M G` is formed in f64. So the bits depend on neither the instruction set
//! nor the tile shape, and each f32 chain is at most one block long (tens to hundreds of
//! tiles). Error: each `M` element of a block is within `γ_{P+4}` of the f64 sum of
//! `|U′| ⊙ |V|` (the transforms' two levels of additions each, then `P` fused
//! multiply-adds; Higham §3.1), which `Gᵀ · G` carries into `dW` with `|G|`.

use super::super::kernels::Kernel;
use super::{input, simd, Aligned, Block, Geo, BLOCK_FLOATS, XI};

/// `G` of F(2×2, 3×3), 4 × 3.
const G: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// `dw [O, C·9] += Σ_terms dy ⋆ x` for a 3×3 stride-1 convolution with zero padding `p`
/// (≤ 2): each term is (dy `[O, N·Ho·Wo]`, x `[C, N, H, W]`) with `dims = [N, H, W]`.
pub(in super::super) fn weight_grad(
    kernel: Kernel,
    (o, c): (usize, usize),
    [n, h, w]: [usize; 3],
    p: usize,
    terms: &[(&[f32], &[f32])],
    dw: &mut [f32],
) {
    assert!(p <= 2, "winograd: padding");
    assert_eq!(dw.len(), o * c * 9, "winograd: weight-gradient size");
    let (ho, wo) = ((h + 2 * p).saturating_sub(2), (w + 2 * p).saturating_sub(2));
    let cols = n * ho * wo;
    if cols == 0 || o == 0 || c == 0 {
        return;
    }
    let (th, tw) = (ho.div_ceil(2), wo.div_ceil(2));
    let rows = n * th;
    let ou = o.next_multiple_of(16);
    // twice the forward's blocks: each block's sums cost a pass over `M` in f64
    let rb = (2 * BLOCK_FLOATS / (XI * (c + ou) * tw).max(1)).clamp(1, rows);
    let ld = (rb * tw).next_multiple_of(16);
    // ξ's matrices one cache line further apart than their size (see `Winograd::run`)
    let (vs, us, ms) = (c * ld + 16, rb * tw * ou + 16, c * ou);
    let (mut v_buf, mut u_buf) = (Aligned::new(XI * vs), Aligned::new(XI * us));
    let (v, u) = (v_buf.get(), u_buf.get());
    let (mut mb_buf, mut dyt_buf) = (Aligned::new(XI * ms), Aligned::new(rb * 4 * tw * ou));
    let mb = mb_buf.get();
    let mut m64 = vec![0.0f64; XI * ms];
    // dY of the block, `[tile row, a, column, O']`
    let dyt = dyt_buf.get();
    let mut scratch = vec![0.0f32; 8 * (th + 1) * tw + 2 * tw + 2];
    let geo = Geo {
        kernel,
        h,
        w,
        ho,
        wo,
        p,
        tw,
    };
    let per = n * h * w;
    for &(dy, x) in terms {
        assert!(dy.len() == o * cols, "winograd: dy size");
        assert!(x.len() == c * per, "winograd: input size");
        for blk in Block::split(rows, rb, th) {
            let pb = blk.tiles(tw);
            for (ci, plane) in x.chunks_exact(per).enumerate() {
                input(&geo, &blk, plane, &mut v[ci * ld..], vs, &mut scratch);
            }
            transpose_dy(&geo, &blk, dy, (o, ou), cols, dyt);
            dy_transform(kernel, dyt, (blk.r1 - blk.r0, tw), ou, u, us);
            simd::products(
                kernel,
                XI,
                (c, pb),
                (v, vs, ld),
                (u, us),
                (mb, ms),
                (ou, ou),
                false,
            );
            accumulate(kernel, &mut m64, mb);
        }
    }
    filter_grads(&m64, (o, c, ou), dw);
}

/// `dw += Gᵀ M G` for each (output, input channel) pair: `dw[o, c, i, j] += Σ_{a, b}
/// (G[a][i] · M_{ab}[c, o]) · G[b][j]`, summed from zero in f64 in (a, b) order and
/// rounded once to f32, terms with a zero factor of `G` skipped where that leaves the sum
/// as it is; in vectors over output channels (`M_ab` rows are contiguous in o).
fn filter_grads(m64: &[f64], (o, c, ou): (usize, usize, usize), dw: &mut [f32]) {
    let ms = c * ou;
    // (with an ∞ or NaN in M, 0 · m is NaN: every term is summed then)
    let finite = crate::engine::ops::vmath::all_finite(m64);
    let mut t = vec![0.0f64; 9 * o];
    for ci in 0..c {
        t.fill(0.0);
        crate::engine::ops::vmath::wide!({
            for (ij, ts) in t.chunks_exact_mut(o).enumerate() {
                let (i, j) = (ij / 3, ij % 3);
                for (a, ga) in G.iter().enumerate() {
                    for (b, gb) in G.iter().enumerate() {
                        let (ga, gb) = (ga[i], gb[j]);
                        // 80 of the 144 terms have a zero factor: with every `m` finite
                        // they add ±0 to a sum that is never −0, which leaves it as it is
                        if finite && (ga == 0.0 || gb == 0.0) {
                            continue;
                        }
                        let row = &m64[(a * 4 + b) * ms + ci * ou..][..o];
                        for (s, &m) in ts.iter_mut().zip(row) {
                            *s += ga * m * gb;
                        }
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

/// `acc += m` in f64 (one block's sums), compiled for the kernel's vectors.
pub(super) fn accumulate(kernel: Kernel, acc: &mut [f64], m: &[f32]) {
    #[inline(always)]
    fn add(acc: &mut [f64], m: &[f32]) {
        for (a, &b) in acc.iter_mut().zip(m) {
            *a += f64::from(b);
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn add_zmm(acc: &mut [f64], m: &[f32]) {
        add(acc, m)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn add_ymm(acc: &mut [f64], m: &[f32]) {
        add(acc, m)
    }
    match kernel {
        // SAFETY: AVX-512F is present (the kernel was detected).
        #[cfg(target_arch = "x86_64")]
        Kernel::Zmm => unsafe { add_zmm(acc, m) },
        // SAFETY: AVX2 is present.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 | Kernel::Avx512 => unsafe { add_ymm(acc, m) },
        _ => add(acc, m),
    }
}

/// The block's dY as `t[((r − r0)·2 + a)·2tw + col][o]`: output row `2·ty + a`, column
/// `col` of tile row r's image, channels `o < O` (zero beyond the output's edge; channels
/// `O..O'` are never written: they hold what the scratch held, and reach only the columns
/// `O..O'` of `U′` and of the sums, which `filter_grads` never reads). Even outputs whose
/// tile rows lie whole in each image are contiguous runs of dy: those go by 16 × 16
/// register transposes on zmm, 8 × 8 with AVX2.
fn transpose_dy(
    g: &Geo,
    blk: &Block,
    dy: &[f32],
    (o, ou): (usize, usize),
    cols: usize,
    t: &mut [f32],
) {
    let (ho, wo, tw) = (g.ho, g.wo, g.tw);
    let even = ho == 2 * blk.th && wo == 2 * tw;
    let mut r = blk.r0;
    while r < blk.r1 {
        let (img, ty0) = (r / blk.th, r % blk.th);
        let nt = (blk.th - ty0).min(blk.r1 - r);
        // the image's rows 2·ty0 .. 2·(ty0 + nt) as T's positions from `at`
        let at = (r - blk.r0) * 4 * tw;
        if even {
            let src0 = img * ho * wo + 2 * ty0 * wo;
            let len = 2 * nt * wo;
            transpose_run(g.kernel, dy, (o, ou), cols, (src0, len), &mut t[at * ou..]);
        } else {
            t[at * ou..(at + 4 * nt * tw) * ou].fill(0.0);
            for oc in 0..o {
                for k in 0..nt {
                    for a in 0..2 {
                        let oh = 2 * (ty0 + k) + a;
                        if oh >= ho {
                            continue;
                        }
                        let row = &dy[oc * cols + (img * ho + oh) * wo..][..wo];
                        let dst = at + (2 * k + a) * 2 * tw;
                        for (col, &d) in row.iter().enumerate() {
                            t[(dst + col) * ou + oc] = d;
                        }
                    }
                }
            }
        }
        r += nt;
    }
}

/// `t[p·ou + o] = dy[o·cols + src0 + p]` for the `len` positions of a contiguous run of
/// dy (channels `o..ou` left as they are: they reach only the columns of `U′` and `M` that
/// the filter gradients never read): [`transpose_fast`]'s register transposes, the rest
/// one by one.
pub(super) fn transpose_run(
    kernel: Kernel,
    dy: &[f32],
    (o, ou): (usize, usize),
    cols: usize,
    (src0, len): (usize, usize),
    t: &mut [f32],
) {
    let done = transpose_fast(kernel, dy, (o, ou), cols, (src0, len), t);
    for oc in 0..o {
        // the transposes covered positions ..done.0 of channels ..done.1
        let from = if oc < done.1 { done.0 } else { 0 };
        let row = &dy[oc * cols + src0..][..len];
        for (p, &d) in row.iter().enumerate().skip(from) {
            t[p * ou + oc] = d;
        }
    }
}

/// The 16 × 16 transposes of [`transpose_dy`]'s contiguous run `dy[o][src0..src0 + len]`
/// into `t[q·ou + o]`: returns (positions, channels) done, the rest left to the caller.
fn transpose_fast(
    kernel: Kernel,
    dy: &[f32],
    (o, ou): (usize, usize),
    cols: usize,
    (src0, len): (usize, usize),
    t: &mut [f32],
) -> (usize, usize) {
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Zmm {
        let (full_q, full_o) = (len / 16 * 16, o / 16 * 16);
        assert!(t.len() >= len * ou && ou >= full_o && dy.len() >= (o - 1) * cols + src0 + len);
        for o0 in (0..full_o).step_by(16) {
            for q0 in (0..full_q).step_by(16) {
                // SAFETY: AVX-512 was detected (Zmm); rows o0..o0 + 16 of dy hold positions
                // src0 + q0 .. + 16, and t holds positions q0 .. q0 + 16 of ou channels
                // (asserted above).
                unsafe {
                    super::super::kernels::transpose16(
                        dy.as_ptr().add(o0 * cols + src0 + q0),
                        cols,
                        t.as_mut_ptr().add(q0 * ou + o0),
                        ou,
                    )
                }
            }
        }
        return (full_q, full_o);
    }
    #[cfg(target_arch = "x86_64")]
    if matches!(kernel, Kernel::Avx2 | Kernel::Avx512) {
        let (full_q, full_o) = (len / 8 * 8, o / 8 * 8);
        assert!(t.len() >= len * ou && ou >= full_o && dy.len() >= (o - 1) * cols + src0 + len);
        for o0 in (0..full_o).step_by(8) {
            for q0 in (0..full_q).step_by(8) {
                // SAFETY: AVX2 was detected; in bounds as for the zmm transposes.
                unsafe {
                    transpose8(
                        dy.as_ptr().add(o0 * cols + src0 + q0),
                        cols,
                        t.as_mut_ptr().add(q0 * ou + o0),
                        ou,
                    )
                }
            }
        }
        return (full_q, full_o);
    }
    let _ = (kernel, dy, o, ou, cols, src0, len, t);
    (0, 0)
}

/// `dst[l·stride + j] = src[j·src_stride + l]` for an 8 × 8 block (AVX2).
///
/// # Safety
/// AVX2 is present; 8 rows of 8 floats at `src`, 8 at `dst`, with the strides given.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn transpose8(src: *const f32, src_stride: usize, dst: *mut f32, stride: usize) {
    transpose8_with(src, src_stride, |l, v| {
        _mm256_storeu_ps(dst.add(l * stride), v)
    });
}

/// The 8 × 8 transpose of [`transpose8`], each transposed row `l` handed to `store(l,
/// row)`.
///
/// # Safety
/// AVX2 is present; 8 rows of 8 floats at `src`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn transpose8_with(
    src: *const f32,
    src_stride: usize,
    mut store: impl FnMut(usize, __m256),
) {
    let r: [__m256; 8] = std::array::from_fn(|j| _mm256_loadu_ps(src.add(j * src_stride)));
    let mut t = [_mm256_setzero_ps(); 8];
    for j in 0..4 {
        t[2 * j] = _mm256_unpacklo_ps(r[2 * j], r[2 * j + 1]);
        t[2 * j + 1] = _mm256_unpackhi_ps(r[2 * j], r[2 * j + 1]);
    }
    // s[4h + q]: elements q of 128-bit lane halves, rows 4h .. 4h + 4
    let mut s = [_mm256_setzero_ps(); 8];
    for h in 0..2 {
        let (a0, a1, b0, b1) = (t[4 * h], t[4 * h + 1], t[4 * h + 2], t[4 * h + 3]);
        s[4 * h] = _mm256_shuffle_ps::<0x44>(a0, b0);
        s[4 * h + 1] = _mm256_shuffle_ps::<0xEE>(a0, b0);
        s[4 * h + 2] = _mm256_shuffle_ps::<0x44>(a1, b1);
        s[4 * h + 3] = _mm256_shuffle_ps::<0xEE>(a1, b1);
    }
    for q in 0..4 {
        let lo = _mm256_permute2f128_ps::<0x20>(s[q], s[4 + q]);
        let hi = _mm256_permute2f128_ps::<0x31>(s[q], s[4 + q]);
        store(q, lo);
        store(q + 4, hi);
    }
}

/// `U′_ξ = (A dY Aᵀ)_ξ` of the block's `nt × tw` tiles from [`transpose_dy`]'s `t`, written
/// to `u[ξ·us + tile·ou + o]`: additions only (a negation is `0 − x`), by vectors over
/// the channels.
fn dy_transform(
    kernel: Kernel,
    t: &[f32],
    tiles: (usize, usize),
    ou: usize,
    u: &mut [f32],
    us: usize,
) {
    let (nt, tw) = tiles;
    assert!(ou.is_multiple_of(16) && t.len() >= nt * 4 * tw * ou);
    assert!(nt * tw == 0 || u.len() >= 15 * us + nt * tw * ou);
    match kernel {
        // SAFETY: AVX-512F is present (the kernel was detected); sizes asserted above.
        #[cfg(target_arch = "x86_64")]
        Kernel::Zmm => unsafe { dy_zmm(t.as_ptr(), tiles, ou, u.as_mut_ptr(), us) },
        // SAFETY: AVX2 is present; sizes asserted above.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 | Kernel::Avx512 => unsafe {
            dy_ymm(t.as_ptr(), tiles, ou, u.as_mut_ptr(), us)
        },
        _ => dy_scalar(t, tiles, ou, u, us),
    }
}

/// The portable form of [`dy_transform`]: the same operations.
fn dy_scalar(t: &[f32], (nt, tw): (usize, usize), ou: usize, u: &mut [f32], us: usize) {
    let line = 2 * tw * ou;
    for k in 0..nt {
        for tx in 0..tw {
            let base = 2 * k * line + 2 * tx * ou;
            let at = (k * tw + tx) * ou;
            for j in 0..ou {
                let (a, b) = (t[base + j], t[base + ou + j]);
                let (c, d) = (t[base + line + j], t[base + line + ou + j]);
                // A dY down the columns (a vertical), then · Aᵀ along each row
                let rows = [(a, b), (a + c, b + d), (a - c, b - d), (0.0 - c, 0.0 - d)];
                for (i, &(x0, x1)) in rows.iter().enumerate() {
                    for (q, val) in [x0, x0 + x1, x0 - x1, 0.0 - x1].into_iter().enumerate() {
                        u[(4 * i + q) * us + at + j] = val;
                    }
                }
            }
        }
    }
}

/// [`dy_scalar`] by vectors of `$lanes` channels.
macro_rules! dy_kernel {
    ($name:ident, $features:literal, $lanes:literal, $zero:ident, $load:ident, $store:ident,
     $add:ident, $sub:ident) => {
        /// # Safety
        /// The CPU has `$features`; `t` holds `nt·4·tw·ou` floats, `u` `15·us + nt·tw·ou`.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(
            t: *const f32,
            (nt, tw): (usize, usize),
            ou: usize,
            u: *mut f32,
            us: usize,
        ) {
            let line = 2 * tw * ou;
            let z = $zero();
            for k in 0..nt {
                for tx in 0..tw {
                    let base = 2 * k * line + 2 * tx * ou;
                    let at = (k * tw + tx) * ou;
                    for j in (0..ou).step_by($lanes) {
                        let (a, b) = ($load(t.add(base + j)), $load(t.add(base + ou + j)));
                        let c = $load(t.add(base + line + j));
                        let d = $load(t.add(base + line + ou + j));
                        let rows = [
                            (a, b),
                            ($add(a, c), $add(b, d)),
                            ($sub(a, c), $sub(b, d)),
                            ($sub(z, c), $sub(z, d)),
                        ];
                        for (i, &(x0, x1)) in rows.iter().enumerate() {
                            let vals = [x0, $add(x0, x1), $sub(x0, x1), $sub(z, x1)];
                            for (q, &val) in vals.iter().enumerate() {
                                $store(u.add((4 * i + q) * us + at + j), val);
                            }
                        }
                    }
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

dy_kernel!(
    dy_zmm,
    "avx512f",
    16,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_add_ps,
    _mm512_sub_ps
);
dy_kernel!(
    dy_ymm,
    "avx2",
    8,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_add_ps,
    _mm256_sub_ps
);

#[cfg(test)]
mod tests {
    use super::super::tests::{abs_bt, values};
    use super::*;

    /// `filter_grads`' vectors over output channels give the bits of the plain loop per
    /// weight (all 16 terms, with G's zeros, in the same order), and add to what `dw`
    /// held: on random M, with exact zeros and −0 in it, and with an ∞ and a NaN (which
    /// the terms with a zero factor turn into NaN).
    #[test]
    fn filter_grads_are_the_loop_per_weight() {
        for ((o, c), special) in [(1usize, 1usize), (5, 3), (16, 8), (21, 7)]
            .into_iter()
            .flat_map(|oc| [(oc, 0), (oc, 1), (oc, 2)])
        {
            let ou = o.next_multiple_of(16);
            let mut m64: Vec<f64> = values(XI * c * ou, 7)
                .iter()
                .map(|&v| f64::from(v) / 3.0)
                .collect();
            let extra: &[f64] = match special {
                0 => &[],
                1 => &[0.0, -0.0, 0.0],
                _ => &[f64::INFINITY, f64::NAN],
            };
            for (k, &e) in extra.iter().enumerate() {
                // in M_00 (only i = j = 0 has no zero factor of G there)
                m64[(k * 5) % (c * ou)] = e;
            }
            let start: Vec<f32> = values(o * c * 9, 9);
            let mut dw = start.clone();
            filter_grads(&m64, (o, c, ou), &mut dw);
            for oc in 0..o {
                for ci in 0..c {
                    for (i, j) in (0..9).map(|ij| (ij / 3, ij % 3)) {
                        let mut s = 0.0;
                        for (a, ga) in G.iter().enumerate() {
                            for (b, gb) in G.iter().enumerate() {
                                s += ga[i] * m64[(a * 4 + b) * c * ou + ci * ou + oc] * gb[j];
                            }
                        }
                        let k = (oc * c + ci) * 9 + i * 3 + j;
                        let want = start[k] + s as f32;
                        assert!(
                            dw[k].to_bits() == want.to_bits() || dw[k].is_nan() && want.is_nan(),
                            "o{o} c{c} case {special}: {} vs {want}",
                            dw[k]
                        );
                    }
                }
            }
        }
    }

    /// Per weight (o, c, i, j): the f64 gradient `Σ dy ⋆ x` over the terms, and the
    /// bound's `Gᵀ (Σ_tiles |A||dY||Aᵀ| ⊙ |Bᵀ||d||B|) G` with `|G|` (module docs).
    fn reference(
        terms: &[(Vec<f32>, Vec<f32>)],
        (o, c, n, h, w, p): (usize, usize, usize, usize, usize, usize),
    ) -> (Vec<f64>, Vec<f64>) {
        let (ho, wo) = (h + 2 * p - 2, w + 2 * p - 2);
        let (th, tw) = (ho.div_ceil(2), wo.div_ceil(2));
        let am = [[1.0, 0.0], [1.0, 1.0], [1.0, -1.0], [0.0, -1.0f64]];
        let (mut dw, mut t) = (vec![0.0; o * c * 9], vec![0.0; o * c * 9]);
        for (dy, x) in terms {
            let xat = |ci: usize, img: usize, ih: isize, iw: isize| -> f64 {
                if ih < 0 || iw < 0 || ih as usize >= h || iw as usize >= w {
                    0.0
                } else {
                    x[((ci * n + img) * h + ih as usize) * w + iw as usize] as f64
                }
            };
            let dat = |oc: usize, img: usize, oh: usize, ow: usize| -> f64 {
                if oh >= ho || ow >= wo {
                    0.0
                } else {
                    dy[((oc * n + img) * ho + oh) * wo + ow] as f64
                }
            };
            for oc in 0..o {
                for ci in 0..c {
                    let mut s = [0.0f64; XI];
                    for img in 0..n {
                        for ty in 0..th {
                            for tx in 0..tw {
                                for (xi, sx) in s.iter_mut().enumerate() {
                                    let (a, b) = (xi / 4, xi % 4);
                                    let mut ud = 0.0;
                                    for (r, ar) in am[a].iter().enumerate() {
                                        for (q, bq) in am[b].iter().enumerate() {
                                            let d = dat(oc, img, 2 * ty + r, 2 * tx + q);
                                            ud += ar.abs() * d.abs() * bq.abs();
                                        }
                                    }
                                    let at = |ih, iw| xat(ci, img, ih, iw);
                                    let vd = abs_bt(at, (ty, tx, p), (a, b));
                                    *sx += ud * vd;
                                }
                            }
                        }
                    }
                    for i in 0..3 {
                        for j in 0..3 {
                            let k = (oc * c + ci) * 9 + i * 3 + j;
                            for img in 0..n {
                                for oh in 0..ho {
                                    for ow in 0..wo {
                                        let (ih, iw) = ((oh + i) as isize, (ow + j) as isize);
                                        let d = xat(ci, img, ih - p as isize, iw - p as isize);
                                        dw[k] += dat(oc, img, oh, ow) * d;
                                    }
                                }
                            }
                            for (a, ga) in G.iter().enumerate() {
                                for (b, gb) in G.iter().enumerate() {
                                    t[k] += ga[i].abs() * s[a * 4 + b] * gb[j].abs();
                                }
                            }
                        }
                    }
                }
            }
        }
        (dw, t)
    }

    /// Against the f64 gradient: every weight within `γ_{P+5}·T + u·|dW|` (P the tiles of
    /// the whole call, which bounds a block's), on odd sizes, channels not multiples of 16,
    /// paddings 0–2, two terms, blocks that split images; every kernel this CPU has gives
    /// the same bits, and the sums added to `dw` keep what it held.
    #[test]
    fn weight_grad_within_bound_against_f64() {
        let u = f64::from(f32::EPSILON) / 2.0;
        let mut worst = 0.0f64;
        for (case, &(o, c, n, h, w, p, nterms)) in [
            (16, 16, 2, 8, 8, 1, 1),
            (5, 3, 1, 7, 9, 1, 1),
            (11, 13, 3, 5, 6, 1, 2),
            (4, 7, 1, 9, 5, 0, 1),
            (3, 2, 2, 4, 3, 2, 1),
            (17, 9, 2, 6, 34, 1, 1),
            (32, 16, 3, 16, 16, 1, 2),
            (64, 64, 2, 8, 8, 1, 1),
            (16, 16, 5, 32, 32, 1, 1),
        ]
        .iter()
        .enumerate()
        {
            let (ho, wo) = (h + 2 * p - 2, w + 2 * p - 2);
            let seed = case as u64 * 7;
            let terms: Vec<(Vec<f32>, Vec<f32>)> = (0..nterms as u64)
                .map(|t| {
                    (
                        values(o * n * ho * wo, seed + 2 * t + 1),
                        values(c * n * h * w, seed + 2 * t + 2),
                    )
                })
                .collect();
            let (dw64, tb) = reference(&terms, (o, c, n, h, w, p));
            let tiles = n * ho.div_ceil(2) * wo.div_ceil(2);
            let gamma = (tiles + 5) as f64 * u / (1.0 - (tiles + 5) as f64 * u);
            let refs: Vec<(&[f32], &[f32])> = terms.iter().map(|(d, x)| (&d[..], &x[..])).collect();
            let mut first: Option<Vec<f32>> = None;
            for k in Kernel::available() {
                let mut dw = vec![1.0f32; o * c * 9];
                weight_grad(k, (o, c), [n, h, w], p, &refs, &mut dw);
                for (i, (&a, (&b, &t))) in dw.iter().zip(dw64.iter().zip(&tb)).enumerate() {
                    // `dw` started at 1
                    let err = (a as f64 - 1.0 - b).abs();
                    let bound = gamma * t + 2.0 * u * (b.abs() + 1.0);
                    assert!(
                        err <= bound,
                        "case {case} {k:?} at {i}: {a} − 1 vs {b}, bound {bound}"
                    );
                    worst = worst.max(err / bound);
                }
                match &first {
                    None => first = Some(dw),
                    Some(f) => assert!(
                        f.iter().zip(&dw).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "case {case}: bits differ on {k:?}"
                    ),
                }
            }
        }
        eprintln!("winograd weight gradient: largest error / bound {worst:.3e}");
        assert!(worst > 1e-4, "largest error / bound {worst}");
    }
}
