//! Direct convolution for `f32`, stride 1, on AVX2 + FMA: the eval-forward fast path.
//!
//! im2col + GEMM copies every input element k² times into the unfolded block and then
//! once more into the GEMM's packed panel; on ResNet shapes (C = 16–64, 3×3) those copies
//! cost about a third of the forward pass. Here the input of one image is copied once,
//! into a zero-padded buffer `[C, H + 2p, W + 2p]`, and the micro-kernel reads its
//! operands straight from it: output positions (oh, ow..ow+8) of one row form a vector,
//! and for kernel tap (c, ki, kj) that vector's operand is the 8 contiguous floats at
//! `xpad[c, oh + ki, ow + kj ..]` — one unaligned load at a fixed offset from the
//! vector's base, the same offset for every vector (an "implicit GEMM" with the
//! `[C·k·k, ·]` operand never formed; cf. Chellapilla et al. 2006 for the explicit one,
//! Georganas et al. 2018, "Anatomy of high-performance deep learning convolutions on
//! SIMD architectures", for direct kernels).
//!
//! Micro-tile: 8 output channels × 3 vectors of 8 positions = 24 accumulators with
//! AVX-512VL's 32 registers (4 × 2 with plain AVX2's 16), summed over the taps in order
//! (c, ki, kj). Weights are packed per tile as `[C·k·k, mr]` so each tap broadcasts `mr`
//! consecutive floats. Results equal the
//! GEMM path's to f32 rounding (a different summation order), and are the same bits on
//! every call: nothing depends on threads or timing.

use std::sync::OnceLock;

/// Lanes of one vector.
const LANES: usize = 8;

/// The micro-kernel in use: its tile is `mr` output channels × `nv` vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    /// AVX-512VL: 32 vector registers, 8 × 3 accumulators (still 256-bit wide).
    Avx512,
    /// AVX2 + FMA: 16 registers, 4 × 2 accumulators (a larger tile spills).
    Avx2,
    /// Portable scalar code (only where neither exists; then the path is off anyway).
    Scalar,
}

impl Kernel {
    fn detect() -> Kernel {
        static K: OnceLock<Kernel> = OnceLock::new();
        *K.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
                if avx2
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512vl")
                {
                    return Kernel::Avx512;
                }
                if avx2 {
                    return Kernel::Avx2;
                }
            }
            Kernel::Scalar
        })
    }

    /// Every kernel this CPU can run (the tests check each).
    #[cfg(test)]
    fn available() -> Vec<Kernel> {
        let mut all = vec![Kernel::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                all.push(Kernel::Avx2);
            }
            if Kernel::detect() == Kernel::Avx512 {
                all.push(Kernel::Avx512);
            }
        }
        all
    }

    /// (output channels, vectors) per tile.
    fn tile(self) -> (usize, usize) {
        match self {
            Kernel::Avx512 => (8, 3),
            Kernel::Avx2 | Kernel::Scalar => (4, 2),
        }
    }
}

/// Whether the CPU has AVX2 and FMA and the path is not switched off with
/// `LOSSCAPE_CONV=im2col` (for comparisons); checked once.
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let off = std::env::var("LOSSCAPE_CONV").is_ok_and(|v| v.eq_ignore_ascii_case("im2col"));
        !off && Kernel::detect() != Kernel::Scalar
    })
}

/// Whether a convolution of this geometry takes the direct path: stride 1 and output rows
/// of at least one full vector (narrower rows would leave most lanes idle).
pub fn applies(stride: usize, wo: usize) -> bool {
    stride == 1 && wo >= LANES && enabled()
}

/// One prepared stride-1 convolution: packed weights, tap offsets, the vectors of an
/// image, and the padded-input scratch. Build once per call, then run image by image.
pub struct DirectConv {
    o: usize,
    c: usize,
    h: usize,
    w: usize,
    p: usize,
    hp: usize,
    wp: usize,
    /// Output positions per image and channel, Ho·Wo.
    hw_out: usize,
    /// Weights packed per tile of `mr` channels: `[tiles, C·k·k, mr]`, zero rows past O.
    packed: Vec<f32>,
    /// Offset of tap (c, ki, kj) in the padded buffer: c·Hp·Wp + ki·Wp + kj.
    offs: Vec<usize>,
    /// The largest tap offset plus one vector: a vector at base b reads `[b, b + reach)`.
    reach: usize,
    /// Per vector: (input base in the padded buffer, output base in the image, lanes).
    vecs: Vec<(usize, usize, usize)>,
    xpad: Vec<f32>,
    kernel: Kernel,
}

impl DirectConv {
    /// `w` is `[O, C, k, k]` row-major; the input is `[C, N, H, W]` with `(H, W)` given here.
    #[allow(clippy::too_many_arguments)]
    pub fn new(o: usize, c: usize, k: usize, p: usize, h: usize, w: usize, wts: &[f32]) -> Self {
        Self::with_kernel(Kernel::detect(), o, c, k, p, h, w, wts)
    }

    #[allow(clippy::too_many_arguments)]
    fn with_kernel(
        kernel: Kernel,
        o: usize,
        c: usize,
        k: usize,
        p: usize,
        h: usize,
        w: usize,
        wts: &[f32],
    ) -> Self {
        let (hp, wp) = (h + 2 * p, w + 2 * p);
        let (ho, wo) = (hp + 1 - k, wp + 1 - k);
        let kk = c * k * k;
        assert_eq!(wts.len(), o * kk, "direct conv: weight size");
        let (mr, _) = kernel.tile();
        let tiles = o.div_ceil(mr);
        let mut packed = vec![0.0f32; tiles * kk * mr];
        for oc in 0..o {
            let (t, m) = (oc / mr, oc % mr);
            for (q, &v) in wts[oc * kk..(oc + 1) * kk].iter().enumerate() {
                packed[(t * kk + q) * mr + m] = v;
            }
        }
        let mut offs = Vec::with_capacity(kk);
        for ci in 0..c {
            for ki in 0..k {
                for kj in 0..k {
                    offs.push(ci * hp * wp + ki * wp + kj);
                }
            }
        }
        let reach = offs.iter().copied().max().unwrap_or(0) + LANES;
        let mut vecs = Vec::with_capacity(ho * wo.div_ceil(LANES));
        for oh in 0..ho {
            for ow in (0..wo).step_by(LANES) {
                vecs.push((oh * wp + ow, oh * wo + ow, (wo - ow).min(LANES)));
            }
        }
        // A partial last vector reads up to LANES − 1 floats past the padded image.
        let xpad = vec![0.0f32; c * hp * wp + LANES];
        DirectConv {
            o,
            c,
            h,
            w,
            p,
            hp,
            wp,
            hw_out: ho * wo,
            packed,
            offs,
            reach,
            vecs,
            xpad,
            kernel,
        }
    }

    /// Writes image `img` of y `[O, N·Ho·Wo]` from image `img` of the input: the channels
    /// of the sources `xs` (each `[Cᵢ, N, H, W]`, ΣCᵢ = C) stacked in order, so that
    /// `W ⋆ x + V ⋆ x'` is one call with weights `[W | V]` and sources `[x, x']`.
    pub fn image(&mut self, xs: &[&[f32]], n: usize, img: usize, y: &mut [f32]) {
        let (h, w, p, wp) = (self.h, self.w, self.p, self.wp);
        let per = (n * h * w).max(1);
        let cs: usize = xs.iter().map(|x| x.len() / per).sum();
        assert!(
            cs == self.c && img < n && xs.iter().all(|x| x.len() % per == 0),
            "direct conv: input size"
        );
        let cols = n * self.hw_out;
        assert!(y.len() >= self.o * cols, "direct conv: output size");
        // The border stays zero from construction; only the interior is rewritten.
        let mut ci = 0;
        for x in xs {
            for plane in x.chunks_exact(per) {
                let src = &plane[img * h * w..][..h * w];
                let dst = &mut self.xpad[ci * self.hp * wp..];
                for (r, row) in src.chunks_exact(w).enumerate() {
                    dst[(r + p) * wp + p..][..w].copy_from_slice(row);
                }
                ci += 1;
            }
        }
        let kk = self.offs.len();
        let out0 = img * self.hw_out;
        let (mr, nv) = self.kernel.tile();
        for &(ib, ob, lanes) in &self.vecs {
            assert!(ib + self.reach <= self.xpad.len() && ob + lanes <= self.hw_out);
        }
        for group in self.vecs.chunks(nv) {
            for t in 0..self.o.div_ceil(mr) {
                let rows = (self.o - t * mr).min(mr);
                let wt = &self.packed[t * kk * mr..(t + 1) * kk * mr];
                let yt = &mut y[t * mr * cols + out0..];
                // SAFETY (for the SIMD kernels, which exist only where detected): reads lie
                // in `xpad` (reach asserted above) and `wt` (kk·mr floats); writes go to
                // rows < `rows` of `yt` at `ob..ob + lanes`, inside y (asserted above).
                match (self.kernel, group.len()) {
                    #[cfg(target_arch = "x86_64")]
                    (Kernel::Avx512, 3) => unsafe {
                        avx::tile512::<8, 3>(self, group, wt, yt, cols, rows)
                    },
                    #[cfg(target_arch = "x86_64")]
                    (Kernel::Avx512, 2) => unsafe {
                        avx::tile512::<8, 2>(self, group, wt, yt, cols, rows)
                    },
                    #[cfg(target_arch = "x86_64")]
                    (Kernel::Avx512, _) => unsafe {
                        avx::tile512::<8, 1>(self, group, wt, yt, cols, rows)
                    },
                    #[cfg(target_arch = "x86_64")]
                    (Kernel::Avx2, 2) => unsafe {
                        avx::tile2::<4, 2>(self, group, wt, yt, cols, rows)
                    },
                    #[cfg(target_arch = "x86_64")]
                    (Kernel::Avx2, _) => unsafe {
                        avx::tile2::<4, 1>(self, group, wt, yt, cols, rows)
                    },
                    _ => scalar_tile(self, group, wt, mr, yt, cols, rows),
                }
            }
        }
    }
}

/// The portable tile: `y[m, ob..ob + lanes] = Σ_q wt[q·mr + m] · xpad[ib + offs[q] ..]`.
fn scalar_tile(
    d: &DirectConv,
    group: &[(usize, usize, usize)],
    wt: &[f32],
    mr: usize,
    y: &mut [f32],
    cols: usize,
    rows: usize,
) {
    for &(ib, ob, lanes) in group {
        for m in 0..rows {
            for l in 0..lanes {
                let mut s = 0.0f32;
                for (q, &off) in d.offs.iter().enumerate() {
                    s = wt[q * mr + m].mul_add(d.xpad[ib + off + l], s);
                }
                y[m * cols + ob + l] = s;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::{DirectConv, LANES};
    use std::arch::x86_64::*;

    /// One tile kernel, compiled once per instruction set: `MR·V` accumulators stay in
    /// registers across all taps, then rows `< rows` are stored (masked for short vectors).
    macro_rules! tile_kernel {
        ($name:ident, $features:literal) => {
            #[target_feature(enable = $features)]
            pub unsafe fn $name<const MR: usize, const V: usize>(
                d: &DirectConv,
                group: &[(usize, usize, usize)],
                wt: &[f32],
                y: &mut [f32],
                cols: usize,
                rows: usize,
            ) {
                let xp = d.xpad.as_ptr();
                let mut base = [xp; V];
                for v in 0..V {
                    base[v] = xp.add(group[v].0);
                }
                let mut r = [[_mm256_setzero_ps(); V]; MR];
                let mut a = wt.as_ptr();
                for &off in &d.offs {
                    let mut b = [_mm256_setzero_ps(); V];
                    for v in 0..V {
                        b[v] = _mm256_loadu_ps(base[v].add(off));
                    }
                    for m in 0..MR {
                        let am = _mm256_broadcast_ss(&*a.add(m));
                        for v in 0..V {
                            r[m][v] = _mm256_fmadd_ps(am, b[v], r[m][v]);
                        }
                    }
                    a = a.add(MR);
                }
                let yp = y.as_mut_ptr();
                for m in 0..MR {
                    if m >= rows {
                        break;
                    }
                    for v in 0..V {
                        let (_, ob, lanes) = group[v];
                        let dst = yp.add(m * cols + ob);
                        if lanes == LANES {
                            _mm256_storeu_ps(dst, r[m][v]);
                        } else {
                            let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes as i32), idx);
                            _mm256_maskstore_ps(dst, mask, r[m][v]);
                        }
                    }
                }
            }
        };
    }

    tile_kernel!(tile512, "avx2,fma,avx512f,avx512vl");
    tile_kernel!(tile2, "avx2,fma");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straight six-loop convolution in f64 as the oracle.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        x: &[f32],
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        wts: &[f32],
        o: usize,
        k: usize,
        p: usize,
    ) -> Vec<f64> {
        let (ho, wo) = (h + 2 * p + 1 - k, w + 2 * p + 1 - k);
        let mut y = vec![0.0f64; o * n * ho * wo];
        for oc in 0..o {
            for img in 0..n {
                for oh in 0..ho {
                    for ow in 0..wo {
                        let mut s = 0.0f64;
                        for ci in 0..c {
                            for ki in 0..k {
                                for kj in 0..k {
                                    let (ih, iw) = (
                                        (oh + ki) as isize - p as isize,
                                        (ow + kj) as isize - p as isize,
                                    );
                                    if ih >= 0 && iw >= 0 && (ih as usize) < h && (iw as usize) < w
                                    {
                                        s += wts[((oc * c + ci) * k + ki) * k + kj] as f64
                                            * x[((ci * n + img) * h + ih as usize) * w
                                                + iw as usize]
                                                as f64;
                                    }
                                }
                            }
                        }
                        y[oc * n * ho * wo + (img * ho + oh) * wo + ow] = s;
                    }
                }
            }
        }
        y
    }

    #[test]
    fn matches_naive_convolution_on_odd_shapes() {
        // (o, c, k, p, h, w): channel tails (o % 4 ≠ 0), partial vectors, no padding, 1×1, 5×5.
        for &(o, c, k, p, h, w) in &[
            (16, 16, 3, 1, 8, 8),
            (7, 3, 3, 1, 10, 13),
            (5, 4, 1, 0, 9, 11),
            (6, 2, 5, 2, 12, 9),
            (9, 5, 3, 0, 11, 20),
        ] {
            let n = 3;
            let x: Vec<f32> = (0..c * n * h * w)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                .collect();
            let wts: Vec<f32> = (0..o * c * k * k)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 60.0)
                .collect();
            let want = naive(&x, n, c, h, w, &wts, o, k, p);
            for kernel in Kernel::available() {
                let mut d = DirectConv::with_kernel(kernel, o, c, k, p, h, w, &wts);
                let mut y = vec![f32::NAN; want.len()];
                // The input split into two sources (channels stacked) must not matter.
                let (x0, x1) = x.split_at((c / 2) * n * h * w);
                for img in 0..n {
                    d.image(&[x0, x1], n, img, &mut y);
                }
                for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                    assert!(
                        ((*a as f64) - b).abs() <= 1e-5 * (1.0 + b.abs()),
                        "{kernel:?} {o} {c} {k} {p} {h} {w} at {i}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
