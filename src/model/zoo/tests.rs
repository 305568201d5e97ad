use super::*;

#[test]
fn resnet_parameter_counts_match_the_paper() {
    // He et al. 2016, Table 6: ResNet-20 0.27M, ResNet-56 0.85M, ResNet-110 1.7M (projection
    // shortcuts add a few thousand over option A).
    let count = |d, s| {
        count_params(&Arch::ResnetCifar(ResnetCifar {
            depth: d,
            width: 16,
            shortcut: s,
            in_channels: 3,
            input_size: 32,
            num_classes: 10,
        }))
    };
    assert_eq!(count(20, Shortcut::Projection), 272_474);
    assert_eq!(count(56, Shortcut::Projection), 855_770);
    assert_eq!(count(20, Shortcut::None), 269_722);
}

/// The O(1) lower bounds never exceed the built layout (exact for MLPs).
#[test]
fn min_size_bounds_the_layout() {
    for spec in [
        "resnet-cifar:depth=8",
        "resnet-cifar:depth=20,shortcut=none,in_channels=1,input_size=8",
        "resnet-cifar:depth=14,width=3,num_classes=7",
        "mlp:in_features=40,depth=3,width=8",
        "mlp:in_features=5,depth=2,width=3,batchnorm=true,residual=true,num_classes=4",
        "vit:input_size=8,patch=2,depth=2,width=8,heads=2",
        "vit:input_size=8,patch=2,depth=3,width=8,heads=2,norm=post,residual=false,pool=mean",
    ] {
        let a: Arch = spec.parse().unwrap();
        let g = a.build();
        let (t, s) = a.min_size().unwrap();
        let tensors = g.layout.tensors().len() as u128;
        let scalars: u128 = g
            .layout
            .tensors()
            .iter()
            .map(|t| t.shape.iter().product::<usize>() as u128)
            .sum();
        assert!(
            t <= tensors && s <= scalars,
            "{spec}: bound ({t}, {s}) vs ({tensors}, {scalars})"
        );
        if spec.starts_with("mlp") {
            assert_eq!((t, s), (tensors, scalars), "{spec}");
        }
    }
    // sizes far beyond any file saturate instead of overflowing
    let huge: Arch = "mlp:in_features=4000000000,depth=600000000,width=4000000000"
        .parse()
        .unwrap();
    assert!(huge.min_size().unwrap().1 > 1u128 << 90);
}

#[test]
fn names_follow_pytorch() {
    let g: Graph = "resnet-cifar:depth=8".parse::<Arch>().unwrap().build();
    let names: Vec<&str> = g.layout.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        &names[..6],
        &[
            "conv1.weight",
            "bn1.weight",
            "bn1.bias",
            "bn1.running_mean",
            "bn1.running_var",
            "layer1.0.conv1.weight"
        ]
    );
    assert!(names.contains(&"layer2.0.shortcut.0.weight"));
    assert!(names.contains(&"layer3.0.shortcut.1.running_var"));
    assert_eq!(names.last(), Some(&"linear.bias"));
    g.infer_shapes(&[3, 32, 32], 2).unwrap();
}

#[test]
fn arch_parses_both_forms() {
    let a: Arch = "mlp:in_features=40,depth=2,width=8,residual=true"
        .parse()
        .unwrap();
    let b: Arch = serde_json::to_string(&a).unwrap().parse().unwrap();
    assert_eq!(a, b);
    assert!("resnet-cifar:depth=21".parse::<Arch>().is_err());
    assert!("vgg:depth=16".parse::<Arch>().is_err());
}

#[test]
fn vit_matches_the_pytorch_twin_in_names_and_counts() {
    // counts from fixtures/generate/zoo.py: count_params(build(vit_arch(...)))
    let a: Arch = "vit:input_size=8,patch=2,depth=2,width=32,heads=4"
        .parse()
        .unwrap();
    assert_eq!(count_params(&a), 26_538);
    let b: Arch =
        "vit:input_size=8,patch=2,depth=2,width=32,heads=4,norm=post,residual=false,pool=mean"
            .parse()
            .unwrap();
    assert_eq!(count_params(&b), 26_410);
    let c: Arch = "vit:input=seq,input_size=40,patch=4,depth=2,width=32,heads=4"
        .parse()
        .unwrap();
    assert_eq!(count_params(&c), 26_346);
    assert_eq!(c.input_shape(), vec![40]);
    let g = a.build();
    let names: Vec<&str> = g.layout.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        &names[..12],
        &[
            "cls_token",
            "pos_embed",
            "patch_embed.proj.weight",
            "patch_embed.proj.bias",
            "blocks.0.norm1.weight",
            "blocks.0.norm1.bias",
            "blocks.0.attn.qkv.weight",
            "blocks.0.attn.qkv.bias",
            "blocks.0.attn.proj.weight",
            "blocks.0.attn.proj.bias",
            "blocks.0.norm2.weight",
            "blocks.0.norm2.bias",
        ]
    );
    assert_eq!(
        &names[names.len() - 4..],
        &["norm.weight", "norm.bias", "head.weight", "head.bias"]
    );
    let taps: Vec<String> = g.taps().into_iter().map(|(n, _)| n).collect();
    assert_eq!(taps, ["embed", "blocks.0", "blocks.1"]);
    g.infer_shapes(&[1, 8, 8], 3).unwrap();
    // post-LN: norm1 still registered before attn, no final norm
    let names: Vec<String> = b
        .build()
        .layout
        .tensors()
        .iter()
        .map(|t| t.name.clone())
        .collect();
    assert_eq!(names[3], "blocks.0.norm1.weight");
    assert!(!names.iter().any(|n| n.starts_with("norm.")));
    assert!(!b.is_residual() && a.is_residual());
    let b2: Arch = serde_json::to_string(&b).unwrap().parse().unwrap();
    assert_eq!(b, b2);
}

#[test]
fn vit_rejects_impossible_shapes() {
    for bad in [
        "vit:input_size=8,patch=3,depth=2,width=32,heads=4",
        "vit:input_size=8,patch=2,depth=2,width=30,heads=4",
        "vit:input_size=8,patch=2,depth=0,width=32,heads=4",
        "vit:input=seq,in_channels=3,input_size=40,patch=4,depth=1,width=8,heads=2",
        "vit:input_size=8,patch=2,depth=2,width=32,heads=4,norm=middle",
    ] {
        assert!(bad.parse::<Arch>().is_err(), "{bad}");
    }
}
