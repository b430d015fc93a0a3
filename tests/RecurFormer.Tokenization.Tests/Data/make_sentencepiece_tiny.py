#!/usr/bin/env python3
"""Writes sentencepiece-tiny/tokenizer.model: a tiny but valid SentencePiece BPE ModelProto, serialised by hand.

There is no `sentencepiece` package on the build machine, so the protobuf bytes are written directly, following
sentencepiece_model.proto (ModelProto.pieces = 1, trainer_spec = 2, normalizer_spec = 3;
SentencePiece.piece = 1, score = 2, type = 3; TrainerSpec.model_type = 3, vocab_size = 4, byte_fallback = 35,
unk_id = 40, bos_id = 41, eos_id = 42, pad_id = 43; NormalizerSpec.name = 1, add_dummy_prefix = 3,
remove_extra_whitespaces = 4, escape_whitespaces = 5).

Vocabulary: <unk>=0, <s>=1, </s>=2, the 256 byte pieces <0x00>..<0xFF> = 3..258 (byte fallback), then the
normal pieces below. In SentencePiece BPE a higher score merges first.
Run from this folder: python3 make_sentencepiece_tiny.py
"""
import os
import struct

NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6
PIECES = ["\u2581", "h", "e", "l", "o", "w", "r", "d", "\u4e16", "\u754c",
          "he", "ll", "\u2581h", "\u2581w", "or", "llo", "\u2581he", "\u2581wor", "ld", "\u2581hello", "\u2581world",
          "\u4e16\u754c"]


def varint(value):
    if value < 0:
        value += 1 << 64  # proto int32 negatives are 10-byte varints
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def key(field, wire):
    return varint(field << 3 | wire)


def int_field(field, value):
    return key(field, 0) + varint(value)


def bytes_field(field, data):
    return key(field, 2) + varint(len(data)) + data


def float_field(field, value):
    return key(field, 5) + struct.pack("<f", value)


def piece(text, score, kind):
    return bytes_field(1, text.encode("utf-8")) + float_field(2, score) + int_field(3, kind)


def model_proto():
    pieces = [("<unk>", 0.0, UNKNOWN), ("<s>", 0.0, CONTROL), ("</s>", 0.0, CONTROL)]
    pieces += [("<0x%02X>" % b, 0.0, BYTE) for b in range(256)]
    # Characters first (low scores: never merged away), then merges in priority order (higher score first).
    chars = [p for p in PIECES if len(p) == 1]
    merges = [p for p in PIECES if len(p) > 1]
    pieces += [(p, -100.0 - i, NORMAL) for i, p in enumerate(chars)]
    pieces += [(p, -1.0 - i, NORMAL) for i, p in enumerate(merges)]
    body = b"".join(bytes_field(1, piece(*p)) for p in pieces)
    trainer = (int_field(3, 2) + int_field(4, len(pieces)) + int_field(35, 1)
               + int_field(40, 0) + int_field(41, 1) + int_field(42, 2) + int_field(43, -1))
    normalizer = bytes_field(1, b"identity") + int_field(3, 1) + int_field(4, 0) + int_field(5, 1)
    return body + bytes_field(2, trainer) + bytes_field(3, normalizer)


if __name__ == "__main__":
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sentencepiece-tiny")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "tokenizer.model"), "wb") as f:
        f.write(model_proto())
