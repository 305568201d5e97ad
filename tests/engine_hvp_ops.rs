//! Graph-level oracles for the torch-layout ops (transpose, reshape, gather, expand,
//! batched matmul, rank-3 linear, embedding, param, constant) and for grouped/depthwise
//! convolutions and ceil-mode pools: the loss gradient and H·v of small hand-built graphs
//! against f64 central differences, ⟨u, Hv⟩ = ⟨v, Hu⟩, and f32 against f64.

mod common;

use std::sync::Arc;

use common::{assert_close, tol, Dtype, Quantity};
use losscape::engine::ops::{
    Concat, Constant, Conv2d, Embedding, Expand, Gather, Linear, Param, Pool2d, Reshape, Transpose,
};
use losscape::engine::{EngineError, Graph, Layout, Loss, Mode, Op, Role};
use ndarray::{Array1, ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A graph under construction with its layout.
struct Net {
    g: Graph,
    layout: Layout,
}

impl Net {
    fn new(input_shape: &[usize], num_classes: usize) -> Self {
        let mut g = Graph {
            nodes: vec![],
            layout: Arc::new(Layout::new()),
            loss: Loss::CrossEntropy,
            input_shape: input_shape.to_vec(),
            num_classes,
            options: Default::default(),
        };
        g.push("input", Op::Input, &[], &[]);
        Net {
            g,
            layout: Layout::new(),
        }
    }

    fn node(&mut self, op: Op, inputs: &[usize]) -> usize {
        self.g.push("", op, inputs, &[])
    }

    /// A node with parameters `(suffix, shape, role)`, named `name.suffix`.
    fn with(
        &mut self,
        name: &str,
        op: Op,
        inputs: &[usize],
        p: &[(&str, &[usize], Role)],
    ) -> usize {
        let idx: Vec<usize> = p
            .iter()
            .map(|(s, shape, role)| {
                let full = match s.is_empty() {
                    true => name.to_string(),
                    false => format!("{name}.{s}"),
                };
                self.layout.push(full, shape, *role)
            })
            .collect();
        self.g.push(name, op, inputs, &idx)
    }

    fn linear(&mut self, name: &str, x: usize, i: usize, o: usize) -> usize {
        let op = Op::Linear(Linear {
            in_features: i,
            out_features: o,
            bias: true,
        });
        let p: [(&str, &[usize], Role); 2] = [
            ("weight", &[o, i], Role::Weight),
            ("bias", &[o], Role::Bias),
        ];
        self.with(name, op, &[x], &p)
    }

    fn param(&mut self, name: &str, shape: &[usize]) -> usize {
        let op = Op::Param(Param {
            shape: shape.to_vec(),
        });
        self.with(name, op, &[], &[("", shape, Role::Weight)])
    }

    fn transpose(&mut self, x: usize, perm: &[usize]) -> usize {
        self.node(
            Op::Transpose(Transpose {
                perm: perm.to_vec(),
            }),
            &[x],
        )
    }

    fn reshape(&mut self, x: usize, shape: &[usize]) -> usize {
        self.node(Op::Reshape(Reshape::per_sample(shape.to_vec())), &[x])
    }

    /// The graph with θ of entries uniform in [−scale, scale], a batch `x` and labels.
    fn case(mut self, x: ArrayD<f64>, scale: f64, seed: u64) -> Case {
        self.g.layout = Arc::new(self.layout);
        let n = x.shape()[0];
        self.g.infer_shapes(&x.shape()[1..], n).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let theta = Array1::from_shape_fn(self.g.layout.len(), |_| rng.random_range(-scale..scale));
        let y = (0..n)
            .map(|_| rng.random_range(0..self.g.num_classes))
            .collect();
        Case {
            g: self.g,
            theta,
            x,
            y,
        }
    }
}

struct Case {
    g: Graph,
    theta: Array1<f64>,
    x: ArrayD<f64>,
    y: Vec<usize>,
}

impl Case {
    fn loss(&self, theta: &Array1<f64>) -> f64 {
        self.g
            .loss_batch(theta.view(), &self.x, &self.y, Mode::Eval)
            .sum
    }

    fn grad(&self, theta: &Array1<f64>) -> Array1<f64> {
        let mut g = Array1::zeros(theta.len());
        self.g
            .grad_batch(theta.view(), &self.x, &self.y, Mode::Eval, g.view_mut());
        g
    }

    fn hvp(&self, v: &Array1<f64>) -> Array1<f64> {
        let mut hv = Array1::zeros(v.len());
        let (t, x, y) = (self.theta.view(), &self.x, &self.y);
        self.g
            .hvp_batch(t, v.view(), x, y, Mode::Eval, hv.view_mut());
        hv
    }

    fn check(&self, label: &str) {
        self.g.check_batch(&self.x).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let dir = |rng: &mut ChaCha8Rng| {
            Array1::from_shape_fn(self.theta.len(), |_| rng.random_range(-1.0..1.0))
        };
        let eps = 1e-6;
        let g = self.grad(&self.theta);
        for _ in 0..2 {
            let v = dir(&mut rng);
            let (tp, tm) = (&self.theta + &(&v * eps), &self.theta - &(&v * eps));
            let fd = (self.loss(&tp) - self.loss(&tm)) / (2.0 * eps);
            let what = format!("{label}: central difference vs ⟨g,v⟩");
            assert_close(&what, fd, g.dot(&v), tol(Dtype::F64, Quantity::FdGradient));
            let fd = (self.grad(&tp) - self.grad(&tm)) / (2.0 * eps);
            let what = format!("{label}: H·v vs central differences");
            assert_close(&what, self.hvp(&v), &fd, tol(Dtype::F64, Quantity::FdHvp));
        }
        let (u, v) = (dir(&mut rng), dir(&mut rng));
        let (a, b) = (u.dot(&self.hvp(&v)), v.dot(&self.hvp(&u)));
        let what = format!("{label}: ⟨u,Hv⟩ vs ⟨v,Hu⟩");
        assert_close(&what, a, b, tol(Dtype::F64, Quantity::HvpSymmetry));
        // the same passes in f32
        let (t32, x32) = (self.theta.mapv(|t| t as f32), self.x.mapv(|t| t as f32));
        let mut g32 = Array1::<f32>::zeros(t32.len());
        let l32 = self
            .g
            .grad_batch(t32.view(), &x32, &self.y, Mode::Eval, g32.view_mut());
        let l64 = self.loss(&self.theta);
        let what = format!("{label}: f32 loss");
        assert_close(&what, l32.sum, l64, tol(Dtype::F32, Quantity::Loss));
        let what = format!("{label}: f32 gradient");
        let g32 = g32.mapv(f64::from);
        assert_close(&what, &g32, &g, tol(Dtype::F32, Quantity::Gradient));
        let mut hv32 = Array1::<f32>::zeros(t32.len());
        let v32 = v.mapv(|t| t as f32);
        let (t, y) = (t32.view(), &self.y);
        self.g
            .hvp_batch(t, v32.view(), &x32, y, Mode::Eval, hv32.view_mut());
        let what = format!("{label}: f32 H·v");
        let hv32 = hv32.mapv(f64::from);
        assert_close(&what, &hv32, self.hvp(&v), tol(Dtype::F32, Quantity::Hvp));
    }
}

fn randn(shape: &[usize], seed: u64) -> ArrayD<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    ArrayD::from_shape_simple_fn(IxDyn(shape), || {
        rand_distr::Distribution::<f64>::sample(&rand_distr::StandardNormal, &mut rng)
    })
}

/// A two-head vision transformer block without softmax: patch convolution, internal →
/// torch layout, class token and position embedding (params expanded to the batch),
/// rank-3 linear projections, 4-D attention products, a fixed token-mixing matrix
/// (constant × value, broadcast over the batch), a shared projection (one matrix for the
/// whole batch) and the class token's logits.
#[test]
fn vision_transformer_block() {
    let (d, t, heads) = (4, 5, 2);
    let mut net = Net::new(&[2, 4, 4], 3);
    let w: [(&str, &[usize], Role); 2] = [
        ("weight", &[d, 2, 2, 2], Role::Weight),
        ("bias", &[d], Role::Bias),
    ];
    let conv = Op::Conv2d(Conv2d {
        in_channels: 2,
        out_channels: d,
        kernel: 2,
        stride: 2,
        padding: 0,
        bias: true,
        groups: 1,
    });
    let patches = net.with("patch", conv, &[0], &w); // [D, N, 2, 2]
    let nchw = net.transpose(patches, &[1, 0, 2, 3]);
    let flat = net.reshape(nchw, &[d, t - 1]);
    let tokens = net.transpose(flat, &[0, 2, 1]); // [N, 4, D]
    let cls = net.param("cls_token", &[1, 1, d]);
    let expand = |shape: &[usize]| {
        Op::Expand(Expand {
            shape: shape.to_vec(),
            ref_axis: 0,
        })
    };
    let cls = net.node(expand(&[0, 1, d]), &[cls, tokens]);
    let h = net.node(Op::Concat(Concat { axis: 1 }), &[cls, tokens]); // [N, T, D]
    let pos = net.param("pos_embed", &[1, t, d]);
    let pos = net.node(expand(&[0, t, d]), &[pos, h]);
    let h = net.node(Op::Add, &[h, pos]);
    let split = |net: &mut Net, x: usize| {
        let x = net.reshape(x, &[t, heads, d / heads]);
        net.transpose(x, &[0, 2, 1, 3]) // [N, H, T, D/H]
    };
    let q = net.linear("q", h, d, d);
    let k = net.linear("k", h, d, d);
    let v = net.linear("v", h, d, d);
    let (q, k, v) = (split(&mut net, q), split(&mut net, k), split(&mut net, v));
    let kt = net.transpose(k, &[0, 1, 3, 2]);
    let scores = net.node(Op::MatMul, &[q, kt]); // [N, H, T, T]
    let att = net.node(Op::MatMul, &[scores, v]); // [N, H, T, D/H]
    let att = net.transpose(att, &[0, 2, 1, 3]);
    let att = net.reshape(att, &[t, d]);
    let mix = Op::Constant(Constant {
        shape: vec![t, t],
        values: Arc::new(
            (0..t * t)
                .map(|i| ((i * 7) % 5) as f64 * 0.2 - 0.4)
                .collect(),
        ),
    });
    let mix = net.node(mix, &[]);
    let mixed = net.node(Op::MatMul, &[mix, att]); // [T, T] × [N, T, D]
    let proj = net.param("proj", &[d, d]);
    let out = net.node(Op::MatMul, &[mixed, proj]); // [N, T, D] × [D, D]
    let h = net.node(Op::Add, &[h, out]);
    let h = net.node(Op::Relu, &[h]);
    let two = net.node(
        Op::Gather(Gather {
            axis: 1,
            indices: vec![0, 3],
            keep_axis: true,
        }),
        &[h],
    ); // [N, 2, D]
    let cls = net.node(
        Op::Gather(Gather {
            axis: 1,
            indices: vec![1],
            keep_axis: false,
        }),
        &[two],
    ); // [N, D]
    net.linear("head", cls, d, 3);
    net.case(randn(&[3, 2, 4, 4], 1), 0.6, 2).check("vit block");
}

/// Token ids → embedding (repeated ids) + position embedding, a rank-3 linear layer,
/// self-similarity h·hᵀ, flattened into a classifier; and ids out of range are reported.
#[test]
fn token_embedding_classifier() {
    let (t, d, vocab) = (3, 4, 6);
    let mut net = Net::new(&[t], 3);
    let emb = Op::Embedding(Embedding { vocab, dim: d });
    let h = net.with("emb", emb, &[0], &[("weight", &[vocab, d], Role::Weight)]);
    let pos = net.param("pos", &[1, t, d]);
    let pos = net.node(
        Op::Expand(Expand {
            shape: vec![0, t, d],
            ref_axis: 0,
        }),
        &[pos, h],
    );
    let h = net.node(Op::Add, &[h, pos]);
    let h = net.linear("fc", h, d, d);
    let h = net.node(Op::Relu, &[h]);
    let ht = net.transpose(h, &[0, 2, 1]);
    let s = net.node(Op::MatMul, &[h, ht]); // [N, T, T]
    let s = net.reshape(s, &[t * t]);
    net.linear("head", s, t * t, 3);
    let ids = [0.0, 5.0, 5.0, 2.0, 1.0, 0.0, 3.0, 3.0, 3.0, 4.0, 2.0, 1.0];
    let x = ArrayD::from_shape_vec(IxDyn(&[4, t]), ids.to_vec()).unwrap();
    let case = net.case(x, 0.5, 3);
    case.check("embedding");
    let mut bad = case.x.clone();
    bad[[2, 1]] = 6.0;
    match case.g.check_batch(&bad) {
        Err(EngineError::TokenId { value, vocab, .. }) => assert_eq!((value, vocab), (6.0, 6)),
        other => panic!("expected a token-id error, got {other:?}"),
    }
}

/// Grouped convolution (2 groups, bias) → ReLU → depthwise convolution (multiplier 2,
/// stride 2) → ceil-mode average pool with padding → ceil-mode max pool → linear.
#[test]
fn grouped_convolutions_and_ceil_mode_pools() {
    let mut net = Net::new(&[4, 7, 7], 3);
    let conv = |i, o, k, s, groups, bias| {
        Op::Conv2d(Conv2d {
            in_channels: i,
            out_channels: o,
            kernel: k,
            stride: s,
            padding: 1,
            bias,
            groups,
        })
    };
    let p: [(&str, &[usize], Role); 2] = [
        ("weight", &[4, 2, 3, 3], Role::Weight),
        ("bias", &[4], Role::Bias),
    ];
    let h = net.with("c1", conv(4, 4, 3, 1, 2, true), &[0], &p);
    let h = net.node(Op::Relu, &[h]);
    let p: [(&str, &[usize], Role); 1] = [("weight", &[8, 1, 3, 3], Role::Weight)];
    let h = net.with("dw", conv(4, 8, 3, 2, 4, false), &[h], &p); // [8, N, 4, 4]
    let pool = |kernel, stride, padding| Pool2d {
        kernel,
        stride,
        padding,
        ceil_mode: true,
    };
    // both pools' last windows hang over the (padded) image
    let h = net.node(Op::AvgPool(pool(3, 2, 1)), &[h]); // [8, N, 3, 3]
    let h = net.node(Op::MaxPool(pool(2, 2, 0)), &[h]); // [8, N, 2, 2]
    let h = net.node(Op::Flatten, &[h]);
    net.linear("fc", h, 32, 3);
    net.case(randn(&[3, 4, 7, 7], 4), 0.5, 5)
        .check("grouped conv");
}
