//! The 16 channel sums of [`super::Winograd`], `M_ξ [O, ld] = U_ξ [O, C] · V_ξ [C, ld]`,
//! by register tiles of `MR` output channels × `NR` vectors of tiles, in zmm (AVX-512F),
//! ymm (AVX2 + FMA, or AVX-512VL's 32 registers) and scalar forms. `V_ξ` is already laid
//! out by the input transform with the tiles contiguous (its row stride `ld` a multiple of
//! the vector width), so nothing is packed, and each product's `K = C` is small (16–64 on
//! ResNet-cifar), where a general GEMM spends much of its time packing. Every output is
//! one chain of fused multiply-adds over `c = 0, 1, …, C−1` from zero, so neither the tile
//! shape nor the instruction set changes the bits.

use super::super::kernels::Kernel;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Output channels per register tile.
const MR: usize = 4;

/// `m[(o·ld) + j] = Σ_c u[o·C + c] · v[c·ld + j]` for `o < rows`, `j < cols`, each ξ's
/// matrices at `ξ·rows·C`, `ξ·vs`, `ξ·ms` (`vs ≥ C·ld`, `ms ≥ rows·ld`). `cols` is rounded up to `kernel`'s
/// vector width (`ld` must allow that); the extra columns get sums of whatever `v` holds.
#[allow(clippy::too_many_arguments)]
pub(super) fn products(
    kernel: Kernel,
    xis: usize,
    (rows, c): (usize, usize),
    u: &[f32],
    v: &[f32],
    m: &mut [f32],
    (cols, ld): (usize, usize),
    (vs, ms): (usize, usize),
) {
    assert!(vs >= c * ld && ms >= rows * ld);
    for xi in 0..xis {
        let (u, v) = (&u[xi * rows * c..][..rows * c], &v[xi * vs..][..c * ld]);
        let m = &mut m[xi * ms..][..rows * ld];
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Zmm => {
                // SAFETY: AVX-512F was detected; `tiles` keeps every access in bounds.
                unsafe { tiles::<16, 6>(u, v, m, (rows, c, cols, ld), zmm_dispatch) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => {
                // SAFETY: AVX-512VL was detected.
                unsafe { tiles::<8, 6>(u, v, m, (rows, c, cols, ld), ymm32_dispatch) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                // SAFETY: AVX2 + FMA were detected.
                unsafe { tiles::<8, 2>(u, v, m, (rows, c, cols, ld), ymm16_dispatch) }
            }
            _ => scalar(u, v, m, (rows, c, cols, ld)),
        }
    }
}

/// One kernel call: `MR` (4 or 1) rows × `nr` vectors at `u`, `v`, `m` with `c`, `ld`.
type Dispatch = unsafe fn(usize, usize, *const f32, *const f32, *mut f32, usize, usize);

/// The tile loop: rows by 4 (then 1), columns by `NMAX` vectors of `L` lanes (then the
/// remaining vectors).
///
/// # Safety
/// `call` must be runnable on this CPU; the slices must hold `rows·c`, `c·ld`, `rows·ld`
/// floats and `ld ≥ cols` rounded up to `L`.
unsafe fn tiles<const L: usize, const NMAX: usize>(
    u: &[f32],
    v: &[f32],
    m: &mut [f32],
    (rows, c, cols, ld): (usize, usize, usize, usize),
    call: Dispatch,
) {
    let vecs = cols.div_ceil(L);
    assert!(vecs * L <= ld && ld.is_multiple_of(L));
    let (up, vp, mp) = (u.as_ptr(), v.as_ptr(), m.as_mut_ptr());
    let mut o = 0;
    while o < rows {
        let mr = if rows - o >= MR { MR } else { 1 };
        let mut j = 0;
        while j < vecs {
            let nr = (vecs - j).min(NMAX);
            call(
                mr,
                nr,
                up.add(o * c),
                vp.add(j * L),
                mp.add(o * ld + j * L),
                c,
                ld,
            );
            j += nr;
        }
        o += mr;
    }
}

/// The portable form: the same chains of `mul_add`.
fn scalar(u: &[f32], v: &[f32], m: &mut [f32], (rows, c, cols, ld): (usize, usize, usize, usize)) {
    for o in 0..rows {
        let mo = &mut m[o * ld..][..cols];
        mo.fill(0.0);
        for k in 0..c {
            let a = u[o * c + k];
            for (y, &b) in mo.iter_mut().zip(&v[k * ld..][..cols]) {
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
            c: usize,
            ld: usize,
        ) {
            let mut r = [[$zero(); NR]; MR_];
            for k in 0..c {
                let mut b = [$zero(); NR];
                for j in 0..NR {
                    b[j] = $load(v.add(k * ld + j * $lanes));
                }
                for i in 0..MR_ {
                    let a = $set1(*u.add(i * c + k));
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

/// `(mr, nr)` to a monomorphized kernel (`mr` 4 or 1, `nr` 1 to the kernel's widest).
macro_rules! dispatch {
    ($name:ident, $kernel:ident, $($nr:literal),*) => {
        #[cfg(target_arch = "x86_64")]
        unsafe fn $name(
            mr: usize,
            nr: usize,
            u: *const f32,
            v: *const f32,
            m: *mut f32,
            c: usize,
            ld: usize,
        ) {
            match (mr, nr) {
                $(
                    (4, $nr) => $kernel::<4, $nr>(u, v, m, c, ld),
                    (1, $nr) => $kernel::<1, $nr>(u, v, m, c, ld),
                )*
                _ => unreachable!("winograd product tile {mr} × {nr}"),
            }
        }
    };
}

dispatch!(zmm_dispatch, zmm_tile, 1, 2, 3, 4, 5, 6);
dispatch!(ymm32_dispatch, ymm32_tile, 1, 2, 3, 4, 5, 6);
dispatch!(ymm16_dispatch, ymm_tile, 1, 2);
