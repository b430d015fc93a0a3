#!/usr/bin/env python3
"""The tensors a distillation trains, apart from the model they belong to (safetensors, standard library only).

  trained-tensors.py extract MODEL.safetensors OUT.safetensors
      keeps the Mamba mixers (`.mamba.`) and o_proj (`.o_proj.`): what `distill --train mamba,o_proj` can change, so
      that a GPU lease returns a few MB per run instead of the whole model;
  trained-tensors.py merge BASE.safetensors TRAINED.safetensors OUT.safetensors
      BASE (the same `recurformer convert` of the teacher) with every tensor of TRAINED put in, dtype and all.
A run that trains more than those (`--train attention` or `all`) must bring its whole model back instead.
"""
import json, struct, sys

KEEP = (".mamba.", ".o_proj.")


def read(path):
    with open(path, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
        data = f.read()
    metadata = header.pop("__metadata__", None)
    return {name: (info["dtype"], info["shape"], data[info["data_offsets"][0]:info["data_offsets"][1]])
            for name, info in header.items()}, metadata


def write(path, tensors, metadata):
    header, offset = {}, 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded)
        for _, _, raw in tensors.values():
            f.write(raw)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "extract":
        tensors, metadata = read(sys.argv[2])
        write(sys.argv[3], {n: t for n, t in tensors.items() if any(k in n for k in KEEP)}, metadata)
    elif len(sys.argv) == 5 and sys.argv[1] == "merge":
        base, metadata = read(sys.argv[2])
        trained, _ = read(sys.argv[3])
        missing = [n for n in trained if n not in base]
        if missing:
            sys.exit(f"error: {sys.argv[3]} has tensors the base model lacks (another conversion?): {missing[:3]}")
        base.update(trained)
        write(sys.argv[4], base, metadata)
    else:
        sys.exit(__doc__)
