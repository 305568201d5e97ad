#!/usr/bin/env bash
# Regenerates the fuzz seeds: small valid files of every format losscape reads, one folder
# per reader of `losscape::fuzz::readers()`. Run from the repository root after
# `cargo build --release` (`make fuzz-seeds` does both). Inputs found failing by the fuzzer
# and fixed are added beside the seeds, named regress-*.
set -euo pipefail
B=${LOSSCAPE:-target/release/losscape}
C=tests/fuzz-corpus
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
mkdir -p $C/{surface,shard,directions,hessian,trajectory,safetensors,checkpoint,onnx,npz,npy,idx,cifar,toml,history}
TINY=mlp:in_features=40,depth=1,width=4
# models: the tiny MLP (the directions and checkpoint seeds belong to it) and a tiny ResNet
$B train --arch $TINY --data mnist1d --samples 32 --epochs 2 --batch-size 16 --quiet \
  --checkpoints $W/ck --out $W/tiny.safetensors > /dev/null
$B train --arch resnet-cifar:depth=8,width=2 --data digits --samples 16 --epochs 1 --batch-size 16 \
  --quiet --out $W/res.safetensors > /dev/null
cp $W/tiny.safetensors $C/safetensors/seed-mlp.safetensors
cp $W/res.safetensors $C/safetensors/seed-resnet8.safetensors
cp $W/tiny.history.csv $C/history/seed.history.csv
# surfaces (2-D and 1-D), a shard, direction files
$B surface --model $W/tiny.safetensors --data mnist1d --samples 8 --x -1:1:3 --y -1:1:2 -q \
  --dir-file $W/dirs2.h5 --out $W/s2.h5 > /dev/null
$B surface --model $W/tiny.safetensors --data mnist1d --samples 8 --x -1:1:3 -q \
  --dir-file $W/dirs1.h5 --out $W/s1.h5 > /dev/null
$B surface --model $W/tiny.safetensors --data mnist1d --samples 8 --x -1:1:3 --y -1:1:2 -q \
  --shard 0/2 --out $W/shard.h5 > /dev/null
cp $W/s2.h5 $C/surface/seed-2d.h5
cp $W/s1.h5 $C/surface/seed-1d.h5
cp $W/shard.h5 $C/shard/base-shard0of2.h5
cp $W/s2.h5 $C/shard/seed-whole.h5
cp $W/dirs2.h5 $C/directions/seed-xy.h5
cp $W/dirs1.h5 $C/directions/seed-x.h5
# Hessian files: eigenvectors + density, and per-block spectra
$B hessian --model $W/tiny.safetensors --data mnist1d --samples 8 --top-k 2 --save-vectors \
  --density --slq-steps 4 --grid-points 16 --trace --probes 2 --out $W/h.h5 > /dev/null
$B hessian --model $W/tiny.safetensors --data mnist1d --samples 8 --top-k 1 --per-block \
  --save-vectors --density --slq-steps 4 --grid-points 16 --out $W/hb.h5 > /dev/null
cp $W/h.h5 $C/hessian/seed-vectors-density.h5
cp $W/hb.h5 $C/hessian/seed-blocks.h5
# a trajectory projection
$B trajectory --checkpoints $W/ck --out $W/pca.h5 --proj $W/proj.h5 > /dev/null
cp $W/proj.h5 $C/trajectory/seed-proj.h5
cp $W/pca.h5 $C/directions/seed-pca.h5
# ONNX: small exports of PyTorch models
cp fixtures/onnx/vgg-tiny.onnx $C/onnx/seed-vgg-tiny.onnx
cp fixtures/onnx/zoo15/ops-mix.legacy.onnx $C/onnx/seed-ops-mix-legacy.onnx
cp fixtures/onnx/zoo15/ops-mix.dynamo.onnx $C/onnx/seed-ops-mix-dynamo.onnx
# analysis specs
cp analyses/mlp-mnist1d.toml $C/toml/seed-mlp-mnist1d.toml
cp analyses/curvature.toml $C/toml/seed-curvature.toml
# data formats, written with the standard library only
python3 - "$C" <<'PY'
import io, struct, sys, zipfile
C = sys.argv[1]
def npy(descr, shape, payload):
    head = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (
        descr, "".join(f"{d}, " for d in shape) if len(shape) == 1 else ", ".join(map(str, shape)))
    pad = 64 - (10 + len(head) + 1) % 64
    head = head + " " * pad + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head.encode() + payload
n, f = 4, 5
x = npy("<f4", (n, f), struct.pack(f"<{n*f}f", *[i / 7 for i in range(n * f)]))
y = npy("<i8", (n,), struct.pack(f"<{n}q", *[i % 3 for i in range(n)]))
open(f"{C}/npy/seed-x.npy", "wb").write(x)
xu8 = npy("|u1", (n, 2, 2), bytes(range(n * 4)))
open(f"{C}/npy/seed-x-u1.npy", "wb").write(xu8)
for name, comp in [("seed-stored.npz", zipfile.ZIP_STORED), ("seed-deflated.npz", zipfile.ZIP_DEFLATED)]:
    with zipfile.ZipFile(f"{C}/npz/{name}", "w", comp) as z:
        z.writestr("x.npy", x); z.writestr("y.npy", y)
        if comp == zipfile.ZIP_DEFLATED:
            z.writestr("x_test.npy", x); z.writestr("y_test.npy", y)
# MNIST idx: 4 images of 3×3 (the labels file is written beside by the fuzz reader)
idx = struct.pack(">IIII", 0x0803, n, 3, 3) + bytes(range(n * 9))
open(f"{C}/idx/seed-images-idx3-ubyte", "wb").write(idx)
# CIFAR-10 binary: 2 records of label + 3×32×32
rec = lambda l: bytes([l]) + bytes((i * 7 + l) % 256 for i in range(3072))
open(f"{C}/cifar/seed-data_batch.bin", "wb").write(rec(3) + rec(9))
PY
# images of an ImageFolder (png, jpeg): written by Pillow
mkdir -p $C/png $C/jpeg
if [ -z "${PYTHON:-}" ]; then
  if [ -x /work/venv/bin/python ]; then PYTHON=/work/venv/bin/python; else PYTHON=python3; fi
fi
"$PYTHON" tests/fuzz-corpus/make-image-seeds.py "$C"
echo "seeds written under $C"
