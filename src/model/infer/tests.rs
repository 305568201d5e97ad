use super::*;

fn names(arch: &str) -> Vec<(String, Vec<usize>)> {
    let g = arch.parse::<Arch>().unwrap().build();
    g.layout
        .tensors()
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect()
}

#[test]
fn resnet_projection_is_inferred() {
    let inf = infer(
        &names("resnet-cifar:depth=20,width=8,in_channels=1,num_classes=7"),
        &[],
    )
    .unwrap();
    let Arch::ResnetCifar(r) = inf.arch else {
        panic!()
    };
    assert_eq!(
        (r.depth, r.width, r.in_channels, r.num_classes, r.shortcut),
        (20, 8, 1, 7, Shortcut::Projection)
    );
    assert!(inf.input_from_data);
}

#[test]
fn parameter_free_shortcuts_need_a_hint() {
    let t = names("resnet-cifar:depth=14,shortcut=option-a");
    assert_eq!(t, names("resnet-cifar:depth=14,shortcut=none"));
    let e = infer(&t, &[]).unwrap_err().to_string();
    assert!(
        e.contains("shortcut=option-a") && e.contains("shortcut=none"),
        "{e}"
    );
    let a = infer(&t, &["resnet14_optionA.pt".into()]).unwrap();
    assert!(matches!(
        a.arch,
        Arch::ResnetCifar(ResnetCifar {
            shortcut: Shortcut::OptionA,
            depth: 14,
            ..
        })
    ));
    let n = infer(&t, &["arch=resnet14_noshort".into()]).unwrap();
    assert!(matches!(
        n.arch,
        Arch::ResnetCifar(ResnetCifar {
            shortcut: Shortcut::None,
            ..
        })
    ));
    assert!(n.reasons.iter().any(|r| r.contains("noshort")));
}

#[test]
fn mlp_is_inferred_and_inconsistent_stages_are_refused() {
    let t = names("mlp:in_features=40,depth=3,width=16,residual=true,batchnorm=true,num_classes=5");
    let inf = infer(&t, &["mlp-res.pt".into()]).unwrap();
    assert_eq!(
        inf.arch,
        "mlp:in_features=40,depth=3,width=16,residual=true,batchnorm=true,num_classes=5"
            .parse()
            .unwrap()
    );
    assert!(matches!(infer(&t, &[]), Err(InferError::Ambiguous { .. })));
    let mut r = names("resnet-cifar:depth=20");
    r.retain(|(n, _)| !n.starts_with("layer3.2."));
    assert!(matches!(
        infer(&r, &[]),
        Err(InferError::Inconsistent { .. })
    ));
    assert!(matches!(
        infer(&[("w".into(), vec![3])], &[]),
        Err(InferError::Unknown { .. })
    ));
}

/// A bundled ViT's tensors and its metadata strings without `losscape_arch` (as
/// hints: `key=value`), and the architecture it was trained with.
/// Tensor names and shapes, as [`infer`] takes them.
type Shapes = Vec<(String, Vec<usize>)>;

fn bundled_vit(file: &str) -> (Shapes, Vec<String>, Arch) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/models")
        .join(file);
    let bytes = std::fs::read(&path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap_or_default();
    let trained: Arch = meta
        .remove(crate::model::zoo::ARCH_METADATA_KEY)
        .unwrap()
        .parse()
        .unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st
        .iter()
        .map(|(n, t)| (n.to_string(), t.shape().to_vec()))
        .collect();
    let hints = meta.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    (tensors, hints, trained)
}

fn candidates(e: InferError) -> Vec<Arch> {
    match e {
        InferError::Ambiguous { candidates, .. } => candidates
            .iter()
            .map(|c| c.parse::<Arch>().unwrap())
            .collect(),
        e => panic!("not ambiguous: {e}"),
    }
}

#[test]
fn every_bundled_vit_is_inferred_with_a_hint_and_listed_without() {
    for depth in [2, 8] {
        for kind in ["preln", "postln", "preln-nores"] {
            let file = format!("vit{depth}-{kind}-digits.safetensors");
            let (t, meta, trained) = bundled_vit(&file);
            let Arch::Vit(v) = &trained else { panic!() };
            // the file name with the heads and the skips named
            let named = format!(
                "vit{depth}-{kind}-h{}{}-digits.safetensors",
                v.heads,
                if v.residual { "-res" } else { "" }
            );
            let hints = [meta.clone(), vec![named]].concat();
            let inf = infer(&t, &hints).unwrap();
            assert_eq!(inf.arch, trained, "{file}");
            assert!(!inf.input_from_data);
            assert!(
                inf.reasons.iter().any(|r| r.contains("says 4 heads")),
                "{:?}",
                inf.reasons
            );
            // the same said by a stored config string instead of the name
            let config = format!(
                r#"config={{"num_heads": {}, "residual": {}}}"#,
                v.heads, v.residual
            );
            let inf = infer(&t, &[meta.clone(), vec![config]].concat()).unwrap();
            assert_eq!(inf.arch, trained, "{file}");
            // the bundled name alone decides the skips only for -nores; no name at
            // all decides neither: the trained network is one of the candidates
            let listed =
                candidates(infer(&t, &[meta.clone(), vec![file.clone()]].concat()).unwrap_err());
            assert_eq!(listed.len(), if v.residual { 6 } else { 3 }, "{file}");
            assert!(listed.contains(&trained), "{file}");
            let listed = candidates(infer(&t, &meta).unwrap_err());
            assert_eq!(listed.len(), 6, "{file}");
            assert!(listed.contains(&trained), "{file}");
        }
    }
}

#[test]
fn vit_variants_are_inferred_and_the_heads_candidates_are_divisors() {
    for arch in [
        "vit:input=seq,input_size=40,patch=4,depth=3,width=16,heads=2,mlp_ratio=2,norm=post,pool=mean,num_classes=10",
        "vit:in_channels=3,input_size=32,patch=8,depth=1,width=24,heads=3,mlp_ratio=3,residual=false,num_classes=100",
        "vit:input_size=12,patch=3,depth=2,width=8,heads=1,pool=mean,num_classes=2",
    ] {
        let want: Arch = arch.parse().unwrap();
        let Arch::Vit(v) = &want else { panic!() };
        let hint = format!("heads={},residual={}", v.heads, v.residual);
        assert_eq!(infer(&names(arch), &[hint]).unwrap().arch, want, "{arch}");
    }
    // width 64, nothing said: heads 1, 2, 4, 8 (head dim 8..=128) × skips or not
    let e = infer(
        &names("vit:input_size=8,patch=2,depth=2,width=64,heads=4"),
        &[],
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("any number of heads") && msg.contains("same tensors"),
        "{msg}"
    );
    let listed = candidates(e);
    let heads: Vec<(usize, bool)> = listed
        .iter()
        .map(|a| match a {
            Arch::Vit(v) => (v.heads, v.residual),
            _ => panic!(),
        })
        .collect();
    assert_eq!(
        heads,
        [
            (1, true),
            (1, false),
            (2, true),
            (2, false),
            (4, true),
            (4, false),
            (8, true),
            (8, false)
        ]
    );
    // hints naming two head counts: just those
    let t = names("vit:input_size=8,patch=2,depth=1,width=32,heads=2");
    let listed =
        candidates(infer(&t, &["vit_h2.pt".into(), "num_heads=4 nores".into()]).unwrap_err());
    assert_eq!(listed.len(), 2);
}

#[test]
fn inconsistent_vits_name_the_tensor() {
    let arch = "vit:input_size=8,patch=2,depth=3,width=32,heads=4";
    let hints = ["heads=4 residual".to_string()];
    let expect = |t: &[(String, Vec<usize>)], hints: &[String], needle: &str| match infer(t, hints)
    {
        Err(InferError::Inconsistent { family: "vit", why }) => {
            assert!(why.contains(needle), "{needle}: {why}")
        }
        other => panic!("{needle}: {other:?}"),
    };
    let with = |name: &str, shape: Vec<usize>| {
        let mut t = names(arch);
        t.iter_mut().find(|(n, _)| n == name).unwrap().1 = shape;
        t
    };
    expect(
        &with("blocks.1.mlp.fc2.weight", vec![32, 96]),
        &hints,
        "blocks.1.mlp.fc2.weight",
    );
    expect(&with("pos_embed", vec![1, 14, 32]), &hints, "pos_embed");
    expect(
        &with("blocks.0.mlp.fc1.weight", vec![100, 32]),
        &hints,
        "blocks.0.mlp.fc1.weight",
    );
    expect(&with("head.weight", vec![10, 16]), &hints, "head.weight");
    expect(&with("cls_token", vec![1, 2, 32]), &hints, "cls_token");
    expect(
        &with("patch_embed.proj.weight", vec![32, 1, 2, 3]),
        &hints,
        "patch_embed.proj.weight",
    );
    let mut t = names(arch);
    t.retain(|(n, _)| n != "blocks.2.norm2.bias");
    expect(&t, &hints, "blocks.2.norm2.bias");
    let mut t = names(arch);
    t.push(("fc_norm.weight".into(), vec![32]));
    expect(&t, &hints, "fc_norm.weight");
    // a hint that contradicts the tensors: 5 heads of width 32, post-LN with a final norm
    expect(&names(arch), &["heads=5".into()], "5 heads");
    expect(
        &names(arch),
        &["vit-postln-h4-res.pt".into()],
        "norm placement",
    );
}
