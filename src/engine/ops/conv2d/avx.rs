//! The SIMD micro-kernels of [`super`]: forward tiles and weight-gradient tiles for
//! AVX2 + FMA (ymm, 16 registers), AVX-512VL (ymm, 32 registers) and AVX-512F/DQ (zmm).

use super::{TileArgs, Vector, LANES, WIDE};
use std::arch::x86_64::*;

/// `$store(k, $r[k])` for each listed row k below `$mr`, each with a constant index.
macro_rules! store_rows {
    ($store:ident, $r:ident, $mr:ident, $($k:literal),*) => {
        $(
            if $k < $mr {
                $store($k, $r[$k]);
            }
        )*
    };
}

/// One forward tile kernel per instruction set and vector width: `MR·V` accumulators
/// stay in registers across all taps, then rows `< rows` are stored (masked for short
/// vectors). `$load(lo, hi, SPLIT)` reads one vector (`SPLIT`: lanes 8.. from `hi`);
/// `$store(dst, lanes, r)` writes one.
macro_rules! tile_kernel {
    ($name:ident, $features:literal, $zero:ident, $bcast:ident, $fma:ident,
     $load:ident, $store:ident) => {
        // Index loops over the register tile: they unroll completely.
        #[allow(clippy::needless_range_loop)]
        #[target_feature(enable = $features)]
        pub unsafe fn $name<const MR: usize, const V: usize, const SPLIT: bool>(
            (plan, xpad, group, wt, y, cols, rows): TileArgs,
        ) {
            let xp = xpad.as_ptr();
            let (mut lo, mut hi) = ([xp; V], [xp; V]);
            for v in 0..V {
                lo[v] = xp.add(group[v].lo);
                hi[v] = xp.add(group[v].hi);
            }
            let mut r = [[$zero(); V]; MR];
            let mut a = wt.as_ptr();
            for &off in &plan.offs {
                let mut b = [$zero(); V];
                for v in 0..V {
                    b[v] = $load(lo[v].add(off), hi[v].add(off), SPLIT);
                }
                for m in 0..MR {
                    let am = $bcast(*a.add(m));
                    for v in 0..V {
                        r[m][v] = $fma(am, b[v], r[m][v]);
                    }
                }
                a = a.add(MR);
            }
            let yp = y.as_mut_ptr() as *mut f32;
            // Rows written out one by one with constant indices: a loop over m that the
            // compiler keeps rolled indexes `r` at run time, which puts the accumulators
            // in a stack array (zeroed by a memset call on every tile, stored and reloaded).
            let store_row = |m: usize, rm: [_; V]| {
                if m < rows {
                    for v in 0..V {
                        let Vector { ob, lanes, .. } = group[v];
                        $store(yp.add(m * cols + ob), lanes, rm[v]);
                    }
                }
            };
            const { assert!(MR <= 8, "tile rows") };
            store_rows!(store_row, r, MR, 0, 1, 2, 3, 4, 5, 6, 7);
        }
    };
}

/// Assembly: ymm0–ymm11 (the accumulators of the assembly tiles) set to zero.
macro_rules! zero_ymm0_11 {
    () => {
        concat!(
            "vxorps ymm0, ymm0, ymm0\n",
            "vxorps ymm1, ymm1, ymm1\n",
            "vxorps ymm2, ymm2, ymm2\n",
            "vxorps ymm3, ymm3, ymm3\n",
            "vxorps ymm4, ymm4, ymm4\n",
            "vxorps ymm5, ymm5, ymm5\n",
            "vxorps ymm6, ymm6, ymm6\n",
            "vxorps ymm7, ymm7, ymm7\n",
            "vxorps ymm8, ymm8, ymm8\n",
            "vxorps ymm9, ymm9, ymm9\n",
            "vxorps ymm10, ymm10, ymm10\n",
            "vxorps ymm11, ymm11, ymm11\n",
        )
    };
}

/// Assembly: ymm0–ymm11 stored in order from the address in operand `acc`.
macro_rules! store_ymm0_11 {
    () => {
        concat!(
            "vmovups ymmword ptr [{acc}], ymm0\n",
            "vmovups ymmword ptr [{acc} + 32], ymm1\n",
            "vmovups ymmword ptr [{acc} + 64], ymm2\n",
            "vmovups ymmword ptr [{acc} + 96], ymm3\n",
            "vmovups ymmword ptr [{acc} + 128], ymm4\n",
            "vmovups ymmword ptr [{acc} + 160], ymm5\n",
            "vmovups ymmword ptr [{acc} + 192], ymm6\n",
            "vmovups ymmword ptr [{acc} + 224], ymm7\n",
            "vmovups ymmword ptr [{acc} + 256], ymm8\n",
            "vmovups ymmword ptr [{acc} + 288], ymm9\n",
            "vmovups ymmword ptr [{acc} + 320], ymm10\n",
            "vmovups ymmword ptr [{acc} + 352], ymm11\n",
        )
    };
}

/// The AVX2 forward tile of 4 output channels × 3 vectors: 12 accumulators, 3 operand
/// vectors and one broadcast fill all 16 ymm registers, which the compiler's allocator
/// does not manage without a spill (it did for the [`tile_kernel`] form), so the tap loop
/// is written out in assembly. Each output is the same chain of FMAs over the taps in
/// order as in every other forward kernel, so the bits are those of the 4 × 2 tile.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn ymm2_4x3((plan, xpad, group, wt, y, cols, rows): TileArgs) {
    debug_assert!(group.len() == 3 && wt.len() >= plan.offs.len() * 4);
    let xp = xpad.as_ptr();
    let (l0, l1, l2) = (
        xp.add(group[0].lo),
        xp.add(group[1].lo),
        xp.add(group[2].lo),
    );
    // [m][v][lane]
    let mut acc = [0.0f32; 4 * 3 * LANES];
    // SAFETY (caller): every tap offset keeps the three 8-float reads inside `xpad`, and
    // `wt` holds 4 floats per tap. The loop reads only those; it writes `acc` (96 floats).
    std::arch::asm!(
        zero_ymm0_11!(),
        "test {n}, {n}",
        "jz 3f",
        "2:",
        "mov {t}, qword ptr [{offs}]",
        "vmovups ymm12, ymmword ptr [{l0} + {t}*4]",
        "vmovups ymm13, ymmword ptr [{l1} + {t}*4]",
        "vmovups ymm14, ymmword ptr [{l2} + {t}*4]",
        "vbroadcastss ymm15, dword ptr [{a}]",
        "vfmadd231ps ymm0, ymm15, ymm12",
        "vfmadd231ps ymm1, ymm15, ymm13",
        "vfmadd231ps ymm2, ymm15, ymm14",
        "vbroadcastss ymm15, dword ptr [{a} + 4]",
        "vfmadd231ps ymm3, ymm15, ymm12",
        "vfmadd231ps ymm4, ymm15, ymm13",
        "vfmadd231ps ymm5, ymm15, ymm14",
        "vbroadcastss ymm15, dword ptr [{a} + 8]",
        "vfmadd231ps ymm6, ymm15, ymm12",
        "vfmadd231ps ymm7, ymm15, ymm13",
        "vfmadd231ps ymm8, ymm15, ymm14",
        "vbroadcastss ymm15, dword ptr [{a} + 12]",
        "vfmadd231ps ymm9, ymm15, ymm12",
        "vfmadd231ps ymm10, ymm15, ymm13",
        "vfmadd231ps ymm11, ymm15, ymm14",
        "add {offs}, 8",
        "add {a}, 16",
        "dec {n}",
        "jnz 2b",
        "3:",
        store_ymm0_11!(),
        offs = inout(reg) plan.offs.as_ptr() => _,
        a = inout(reg) wt.as_ptr() => _,
        n = inout(reg) plan.offs.len() => _,
        t = out(reg) _,
        l0 = in(reg) l0,
        l1 = in(reg) l1,
        l2 = in(reg) l2,
        acc = in(reg) acc.as_mut_ptr(),
        out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
        out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
        out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
        out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
        options(nostack),
    );
    let yp = y.as_mut_ptr() as *mut f32;
    for m in 0..rows.min(4) {
        for (v, g) in group.iter().enumerate() {
            let r = _mm256_loadu_ps(acc.as_ptr().add((m * 3 + v) * LANES));
            store8(yp.add(m * cols + g.ob), g.lanes, r);
        }
    }
}

/// The AVX2 weight-gradient tile of 3 output channels × 4 taps for batches whose vectors
/// are all full: 12 accumulators, 3 dy vectors and one operand fill the 16 ymm registers
/// (7 loads per 12 FMAs against the 2 × 6 tile's 8), so the loop is assembly like
/// [`ymm2_4x3`]. `pairs` holds each vector's byte offsets (padded input from `x`, dy from
/// each `dys` row), in the order of the 2 × 6 kernel's sums; `offs` are the taps' byte
/// offsets. Accumulator (m, t) gets the same per-lane FMA chain, so after [`reduce8`]
/// the same bits.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn gymm2_3x4(
    pairs: &[[usize; 2]],
    x: *const f32,
    offs: &[usize; 4],
    dys: &[*const f32; 3],
    sums: &mut [[f32; 4]; 3],
) {
    let mut acc = [0.0f32; 3 * 4 * LANES];
    if !pairs.is_empty() {
        // SAFETY (caller): every pair's reads, x + offset + tap and dy row + offset, lie in
        // their buffers (8 floats each); the loop writes only `acc`.
        std::arch::asm!(
            zero_ymm0_11!(),
            "2:",
            "mov {tx}, qword ptr [{p}]",
            "mov {td}, qword ptr [{p} + 8]",
            "vmovups ymm12, ymmword ptr [{d0} + {td}]",
            "vmovups ymm13, ymmword ptr [{d1} + {td}]",
            "vmovups ymm14, ymmword ptr [{d2} + {td}]",
            "add {tx}, {x}",
            "vmovups ymm15, ymmword ptr [{tx} + {o0}]",
            "vfmadd231ps ymm0, ymm12, ymm15",
            "vfmadd231ps ymm4, ymm13, ymm15",
            "vfmadd231ps ymm8, ymm14, ymm15",
            "vmovups ymm15, ymmword ptr [{tx} + {o1}]",
            "vfmadd231ps ymm1, ymm12, ymm15",
            "vfmadd231ps ymm5, ymm13, ymm15",
            "vfmadd231ps ymm9, ymm14, ymm15",
            "vmovups ymm15, ymmword ptr [{tx} + {o2}]",
            "vfmadd231ps ymm2, ymm12, ymm15",
            "vfmadd231ps ymm6, ymm13, ymm15",
            "vfmadd231ps ymm10, ymm14, ymm15",
            "vmovups ymm15, ymmword ptr [{tx} + {o3}]",
            "vfmadd231ps ymm3, ymm12, ymm15",
            "vfmadd231ps ymm7, ymm13, ymm15",
            "vfmadd231ps ymm11, ymm14, ymm15",
            "add {p}, 16",
            "dec {n}",
            "jnz 2b",
            store_ymm0_11!(),
            p = inout(reg) pairs.as_ptr() => _,
            n = inout(reg) pairs.len() => _,
            tx = out(reg) _,
            td = out(reg) _,
            x = in(reg) x,
            d0 = in(reg) dys[0],
            d1 = in(reg) dys[1],
            d2 = in(reg) dys[2],
            o0 = in(reg) offs[0],
            o1 = in(reg) offs[1],
            o2 = in(reg) offs[2],
            o3 = in(reg) offs[3],
            acc = in(reg) acc.as_mut_ptr(),
            out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
            out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
            out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
            out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
            options(nostack),
        );
    }
    for (m, row) in sums.iter_mut().enumerate() {
        for (t, s) in row.iter_mut().enumerate() {
            *s = reduce8(_mm256_loadu_ps(acc.as_ptr().add((m * 4 + t) * LANES)));
        }
    }
}

/// One weight-gradient tile kernel: `MR·QT` accumulators of per-lane partial sums
/// over every vector of every image; `$loadm(p, lanes)` reads dy (zero past `lanes`),
/// `$reduce` sums the lanes at the end.
macro_rules! grad_kernel {
    ($name:ident, $features:literal, $zero:ident, $fma:ident, $load:ident,
     $loadm:ident, $reduce:ident) => {
        #[allow(clippy::needless_range_loop)]
        #[target_feature(enable = $features)]
        pub unsafe fn $name<const MR: usize, const QT: usize, const SPLIT: bool>(
            vecs: &[Vector],
            xpad: *const f32,
            imgs: &[(usize, usize)],
            offs: &[usize; QT],
            dys: &[*const f32; MR],
            sums: &mut [[f32; QT]; MR],
        ) {
            let mut r = [[$zero(); QT]; MR];
            for &(xb, col) in imgs {
                let x = xpad.add(xb);
                for v in vecs {
                    let mut g = [$zero(); MR];
                    for m in 0..MR {
                        g[m] = $loadm(dys[m].add(col + v.ob), v.lanes);
                    }
                    let (lo, hi) = (x.add(v.lo), x.add(v.hi));
                    for t in 0..QT {
                        let b = $load(lo.add(offs[t]), hi.add(offs[t]), SPLIT);
                        for m in 0..MR {
                            r[m][t] = $fma(g[m], b, r[m][t]);
                        }
                    }
                }
            }
            for m in 0..MR {
                for t in 0..QT {
                    sums[m][t] = $reduce(r[m][t]);
                }
            }
        }
    };
}

/// 8 lanes from `lo` (256-bit kernels never split).
#[inline(always)]
unsafe fn load8(lo: *const f32, _hi: *const f32, _split: bool) -> __m256 {
    _mm256_loadu_ps(lo)
}

/// The first `lanes` (≤ 8) of eight 32-bit lanes set.
#[inline(always)]
pub(crate) unsafe fn mask8(lanes: usize) -> __m256i {
    let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes as i32), idx)
}

#[inline(always)]
unsafe fn loadm8(p: *const f32, lanes: usize) -> __m256 {
    if lanes == LANES {
        _mm256_loadu_ps(p)
    } else {
        _mm256_maskload_ps(p, mask8(lanes))
    }
}

#[inline(always)]
unsafe fn store8(dst: *mut f32, lanes: usize, r: __m256) {
    if lanes == LANES {
        _mm256_storeu_ps(dst, r);
    } else {
        _mm256_maskstore_ps(dst, mask8(lanes), r);
    }
}

#[inline(always)]
unsafe fn reduce8(r: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(r), _mm256_extractf128_ps::<1>(r));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
}

/// 16 lanes: one load from `lo`, or 8 from `lo` joined with 8 from `hi`.
#[inline(always)]
unsafe fn load16(lo: *const f32, hi: *const f32, split: bool) -> __m512 {
    if split {
        let low = _mm512_castps256_ps512(_mm256_loadu_ps(lo));
        _mm512_insertf32x8::<1>(low, _mm256_loadu_ps(hi))
    } else {
        _mm512_loadu_ps(lo)
    }
}

#[inline(always)]
fn mask16(lanes: usize) -> __mmask16 {
    ((1u32 << lanes) - 1) as __mmask16
}

#[inline(always)]
unsafe fn loadm16(p: *const f32, lanes: usize) -> __m512 {
    if lanes == WIDE {
        _mm512_loadu_ps(p)
    } else {
        _mm512_maskz_loadu_ps(mask16(lanes), p)
    }
}

#[inline(always)]
unsafe fn store16(dst: *mut f32, lanes: usize, r: __m512) {
    if lanes == WIDE {
        _mm512_storeu_ps(dst, r);
    } else {
        _mm512_mask_storeu_ps(dst, mask16(lanes), r);
    }
}

#[inline(always)]
unsafe fn reduce16(r: __m512) -> f32 {
    _mm512_reduce_add_ps(r)
}

tile_kernel!(
    zmm,
    "avx2,fma,avx512f,avx512vl,avx512dq",
    _mm512_setzero_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    load16,
    store16
);
tile_kernel!(
    ymm512,
    "avx2,fma,avx512f,avx512vl",
    _mm256_setzero_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    load8,
    store8
);
tile_kernel!(
    ymm2,
    "avx2,fma",
    _mm256_setzero_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    load8,
    store8
);
grad_kernel!(
    gzmm,
    "avx2,fma,avx512f,avx512vl,avx512dq",
    _mm512_setzero_ps,
    _mm512_fmadd_ps,
    load16,
    loadm16,
    reduce16
);
grad_kernel!(
    gymm512,
    "avx2,fma,avx512f,avx512vl",
    _mm256_setzero_ps,
    _mm256_fmadd_ps,
    load8,
    loadm8,
    reduce8
);
grad_kernel!(
    gymm2,
    "avx2,fma",
    _mm256_setzero_ps,
    _mm256_fmadd_ps,
    load8,
    loadm8,
    reduce8
);

/// `$name(iters)`: `iters` rounds of 12 independent FMA chains (enough chains to cover
/// the FMA latency of every core we know, 4–5 cycles × 2 units), for measuring the FMA
/// throughput; returns a sum so the chains are not optimized away.
macro_rules! fma_chains {
    ($name:ident, $features:literal, $set1:ident, $fma:ident, $first:expr) => {
        #[target_feature(enable = $features)]
        pub unsafe fn $name(iters: usize) -> f32 {
            let (a, b) = ($set1(0.999_999), $set1(1e-7));
            let mut r = [$set1(1.0); 12];
            for _ in 0..iters {
                for v in r.iter_mut() {
                    *v = $fma(a, *v, b);
                }
            }
            r.iter().map($first).sum()
        }
    };
}

fma_chains!(
    fma_chains_ymm,
    "avx2,fma",
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    |&v| _mm256_cvtss_f32(v)
);
fma_chains!(
    fma_chains_zmm,
    "avx512f",
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    |&v| _mm512_reduce_add_ps(v)
);

/// The zmm weight-gradient tile of a 3×3 convolution of stride `S` (1 or 2) vectorized
/// over output channels: `r[m][9c + 3ki + kj] += dyt[p, 16m..16m + 16] · x_c[xs[p] +
/// tap(ki, kj)]` for each position p of `xs` in order (one broadcast per tap), so every dw
/// element is one running sum over those positions, whatever the tile. `x[c]` is channel c's padded
/// image (its S² phase planes of `pl` floats, rows `wq` apart), where tap (ki, kj) lies at
/// `tap = ((ki mod S)·S + kj mod S)·pl + (ki div S)·wq + kj div S` (stride 1: `ki·wq +
/// kj`); `dyt` is the tile's first output channel in a `[P, op]` matrix; `QT = 9·NC`.
/// The tile's sums are added into `sums` (`sums + Σ_p`, one rounding per element).
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512dq")]
pub unsafe fn g3zmm<const MR: usize, const NC: usize, const QT: usize, const S: usize>(
    xs: &[usize],
    x: [*const f32; NC],
    (wq, pl): (usize, usize),
    dyt: *const f32,
    op: usize,
    sums: &mut [[[f32; WIDE]; QT]; MR],
) {
    debug_assert_eq!(QT, 9 * NC);
    let mut r = [[_mm512_setzero_ps(); QT]; MR];
    for (p, &xi) in xs.iter().enumerate() {
        let d = dyt.add(p * op);
        let mut g = [_mm512_setzero_ps(); MR];
        for m in 0..MR {
            g[m] = _mm512_loadu_ps(d.add(m * WIDE));
        }
        for c in 0..NC {
            for ki in 0..3 {
                for kj in 0..3 {
                    let tap = ((ki % S) * S + kj % S) * pl + (ki / S) * wq + kj / S;
                    let b = _mm512_set1_ps(*x[c].add(xi + tap));
                    for m in 0..MR {
                        let t = 9 * c + 3 * ki + kj;
                        r[m][t] = _mm512_fmadd_ps(g[m], b, r[m][t]);
                    }
                }
            }
        }
    }
    for m in 0..MR {
        for t in 0..QT {
            let s = sums[m][t].as_mut_ptr();
            _mm512_storeu_ps(s, _mm512_add_ps(_mm512_loadu_ps(s), r[m][t]));
        }
    }
}

/// `dst[l·stride + j] = src[j·src_stride + l]` for a 16 × 16 block: 16 positions of 16
/// channels (rows of dy) to 16 rows of 16 channels each.
#[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512dq")]
pub unsafe fn transpose16(src: *const f32, src_stride: usize, dst: *mut f32, stride: usize) {
    transpose16_with(src, src_stride, |l, v| {
        _mm512_storeu_ps(dst.add(l * stride), v)
    });
}

/// The 16 × 16 transpose of [`transpose16`], each transposed row `l` (`src[j·src_stride +
/// l]` for j < 16) handed to `store(l, row)`.
#[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512dq")]
pub unsafe fn transpose16_with(
    src: *const f32,
    src_stride: usize,
    mut store: impl FnMut(usize, __m512),
) {
    let mut r = [_mm512_setzero_ps(); 16];
    for (j, v) in r.iter_mut().enumerate() {
        *v = _mm512_loadu_ps(src.add(j * src_stride));
    }
    // pairs of rows: 32-bit interleave, then 64-bit, then 128-bit blocks twice
    let mut t = [_mm512_setzero_ps(); 16];
    for j in 0..8 {
        t[2 * j] = _mm512_unpacklo_ps(r[2 * j], r[2 * j + 1]);
        t[2 * j + 1] = _mm512_unpackhi_ps(r[2 * j], r[2 * j + 1]);
    }
    for j in 0..4 {
        for h in 0..2 {
            let (a, b) = (
                _mm512_castps_pd(t[4 * j + h]),
                _mm512_castps_pd(t[4 * j + 2 + h]),
            );
            r[4 * j + h] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
            r[4 * j + 2 + h] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        }
    }
    // r[4j + q] holds, in each 128-bit block k, column 4k + q' of rows 4j..4j + 4
    for j in 0..2 {
        for q in 0..4 {
            let (a, b) = (r[8 * j + q], r[8 * j + 4 + q]);
            t[8 * j + q] = _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b);
            t[8 * j + 4 + q] = _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b);
        }
    }
    for q in 0..8 {
        let (a, b) = (t[q], t[8 + q]);
        r[q] = _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b);
        r[8 + q] = _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b);
    }
    // r[i] is column 8·(i div 8) + 4·(i div 4 mod 2) + [0, 2, 1, 3][i mod 4]
    for (i, v) in r.iter().enumerate() {
        let l = (i & 8) + (i & 4) + [0, 2, 1, 3][i & 3];
        store(l, *v);
    }
}
