//! The 16 channel sums of [`super::Winograd`], `M_ξ [O, ld] = U_ξ [O, C] · V_ξ [C, ld]`,
//! by register tiles of `MR` output channels × `NR` vectors of tiles, in zmm (AVX-512F),
//! ymm (AVX2 + FMA, or AVX-512VL's 32 registers) and scalar forms. `V_ξ` is already laid
//! out by the input transform with the tiles contiguous (its row stride `ld` a multiple of
//! the vector width), so nothing is packed, and each product's `K = C` is small (16–64 on
//! ResNet-cifar), where a general GEMM spends much of its time packing. Every output is
//! one chain of fused multiply-adds over `k = 0, 1, …, K−1` from zero (or, with `add`, from
//! the value it holds), so neither the tile shape nor the instruction set changes the bits.
//! The weight gradients (`winograd_grad.rs`, and F(4×4)'s `winograd_grad4.rs` over 36
//! positions, its chains continued from block to block) use the same kernels with `K` =
//! tiles: `M_ξ [C, O'] = V_ξ [C, P] · U′_ξ [P, O']`.

use super::super::kernels::Kernel;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows (output channels) per register tile where the columns are many vectors.
const MR: usize = 4;

/// Rows per tile where the columns are only one to four vectors (the weight gradient's
/// output channels, a small block's tiles): 12, 8 or 6, enough independent chains to
/// cover the FMA latency, within the kernel's accumulator budget `ACC`.
const MR_WIDE: [usize; 3] = [12, 8, 6];

/// `m[o·ld + j] = Σ_{k<K} u[o·lda + k] · v[k·ld + j]` for `o < rows`, `j < cols`; each ξ's
/// matrices at `ξ·us`, `ξ·vs`, `ξ·ms`. `cols` is rounded up to `kernel`'s vector width
/// (`ld` must allow that); the extra columns get sums of whatever `v` holds. With `add`,
/// each chain continues from the value `m` holds (`m += Σ …` by the same fused
/// multiply-adds in the same order), so that products over consecutive ranges of `K` give
/// the bits of one product over all of them.
#[allow(clippy::too_many_arguments)]
pub(super) fn products(
    kernel: Kernel,
    xis: usize,
    (rows, k): (usize, usize),
    (u, us, lda): (&[f32], usize, usize),
    (v, vs): (&[f32], usize),
    (m, ms): (&mut [f32], usize),
    (cols, ld): (usize, usize),
    add: bool,
) {
    assert!(
        vs >= k * ld && ms >= rows * ld && lda >= k && (rows == 0 || us >= (rows - 1) * lda + k)
    );
    let ulen = if rows == 0 { 0 } else { (rows - 1) * lda + k };
    for xi in 0..xis {
        let (u, v) = (&u[xi * us..][..ulen], &v[xi * vs..][..k * ld]);
        let m = &mut m[xi * ms..][..rows * ld];
        let shape = (rows, k, lda, cols, ld);
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Zmm => {
                // SAFETY: AVX-512F was detected; `tiles` keeps every access in bounds.
                unsafe { tiles::<16, 6, 24, MR>(u, v, m, shape, add, zmm_dispatch) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => {
                // SAFETY: AVX-512VL was detected.
                unsafe { tiles::<8, 6, 24, MR>(u, v, m, shape, add, ymm32_dispatch) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                // SAFETY: AVX2 + FMA were detected.
                // 6 rows × 2 vectors: AVX2's 16 registers hold 12 accumulators
                unsafe { tiles::<8, 2, 12, 6>(u, v, m, shape, add, ymm16_dispatch) }
            }
            _ => scalar(u, v, m, shape, add),
        }
    }
}

/// `(rows, K, lda, cols, ld)` of one product.
type Shape = (usize, usize, usize, usize, usize);

/// One kernel call: `mr` (12, 8, 6, 4 or 1) rows × `nr` vectors at `u`, `v`, `m` with `K`,
/// `lda`, `ld`.
type Dispatch =
    unsafe fn(usize, usize, *const f32, *const f32, *mut f32, usize, usize, usize, bool);

/// The tile loop: columns by `NMAX` vectors of `L` lanes (then the remaining vectors);
/// rows by 12, 8 or 6 where those fit in `ACC` accumulators with the row's first column
/// group (16 rows as 8 + 8), else by `MRN` (4, or 6 where `6 × NMAX` fills `ACC`) while
/// the rest splits into 6s and 4s, then by 4, then 1.
///
/// # Safety
/// `call` must be runnable on this CPU; the slices must hold `(rows−1)·lda + K`, `K·ld`,
/// `rows·ld` floats and `ld ≥ cols` rounded up to `L`.
unsafe fn tiles<const L: usize, const NMAX: usize, const ACC: usize, const MRN: usize>(
    u: &[f32],
    v: &[f32],
    m: &mut [f32],
    (rows, k, lda, cols, ld): Shape,
    add: bool,
    call: Dispatch,
) {
    let vecs = cols.div_ceil(L);
    assert!(vecs * L <= ld && ld.is_multiple_of(L));
    let (up, vp, mp) = (u.as_ptr(), v.as_ptr(), m.as_mut_ptr());
    let mut o = 0;
    while o < rows {
        // wide tiles only where every column group is one to four vectors
        let wide = if vecs <= 4 {
            ACC / vecs.clamp(1, NMAX)
        } else {
            0
        };
        let mr = match rows - o {
            r if wide >= 12 && r >= 12 && r != 16 => MR_WIDE[0],
            r if wide >= 8 && r >= 8 => MR_WIDE[1],
            r if wide >= 6 && r >= 6 => MR_WIDE[2],
            // even row counts as 6s then 4s (8 as 4 + 4)
            r if MRN == 6 && r >= 6 && r % 2 == 0 && r != 8 => 6,
            r if r >= MR => MR,
            _ => 1,
        };
        let mut j = 0;
        while j < vecs {
            let nr = (vecs - j).min(NMAX);
            call(
                mr,
                nr,
                up.add(o * lda),
                vp.add(j * L),
                mp.add(o * ld + j * L),
                k,
                lda,
                ld,
                add,
            );
            j += nr;
        }
        o += mr;
    }
}

/// The portable form: the same chains of `mul_add`.
fn scalar(u: &[f32], v: &[f32], m: &mut [f32], (rows, k, lda, cols, ld): Shape, add: bool) {
    for o in 0..rows {
        let mo = &mut m[o * ld..][..cols];
        if !add {
            mo.fill(0.0);
        }
        for kk in 0..k {
            let a = u[o * lda + kk];
            for (y, &b) in mo.iter_mut().zip(&v[kk * ld..][..cols]) {
                *y = a.mul_add(b, *y);
            }
        }
    }
}

/// One register-tile kernel per vector type: `MR_ × NR` accumulators over all `c`.
macro_rules! wkernel {
    ($name:ident, $features:literal, $lanes:literal, $zero:ident, $set1:ident, $fma:ident,
     $load:ident, $store:ident) => {
        #[cfg(target_arch = "x86_64")]
        #[allow(clippy::needless_range_loop)]
        #[target_feature(enable = $features)]
        unsafe fn $name<const MR_: usize, const NR: usize>(
            u: *const f32,
            v: *const f32,
            m: *mut f32,
            k: usize,
            lda: usize,
            ld: usize,
            add: bool,
        ) {
            let mut r = [[$zero(); NR]; MR_];
            if add {
                for i in 0..MR_ {
                    for j in 0..NR {
                        r[i][j] = $load(m.add(i * ld + j * $lanes));
                    }
                }
            }
            for kk in 0..k {
                let mut b = [$zero(); NR];
                for j in 0..NR {
                    b[j] = $load(v.add(kk * ld + j * $lanes));
                }
                for i in 0..MR_ {
                    let a = $set1(*u.add(i * lda + kk));
                    for j in 0..NR {
                        r[i][j] = $fma(a, b[j], r[i][j]);
                    }
                }
            }
            for i in 0..MR_ {
                for j in 0..NR {
                    $store(m.add(i * ld + j * $lanes), r[i][j]);
                }
            }
        }
    };
}

wkernel!(
    zmm_tile,
    "avx512f",
    16,
    _mm512_setzero_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_loadu_ps,
    _mm512_storeu_ps
);
wkernel!(
    ymm_tile,
    "avx2,fma",
    8,
    _mm256_setzero_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    _mm256_loadu_ps,
    _mm256_storeu_ps
);
wkernel!(
    ymm32_tile,
    "avx2,fma,avx512f,avx512vl",
    8,
    _mm256_setzero_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    _mm256_loadu_ps,
    _mm256_storeu_ps
);

/// `(mr, nr)` to a monomorphized kernel: `mr` 4 or 1 with `nr` 1 to the kernel's widest,
/// and the listed wide tiles.
macro_rules! dispatch {
    ($name:ident, $kernel:ident, [$(($wm:literal, $wn:literal)),*], $($nr:literal),*) => {
        #[cfg(target_arch = "x86_64")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name(
            mr: usize,
            nr: usize,
            u: *const f32,
            v: *const f32,
            m: *mut f32,
            k: usize,
            lda: usize,
            ld: usize,
            add: bool,
        ) {
            match (mr, nr) {
                $(
                    ($wm, $wn) => $kernel::<$wm, $wn>(u, v, m, k, lda, ld, add),
                )*
                $(
                    (MR, $nr) => $kernel::<MR, $nr>(u, v, m, k, lda, ld, add),
                    (1, $nr) => $kernel::<1, $nr>(u, v, m, k, lda, ld, add),
                )*
                _ => unreachable!("winograd product tile {mr} × {nr}"),
            }
        }
    };
}

/// The kernels with 32 vector registers (`ACC` = 24): the same tiles, zmm or ymm.
macro_rules! dispatch24 {
    ($name:ident, $kernel:ident) => {
        dispatch!(
            $name,
            $kernel,
            [
                (12, 1),
                (8, 1),
                (6, 1),
                (12, 2),
                (8, 2),
                (6, 2),
                (8, 3),
                (6, 3),
                (6, 4)
            ],
            1,
            2,
            3,
            4,
            5,
            6
        );
    };
}

dispatch24!(zmm_dispatch, zmm_tile);
dispatch24!(ymm32_dispatch, ymm32_tile);
dispatch!(
    ymm16_dispatch,
    ymm_tile,
    [(12, 1), (8, 1), (6, 1), (6, 2)],
    1,
    2
);
