//! Winograd F(4×4, 3×3) (Lavin & Gray 2016, interpolation points 0, ±1, ±2, ∞) for f32
//! 3×3 stride-1 convolutions with padding 1 on images whose sides are multiples of 4:
//! each 4×4 output tile is `Y = Aᵀ [Σ_c (G g_c Gᵀ) ⊙ (Bᵀ d_c B)] A` from the 6×6 input
//! patch `d_c`, 36 multiplications per tile and channel instead of F(2×2)'s 64 for the
//! same 16 outputs (1.78× fewer; 4× fewer than direct convolution).
//!
//! ```text
//! Bᵀ = ⎡4  0 −5  0 1 0⎤   G = ⎡  ¼    0    0 ⎤   Aᵀ = ⎡1 1  1 1  1 0⎤
//!      ⎢0 −4 −4  1 1 0⎥       ⎢ −⅙   −⅙   −⅙ ⎥        ⎢0 1 −1 2 −2 0⎥
//!      ⎢0  4 −4 −1 1 0⎥       ⎢ −⅙    ⅙   −⅙ ⎥        ⎢0 1  1 4  4 0⎥
//!      ⎢0 −2 −1  2 1 0⎥       ⎢ 1/24 1/12 ⅙  ⎥        ⎣0 1 −1 8 −8 1⎦
//!      ⎢0  2 −1 −2 1 0⎥       ⎢ 1/24 −1/12 ⅙ ⎥
//!      ⎣0  4  0 −5 0 1⎦       ⎣  0    0    1 ⎦
//! ```
//!
//! Layout: sixteen images at a time, one per vector lane. Each input row of the group is
//! transposed to `[column, image]`, so that both transforms are lane-wise vector
//! arithmetic with no shuffles at any image size (F(4×4)'s stride-4 tiles would otherwise
//! need stride-4 column splits, what made a planar F(4×4) slower than F(2×2) here), and
//! each output row is transposed back. The products are [`super::simd`]'s register tiles
//! over the 36 positions, `M_ξ [O, P] = U_ξ [O, C] · V_ξ [C, P]` with `P` = a block's
//! tiles × 16 images.
//!
//! The filter transform is computed in f64 and rounded once; the input transform (with
//! its products by 4, 5 and 2) and the output transform in f32, in one fixed order of
//! operations written out below, the same in every lane and on every instruction set
//! (the loops are lane-wise, compiled for AVX-512F, AVX2 or neither, never contracted to
//! fused multiply-adds); each product is one chain of fused multiply-adds over the
//! channels. So the bits depend on neither the instruction set nor the thread count.
//! Error: as F(2×2)'s analysis ([`super`]), each output is within `γ_{C+13}·T` of the
//! exact sum, `T = |Aᵀ| (Σ_c |U_c| ⊙ |Bᵀ| |d_c| |B|) |A|`: each of the input transform's
//! two levels rounds a term up to 3 times (a product by 5, two additions), the filter
//! transform once, the channel sum `C` times, the output transform's two levels up to 3
//! times each. `T`'s entries are larger than F(2×2)'s (F(4×4)'s transforms carry entries
//! up to 8 and 5 where F(2×2)'s carry 1: up to ~100× direct convolution's `Σ|g||d|`); the
//! tests check the bound elementwise against f64, and the bundled ResNets' surface values
//! against the f64 engine (`tests/winograd.rs`: within 4e-6 relative).

use super::super::kernels::Kernel;
use super::epilogue::ChannelEpi;
use super::{simd, Aligned, Epi};
use std::mem::MaybeUninit;

/// Transform positions per tile (6 × 6).
const XI: usize = 36;

/// Images per group: one per vector lane.
const NL: usize = 16;

/// One lane-wise vector: the same element of the sixteen images of a group.
type V16 = [f32; NL];

/// A patch's intermediate vectors, on a cache line each (a vector split across two lines
/// costs two accesses).
#[repr(C, align(64))]
struct Lines<T>(T);

/// A prepared F(4×4, 3×3) convolution: `o` output channels, the filters transformed.
pub(in super::super) struct Winograd4 {
    o: usize,
    c: usize,
    /// `U_ξ = (G g Gᵀ)_ξ`, `[36, O, C]`.
    u: Vec<f32>,
    kernel: Kernel,
}

/// `G a` for one column `a` of three (f64; the rows of `G` written out, ⅙ and its
/// halves as products by their f64 values).
#[inline(always)]
fn g6(a0: f64, a1: f64, a2: f64) -> [f64; 6] {
    const SIXTH: f64 = 1.0 / 6.0;
    let (p, m) = ((a0 + a1) + a2, (a0 - a1) + a2);
    let (q0, q1, q2) = (a0 * (SIXTH / 4.0), a1 * (SIXTH / 2.0), a2 * SIXTH);
    [
        a0 * 0.25,
        -(p * SIXTH),
        -(m * SIXTH),
        (q0 + q1) + q2,
        (q0 - q1) + q2,
        a2,
    ]
}

/// `G g Gᵀ` of one 3×3 filter (row-major taps) in f64: the tests' reference for
/// [`super::transform_filters`].
#[cfg(test)]
fn filter_transform(g: &[f32]) -> [f64; XI] {
    let g: [f64; 9] = std::array::from_fn(|i| g[i] as f64);
    let cols: [[f64; 6]; 3] = std::array::from_fn(|j| g6(g[j], g[3 + j], g[6 + j]));
    let mut u = [0.0f64; XI];
    for a in 0..6 {
        u[a * 6..][..6].copy_from_slice(&g6(cols[0][a], cols[1][a], cols[2][a]));
    }
    u
}

/// `Bᵀ d` of six lane vectors (one column or row of a 6×6 patch), lane-wise.
#[inline(always)]
fn bt6(d: [&V16; 6]) -> [V16; 6] {
    let mut z = [[0.0f32; NL]; 6];
    for l in 0..NL {
        let [d0, d1, d2, d3, d4, d5] = d.map(|v| v[l]);
        let (s12, m13) = (d1 + d2, d1 - d3);
        z[0][l] = (4.0 * d0 - 5.0 * d2) + d4;
        z[1][l] = (d3 + d4) - 4.0 * s12;
        z[2][l] = (d4 - d3) + 4.0 * (d1 - d2);
        z[3][l] = (d4 - d2) - 2.0 * m13;
        z[4][l] = (d4 - d2) + 2.0 * m13;
        z[5][l] = (4.0 * d1 - 5.0 * d3) + d5;
    }
    z
}

/// `Aᵀ m` of six lane vectors, lane-wise.
#[inline(always)]
fn at6(m: [&V16; 6]) -> [V16; 4] {
    let mut y = [[0.0f32; NL]; 4];
    for l in 0..NL {
        let [m0, m1, m2, m3, m4, m5] = m.map(|v| v[l]);
        let (p12, d12, p34, d34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
        y[0][l] = (m0 + p12) + p34;
        y[1][l] = d12 + 2.0 * d34;
        y[2][l] = p12 + 4.0 * p34;
        y[3][l] = (d12 + 8.0 * d34) + m5;
    }
    y
}

/// A patch's intermediate rows once every element is written, read where they lie (a
/// `transmute` by value moved the input transform's 2.3 KiB through `memmove` on every
/// tile and channel).
///
/// # Safety
/// Every element of `a` is initialized.
#[inline(always)]
unsafe fn written<const R: usize, const C: usize>(
    a: &[[[MaybeUninit<f32>; NL]; C]; R],
) -> &[[V16; C]; R] {
    // SAFETY: MaybeUninit<f32> has f32's layout, and the caller vouches for the values.
    unsafe { &*(a as *const [[[MaybeUninit<f32>; NL]; C]; R]).cast::<[[V16; C]; R]>() }
}

/// The lane vector at `p` (16 floats).
#[inline(always)]
fn lv(s: &[f32], p: usize) -> &V16 {
    (&s[p..p + NL]).try_into().expect("lane vector")
}

/// `V_ξ` of the tiles `k0..k1` (flat tile index `t·tw + k` within the group) of one
/// input channel from its transposed rows `xt [row + 1, column + 1, image]` (a zero
/// border around the image): tile `i`'s 36 vectors to `v[ξ·vs + (i − k0)·16 ..]`.
#[inline(always)]
fn input_tiles(
    xt: &[f32],
    (tw, wp): (usize, usize),
    (k0, k1): (usize, usize),
    v: &mut [f32],
    vs: usize,
) {
    let rs = wp * NL;
    for i in k0..k1 {
        let (t, k) = (i / tw, i % tw);
        let at = 4 * t * rs + 4 * k * NL;
        // columns of the patch through Bᵀ (down the rows), then each row through Bᵀ
        // z[j][a]: column j, row a of Bᵀ d (every element written before it is read)
        let mut z = Lines([[[MaybeUninit::<f32>::uninit(); NL]; 6]; 6]);
        for (j, zj) in z.0.iter_mut().enumerate() {
            let c = at + j * NL;
            let col = bt6(std::array::from_fn(|r| lv(xt, c + r * rs)));
            for (za, ca) in zj.iter_mut().zip(col) {
                *za = ca.map(MaybeUninit::new);
            }
        }
        // SAFETY: all 6 × 6 × 16 written above.
        let z = unsafe { written(&z.0) };
        let off = (i - k0) * NL;
        for a in 0..6 {
            let row = bt6(std::array::from_fn(|j| &z[j][a]));
            for (b, val) in row.iter().enumerate() {
                v[(6 * a + b) * vs + off..][..NL].copy_from_slice(val);
            }
        }
    }
}

/// The 4×4 outputs of tiles `k0..k1` of one output channel from `m[ξ·ms + (i − k0)·16]`
/// into `ot [row, column, image]` (`w` columns; tile `i` in tile row `i / tw`).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // b indexes M's positions and q's columns alike
fn output_tiles(
    m: &[f32],
    ms: usize,
    (tw, w): (usize, usize),
    (k0, k1): (usize, usize),
    ot: &mut [f32],
) {
    for i in k0..k1 {
        let (t, k) = (i / tw, i % tw);
        let off = (i - k0) * NL;
        // q[r][b]: row r of Aᵀ M, column b (every element written before it is read)
        let mut q = Lines([[[MaybeUninit::<f32>::uninit(); NL]; 6]; 4]);
        for b in 0..6 {
            let col = at6(std::array::from_fn(|a| lv(m, (6 * a + b) * ms + off)));
            for (r, val) in col.into_iter().enumerate() {
                q.0[r][b] = val.map(MaybeUninit::new);
            }
        }
        // SAFETY: all 4 × 6 × 16 written above.
        let q = unsafe { written(&q.0) };
        for (r, qr) in q.iter().enumerate() {
            let y = at6(std::array::from_fn(|b| &qr[b]));
            let base = ((4 * t + r) * w + 4 * k) * NL;
            for (cidx, val) in y.iter().enumerate() {
                ot[base + cidx * NL..][..NL].copy_from_slice(val);
            }
        }
    }
}

/// `$name`: `$inner` compiled for `$features` (lane-wise loops, the same bits).
macro_rules! compiled_for {
    ($features:literal, $in_name:ident, $out_name:ident) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $in_name(
            xt: &[f32],
            g: (usize, usize),
            r: (usize, usize),
            v: &mut [f32],
            vs: usize,
        ) {
            input_tiles(xt, g, r, v, vs)
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $out_name(
            m: &[f32],
            ms: usize,
            g: (usize, usize),
            r: (usize, usize),
            ot: &mut [f32],
        ) {
            output_tiles(m, ms, g, r, ot)
        }
    };
}

compiled_for!("avx512f", input_zmm, output_zmm);
compiled_for!("avx2", input_avx2, output_avx2);

/// Rows `src + l·sstride` (l < 16, `n` floats each) to `dst[j·16 + l]` (j < n).
#[inline(always)]
fn transpose_in(kernel: Kernel, src: &[f32], sstride: usize, n: usize, dst: &mut [f32]) {
    assert!(src.len() >= 15 * sstride + n && dst.len() >= n * NL);
    let mut j = 0;
    #[cfg(target_arch = "x86_64")]
    {
        if kernel == Kernel::Zmm {
            while j + 16 <= n {
                // SAFETY: AVX-512 was detected; 16 rows of 16 at src + j, 16 of 16 at dst.
                unsafe {
                    super::super::kernels::transpose16(
                        src.as_ptr().add(j),
                        sstride,
                        dst.as_mut_ptr().add(j * NL),
                        NL,
                    )
                };
                j += 16;
            }
        }
        if kernel != Kernel::Scalar {
            while j + 8 <= n {
                for h in 0..2 {
                    // SAFETY: AVX2 is implied by the vector kernels; in bounds as asserted.
                    unsafe {
                        super::grad::transpose8(
                            src.as_ptr().add(8 * h * sstride + j),
                            sstride,
                            dst.as_mut_ptr().add(j * NL + 8 * h),
                            NL,
                        )
                    };
                }
                j += 8;
            }
        }
    }
    for jj in j..n {
        for l in 0..NL {
            dst[jj * NL + l] = src[l * sstride + jj];
        }
    }
}

/// `src[j·16 + l]` (j < n) to rows `dst + l·dstride` (l < 16), with the epilogue `epi`
/// applied to each value as it is stored (`at`: where `dst[0]` lies in the channel's
/// output, for the residual term): in registers on the vector kernels, the operations of
/// [`ChannelEpi::apply`], so its bits.
#[inline(always)]
fn transpose_out(
    kernel: Kernel,
    src: &[f32],
    n: usize,
    dst: &mut [MaybeUninit<f32>],
    dstride: usize,
    epi: Option<(ChannelEpi, usize)>,
) {
    assert!(src.len() >= n * NL && dst.len() >= 15 * dstride + n);
    if let Some((e, at)) = epi {
        assert!(e.residual.is_none_or(|r| r.len() >= at + 15 * dstride + n));
    }
    let mut j = 0;
    #[cfg(target_arch = "x86_64")]
    {
        if kernel == Kernel::Zmm {
            while j + 16 <= n {
                // SAFETY: AVX-512 was detected; in bounds as asserted.
                unsafe {
                    out16_zmm(
                        src.as_ptr().add(j * NL),
                        dst.as_mut_ptr().add(j) as *mut f32,
                        dstride,
                        epi.map(|(e, at)| (e, at + j)),
                    )
                };
                j += 16;
            }
        }
        if kernel != Kernel::Scalar {
            while j + 8 <= n {
                for h in 0..2 {
                    // SAFETY: AVX2 is implied by the vector kernels; in bounds as asserted.
                    unsafe {
                        out8_avx2(
                            src.as_ptr().add(j * NL + 8 * h),
                            dst.as_mut_ptr().add(8 * h * dstride + j) as *mut f32,
                            dstride,
                            epi.map(|(e, at)| (e, at + 8 * h * dstride + j)),
                        )
                    };
                }
                j += 8;
            }
        }
    }
    for jj in j..n {
        for l in 0..NL {
            let mut v = src[jj * NL + l];
            if let Some((e, at)) = epi {
                let k = at + l * dstride + jj;
                v = e.one(v, e.residual.map_or(0.0, |r| r[k]));
            }
            dst[l * dstride + jj] = MaybeUninit::new(v);
        }
    }
}

/// A 16 × 16 block of [`transpose_out`] in zmm registers, each row through the epilogue
/// before its store.
///
/// # Safety
/// AVX-512F/VL/DQ are present; 16 × 16 floats at `src` (row stride 16), 16 rows of 16 at
/// `dst` (stride `stride`) and, with a residual, at `at` in it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512dq")]
unsafe fn out16_zmm(
    src: *const f32,
    dst: *mut f32,
    stride: usize,
    epi: Option<(ChannelEpi, usize)>,
) {
    use std::arch::x86_64::*;
    let k = epi
        .map_or([0.0; 4], |(e, _)| e.k)
        .map(|v| _mm512_set1_ps(v));
    super::super::kernels::transpose16_with(src, NL, |l, v| {
        let y = match &epi {
            None => v,
            Some((e, at)) => e.zmm(&k, v, at + l * stride, |r| _mm512_loadu_ps(r)),
        };
        _mm512_storeu_ps(dst.add(l * stride), y);
    });
}

/// An 8 × 8 block of [`transpose_out`] with AVX2 (`src` rows 16 apart), each row through
/// the epilogue before its store.
///
/// # Safety
/// AVX2 is present; in bounds as [`out16_zmm`]'s, for 8 × 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn out8_avx2(
    src: *const f32,
    dst: *mut f32,
    stride: usize,
    epi: Option<(ChannelEpi, usize)>,
) {
    use std::arch::x86_64::*;
    let k = epi
        .map_or([0.0; 4], |(e, _)| e.k)
        .map(|v| _mm256_set1_ps(v));
    super::grad::transpose8_with(src, NL, |l, v| {
        let y = match &epi {
            None => v,
            Some((e, at)) => e.ymm(&k, v, at + l * stride, |r| _mm256_loadu_ps(r)),
        };
        _mm256_storeu_ps(dst.add(l * stride), y);
    });
}

/// The widest images the passes give F(4×4) ([`Winograd4::applies`]): paired on ResNet-20
/// (`bench --conv winograd4` against `--conv winograd`), F(4×4) on the 32×32 layers as
/// well made the zmm forward 2% slower, where on 16×16 and 8×8 alone it is level or
/// faster.
const WMAX: usize = 16;

/// Target size (floats) of one block's `V` and `M`, `36·(C + O)·16·tiles`.
const BLOCK_FLOATS: usize = 320 * 1024;

impl Winograd4 {
    /// Whether the passes take F(4×4) for a padding-`p` convolution of `h × w` images:
    /// padding 1, sides multiples of 4 ([`Winograd4::run`]'s tiles), and images at most
    /// [`WMAX`] wide (on wider ones F(2×2)'s transforms, a register kernel per row of 16
    /// tiles, beat the transposes here).
    pub(in super::super) fn applies(h: usize, w: usize, p: usize) -> bool {
        p == 1 && Self::tiles_fit(h, w) && w <= WMAX
    }

    /// Sides that are whole 4×4 tiles.
    fn tiles_fit(h: usize, w: usize) -> bool {
        h > 0 && w > 0 && h.is_multiple_of(4) && w.is_multiple_of(4)
    }

    /// Filters `[O, C, 3, 3]` row-major.
    pub(in super::super) fn new(o: usize, c: usize, wts: &[f32], kernel: Kernel) -> Self {
        assert_eq!(wts.len(), o * c * 9, "winograd4: weight size");
        let u = super::filters::<6, XI>((o, c), wts, kernel, g6);
        Winograd4 { o, c, u, kernel }
    }

    /// As [`super::Winograd::run`] with padding 1 (`Self::applies`): `y [O, N·H·W] = W ⋆
    /// x`, the input the channels of `xs` (each `[Cᵢ, N, H, W]`) stacked; `after(y,
    /// image)` once each image is complete, in order; with `epi`, applied to each block's
    /// outputs while in cache.
    pub(in super::super) fn run(
        &self,
        xs: &[&[f32]],
        [n, h, w]: [usize; 3],
        epi: Option<Epi>,
        y: &mut [MaybeUninit<f32>],
        mut after: impl FnMut(&mut [MaybeUninit<f32>], usize),
    ) {
        let (o, c, kernel) = (self.o, self.c, self.kernel);
        assert!(Self::tiles_fit(h, w), "winograd4: shape");
        let hw = h * w;
        let per = n * hw;
        let planes: Vec<&[f32]> = xs
            .iter()
            .flat_map(|x| x.chunks_exact(per.max(1)).take(x.len() / per.max(1)))
            .collect();
        assert!(planes.len() == c, "winograd4: input channels");
        let cols = n * hw;
        assert!(y.len() >= o * cols, "winograd4: output size");
        if cols == 0 {
            return;
        }
        let (th, tw) = (h / 4, w / 4);
        let tiles = th * tw;
        // blocks of whole tile rows where they fit, else of tiles within one
        let per_tile = XI * (c + o) * NL;
        let tb = (BLOCK_FLOATS / per_tile.max(1)).clamp(1, tiles);
        let tb = if tb >= tw { tb / tw * tw } else { tb };
        // the blocks `k0..k1` of flat tile indices: whole tile rows, or parts of one
        let blocks: Vec<(usize, usize)> = if tb >= tw {
            (0..tiles)
                .step_by(tb)
                .map(|k0| (k0, (k0 + tb).min(tiles)))
                .collect()
        } else {
            (0..th)
                .flat_map(|t| {
                    (0..tw)
                        .step_by(tb)
                        .map(move |k| (t * tw + k, t * tw + (k + tb).min(tw)))
                })
                .collect()
        };
        let ld = tb * NL;
        let (vs, ms) = (c * ld + 16, o * ld + 16);
        let (mut v_buf, mut m_buf) = (Aligned::new(XI * vs), Aligned::new(XI * ms));
        let (v, m) = (v_buf.get(), m_buf.get());
        // one channel's transposed rows of a block, with a zero border: rows of the block's
        // tile rows (4 per row and 2 more), w + 2 columns, 16 images
        let wp = w + 2;
        let rows_max = 4 * (tb.div_ceil(tw) + 1) + 2;
        // (on cache lines, as V and M: each vector of 16 floats one line)
        let (mut xt_buf, mut ot_buf) = (
            Aligned::new(rows_max * wp * NL),
            Aligned::new(4 * (tb.div_ceil(tw) + 1) * w * NL),
        );
        let (xt, ot) = (xt_buf.get(), ot_buf.get());
        // a zero-padded group of images where fewer than 16 remain
        let mut tail: Vec<f32> = Vec::new();
        for g0 in (0..n).step_by(NL) {
            let ng = (n - g0).min(NL);
            for &(k0, k1) in &blocks {
                let (t0, t1) = (k0 / tw, (k1 - 1) / tw + 1);
                // padded rows 4·t0 .. 4·t1 + 2 (source rows one less)
                let nrows = 4 * (t1 - t0) + 2;
                for (ci, plane) in planes.iter().enumerate() {
                    let src: &[f32] = if ng == NL {
                        &plane[g0 * hw..][..NL * hw]
                    } else {
                        tail.clear();
                        tail.extend_from_slice(&plane[g0 * hw..][..ng * hw]);
                        tail.resize(NL * hw, 0.0);
                        &tail
                    };
                    for pr in 0..nrows {
                        let row = &mut xt[pr * wp * NL..][..wp * NL];
                        let sr = (4 * t0 + pr) as isize - 1;
                        if sr < 0 || sr as usize >= h {
                            row.fill(0.0);
                            continue;
                        }
                        row[..NL].fill(0.0);
                        row[(w + 1) * NL..].fill(0.0);
                        let s = &src[sr as usize * w..];
                        transpose_in(kernel, s, hw, w, &mut row[NL..(w + 1) * NL]);
                    }
                    let vv = &mut v[ci * ld..];
                    let geo = (tw, wp);
                    // tiles relative to tile row t0, where xt starts
                    let rng = (k0 - t0 * tw, k1 - t0 * tw);
                    match kernel {
                        // SAFETY: AVX-512F was detected.
                        #[cfg(target_arch = "x86_64")]
                        Kernel::Zmm => unsafe { input_zmm(xt, geo, rng, vv, vs) },
                        // SAFETY: AVX2 is implied by the vector kernels.
                        #[cfg(target_arch = "x86_64")]
                        Kernel::Avx2 | Kernel::Avx512 => unsafe {
                            input_avx2(xt, geo, rng, vv, vs)
                        },
                        _ => input_tiles(xt, geo, rng, vv, vs),
                    }
                }
                let pb = (k1 - k0) * NL;
                simd::products(
                    kernel,
                    XI,
                    (o, c),
                    (&self.u, o * c, c),
                    (v, vs),
                    (m, ms),
                    (pb, ld),
                    false,
                );
                let orows = 4 * (t1 - t0);
                for oc in 0..o {
                    let rng = (k0 - t0 * tw, k1 - t0 * tw);
                    let mm = &m[oc * ld..];
                    match kernel {
                        // SAFETY: AVX-512F was detected.
                        #[cfg(target_arch = "x86_64")]
                        Kernel::Zmm => unsafe { output_zmm(mm, ms, (tw, w), rng, ot) },
                        // SAFETY: AVX2 is implied by the vector kernels.
                        #[cfg(target_arch = "x86_64")]
                        Kernel::Avx2 | Kernel::Avx512 => unsafe {
                            output_avx2(mm, ms, (tw, w), rng, ot)
                        },
                        _ => output_tiles(mm, ms, (tw, w), rng, ot),
                    }
                    // the block's output rows: whole rows of tile rows t0..t1 where the
                    // block holds them all, else the tiles' columns of its one tile row
                    let (c0, c1) = if k1 - k0 >= tw {
                        (0, w)
                    } else {
                        (4 * (k0 % tw), 4 * ((k1 - 1) % tw) + 4)
                    };
                    let dst = &mut y[oc * cols..][..cols];
                    let ce = epi.map(|e| e.channel(oc, cols));
                    for r in 0..orows {
                        let at = g0 * hw + (4 * t0 + r) * w + c0;
                        let src = &ot[(r * w + c0) * NL..];
                        if ng == NL {
                            let span = (NL - 1) * hw + (c1 - c0);
                            let d = &mut dst[at..][..span];
                            transpose_out(kernel, src, c1 - c0, d, hw, ce.map(|e| (e, at)));
                            continue;
                        }
                        for l in 0..ng {
                            for j in 0..c1 - c0 {
                                let (k, mut v) = (at + l * hw + j, src[j * NL + l]);
                                if let Some(e) = ce {
                                    v = e.one(v, e.residual.map_or(0.0, |r| r[k]));
                                }
                                dst[k] = MaybeUninit::new(v);
                            }
                        }
                    }
                }
            }
            for img in g0..g0 + ng {
                after(y, img);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // the matrices' indices, as written
pub(super) mod tests {
    use super::super::tests::values;
    use super::*;

    /// `Bᵀ` of F(4×4, 3×3), for the bound's `|Bᵀ| |d| |B|`.
    pub(in super::super) const BT: [[f64; 6]; 6] = [
        [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ];
    /// `Aᵀ`.
    pub(in super::super) const AT: [[f64; 6]; 4] = [
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
        [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
        [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
    ];

    /// `Winograd4::new` lays out each filter's [`filter_transform`] (see
    /// [`super::super::tests::check_filter_layout`]).
    #[test]
    fn new_holds_each_filters_transform() {
        super::super::tests::check_filter_layout(
            |o, c, w, k| Winograd4::new(o, c, w, k).u,
            filter_transform,
        );
    }

    /// `G g Gᵀ` from `G`'s entries as fractions, the plain matrix products in f64.
    #[test]
    fn filter_transform_is_g_g_gt() {
        // (the weight gradient's `G`, written as fractions)
        let g = super::super::grad4::G;
        let f = values(9, 5);
        let got = filter_transform(&f);
        for a in 0..6 {
            for b in 0..6 {
                let mut want = 0.0;
                for i in 0..3 {
                    for j in 0..3 {
                        want += g[a][i] * f[i * 3 + j] as f64 * g[b][j];
                    }
                }
                assert!((got[a * 6 + b] - want).abs() <= 1e-15, "({a}, {b})");
            }
        }
    }

    /// Against the f64 convolution, every output within
    /// `γ_{C+13}·T` (module docs), including groups of fewer than 16 images, blocks of
    /// parts of a tile row, and two sources; every kernel this CPU has gives the same
    /// bits; `after` sees the images in order; the epilogue matches its separate pass.
    #[test]
    fn error_within_bound_against_f64() {
        let u = f64::from(f32::EPSILON) / 2.0;
        let kernels = Kernel::available();
        let mut worst = 0.0f64;
        for (case, &(o, c, n, h, w)) in [
            (16, 16, 16, 8, 8),
            (5, 3, 17, 4, 12),
            (32, 16, 3, 16, 16),
            (40, 40, 2, 16, 16),
            (64, 64, 16, 8, 8),
            (3, 70, 1, 12, 8),
        ]
        .iter()
        .enumerate()
        {
            let seed = case as u64 * 7 + 1;
            let x = values(c * n * h * w, seed);
            let wts = values(o * c * 9, seed + 1);
            let (th, tw) = (h / 4, w / 4);
            let at = |ci: usize, img: usize, ih: isize, iw: isize| -> f64 {
                if ih < 0 || iw < 0 || ih as usize >= h || iw as usize >= w {
                    0.0
                } else {
                    x[((ci * n + img) * h + ih as usize) * w + iw as usize] as f64
                }
            };
            // |Bᵀ| |d| |B| per (channel, image, tile), |U| per (output, input channel)
            let mut vd = vec![0.0f64; c * n * th * tw * XI];
            for ci in 0..c {
                for img in 0..n {
                    for t in 0..th * tw {
                        let (ty, tx) = (t / tw, t % tw);
                        for a in 0..6 {
                            for b in 0..6 {
                                let mut s = 0.0;
                                for r in 0..6 {
                                    for q in 0..6 {
                                        let (ih, iw) =
                                            ((4 * ty + r) as isize - 1, (4 * tx + q) as isize - 1);
                                        s += BT[a][r].abs()
                                            * at(ci, img, ih, iw).abs()
                                            * BT[b][q].abs();
                                    }
                                }
                                vd[((ci * n + img) * th * tw + t) * XI + a * 6 + b] = s;
                            }
                        }
                    }
                }
            }
            let ua: Vec<[f64; XI]> = (0..o * c)
                .map(|k| filter_transform(&wts[k * 9..][..9]).map(f64::abs))
                .collect();
            let hw = h * w;
            let (mut y64, mut t64) = (vec![0.0f64; o * n * hw], vec![0.0f64; o * n * hw]);
            for oc in 0..o {
                for img in 0..n {
                    for t in 0..th * tw {
                        let mut s = [0.0f64; XI];
                        for ci in 0..c {
                            let v = &vd[((ci * n + img) * th * tw + t) * XI..][..XI];
                            for k in 0..XI {
                                s[k] += ua[oc * c + ci][k] * v[k];
                            }
                        }
                        let (ty, tx) = (t / tw, t % tw);
                        for i in 0..4 {
                            for j in 0..4 {
                                let (oh, ow) = (4 * ty + i, 4 * tx + j);
                                let mut tv = 0.0;
                                for a in 0..6 {
                                    for b in 0..6 {
                                        tv += AT[i][a].abs() * s[a * 6 + b] * AT[j][b].abs();
                                    }
                                }
                                let mut acc = 0.0;
                                for ci in 0..c {
                                    for ki in 0..3 {
                                        for kj in 0..3 {
                                            let g = wts[(oc * c + ci) * 9 + ki * 3 + kj] as f64;
                                            let (ih, iw) =
                                                ((oh + ki) as isize - 1, (ow + kj) as isize - 1);
                                            acc += g * at(ci, img, ih, iw);
                                        }
                                    }
                                }
                                let k = (oc * n + img) * hw + oh * w + ow;
                                y64[k] = acc;
                                t64[k] = tv;
                            }
                        }
                    }
                }
            }
            let gamma = (c + 13) as f64 * u / (1.0 - (c + 13) as f64 * u);
            let c1 = c / 2;
            let per = n * hw;
            let srcs: [&[f32]; 2] = [&x[..c1 * per], &x[c1 * per..]];
            // an epilogue with batch norm's numbers, a residual and ReLU
            let chans: Vec<[f32; 4]> = (0..o)
                .map(|k| [0.1 * k as f32, 1.5, 0.75 - 0.01 * k as f32, -0.2])
                .collect();
            let res = values(o * n * hw, seed + 2);
            let epi = Epi {
                channels: &chans,
                relu: true,
                residual: Some(&res),
            };
            let mut first: Option<Vec<f32>> = None;
            for &k in &kernels {
                let wg = Winograd4::new(o, c, &wts, k);
                let mut y = vec![MaybeUninit::new(f32::NAN); y64.len()];
                let mut seen = Vec::new();
                wg.run(&srcs, [n, h, w], None, &mut y, |_, img| seen.push(img));
                // SAFETY: initialized (NaN) before the call.
                let y: Vec<f32> = y.iter().map(|v| unsafe { v.assume_init() }).collect();
                assert_eq!(seen, (0..n).collect::<Vec<_>>(), "after: images in order");
                super::super::tests::within_bound(&y, (&y64, &t64), gamma, (case, k), &mut worst);
                // the fused epilogue: the bits of the epilogue applied afterwards
                let mut ye = vec![MaybeUninit::new(f32::NAN); y64.len()];
                wg.run(&srcs, [n, h, w], Some(epi), &mut ye, |_, _| {});
                for (oc, row) in y.chunks_exact(n * hw).enumerate() {
                    let ce = epi.channel(oc, n * hw);
                    let mut want = row.to_vec();
                    ce.apply(Kernel::Scalar, &mut want, 0);
                    for (j, wv) in want.iter().enumerate() {
                        // SAFETY: initialized (NaN) before the call.
                        let got = unsafe { ye[oc * n * hw + j].assume_init() };
                        assert_eq!(
                            got.to_bits(),
                            wv.to_bits(),
                            "case {case} {k:?}: epilogue at {oc}, {j}"
                        );
                    }
                }
                super::super::tests::same_bits(&mut first, y, (case, k, kernels[0]));
            }
        }
        eprintln!("winograd4: largest error / bound {worst:.3e}");
        assert!(worst > 1e-4, "largest error / bound {worst}");
    }
}
