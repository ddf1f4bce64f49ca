"""SQ8 posting codes of SPANN: postings hold one byte per component instead of float32
(a quarter of the bytes read), trained with the heads; a search ranks on the codes and
re-ranks the best ``rerank`` candidates per query with their float32 vectors, kept in LMDB
one record per vector (sub-database ``vectors``, keyed like the postings, by slot).

``CodePostings`` is mixed into ``SPANN``: ``_codec`` is its trained SQ8 (None for float
postings), ``_vdb`` the float-vector sub-database, ``_overlay`` the postings not yet written.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from vecdb.errors import DataLossError
from vecdb.index.allow import AllowSet
from vecdb.index.spann import postings
from vecdb.index.spann.kernels import rerank_rows, scan_codes, scan_codes_serial
from vecdb.index.spann.records import RUN, RUN_PAD, check_scan_codes_records
from vecdb.quant.sq8 import SQ8
from vecdb.types import F32Matrix, I64Vector

if TYPE_CHECKING:
    from vecdb.index.spann.index import SPANN

#: the codes postings may hold instead of float32 vectors
CODES = ("sq8",)
#: most candidates one query may re-rank with float vectors (SQ8 codes)
MAX_RERANK = 4096
#: queries re-ranked together (their candidates' float rows gathered at once)
RERANK_BLOCK = 64


def new_codec(codes: str | None, dim: int) -> SQ8 | None:
    """The untrained codec of ``codes`` (None: float32 postings)."""
    return SQ8(dim) if codes == "sq8" else None


class CodePostings:
    """Training, storing and scanning SQ8 posting codes (see the module doc)."""

    _codec: SQ8 | None
    _mapped: Any                                  # MappedReads of the attached space (or None)

    def _train_codes(self, sample: F32Matrix) -> None:
        """Train the codec (if any) on the heads' training sample."""
        if self._codec is not None:
            self._codec.train_trusted(sample)

    def _restore_codes(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore the codec (if any) from the resident arrays (``_code_arrays``)."""
        if self._codec is not None:
            self._codec.restore({"vmin": arrays["q_vmin"], "step": arrays["q_step"]})

    def _code_arrays(self) -> dict[str, np.ndarray]:
        """The codec's resident arrays (none for float postings)."""
        if self._codec is None:
            return {}
        return {"q_vmin": self._codec.vmin, "q_step": self._codec.step}

    def _write_vectors(self: "SPANN", txn: Any, slots: I64Vector, rows: F32Matrix) -> None:
        """Store the float32 rows of ``slots`` (SQ8 postings re-rank with them), one record each."""
        vdb = self._vdb
        for slot, row in zip(slots.tolist(), np.ascontiguousarray(rows, np.float32)):
            txn.put(postings.key(slot), row.tobytes(), db=vdb)

    def _scan_codes(self: "SPANN", txn: Any, queries: F32Matrix, found: Any, allow: AllowSet | None,
                    mask: np.ndarray, serial: bool, rerank: int | None, out_s: np.ndarray, out_d: np.ndarray) -> int:
        """Top-k from SQ8 postings: the best ``rerank`` candidates per query on codes (``mask``:
        the allow bitmap when ``allow``), then their float32 vectors read through ``txn`` (the
        overlay's when None) ranked exactly. Returns the bytes of float vectors read."""
        codec = self._codec
        assert codec is not None
        buf, starts, counts, qptr, qlist, _ = found
        nq, k = out_s.shape
        width = self._rerank_width(k, rerank)
        cand_s = np.full((nq, width), -1, np.int64)
        cand_d = np.full((nq, width), np.inf, np.float32)
        scan = scan_codes_serial if serial else scan_codes
        scan(queries, codec.vmin, codec.step, self._scan_code, buf, starts, counts, qptr, qlist, self._ids.slot_ids, mask,
             allow is not None, cand_s, cand_d)
        wanted = np.unique(cand_s[cand_s >= 0])
        if not len(wanted):
            return 0
        rows = self._float_rows(txn, wanted)
        for lo in range(0, nq, RERANK_BLOCK):               # (block, width, dim) floats at a time
            hi = min(lo + RERANK_BLOCK, nq)
            cs = cand_s[lo:hi]
            valid = cs >= 0
            vecs = rows[np.where(valid, np.searchsorted(wanted, cs), 0)]
            if self._scan_code == 0:
                diff = vecs - queries[lo:hi, None, :]
                d = np.einsum("qcd,qcd->qc", diff, diff)
            else:
                d = -np.einsum("qcd,qd->qc", vecs, queries[lo:hi])
            d = np.where(valid & ~np.isnan(d), d, np.inf).astype(np.float32)   # NaN: no float record (removed)
            order = np.lexsort((cs, d), axis=1)[:, :k]
            out_d[lo:hi] = np.take_along_axis(d, order, 1)
            out_s[lo:hi] = np.where(np.isfinite(out_d[lo:hi]), np.take_along_axis(cs, order, 1), -1)
        return int(len(wanted)) * 4 * self.dim

    def _rerank_width(self, k: int, rerank: int | None) -> int:
        """Candidates per query ranked on codes, then re-ranked with float vectors."""
        return max(k, rerank if rerank is not None else max(4 * k, 40))

    def _rank_codes(self: "SPANN", vectors: Any, query: np.ndarray, recs: list[Any], at: np.ndarray, heads: np.ndarray,
                    counts: np.ndarray, width: int, use_allow: bool, mask: np.ndarray, out_s: np.ndarray,
                    out_d: np.ndarray) -> int:
        """Top-k of ``query`` over the SQ8 posting records ``recs`` scanned where LMDB maps
        them (record i: posting ``heads[at[i]]``, its entries counted in ``counts[at[i]]``;
        format 3 and 4 checked in the same pass, ``records``), ``RUN`` records per kernel
        call: its best ``width`` candidates on codes, re-ranked with their float rows read
        through the cursor ``vectors`` (one kernel call on the rows laid end to end) into the
        heap rows ``out_s``/``out_d`` (+inf / -1). Returns the bytes of float rows read;
        DataLossError for a corrupt posting or float record (the rows then hold partial
        results: never returned)."""
        codec = self._codec
        assert codec is not None
        vmin, step, code, live, dim = codec.vmin, codec.step, self._scan_code, self._ids.slot_ids, self.dim
        cd, cs = np.empty(width, np.float32), np.empty(width, np.int64)
        cd.fill(np.inf)
        cs.fill(-1)
        n = len(recs)
        for lo in range(0, n, RUN):
            hi = min(lo + RUN, n)
            run = recs[lo:hi] if n > RUN else recs
            bad, problem = check_scan_codes_records(tuple(run) if hi - lo == RUN else tuple(run + [RUN_PAD] * (RUN - hi + lo)),
                                                    hi - lo, at[lo:hi] if n > RUN else at, dim, query, vmin, step, code,
                                                    live, mask, use_allow, counts, cd, cs, hi == n)
            if problem:
                raise DataLossError(postings.problem_message(int(heads[at[lo + bad]]), int(problem)))
        slots = cs.tolist()
        n_cand = slots.index(-1) if slots[-1] < 0 else len(slots)   # sorted: the -1 sentinels last
        cand = cs[:n_cand]
        find, value, size = vectors.set_key, vectors.value, 4 * dim   # a lookup by cursor: ~15% less than txn.get
        rows = [value() if find(slot_key) else None for slot_key in postings.keys(slots[:n_cand])]
        if not all(rows):                         # removed since (no float record): not a candidate
            present = np.array([raw is not None for raw in rows], bool)   # (an empty one fails the size check)
            cand, rows = cand[present], [raw for raw in rows if raw is not None]
        if not rows:
            return 0
        joined = b"".join(rows)
        if len(joined) != size * len(rows) or max(map(len, rows)) != size:
            bad_slot = next(slot for slot, raw in zip(cand.tolist(), rows) if len(raw) != size)
            raise DataLossError(postings.bad_row_message(bad_slot, dim))
        rerank_rows(np.frombuffer(joined, np.float32), dim, query, cand, code, out_d, out_s)
        return len(joined)

    def _float_rows(self: "SPANN", txn: Any, slots: I64Vector) -> F32Matrix:
        """Float32 rows of ``slots`` (sorted) from their LMDB records (from the overlay when
        ``txn`` is None); NaN rows for slots without one. DataLossError for a bad record."""
        out = np.full((len(slots), self.dim), np.nan, np.float32)
        if txn is None:
            for slots_h, vectors in (self._overlay or {}).values():
                hit = np.isin(slots_h, slots)
                out[np.searchsorted(slots, slots_h[hit])] = vectors[hit]
            return out
        mapped = self._mapped
        if mapped is not None:                    # looked up in LMDB's pages in one kernel call
            rows = mapped.rows(txn, slots, self.dim)
            if rows is not None:
                return rows
        get, vdb, size = txn.get, self._vdb, 4 * self.dim
        for i, slot in enumerate(slots.tolist()):
            raw = get(postings.key(slot), db=vdb)
            if raw is None:
                continue
            if len(raw) != size:
                raise DataLossError(postings.bad_row_message(slot, self.dim))
            out[i] = np.frombuffer(raw, np.float32)
        return out
