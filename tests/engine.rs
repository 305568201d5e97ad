//! Engine oracles that need no fixture: f64 central differences for gradients and
//! Hessian-vector products, symmetry ⟨u, Hv⟩ = ⟨v, Hu⟩, on every op (zoo nets and a
//! custom net with max/avg pooling and biased convolutions), in eval and train mode.

mod common;

use std::sync::Arc;

use common::{assert_close, tol, Dtype, Quantity};
use losscape::engine::ops::{Affine, Concat, Conv2d, Linear, Pad, Pool2d, SliceAxis};
use losscape::engine::{Graph, Layout, Loss, Mode, Op, ParamVec, Role};
use losscape::model::{zoo::init_params, Arch};
use ndarray::{Array1, ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn randn(n: usize, rng: &mut ChaCha8Rng) -> Array1<f64> {
    Array1::from_iter(
        (0..n).map(|_| rand_distr::Distribution::<f64>::sample(&rand_distr::StandardNormal, rng)),
    )
}

struct Case {
    g: Graph,
    theta: Array1<f64>,
    x: ArrayD<f64>,
    y: Vec<usize>,
    mode: Mode,
}

impl Case {
    fn loss(&self, theta: &Array1<f64>) -> f64 {
        self.g
            .loss_batch(theta.view(), &self.x, &self.y, self.mode)
            .sum
            / self.y.len() as f64
    }
    fn grad(&self, theta: &Array1<f64>) -> Array1<f64> {
        let mut g = Array1::zeros(theta.len());
        self.g
            .grad_batch(theta.view(), &self.x, &self.y, self.mode, g.view_mut());
        g / self.y.len() as f64
    }
    fn hvp(&self, v: &Array1<f64>) -> Array1<f64> {
        let mut hv = Array1::zeros(v.len());
        self.g.hvp_batch(
            self.theta.view(),
            v.view(),
            &self.x,
            &self.y,
            self.mode,
            hv.view_mut(),
        );
        hv / self.y.len() as f64
    }
    /// A random direction on trainable tensors only.
    fn direction(&self, rng: &mut ChaCha8Rng) -> Array1<f64> {
        randn(self.theta.len(), rng) * self.g.layout.mask::<f64>(|t| t.role.is_trainable())
    }

    fn check(&self, label: &str) {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let eps = 1e-6;
        let g = self.grad(&self.theta);
        for _ in 0..3 {
            let v = self.direction(&mut rng);
            // directional derivative of the loss
            let fd = (self.loss(&(&self.theta + &(&v * eps)))
                - self.loss(&(&self.theta - &(&v * eps))))
                / (2.0 * eps);
            let an = g.dot(&v);
            assert_close(
                &format!("{label}: central difference vs ⟨g,v⟩"),
                fd,
                an,
                tol(Dtype::F64, Quantity::FdGradient),
            );
            // H·v against central differences of the gradient
            let hv = self.hvp(&v);
            let fd = (self.grad(&(&self.theta + &(&v * eps)))
                - self.grad(&(&self.theta - &(&v * eps))))
                / (2.0 * eps);
            assert_close(
                &format!("{label}: H·v vs central differences"),
                &hv,
                &fd,
                tol(Dtype::F64, Quantity::FdHvp),
            );
        }
        // symmetry
        let (u, v) = (self.direction(&mut rng), self.direction(&mut rng));
        let (a, b) = (u.dot(&self.hvp(&v)), v.dot(&self.hvp(&u)));
        assert_close(
            &format!("{label}: ⟨u,Hv⟩ vs ⟨v,Hu⟩"),
            a,
            b,
            tol(Dtype::F64, Quantity::HvpSymmetry),
        );
        // running statistics get no gradient
        for t in self
            .g
            .layout
            .tensors()
            .iter()
            .filter(|t| !t.role.is_trainable())
        {
            assert!(
                g.slice(ndarray::s![t.range()]).iter().all(|&x| x == 0.0),
                "{label}: {} has a gradient",
                t.name
            );
        }
    }
}

fn zoo_case(arch: &str, n: usize, mode: Mode, seed: u64) -> Case {
    let arch: Arch = arch.parse().unwrap();
    let g = arch.build();
    let mut theta = init_params::<f64>(&g.layout, seed, false);
    perturb_bn(&mut theta, seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 1);
    let mut shape = vec![n];
    shape.extend(arch.input_shape());
    let x = ArrayD::from_shape_vec(
        IxDyn(&shape),
        randn(shape.iter().product(), &mut rng).to_vec(),
    )
    .unwrap();
    let y = (0..n)
        .map(|_| rng.random_range(0..arch.num_classes()))
        .collect();
    Case {
        g,
        theta: theta.data,
        x,
        y,
        mode,
    }
}

/// Non-trivial batch-norm parameters and running statistics.
fn perturb_bn(theta: &mut ParamVec<f64>, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 100);
    let layout = theta.layout.clone();
    for (i, t) in layout.tensors().iter().enumerate() {
        let mut v = theta.tensor_mut(i);
        match t.role {
            Role::BnScale => v.mapv_inplace(|_| 1.0 + 0.2 * rng.random_range(-1.0..1.0)),
            Role::BnShift | Role::RunningMean => {
                v.mapv_inplace(|_| 0.1 * rng.random_range(-1.0..1.0))
            }
            Role::RunningVar => v.mapv_inplace(|_| rng.random_range(0.5..1.5)),
            _ => {}
        }
    }
}

#[test]
fn resnet_with_shortcuts_eval_mode() {
    zoo_case(
        "resnet-cifar:depth=8,width=4,in_channels=2,input_size=6,num_classes=5",
        4,
        Mode::Eval,
        1,
    )
    .check("resnet8");
}

#[test]
fn resnet_without_shortcuts_eval_and_train_mode() {
    let arch =
        "resnet-cifar:depth=8,width=4,shortcut=none,in_channels=1,input_size=5,num_classes=3";
    zoo_case(arch, 4, Mode::Eval, 2).check("resnet8-noshort eval");
    zoo_case(arch, 5, Mode::Train, 3).check("resnet8-noshort train");
}

#[test]
fn mlp_with_batchnorm_both_modes_and_mse() {
    let arch = "mlp:in_features=6,depth=2,width=5,residual=true,batchnorm=true,num_classes=4";
    zoo_case(arch, 7, Mode::Eval, 4).check("mlp-bn eval");
    zoo_case(arch, 7, Mode::Train, 5).check("mlp-bn train");
    let mut c = zoo_case(
        "mlp:in_features=6,depth=2,width=5,residual=false,num_classes=4",
        7,
        Mode::Eval,
        6,
    );
    c.g.loss = Loss::Mse;
    c.check("mlp mse");
}

/// conv(bias, stride 2) → relu → maxpool → avgpool(pad) → flatten → linear.
#[test]
fn custom_net_with_pooling_and_biases() {
    let mut layout = Layout::new();
    let mut g = Graph {
        nodes: vec![],
        layout: Arc::new(Layout::new()),
        loss: Loss::CrossEntropy,
        input_shape: vec![2, 9, 9],
        num_classes: 3,
        options: Default::default(),
    };
    let x = g.push("input", Op::Input, &[], &[]);
    let w = layout.push("c.weight", &[4, 2, 3, 3], Role::Weight);
    let b = layout.push("c.bias", &[4], Role::Bias);
    let h = g.push(
        "c",
        Op::Conv2d(Conv2d {
            in_channels: 2,
            out_channels: 4,
            kernel: 3,
            stride: 1,
            padding: 1,
            bias: true,
            groups: 1,
        }),
        &[x],
        &[w, b],
    );
    let h = g.push("", Op::Relu, &[h], &[]);
    let h = g.push(
        "mp",
        Op::MaxPool(Pool2d {
            kernel: 3,
            stride: 2,
            padding: 1,
            ceil_mode: false,
        }),
        &[h],
        &[],
    );
    let w2 = layout.push("c2.weight", &[3, 4, 3, 3], Role::Weight);
    let b2 = layout.push("c2.bias", &[3], Role::Bias);
    let h = g.push(
        "c2",
        Op::Conv2d(Conv2d {
            in_channels: 4,
            out_channels: 3,
            kernel: 3,
            stride: 2,
            padding: 0,
            bias: true,
            groups: 1,
        }),
        &[h],
        &[w2, b2],
    );
    let h = g.push(
        "ap",
        Op::AvgPool(Pool2d {
            kernel: 2,
            stride: 1,
            padding: 1,
            ceil_mode: false,
        }),
        &[h],
        &[],
    );
    let h = g.push("", Op::Flatten, &[h], &[]);
    let lw = layout.push("fc.weight", &[3, 27], Role::Weight);
    let lb = layout.push("fc.bias", &[3], Role::Bias);
    g.push(
        "fc",
        Op::Linear(Linear {
            in_features: 27,
            out_features: 3,
            bias: true,
        }),
        &[h],
        &[lw, lb],
    );
    g.layout = Arc::new(layout);
    g.infer_shapes(&[2, 9, 9], 3).unwrap();
    let theta = init_params::<f64>(&g.layout, 9, false).data;
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let x =
        ArrayD::from_shape_vec(IxDyn(&[3, 2, 9, 9]), randn(3 * 2 * 81, &mut rng).to_vec()).unwrap();
    Case {
        g,
        theta,
        x,
        y: vec![0, 2, 1],
        mode: Mode::Eval,
    }
    .check("custom");
}

/// The ops of imported ONNX networks: affine input normalization, strided slices, zero
/// padding (channels and features) and channel concatenation, image and vector layouts.
#[test]
fn imported_ops_affine_slice_pad_concat() {
    let mut layout = Layout::new();
    let mut g = Graph {
        nodes: vec![],
        layout: Arc::new(Layout::new()),
        loss: Loss::CrossEntropy,
        input_shape: vec![2, 6, 6],
        num_classes: 3,
        options: Default::default(),
    };
    let conv = |cin, cout, stride| {
        Op::Conv2d(Conv2d {
            in_channels: cin,
            out_channels: cout,
            kernel: 3,
            stride,
            padding: 1,
            bias: false,
            groups: 1,
        })
    };
    let x = g.push("input", Op::Input, &[], &[]);
    let x = g.push(
        "norm",
        Op::Affine(Affine {
            scale: vec![2.0, -0.5],
            shift: vec![0.3, 0.1],
        }),
        &[x],
        &[],
    );
    let w1 = layout.push("c1.weight", &[4, 2, 3, 3], Role::Weight);
    let h = g.push("c1", conv(2, 4, 1), &[x], &[w1]);
    let h = g.push("", Op::Relu, &[h], &[]);
    // option-A shortcut: x[:, :, ::2, 1::2], channels padded 1 before, 2 after
    let s = g.push(
        "",
        Op::Slice(SliceAxis {
            axis: 2,
            start: 0,
            end: 6,
            step: 2,
        }),
        &[h],
        &[],
    );
    let s = g.push(
        "",
        Op::Slice(SliceAxis {
            axis: 3,
            start: 1,
            end: 6,
            step: 2,
        }),
        &[s],
        &[],
    );
    let s = g.push(
        "",
        Op::Pad(Pad {
            before: vec![1, 0, 0, 0],
            after: vec![2, 0, 0, 0],
        }),
        &[s],
        &[],
    );
    let w2 = layout.push("c2.weight", &[3, 4, 3, 3], Role::Weight);
    let b = g.push("c2", conv(4, 3, 2), &[h], &[w2]);
    let b = g.push("", Op::Relu, &[b], &[]);
    let h = g.push("", Op::Concat(Concat { axis: 0 }), &[s, b, s], &[]);
    let h = g.push("", Op::Flatten, &[h], &[]);
    let h = g.push(
        "",
        Op::Slice(SliceAxis {
            axis: 1,
            start: 1,
            end: 117,
            step: 2,
        }),
        &[h],
        &[],
    );
    let h = g.push(
        "",
        Op::Pad(Pad {
            before: vec![0, 1],
            after: vec![0, 2],
        }),
        &[h],
        &[],
    );
    let h = g.push(
        "",
        Op::Affine(Affine {
            scale: vec![1.5],
            shift: vec![0.2],
        }),
        &[h],
        &[],
    );
    let lw = layout.push("fc.weight", &[3, 61], Role::Weight);
    let lb = layout.push("fc.bias", &[3], Role::Bias);
    g.push(
        "fc",
        Op::Linear(Linear {
            in_features: 61,
            out_features: 3,
            bias: true,
        }),
        &[h],
        &[lw, lb],
    );
    g.layout = Arc::new(layout);
    g.infer_shapes(&[2, 6, 6], 3).unwrap();
    let theta = init_params::<f64>(&g.layout, 12, false).data;
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let x =
        ArrayD::from_shape_vec(IxDyn(&[3, 2, 6, 6]), randn(3 * 2 * 36, &mut rng).to_vec()).unwrap();
    Case {
        g,
        theta,
        x,
        y: vec![1, 0, 2],
        mode: Mode::Eval,
    }
    .check("imported ops");
}

#[test]
fn f32_agrees_with_f64() {
    let c = zoo_case(
        "resnet-cifar:depth=8,width=4,in_channels=1,input_size=8,num_classes=10",
        6,
        Mode::Eval,
        11,
    );
    let theta32 = c.theta.mapv(|v| v as f32);
    let x32 = c.x.mapv(|v| v as f32);
    let l64 = c.g.loss_batch(c.theta.view(), &c.x, &c.y, Mode::Eval).sum;
    let l32 = c.g.loss_batch(theta32.view(), &x32, &c.y, Mode::Eval).sum;
    assert_close("f32 loss vs f64", l32, l64, tol(Dtype::F32, Quantity::Loss));
}
