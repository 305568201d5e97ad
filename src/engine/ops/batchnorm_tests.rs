//! Tests of [`super::BatchNorm`]'s fused and widened loops: the same bits as the plain
//! passes they replace.

use super::*;
use crate::engine::ops::vmath::plain;
use ndarray::Zip;

/// Channels of the tests' layer and arrays.
const CH: usize = 3;

/// Value `i` of the tests' `k`-th pattern.
fn val(k: usize, i: usize) -> f32 {
    ((i * 37 + k * 11) % 23) as f32 * 0.13 - 1.4
}

/// The `k`-th `[CH, 2, 5, 7]` array.
fn arr(k: usize) -> ArrayD<f32> {
    ArrayD::from_shape_fn(vec![CH, 2, 5, 7], |i| {
        val(k, ((i[0] * 2 + i[1]) * 5 + i[2]) * 7 + i[3])
    })
}

/// The `k`-th positive per-channel vector (parameters, directions).
fn vec1(k: usize) -> ArrayD<f32> {
    ArrayD::from_shape_fn(vec![CH], |i| val(k, i[0]).abs() + 0.5)
}

/// The tests' layer.
fn layer() -> BatchNorm {
    BatchNorm {
        channels: CH,
        eps: 1e-5,
    }
}

fn bits(a: &ArrayD<f32>) -> Vec<u32> {
    a.iter().map(|t| t.to_bits()).collect()
}

/// The backward pass through a ReLU in one pass gives the bits of the ReLU's mask
/// followed by [`BatchNorm::grads`] (dx, dγ, dβ, and the masked dy it keeps), with
/// the widest and the baseline loops, rows with a lane tail; zero sums without `want_dp`;
/// train mode (x̂ kept) does not fuse.
#[test]
fn relu_fused_backward_keeps_the_bits() {
    let ch = CH;
    let (x, gy) = (arr(1), arr(2));
    let y = arr(3).mapv(|t| t.max(0.0));
    let params = [vec1(5), vec1(6), vec1(7), vec1(8)];
    let p: Vec<_> = params.iter().map(|a| a.view()).collect();
    let bn = layer();
    let (_, c) = bn.normalize(&x, &p, Mode::Eval);
    let masked = Zip::from(&gy)
        .and(&y)
        .map_collect(|&g, &v| if v > 0.0 { g } else { 0.0 });
    let (dx, dg, db) = bn.grads(&c, &p, (&x, None), masked.clone(), true);
    let zero = ArrayD::<f32>::zeros(vec![ch]);
    // the two passes without parameter gradients: the same dx, no sums
    let (dx0, dg0, db0) = bn.grads(&c, &p, (&x, None), masked.clone(), false);
    assert_eq!([&dx0, &dg0, &db0].map(bits), [&dx, &zero, &zero].map(bits));
    for want_dp in [false, true] {
        for keep_gy in [false, true] {
            let run = || {
                let flags = (want_dp, keep_gy);
                let r = bn.grads_relu(&c, &p, ((&x, None), &y), gy.clone(), flags);
                let (fdx, fdg, fdb, kept) = r.expect("eval mode fuses");
                [Some(fdx), Some(fdg), Some(fdb), kept].map(|a| a.map(|a| bits(&a)))
            };
            let sums = if want_dp { (&dg, &db) } else { (&zero, &zero) };
            let want = [
                Some(bits(&dx)),
                Some(bits(sums.0)),
                Some(bits(sums.1)),
                keep_gy.then(|| bits(&masked)),
            ];
            assert_eq!(wide!(run()), want, "want_dp {want_dp}, keep_gy {keep_gy}");
            assert_eq!(plain(|| wide!(run())), want);
        }
    }
    let (_, train) = bn.normalize(&x, &p, Mode::Train);
    let back = bn.grads_relu(&train, &p, ((&x, None), &y), gy.clone(), (true, false));
    assert_eq!(
        bits(&back.expect_err("train mode does not fuse")),
        bits(&gy)
    );
}

/// A source given as `z` less `q` (a lean tape's residual block end, `Taped::y_less`)
/// gives every eval-mode pass the bits of the difference formed first, with the widest
/// and the baseline loops.
#[test]
fn a_source_less_a_second_array_is_their_difference() {
    let (x, gy, rx, rgy, q) = (arr(1), arr(2), arr(3), arr(4), arr(11));
    let z = (&x + &q).mapv(|t| t.max(0.0));
    let diff = &z - &q;
    let params = [vec1(5), vec1(6), vec1(7), vec1(8)];
    let dirs = [vec1(9), vec1(10)];
    let p: Vec<_> = params.iter().map(|a| a.view()).collect();
    let v: Vec<_> = dirs.iter().map(|a| a.view()).collect();
    let bn = layer();
    let (_, c) = bn.normalize(&x, &p, Mode::Eval);
    let run = |src: Source<f32>| {
        let (dx, dg, db) = bn.grads(&c, &p, src, gy.clone(), true);
        let fused = bn.grads_relu(&c, &p, (src, &z), gy.clone(), (true, true));
        let (fdx, fdg, fdb, kept) = fused.expect("eval mode fuses");
        let (ry, rc) = bn.r_normalize(&c, &p, &v, src, Some(&rx));
        let (rdx, rdg, rdb) = bn.r_grads(&c, &rc, &p, &v, src, Some(&rx), &gy, &rgy);
        let kept = kept.expect("kept");
        [dx, dg, db, fdx, fdg, fdb, kept, ry, rdx, rdg, rdb].map(|a| bits(&a))
    };
    let want = wide!(run((&diff, None)),);
    assert_eq!(wide!(run((&z, Some(&q))),), want);
    assert_eq!(plain(|| wide!(run((&z, Some(&q))))), want);
}

/// Every pass gives the same bits with the widest loops and with the baseline ones
/// (as on a CPU without AVX2), in both modes; the epilogue gives the forward's bits.
#[test]
fn wide_and_baseline_loops_agree_bit_for_bit() {
    let (ch, m) = (CH, 2 * 5 * 7);
    let (x, gy, rx, rgy) = (arr(1), arr(2), arr(3), arr(4));
    let params = [vec1(5), vec1(6), vec1(7), vec1(8)];
    let dirs = [vec1(9), vec1(10)];
    let p: Vec<_> = params.iter().map(|a| a.view()).collect();
    let v: Vec<_> = dirs.iter().map(|a| a.view()).collect();
    let bn = layer();
    let run = |mode: Mode| {
        let (y, c) = bn.normalize(&x, &p, mode);
        let (dx, dg, db) = bn.grads(&c, &p, (&x, None), gy.clone(), true);
        let (ry, rc) = bn.r_normalize(&c, &p, &v, (&x, None), Some(&rx));
        let (rdx, rdg, rdb) = bn.r_grads(&c, &rc, &p, &v, (&x, None), Some(&rx), &gy, &rgy);
        [y, dx, dg, db, ry, rdx, rdg, rdb].map(|a| bits(&a))
    };
    for mode in [Mode::Eval, Mode::Train] {
        let widest = wide!(run(mode),);
        assert_eq!(plain(|| wide!(run(mode))), widest, "{mode:?}");
    }
    let epi = |relu: bool| {
        let mut y = x.clone().into_shape_with_order((ch, m)).unwrap();
        let e = bn.eval_epilogue(&p, relu);
        for (c, mut row) in y.rows_mut().into_iter().enumerate() {
            e(c, c * m, row.as_slice_mut().unwrap());
        }
        bits(&y.into_dyn())
    };
    let (y, _) = bn.normalize(&x, &p, Mode::Eval);
    let relu_y = y.mapv(|t| if t > 0.0 { t } else { 0.0 });
    for relu in [false, true] {
        let want = bits(if relu { &relu_y } else { &y });
        assert_eq!(epi(relu), want);
        assert_eq!(plain(|| epi(relu)), want);
    }
}
