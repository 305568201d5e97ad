//! Where the passes take the direct f32 kernels ([`super::kernels`]) instead of im2col +
//! GEMM: the forward and R-forward sums, the stride-1 (and even-sized 3×3 stride-2)
//! transposed convolutions of dx and R{dx}, and the weight gradients.

use std::any::TypeId;
use std::borrow::Cow;
use std::mem::MaybeUninit;

use super::kernels::{weight_grad, DirectConv, Kernel, Shape};
use super::winograd::{self, Winograd, Winograd4};
use super::Plan;
use crate::engine::ops::vmath::{add_into, uninit};
use crate::engine::ops::ChannelAffine;
use crate::engine::Scalar;

impl<'c> Plan<'c> {
    /// The plan with the forward's epilogue also given as numbers, `affine` (f32 only; a
    /// no-op for other types): where the forward takes Winograd, its output transform
    /// applies them as it stores the outputs and the epilogue's own pass is skipped, so
    /// the epilogue passed to [`Plan::forward`] must be the map `affine` stands for.
    pub(super) fn fusing<'x, T: Scalar>(self, affine: Option<&'x ChannelAffine<'x, T>>) -> Plan<'x>
    where
        'c: 'x,
    {
        let f32 = TypeId::of::<T>() == TypeId::of::<f32>();
        let fused = affine.filter(|_| f32).map(|a| winograd::Epi {
            // SAFETY: T is f32 (checked), so [T; 4] is [f32; 4].
            channels: unsafe {
                std::slice::from_raw_parts(a.channels.as_ptr() as *const [f32; 4], a.channels.len())
            },
            relu: a.relu,
            residual: a.residual.map(f32s),
        });
        Plan { fused, ..self }
    }

    /// Σᵢ Wᵢ ⋆ xᵢ `[O, N·Ho·Wo]` by the direct kernel when it applies (see
    /// [`Plan::direct_sum`]), calling `after(channel, offset, outputs)` on each output
    /// channel's outputs of an image (at `offset` in the result) once that image is
    /// complete (while it is still in cache).
    /// Both forward passes go through here, so eval and gradient passes agree bit for bit.
    pub(super) fn forward_direct<T: Scalar>(
        &self,
        terms: &[(&[T], &[T])],
        after: impl FnMut(usize, usize, &mut [T]),
    ) -> Option<Vec<T>> {
        let (c, g) = (self.conv, &self.g);
        let dims = [g.n, g.h, g.w];
        self.direct_sum(
            c.out_channels,
            c.stride,
            c.padding,
            dims,
            terms,
            None,
            after,
        )
    }

    /// The transposed convolutions of the reverse passes, `dx = Wᵀ ⋆ dy` summed over the
    /// `(W, dy)` terms, by the direct kernel: for stride 1, the adjoint of a k×k
    /// convolution with padding p is the convolution with the flipped, transposed kernel
    /// `W'[c, o, i, j] = W[o, c, k−1−i, k−1−j]` and padding k−1−p; stride 2 by phases
    /// ([`Plan::dx_phases`]). `None` where it does not apply (the caller then folds GEMM
    /// columns back with col2im). With `add` (laid out as dx), a result is `add + dx`,
    /// each image's sums added as they are stored (the bits of adding them afterwards).
    pub(super) fn dx_direct<T: Scalar>(
        &self,
        terms: &[(&[T], &[T])],
        add: Option<&[T]>,
    ) -> Option<Vec<T>> {
        let (conv, g) = (self.conv, &self.g);
        let (o, c, k, p) = (conv.out_channels, g.c, conv.kernel, conv.padding);
        if conv.stride == 2 {
            return self.dx_phases(terms, add);
        }
        if conv.stride != 1 || p + 1 > k {
            return None;
        }
        let flipped: Vec<Vec<T>> = terms
            .iter()
            .map(|&(w, _)| flip_transpose(w, o, c, k))
            .collect();
        let terms: Vec<(&[T], &[T])> = flipped
            .iter()
            .zip(terms)
            .map(|(wf, &(_, dy))| (&wf[..], dy))
            .collect();
        let dims = [g.n, g.ho, g.wo];
        self.direct_sum(c, 1, k - 1 - p, dims, &terms, add, |_, _, _| {})
    }

    /// [`Plan::dx_direct`] for stride 2 — ResNet's downsampling 3×3 with padding 1, on even
    /// sizes — by the direct kernel. Each phase `(a, b)` of dx,
    /// `dx[c, 2i + a, 2j + b]`, is a stride-1 convolution of dy: the sum over the taps
    /// `(ki, kj)` with `a + p − ki` and `b + p − kj` even and ≥ 0 of `W[o, c, ki, kj] ·
    /// dy[o, i + (a + p − ki)/2, j + (b + p − kj)/2]` (1, 2, 2 and 4 taps), run on dy
    /// padded by one and interleaved into dx. The products of col2im's path, without its
    /// unfolded columns (9× dx) and their scatter: 0.68× and 0.75× its time on ResNet-20's
    /// two downsampling layers (32 images). Each group of images' padded dy is copied once
    /// for the four phases, whose outputs are interleaved while in cache (about 0.85× and
    /// 0.9× the time of a copy and a whole-batch pass per phase, in ResNet-20's gradient).
    /// The 1×1 stride-2 shortcut stays on col2im (three of its four phases are zero; by
    /// phases it took 1.1× as long). With `add` (laid out as dx), `add + dx`, each row
    /// added as it is interleaved. `None` where it does not apply.
    fn dx_phases<T: Scalar>(&self, terms: &[(&[T], &[T])], add: Option<&[T]>) -> Option<Vec<T>> {
        let (conv, g) = (self.conv, &self.g);
        let (o, c, k, p) = (conv.out_channels, g.c, conv.kernel, conv.padding);
        let even = g.h == 2 * g.ho && g.w == 2 * g.wo;
        if (k, p) != (3, 1) || !even || terms.is_empty() {
            return None;
        }
        let kernel = self.direct.filter(|kn| kn.applies(g.wo))?;
        let (n, h, w, ho, wo) = (g.n, g.h, g.w, g.ho, g.wo);
        let hw = ho * wo;
        let srcs: Vec<&[f32]> = terms.iter().map(|&(_, dy)| f32s(dy)).collect();
        // dy of the terms as one source of `o · terms` channels, padded by one
        let sh = Shape {
            o: c,
            c: o * terms.len(),
            k: 3,
            s: 1,
            p: 1,
            h: ho,
            w: wo,
        };
        let len = c * n * h * w;
        assert!(
            add.is_none_or(|a| a.len() == len),
            "dx by phases: sum added"
        );
        let add = add.map(f32s);
        let mut dx: Vec<T> = Vec::with_capacity(len);
        let out = &mut f32s_uninit(dx.spare_capacity_mut())[..len];
        // the shift of dy's row (column) for dx's row (column) parity t and kernel row q
        let shift = |t: usize, q: usize| {
            (t + p >= q && (t + p - q).is_multiple_of(2)).then(|| (t + p - q) / 2)
        };
        // phases (0, 0), (0, 1), (1, 0), (1, 1)
        let mut convs: Vec<DirectConv> = (0..4)
            .map(|ab| {
                let (a, b) = (ab / 2, ab % 2);
                // (ki, kj) and its tap in padded dy: (1 + row shift, 1 + column shift)
                let taps: Vec<((usize, usize), (usize, usize))> = (0..k * k)
                    .filter_map(|t| {
                        let (ki, kj) = (t / k, t % k);
                        Some(((ki, kj), (1 + shift(a, ki)?, 1 + shift(b, kj)?)))
                    })
                    .collect();
                debug_assert!(!taps.is_empty(), "3×3 padding 1: every phase has taps");
                let mut wts = Vec::with_capacity(c * sh.c * taps.len());
                for cc in 0..c {
                    for &(wt, _) in terms {
                        let wt = f32s(wt);
                        for oc in 0..o {
                            let at = (oc * c + cc) * k * k;
                            wts.extend(taps.iter().map(|&((ki, kj), _)| wt[at + ki * k + kj]));
                        }
                    }
                }
                let offs: Vec<(usize, usize)> = taps.iter().map(|&(_, d)| d).collect();
                let d = DirectConv::with_taps(kernel, sh, &offs, &wts);
                // the phases run on phase (0, 0)'s padded copies
                if ab == 0 {
                    d
                } else {
                    d.without_scratch()
                }
            })
            .collect();
        // each group of images' padded dy is copied once for the four phases, whose
        // outputs (`[c, group · Ho·Wo]` each, in cache) are then interleaved into dx
        let cols = convs[0].batch() * hw;
        let mut ph = vec![0.0f32; 4 * c * cols];
        let mut img = 0;
        while img < n {
            let m = convs[0].fill(&srcs, n, img);
            let xpad = convs[0].scratch();
            for (d, y) in convs.iter().zip(ph.chunks_exact_mut(c * cols)) {
                d.run_filled(xpad, m, (cols, 0), uninit(y));
            }
            for cc in 0..c {
                for j in 0..m {
                    for i in 0..ho {
                        let row = |ab: usize| &ph[(ab * c + cc) * cols + j * hw + i * wo..][..wo];
                        for a in 0..2 {
                            let dst = ((cc * n + img + j) * h + 2 * i + a) * w;
                            let line = &mut out[dst..][..w];
                            winograd::interleave(kernel, row(2 * a), row(2 * a + 1), line);
                            if let Some(add) = add {
                                // SAFETY: `interleave` wrote all w columns of the line.
                                let line = unsafe { &mut *(line as *mut [_] as *mut [f32]) };
                                add_into(line, &add[dst..]);
                            }
                        }
                    }
                }
            }
            img += m;
        }
        // SAFETY: rows 2i and 2i + 1 of every (channel, image) were written, all w columns.
        unsafe { dx.set_len(len) };
        Some(dx)
    }

    /// `dw [O, C·k·k] += Σ dy ⋆ x` over the `(dy, x)` terms by the direct kernel
    /// ([`weight_grad`]) or, where the plan takes Winograd, its dual
    /// ([`winograd::weight_grad`]); false (and `dw` untouched) where neither applies.
    pub(super) fn dw_direct<T: Scalar>(&self, terms: &[(&[T], &[T])], dw: &mut [T]) -> bool {
        let (conv, g) = (self.conv, &self.g);
        // Winograd's weight-gradient tiles are rows of input channels: with fewer than 8
        // (a network's first layer) they cannot cover the FMA latency, so those stay direct
        let wino =
            self.winograd && (conv.kernel, conv.stride) == (3, 1) && conv.padding <= 2 && g.c >= 8;
        let Some(kernel) = self.direct.filter(|k| wino || k.applies(g.wo)) else {
            return false;
        };
        let terms: Vec<(&[f32], &[f32])> = terms.iter().map(|&(d, x)| (f32s(d), f32s(x))).collect();
        if wino {
            let (o, dims) = (conv.out_channels, [g.n, g.h, g.w]);
            if self.winograd4 && winograd::grad4::applies(g.h, g.w, conv.padding) {
                winograd::grad4::weight_grad(kernel, (o, g.c), dims, &terms, f32s_mut(dw));
                return true;
            }
            winograd::weight_grad(kernel, (o, g.c), dims, conv.padding, &terms, f32s_mut(dw));
            return true;
        }
        let sh = Shape {
            o: conv.out_channels,
            c: g.c,
            k: conv.kernel,
            s: conv.stride,
            p: conv.padding,
            h: g.h,
            w: g.w,
        };
        weight_grad(kernel, sh, g.n, &terms, f32s_mut(dw));
        true
    }

    /// Σᵢ Wᵢ ⋆ xᵢ for a `k×k` convolution with stride `s`, zero padding `p` and `out`
    /// output channels, by the direct kernel (one call: weights `[W₁ | W₂ | …]` per output
    /// channel, the inputs' channels stacked). Each term is (weights `[out, Cᵢ, k, k]`,
    /// input `[Cᵢ, N, H, W]`) with `dims = [N, H, W]`; returns `[out, N·Ho·Wo]`, calling
    /// `after(channel, offset, outputs)` on each channel's outputs of an image as it
    /// completes (`offset`: where they lie in the result), or
    /// `None` unless the plan has a direct kernel (f32) that applies. The direct kernels
    /// write into fresh memory (no zeroing pass over y). With `add` (laid out as the
    /// result), each output is `add + sum`, added before `after` sees it: by Winograd's
    /// output transform as it stores the sums (an epilogue of identity and the residual
    /// term), else on each image's outputs while in cache.
    #[allow(clippy::too_many_arguments)]
    fn direct_sum<T: Scalar>(
        &self,
        out: usize,
        s: usize,
        p: usize,
        dims: [usize; 3],
        terms: &[(&[T], &[T])],
        add: Option<&[T]>,
        mut after: impl FnMut(usize, usize, &mut [T]),
    ) -> Option<Vec<T>> {
        let [n, h, w] = dims;
        let k = self.conv.kernel;
        let mut sh = Shape {
            o: out,
            c: 0,
            k,
            s,
            p,
            h,
            w,
        };
        let (ho, wo) = sh.out();
        let wino = self.winograd && k == 3 && s == 1 && p <= 2;
        let kernel = self
            .direct
            .filter(|kn| ho > 0 && (wino || kn.applies(wo)))?;
        let per = n * h * w;
        let chans: Vec<usize> = terms.iter().map(|(_, x)| x.len() / per.max(1)).collect();
        let c: usize = chans.iter().sum();
        let weights: Cow<[f32]> = if terms.len() == 1 {
            f32s(terms[0].0).into()
        } else {
            let kk = k * k;
            let mut all = Vec::with_capacity(out * c * kk);
            for oc in 0..out {
                for (&(wi, _), &ci) in terms.iter().zip(&chans) {
                    all.extend_from_slice(&f32s(wi)[oc * ci * kk..(oc + 1) * ci * kk]);
                }
            }
            all.into()
        };
        sh.c = c;
        let srcs: Vec<&[f32]> = terms.iter().map(|&(_, x)| f32s(x)).collect();
        let (len, hw) = (out * n * ho * wo, ho * wo);
        assert!(add.is_none_or(|a| a.len() == len), "direct conv: sum added");
        if wino {
            // the forward's epilogue in the output transform (then not as `after`), or
            // the term added: the identity (x − 0)·1·1 + (−0), exact for every x and both
            // zeros, then + add
            assert!(
                add.is_none() || self.fused.is_none(),
                "direct conv: two epilogues"
            );
            let identity = vec![[0.0f32, 1.0, 1.0, -0.0]; if add.is_some() { out } else { 0 }];
            let adding = add.map(|a| winograd::Epi {
                channels: &identity,
                relu: false,
                residual: Some(f32s(a)),
            });
            let fused = self.fused.is_some();
            let epi = self.fused.or(adding);
            let mut y: Vec<T> = Vec::with_capacity(len);
            let spare = &mut f32s_uninit(y.spare_capacity_mut())[..len];
            let after = |y32: &mut [MaybeUninit<f32>], img: usize| {
                if fused {
                    return;
                }
                for ch in 0..out {
                    let off = ch * n * hw + img * hw;
                    let row = &mut y32[off..][..hw];
                    // SAFETY: `run` calls this once image `img` is written, so its rows are
                    // initialized; T is f32 here, which MaybeUninit<f32> shares its layout with.
                    after(ch, off, unsafe {
                        &mut *(row as *mut [MaybeUninit<f32>] as *mut [T])
                    });
                }
            };
            if self.winograd4 && Winograd4::applies(h, w, p) {
                Winograd4::new(out, c, &weights, kernel).run(&srcs, dims, epi, spare, after);
            } else {
                Winograd::new(out, c, &weights, kernel).run(&srcs, dims, p, epi, spare, after);
            }
            // SAFETY: `run` wrote all `len` outputs.
            unsafe { y.set_len(len) };
            return Some(y);
        }
        let mut d = DirectConv::new(kernel, sh, &weights);
        let mut y: Vec<T> = Vec::with_capacity(len);
        let spare = &mut f32s_uninit(y.spare_capacity_mut())[..len];
        let mut img0 = 0;
        while img0 < n {
            let m = d.images(&srcs, n, img0, spare);
            for img in img0..img0 + m {
                for ch in 0..out {
                    let off = ch * n * hw + img * hw;
                    let row = &mut spare[off..][..hw];
                    // SAFETY: `images` wrote every output of image `img`, so this row is
                    // initialized; f32 and MaybeUninit<f32> share their layout.
                    let row = unsafe { &mut *(row as *mut [MaybeUninit<f32>] as *mut [T]) };
                    if let Some(add) = add {
                        add_into(row, &add[off..]);
                    }
                    after(ch, off, row);
                }
            }
            img0 += m;
        }
        // SAFETY: the images 0..n wrote all `len` outputs.
        unsafe { y.set_len(len) };
        Some(y)
    }
}

/// The direct kernel for `T` under the cap `simd`: only f32 has one.
pub(super) fn kernel_for<T: Scalar>(simd: crate::engine::options::Simd) -> Option<Kernel> {
    (TypeId::of::<T>() == TypeId::of::<f32>()).then(|| Kernel::for_simd(simd))
}

/// `x` as `&[f32]`; only called where `T` is f32 (a plan has a direct kernel only then).
fn f32s<T: Scalar>(x: &[T]) -> &[f32] {
    assert!(
        TypeId::of::<T>() == TypeId::of::<f32>(),
        "direct conv: f32 only"
    );
    // SAFETY: T is f32 (TypeIds match), so this reinterprets a slice as itself.
    unsafe { std::slice::from_raw_parts(x.as_ptr() as *const f32, x.len()) }
}

/// Uninitialized `T`s as uninitialized f32s; only called where `T` is f32.
fn f32s_uninit<T: Scalar>(x: &mut [MaybeUninit<T>]) -> &mut [MaybeUninit<f32>] {
    assert!(
        TypeId::of::<T>() == TypeId::of::<f32>(),
        "direct conv: f32 only"
    );
    // SAFETY: T is f32, so this reinterprets a slice as itself.
    unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr() as *mut MaybeUninit<f32>, x.len()) }
}

/// [`f32s`] for a mutable slice.
fn f32s_mut<T: Scalar>(x: &mut [T]) -> &mut [f32] {
    assert!(
        TypeId::of::<T>() == TypeId::of::<f32>(),
        "direct conv: f32 only"
    );
    // SAFETY: as in `f32s`.
    unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr() as *mut f32, x.len()) }
}

/// `W [O, C, k, k]` → `W' [C, O, k, k]` with `W'[c, o, i, j] = W[o, c, k−1−i, k−1−j]`.
/// Written in order (no zeroing pass first): 0.6× the scattered loop's time on 64×64
/// 3×3 filters.
fn flip_transpose<T: Scalar>(w: &[T], o: usize, c: usize, k: usize) -> Vec<T> {
    let kk = k * k;
    let mut f = Vec::with_capacity(o * c * kk);
    for ci in 0..c {
        for oc in 0..o {
            f.extend(w[(oc * c + ci) * kk..][..kk].iter().rev());
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::flip_transpose;

    /// `W'[c, o, i, j] = W[o, c, k−1−i, k−1−j]` for several filter sizes, in f32 and f64;
    /// no output channels gives nothing.
    #[test]
    fn flip_transpose_is_the_definition() {
        for (o, c, k) in [
            (3, 5, 3),
            (4, 2, 1),
            (2, 3, 5),
            (1, 1, 2),
            (0, 4, 3),
            (16, 8, 3),
        ] {
            let w: Vec<f64> = (0..o * c * k * k).map(|i| i as f64 * 0.5 - 3.0).collect();
            let got = flip_transpose(&w, o, c, k);
            let want: Vec<f64> = (0..c)
                .flat_map(|ci| (0..o).map(move |oc| (ci, oc)))
                .flat_map(|(ci, oc)| (0..k * k).map(move |t| (ci, oc, t)))
                .map(|(ci, oc, t)| {
                    let (i, j) = (t / k, t % k);
                    w[((oc * c + ci) * k + (k - 1 - i)) * k + (k - 1 - j)]
                })
                .collect();
            assert_eq!(got, want, "o {o} c {c} k {k}");
            let w32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
            let got32 = flip_transpose(&w32, o, c, k);
            assert!(got32.iter().zip(&want).all(|(&a, &b)| f64::from(a) == b));
            assert_eq!(got32.len(), want.len());
        }
    }
}
