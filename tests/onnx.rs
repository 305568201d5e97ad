//! Networks exported by PyTorch as ONNX (fixtures/onnx, made by
//! fixtures/generate/export_onnx.py): loss, gradient and H·v equal PyTorch's at the
//! reference tolerances (f64 ≤ 1e-9, f32 ≤ 1e-4 relative); an ONNX model and the same
//! model from safetensors give bitwise equal results; bad files fail with a clear message.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{
    assert_bad_input, assert_close, assert_success, ok, root, run, tol, Dtype, Quantity, Tensors,
};
use losscape::engine::{Graph, Mode, Op, Scalar};
use losscape::model::onnx::proto;
use losscape::model::{Arch, Model};
use ndarray::{Array1, ArrayD, IxDyn};
use prost::Message;

fn onnx(name: &str) -> PathBuf {
    root().join("fixtures/onnx").join(format!("{name}.onnx"))
}

fn read(path: &Path) -> Tensors {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    common::decode_f64(&bytes, path)
}

/// A parameter-shaped vector from `prefix.<name>` entries (zero where absent).
fn vector(f: &Tensors, g: &Graph, prefix: &str) -> Array1<f64> {
    let mut out = Array1::zeros(g.layout.len());
    for t in g.layout.tensors() {
        if let Some((shape, v)) = f.get(&format!("{prefix}.{}", t.name)) {
            assert_eq!(shape, &t.shape, "{prefix}.{}", t.name);
            out.slice_mut(ndarray::s![t.range()])
                .assign(&Array1::from(v.clone()));
        } else {
            assert!(
                !t.role.is_trainable() || prefix == "param" || prefix == "v",
                "reference lacks {prefix}.{}",
                t.name
            );
        }
    }
    out
}

fn batch(f: &Tensors) -> (ArrayD<f64>, Vec<usize>) {
    let (xs, xv) = &f["x"];
    (
        ArrayD::from_shape_vec(IxDyn(xs), xv.clone()).unwrap(),
        f["y"].1.iter().map(|&v| v as usize).collect(),
    )
}

/// Loss, gradient and H·v (means over the batch) in precision T.
fn compute<T: Scalar>(m: &Model, f: &Tensors) -> (f64, Array1<f64>, Array1<f64>) {
    let g = &m.graph;
    let theta = m.theta.data.mapv(|v| T::from_f(v as f64));
    let v = vector(f, g, "v").mapv(T::from_f);
    let (x, y) = batch(f);
    let x = x.mapv(T::from_f);
    let n = y.len() as f64;
    let mut grad = Array1::<T>::zeros(theta.len());
    let lv = g.grad_batch(theta.view(), &x, &y, Mode::Eval, grad.view_mut());
    let mut hv = Array1::<T>::zeros(theta.len());
    g.hvp_batch(theta.view(), v.view(), &x, &y, Mode::Eval, hv.view_mut());
    (
        lv.sum / n,
        grad.mapv(|v| v.as_f64() / n),
        hv.mapv(|v| v.as_f64() / n),
    )
}

/// (ONNX fixture, reference file): the zoo models carry the weights of a
/// fixtures/reference file; the new ones have their own reference next to them.
const CASES: &[(&str, &str)] = &[
    ("resnet8", "reference/resnet8-trained"),
    ("resnet8-legacy", "reference/resnet8-trained"),
    ("resnet8-noshort", "reference/resnet8-noshort-trained"),
    ("resnet20", "reference/resnet20-trained"),
    ("mlp-bn", "reference/mlp-bn-init"),
    ("mlp-plain", "reference/mlp-plain-trained"),
    ("vgg-tiny", "onnx/vgg-tiny.ref"),
    ("resnet8-option-a", "onnx/resnet8-option-a.ref"),
];

#[test]
fn onnx_exports_match_pytorch_in_f64_and_f32() {
    for (name, reference) in CASES {
        let m = Model::load(&onnx(name), None).unwrap_or_else(|e| panic!("{name}: {e}"));
        let f = read(&root().join(format!("fixtures/{reference}.safetensors")));
        // the weights are the reference's, exactly, every tensor accounted for
        let want = vector(&f, &m.graph, "param");
        let got = m.theta.data.mapv(|v| v as f64);
        assert_eq!(got, want, "{name}: weights differ from {reference}");
        for (prec, dtype) in [("f64", Dtype::F64), ("f32", Dtype::F32)] {
            let (loss, grad, hv) = if prec == "f64" {
                compute::<f64>(&m, &f)
            } else {
                compute::<f32>(&m, &f)
            };
            let wl = f[&format!("{prec}.loss")].1[0];
            let label = format!("{name} [{prec}]");
            let el = assert_close(
                &format!("{label}: loss"),
                loss,
                wl,
                tol(dtype, Quantity::Loss),
            )
            .relative();
            // the larger reference files hold f32 loss only
            if !f.contains_key(&format!("{prec}.grad.{}", m.graph.layout.tensor(0).name)) {
                eprintln!("{name} [{prec}]: loss {el:.2e} (relative)");
                continue;
            }
            let eg = assert_close(
                &format!("{label}: gradient"),
                &grad,
                vector(&f, &m.graph, &format!("{prec}.grad")),
                tol(dtype, Quantity::Gradient),
            )
            .relative();
            let eh = assert_close(
                &format!("{label}: H·v"),
                &hv,
                vector(&f, &m.graph, &format!("{prec}.hv")),
                tol(dtype, Quantity::Hvp),
            )
            .relative();
            eprintln!("{label}: loss {el:.2e}, gradient {eg:.2e}, H·v {eh:.2e} (relative)");
        }
    }
}

#[test]
fn names_order_and_description() {
    let m = Model::load(&onnx("resnet8-legacy"), None).unwrap();
    let zoo: Arch = "resnet-cifar:depth=8,width=8,in_channels=1,input_size=8"
        .parse()
        .unwrap();
    // both exporters (BN kept): the state_dict names and order exactly
    assert_eq!(*m.graph.layout, *zoo.build().layout);
    let m2 = Model::load(&onnx("resnet8"), None).unwrap();
    assert_eq!(*m2.graph.layout, *zoo.build().layout);
    let Arch::Onnx(a) = &m.arch else {
        panic!("not an ONNX arch")
    };
    assert!(a.residual && !a.bn_folded && a.depth == 10);
    let m = Model::load(&onnx("resnet8-option-a"), None).unwrap();
    for op in ["slice", "pad", "add", "batchnorm"] {
        assert!(m.graph.nodes.iter().any(|n| n.op.kind() == op), "{op}");
    }
    let m = Model::load(&onnx("vgg-tiny"), None).unwrap();
    assert!(m.graph.nodes.iter().any(|n| matches!(n.op, Op::Affine(_))));
    assert!(m.graph.nodes.iter().any(|n| matches!(n.op, Op::MaxPool(_))));
    assert!(m.metadata.values().any(|v| v.contains("LogSoftmax")));
    // a fresh initialization from the layout alone (probe's He init)
    let fresh = m.fresh(3, true);
    assert_eq!(fresh.theta.data.len(), m.theta.data.len());
    assert_ne!(fresh.theta.data, m.theta.data);
}

/// BN folded into the convolutions: the same function, another parameterization.
#[test]
fn folded_batchnorm_loads_and_says_so() {
    let m = Model::load(&onnx("resnet8-folded"), None).unwrap();
    let Arch::Onnx(a) = &m.arch else {
        panic!("not an ONNX arch")
    };
    assert!(a.bn_folded, "{a:?}");
    assert!(a.notes[0].contains("folded"));
    assert!(!m.graph.nodes.iter().any(|n| n.op.kind() == "batchnorm"));
    assert!(m.graph.layout.get("onnx::Conv_89").is_some());
    let f = read(&root().join("fixtures/reference/resnet8-trained.safetensors"));
    let (loss, _, _) = compute::<f64>(&m, &f);
    let want = f["f64.loss"].1[0];
    // folding rounds the weights to f32 once more
    let c = assert_close(
        "resnet8-folded: loss",
        loss,
        want,
        tol(Dtype::F64, Quantity::FoldedOnnxLoss),
    );
    eprintln!(
        "resnet8-folded: loss relative difference {:.2e}",
        c.relative()
    );
    // the jobs that act on the parameters warn, with the export that keeps BN
    let dir = common::tempdir();
    let out = dir.path().join("h.h5");
    let o = assert_success(
        "hessian",
        run(&[
            "hessian",
            "-m",
            onnx("resnet8-folded").to_str().unwrap(),
            "-d",
            "digits",
            "--samples",
            "32",
            "--top-k",
            "1",
            "--out",
            out.to_str().unwrap(),
        ]),
    );
    let err = common::stderr(&o);
    assert!(
        err.contains("warning: the exporter folded BatchNorm")
            && err.contains("do_constant_folding=False"),
        "{err}"
    );
}

/// The same network from ONNX and from safetensors computes bit for bit the same.
#[test]
fn onnx_and_safetensors_agree_bitwise() {
    let dir = common::tempdir();
    for (name, arch) in [
        (
            "resnet8-legacy",
            "resnet-cifar:depth=8,width=8,in_channels=1,input_size=8",
        ),
        (
            "resnet8",
            "resnet-cifar:depth=8,width=8,in_channels=1,input_size=8",
        ),
        (
            "mlp-bn",
            "mlp:in_features=40,depth=2,width=32,residual=true,batchnorm=true",
        ),
    ] {
        let m = Model::load(&onnx(name), None).unwrap();
        let mut z = Model::init(arch.parse().unwrap(), 0, false);
        for (i, t) in z.graph.layout.clone().tensors().iter().enumerate() {
            z.theta
                .tensor_mut(i)
                .assign(&m.theta.by_name(&t.name).unwrap());
        }
        let p = dir.path().join(format!("{name}.safetensors"));
        z.save(&p).unwrap();
        let z = Model::load(&p, None).unwrap();
        let reference = if name == "mlp-bn" {
            "mlp-bn-init"
        } else {
            "resnet8-trained"
        };
        let f = read(&root().join(format!("fixtures/reference/{reference}.safetensors")));
        let (lo, go, ho) = compute::<f32>(&m, &f);
        let (lz, gz, hz) = compute::<f32>(&z, &f);
        assert_eq!(lo.to_bits(), lz.to_bits(), "{name}: loss");
        for (t, spec) in m.graph.layout.tensors().iter().enumerate() {
            let zi = z.graph.layout.index_of(&spec.name).unwrap();
            let zs = z.graph.layout.tensor(zi);
            assert_eq!(
                go.slice(ndarray::s![spec.range()]),
                gz.slice(ndarray::s![zs.range()]),
                "{name}: gradient of {} (tensor {t})",
                spec.name
            );
            assert_eq!(
                ho.slice(ndarray::s![spec.range()]),
                hz.slice(ndarray::s![zs.range()]),
                "{name}: H·v of {}",
                spec.name
            );
        }
    }
}

// ---- bad input, through the binary ----

fn info(p: &Path) -> Output {
    run(&["info", p.to_str().unwrap()])
}

fn dim(v: i64) -> proto::Dimension {
    proto::Dimension {
        dim_value: Some(v),
        dim_param: None,
    }
}

fn value_info(name: &str, dims: Vec<proto::Dimension>) -> proto::ValueInfoProto {
    proto::ValueInfoProto {
        name: name.into(),
        r#type: Some(proto::TypeProto {
            tensor_type: Some(proto::TensorTypeProto {
                elem_type: proto::dtype::FLOAT,
                shape: Some(proto::TensorShapeProto { dim: dims }),
            }),
        }),
    }
}

/// x [N, 4] → Gemm(fc.weight [3, 4], transB) → `op` → y.
fn tiny_model(op: &str, input_dims: Vec<proto::Dimension>, weight: proto::TensorProto) -> Vec<u8> {
    let node = |op: &str, i: Vec<&str>, o: &str| proto::NodeProto {
        input: i.into_iter().map(String::from).collect(),
        output: vec![o.into()],
        name: format!("the_{op}"),
        op_type: op.into(),
        attribute: if op == "Gemm" {
            vec![proto::AttributeProto {
                name: "transB".into(),
                i: 1,
                r#type: 2,
                ..Default::default()
            }]
        } else {
            vec![]
        },
        ..Default::default()
    };
    proto::ModelProto {
        ir_version: 9,
        opset_import: vec![proto::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(proto::GraphProto {
            node: vec![
                node("Gemm", vec!["x", "fc.weight"], "h"),
                node(op, vec!["h"], "y"),
            ],
            initializer: vec![weight],
            input: vec![value_info("x", input_dims)],
            output: vec![value_info("y", vec![dim(1), dim(3)])],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Every unsupported op of a file is listed in one error: op, count, nodes.
#[test]
fn every_unsupported_op_is_listed_at_once() {
    let node = |op: &str, i: &str, o: &str, name: &str| proto::NodeProto {
        input: vec![i.into()],
        output: vec![o.into()],
        name: name.into(),
        op_type: op.into(),
        ..Default::default()
    };
    let m = proto::ModelProto {
        ir_version: 9,
        opset_import: vec![proto::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(proto::GraphProto {
            node: vec![
                node("Hardmax", "x", "a", "h1"),
                node("Celu", "a", "b", "c1"),
                node("Hardmax", "b", "c", "h2"),
                node("Tanh", "c", "y", "t1"),
            ],
            input: vec![value_info("x", vec![dim(1), dim(4)])],
            output: vec![value_info("y", vec![dim(1), dim(4)])],
            ..Default::default()
        }),
        ..Default::default()
    };
    let dir = common::tempdir();
    let p = dir.path().join("many.onnx");
    std::fs::write(&p, m.encode_to_vec()).unwrap();
    let msg = assert_bad_input(
        &info(&p),
        &[
            "3 node(s) cannot be imported",
            "Hardmax ×2 (h1, h2)",
            "Celu ×1 (c1)",
        ],
    );
    assert!(!msg.contains("t1"), "Tanh is supported: {msg}");
}

fn weight(dims: Vec<i64>, raw: usize) -> proto::TensorProto {
    proto::TensorProto {
        name: "fc.weight".into(),
        dims,
        data_type: proto::dtype::FLOAT,
        raw_data: vec![0; raw],
        ..Default::default()
    }
}

#[test]
fn a_handmade_model_loads_and_evaluates() {
    let dir = common::tempdir();
    let p = dir.path().join("ok.onnx");
    std::fs::write(
        &p,
        tiny_model("Identity", vec![dim(1), dim(4)], weight(vec![3, 4], 48)),
    )
    .unwrap();
    let o = assert_success("info", info(&p));
    assert!(common::stdout(&o).contains("fc.weight"));
}

#[test]
fn bad_onnx_files_fail_clearly() {
    let dir = common::tempdir();
    let d = dir.path();
    // truncated
    let bytes = std::fs::read(onnx("resnet8-legacy")).unwrap();
    let p = d.join("truncated.onnx");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    assert_bad_input(&info(&p), &["truncated.onnx", "truncated"]);
    // not protobuf at all
    let p = d.join("garbage.onnx");
    std::fs::write(&p, b"\xff\xff\xff\xff this is not a model").unwrap();
    assert_bad_input(&info(&p), &["garbage.onnx", "not a valid ONNX"]);
    // external data file missing
    let p = d.join("resnet8.onnx");
    std::fs::copy(onnx("resnet8"), &p).unwrap();
    assert_bad_input(&info(&p), &["resnet8.onnx.data", "external data"]);
    // external data file truncated
    let data = std::fs::read(root().join("fixtures/onnx/resnet8.onnx.data")).unwrap();
    std::fs::write(d.join("resnet8.onnx.data"), &data[..data.len() / 3]).unwrap();
    assert_bad_input(&info(&p), &["beyond the end", "truncated"]);
    // unsupported op, named with its node
    let p = d.join("hardmax.onnx");
    std::fs::write(
        &p,
        tiny_model("Hardmax", vec![dim(1), dim(4)], weight(vec![3, 4], 48)),
    )
    .unwrap();
    assert_bad_input(
        &info(&p),
        &["the_Hardmax", "Hardmax ×1", "no rule for this op"],
    );
    // a dynamic feature dimension
    let p = d.join("dynamic.onnx");
    let dynamic = proto::Dimension {
        dim_value: None,
        dim_param: Some("features".into()),
    };
    std::fs::write(
        &p,
        tiny_model("Identity", vec![dim(1), dynamic], weight(vec![3, 4], 48)),
    )
    .unwrap();
    assert_bad_input(&info(&p), &["dimension 1 is dynamic", "features"]);
    // declared sizes the bytes cannot back: no allocation, a message
    for (name, dims) in [
        ("huge", vec![1 << 40, 1 << 20]),
        ("overflow", vec![i64::MAX, i64::MAX]),
        ("negative", vec![-3, 4]),
    ] {
        let p = d.join(format!("{name}.onnx"));
        std::fs::write(
            &p,
            tiny_model("Identity", vec![dim(1), dim(4)], weight(dims, 48)),
        )
        .unwrap();
        assert_bad_input(&info(&p), &["fc.weight"]);
    }
    // a zoo --arch does not apply
    let o = run(&[
        "info",
        onnx("vgg-tiny").to_str().unwrap(),
        "--arch",
        "mlp:in_features=40,depth=1,width=8",
    ]);
    assert_bad_input(&o, &["--arch does not apply"]);
}

#[test]
fn commands_take_onnx_models() {
    let m = onnx("vgg-tiny");
    ok(&[
        "eval",
        "--model",
        m.to_str().unwrap(),
        "--data",
        "digits",
        "--samples",
        "64",
    ]);
    ok(&[
        "probe",
        "--model",
        m.to_str().unwrap(),
        "--data",
        "digits",
        "--samples",
        "32",
    ]);
}

fn floats(name: &str, dims: Vec<i64>, v: Vec<f32>) -> proto::TensorProto {
    proto::TensorProto {
        name: name.into(),
        dims,
        data_type: proto::dtype::FLOAT,
        float_data: v,
        ..Default::default()
    }
}

/// MatMul + Add(initializer) becomes a linear layer with bias (weight held as [out, in]);
/// Concat of computed values, Sub by a constant and a Softmax output are read as ONNX means.
#[test]
fn matmul_bias_concat_affine_softmax() {
    let node =
        |op: &str, i: &[&str], o: &str, attribute: Vec<proto::AttributeProto>| proto::NodeProto {
            input: i.iter().map(|s| s.to_string()).collect(),
            output: vec![o.into()],
            name: format!("n_{o}"),
            op_type: op.into(),
            attribute,
            ..Default::default()
        };
    let int_attr = |name: &str, i: i64| proto::AttributeProto {
        name: name.into(),
        i,
        r#type: 2,
        ..Default::default()
    };
    let w: Vec<f32> = (0..12).map(|i| i as f32 * 0.1 - 0.5).collect(); // [4, 3]
    let b = vec![0.1f32, -0.2, 0.3];
    let w2: Vec<f32> = (0..12).map(|i| (i as f32 * 0.37).sin()).collect(); // [2, 6]
    let model = proto::ModelProto {
        ir_version: 9,
        opset_import: vec![proto::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(proto::GraphProto {
            node: vec![
                node("Sub", &["x", "mean"], "xn", vec![]),
                node("MatMul", &["xn", "fc.weight"], "m", vec![]),
                node("Add", &["m", "fc.bias"], "h", vec![]),
                node("Relu", &["h"], "r", vec![]),
                node("Concat", &["h", "r"], "c", vec![int_attr("axis", 1)]),
                node(
                    "Gemm",
                    &["c", "out.weight"],
                    "z",
                    vec![int_attr("transB", 1)],
                ),
                node("Softmax", &["z"], "y", vec![int_attr("axis", 1)]),
            ],
            initializer: vec![
                floats("mean", vec![1], vec![0.25]),
                floats("fc.weight", vec![4, 3], w.clone()),
                floats("fc.bias", vec![3], b.clone()),
                floats("out.weight", vec![2, 6], w2.clone()),
            ],
            input: vec![value_info("x", vec![dim(1), dim(4)])],
            output: vec![value_info("y", vec![dim(1), dim(2)])],
            ..Default::default()
        }),
        ..Default::default()
    };
    let dir = common::tempdir();
    let p = dir.path().join("mm.onnx");
    std::fs::write(&p, model.encode_to_vec()).unwrap();
    let m = Model::load(&p, None).unwrap();
    assert_eq!(m.graph.layout.get("fc.weight").unwrap().shape, vec![3, 4]);
    assert!(m.graph.layout.get("fc.bias").is_some());
    assert!(m.metadata.values().any(|v| v.contains("Softmax")));
    let x = [0.5f64, -1.0, 2.0, 0.0];
    let theta = m.theta.data.mapv(|v| v as f64);
    let xa = ArrayD::from_shape_vec(IxDyn(&[1, 4]), x.to_vec()).unwrap();
    let z = m.graph.logits(theta.view(), &xa, Mode::Eval);
    // by hand
    let h: Vec<f64> = (0..3)
        .map(|j| {
            b[j] as f64
                + (0..4)
                    .map(|i| (x[i] - 0.25) * w[i * 3 + j] as f64)
                    .sum::<f64>()
        })
        .collect();
    let c: Vec<f64> = h
        .iter()
        .copied()
        .chain(h.iter().map(|v| v.max(0.0)))
        .collect();
    for k in 0..2 {
        let want: f64 = (0..6).map(|i| c[i] * w2[k * 6 + i] as f64).sum();
        assert!(
            (z[[0, k]] - want).abs() < 1e-12,
            "logit {k}: {} vs {want}",
            z[[0, k]]
        );
    }
}

/// Truncations and byte flips of a real export: an error or a model, never a panic.
#[test]
fn damaged_files_never_panic() {
    use rand::{Rng, SeedableRng};
    let bytes = std::fs::read(onnx("resnet8-option-a")).unwrap();
    let dir = common::tempdir();
    std::fs::copy(
        root().join("fixtures/onnx/resnet8-option-a.onnx.data"),
        dir.path().join("resnet8-option-a.onnx.data"),
    )
    .unwrap();
    let p = dir.path().join("resnet8-option-a.onnx");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let (mut ok, mut err) = (0, 0);
    for i in 0..300 {
        let mut b = bytes.clone();
        if i % 3 == 0 {
            b.truncate(rng.random_range(0..bytes.len()));
        } else {
            for _ in 0..rng.random_range(1..8) {
                let k = rng.random_range(0..b.len());
                b[k] = rng.random();
            }
        }
        std::fs::write(&p, &b).unwrap();
        match std::panic::catch_unwind(|| Model::load(&p, None)) {
            Ok(Ok(m)) => {
                // whatever survived must evaluate
                let x = ArrayD::<f32>::zeros(IxDyn(&[2, 1, 8, 8]));
                if m.graph.input_shape == [1, 8, 8] {
                    let _ = std::panic::catch_unwind(|| {
                        m.graph.logits(m.theta.data.view(), &x, Mode::Eval)
                    })
                    .map_err(|_| panic!("damaged file {i}: loaded but evaluation panicked"));
                }
                ok += 1
            }
            Ok(Err(_)) => err += 1,
            Err(_) => panic!("damaged file {i}: the loader panicked"),
        }
    }
    eprintln!("damaged files: {ok} loaded, {err} refused");
    assert!(err > 0);
}
