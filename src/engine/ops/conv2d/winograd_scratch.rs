//! Scratch memory of [`super::Winograd`]'s calls, kept per thread between calls.

/// A scratch buffer of floats whose slice starts on a 64-byte boundary, taken from its
/// thread's pool and given back on drop: the transforms' and products' blocks, hundreds
/// of kilobytes per call, are not allocated and zeroed again on every call. What it holds
/// is unspecified (zeros, or floats an earlier call left): every reader reads only what
/// its call wrote, or columns past the block's tiles whose sums nothing reads.
pub(super) struct Aligned {
    buf: Vec<f32>,
    len: usize,
}

thread_local! {
    static POOL: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Aligned {
    pub(super) fn new(len: usize) -> Self {
        // the smallest kept buffer that is large enough, else a new one
        let kept = POOL.with(|p| {
            let mut p = p.borrow_mut();
            let fit = (0..p.len())
                .filter(|&i| p[i].len() >= len + 16)
                .min_by_key(|&i| p[i].len());
            fit.map(|i| p.swap_remove(i))
        });
        let buf = kept.unwrap_or_else(|| vec![0.0; len + 16]);
        Aligned { buf, len }
    }

    pub(super) fn get(&mut self) -> &mut [f32] {
        let skip = self.buf.as_ptr().align_offset(64).min(16);
        &mut self.buf[skip..][..self.len]
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // at most six kept per thread (a call holds up to four), the largest
        let buf = std::mem::take(&mut self.buf);
        let _ = POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            p.push(buf);
            if p.len() > 6 {
                let small = (0..p.len()).min_by_key(|&i| p[i].len()).expect("seven");
                p.swap_remove(small);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::values;
    use super::super::{weight_grad, Kernel, Winograd};
    use super::{Aligned, POOL};
    use std::mem::MaybeUninit;

    /// Empties this thread's pool, then (`nan`) leaves six NaN-filled buffers in it, each
    /// large enough for any of a call's.
    fn reset_pool(nan: bool) {
        POOL.with(|p| p.borrow_mut().clear());
        if nan {
            let bufs: Vec<Aligned> = (0..6)
                .map(|_| {
                    let mut a = Aligned::new(1 << 20);
                    a.buf.fill(f32::NAN);
                    a
                })
                .collect();
            drop(bufs);
            assert_eq!(POOL.with(|p| p.borrow().len()), 6);
        }
    }

    /// What earlier calls left in the scratch (here NaN everywhere) changes no bit of the
    /// forward or of the weight gradient: on even sizes (dY by whole transposes), odd ones
    /// (the general path) and output channels not a multiple of 16 (the weight gradient's
    /// channels O..O' never written), for every kernel this CPU has.
    #[test]
    fn stale_scratch_keeps_the_bits() {
        for k in Kernel::available() {
            for &(o, c, n, h, w) in &[(16, 16, 2, 8, 8), (5, 3, 1, 7, 9), (20, 12, 3, 16, 16)] {
                let (x, wts, dy) = (
                    values(c * n * h * w, 1),
                    values(o * c * 9, 2),
                    values(o * n * h * w, 3),
                );
                let once = |nan: bool| {
                    reset_pool(nan);
                    let wg = Winograd::new(o, c, &wts, k);
                    let mut y = vec![MaybeUninit::new(0.0f32); o * n * h * w];
                    wg.run(&[&x], [n, h, w], 1, None, &mut y, |_, _| {});
                    // SAFETY: initialized before the call.
                    let y: Vec<u32> = y
                        .iter()
                        .map(|v| unsafe { v.assume_init() }.to_bits())
                        .collect();
                    reset_pool(nan);
                    let mut dw = vec![0.0f32; o * c * 9];
                    weight_grad(k, (o, c), [n, h, w], 1, &[(&dy, &x)], &mut dw);
                    (y, dw.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
                };
                let (clean, stale) = (once(false), once(true));
                assert!(stale
                    .0
                    .iter()
                    .chain(&stale.1)
                    .all(|&b| !f32::from_bits(b).is_nan()));
                assert!(clean == stale, "{k:?} {o}x{c}, {n}x{h}x{w}: bits differ");
            }
        }
    }
}
