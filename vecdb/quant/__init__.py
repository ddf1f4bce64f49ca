"""Quantizers (codecs) any index can use: product quantization, binary codes, scalar int8.

Each is trained on sample vectors, encodes float32 rows to fixed-size codes and decodes them
back; indexes (``vecdb.index.PQIndex`` / ``BinaryIndex`` / ``SQ8Index``, SPANN postings) hold
a codec beside their codes.
"""
from vecdb.quant.base import BaseCodec, Codec
from vecdb.quant.binary import (
    Binary,
    pack_bits,
    pack_planes,
    unpack_bits,
    unpack_planes,
)
from vecdb.quant.pq import PQ
from vecdb.quant.sq8 import SQ8

__all__ = ["PQ", "SQ8", "BaseCodec", "Binary", "Codec", "pack_bits", "pack_planes", "unpack_bits", "unpack_planes"]
