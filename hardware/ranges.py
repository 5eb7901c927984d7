"""Range costs, the kernel's O(n^2) half: the stage time of every contiguous range of an order, as matrices
(:func:`range_costs`), or some of their rows (:func:`range_rows`, bit-identical to those rows), with bounds
on how much time stages covering a head or tail of the order need (:func:`cover_lower_bounds`).

``T[a, b]`` is the time of a non-last stage made of ``order[a:b]`` and ``T_last[a]`` that of the last stage
``order[a:]``: per-op times by prefix sums; parameter bytes by difference arrays (a buffer read at position
p counts for ranges starting after its previous reader); activation bytes entering a range once (for ranges
starting after both the producer and the previous reader) and leaving it (produced at q, last read at L:
every range with a <= q < b <= L); streaming where the cached layers fill the cache; infinite where a
pipeline cannot run the range (a non-last range holding an op pinned to the last stage). Every byte and
tile-byte count is a whole number, so the sums are exact in float64 in any order: a row computed alone
equals the row of the whole matrices bit for bit.

:mod:`hardware.kernel` re-exports these; the terms are those of :func:`hardware.cost.stage_cost`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from tflite_io import StageMapError

from . import terms
from .spec import EdgeTpuSpec

if TYPE_CHECKING:
    from .kernel import CostArrays

__all__ = [
    "RangeCosts",
    "range_costs",
    "whole_range_costs",
    "OrderTerms",
    "order_terms",
    "RowCosts",
    "range_rows",
    "cover_lower_bounds",
    "partial_range_costs",
    "range_sum",
    "empty_ranges",
]


@dataclass(frozen=True)
class RangeCosts:
    """Per-range stage times and parameter bytes of one order (``inf`` where a range is not runnable)."""

    order: tuple[int, ...]
    time: np.ndarray  # (n+1, n+1): T[a, b] for a non-last stage order[a:b], a < b
    time_last: np.ndarray  # (n+1,): T_last[a] for the last stage order[a:]
    params: np.ndarray  # (n+1, n+1): parameter bytes of order[a:b]
    crossings: np.ndarray  # (n+1,): activation tensors crossing a cut before position b
    max_end: int  # a non-last stage must end at b <= max_end (before the first op pinned last)
    min_first_end: int  # the first stage must end at b >= min_first_end (every model input, ops pinned first)
    io: np.ndarray  # (n+1, n+1): activation bytes into and out of order[a:b] (non-last stage)
    io_last: np.ndarray  # (n+1,): the same for the last stage order[a:]
    #: The rows (range starts) computed, None for all; elsewhere ``time`` is inf and ``params``/``io`` NaN
    #: (:func:`partial_range_costs`: enough for the splits whose stages all start at these rows).
    rows: np.ndarray | None = None
    #: (n+1, n+1) and (n+1,): bytes over the host link per request, activations and streamed parameter
    #: tile-bytes (what a shared host controller carries); None where only some rows were computed
    link: np.ndarray | None = None
    link_last: np.ndarray | None = None


@lru_cache(maxsize=8)
def empty_ranges(size: int) -> np.ndarray:
    """Boolean mask of the lower triangle with the diagonal (ranges a >= b, which are empty); shared, read-only."""
    mask = np.tri(size, dtype=bool)
    mask.flags.writeable = False
    return mask


def range_sum(
    n: int, starts: np.ndarray, stops: np.ndarray, cols: np.ndarray, values: np.ndarray, rows: np.ndarray | None = None
) -> np.ndarray:
    """M[a, b] = sum of the values whose a-interval [start, stop) contains a and whose column is < b, for
    a = 0..n (or the sorted ``rows``: with whole-number values, the same bits as those rows of the whole).

    Complex ``values`` sum two real matrices at once (real and imaginary parts), each bit-identical to its
    own real call, for little more than the time of one."""
    w = n + 1
    if rows is not None:  # row i stands for rows[i]: the intervals in row indices
        starts, stops = np.searchsorted(rows, starts), np.searchsorted(rows, stops)
    m = w if rows is None else len(rows)
    size = (m + 1) * w
    idx = np.concatenate([starts * w + cols + 1, stops * w + cols + 1])
    vals = np.concatenate([values, -values])
    if np.iscomplexobj(vals):
        flat: np.ndarray = np.empty(size, dtype=np.complex128)
        flat.real = np.bincount(idx, weights=vals.real, minlength=size)
        flat.imag = np.bincount(idx, weights=vals.imag, minlength=size)
    else:
        flat = np.bincount(idx, weights=vals, minlength=size)
    diff = flat.reshape(m + 1, w)
    np.cumsum(diff, axis=0, out=diff)  # in place: half the time of allocating cumsums
    out = diff[:m]
    np.cumsum(out, axis=1, out=out)
    return out


def _prev_in_group(groups: np.ndarray, positions: np.ndarray, first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort pairs by (group, position); return the sort key and each pair's previous position in its group
    (``first[i]`` for the first pair of a group)."""
    key = np.lexsort((positions, groups))
    g, p = groups[key], positions[key]
    prev = np.empty_like(p)
    if len(p):
        prev[1:] = p[:-1]
        new = np.ones(len(p), dtype=bool)
        new[1:] = g[1:] != g[:-1]
        prev[new] = first[key][new]
    return key, prev


class OrderTerms(NamedTuple):
    """One order's terms: positions, prefix sums of op time, the (start, stop, column, value) entries of the
    parameter-byte and tile-byte range sums (``pb``: starts, stops, columns, bytes, bytes * tiles) and of the
    activation-byte range sum (``io``), crossings and the stage-end limits. Every value is a whole number, so
    a range sum is exact in float64 however it is added up: whole matrices and single rows agree bit for bit."""

    order: np.ndarray
    pos: np.ndarray
    cum: np.ndarray
    pb: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    io: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    crossings: np.ndarray
    max_end: int
    min_first_end: int


class RowCosts(NamedTuple):
    """Some rows of an order's range costs (:func:`range_rows`), one per row asked for."""

    time: np.ndarray  # (len(rows), n+1)
    time_last: np.ndarray  # (len(rows),)


def order_terms(ca: CostArrays, order: Sequence[int] | np.ndarray) -> OrderTerms:
    """The difference-array terms of ``order``, a topological order (see :class:`OrderTerms`)."""
    n = ca.n
    order = _checked_order(ca, order)
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n)
    cum = np.concatenate([[0.0], np.cumsum(ca.op_s[order])])
    none = np.zeros(0, dtype=np.int64)
    pb = (none, none, none, np.zeros(0), np.zeros(0))
    if len(ca.pb_op):
        p = pos[ca.pb_op]
        key, prev = _prev_in_group(ca.pb_buf, p, np.full(len(p), -1, dtype=np.int64))
        ps = p[key]
        pb = (prev + 1, ps + 1, ps, ca.pb_bytes[key], ca.pb_bytes[key] * ca.pb_tiles[key])
    # activation bytes entering (ins) and leaving (outs) each range, summed into one difference array:
    # outs = reverse-cumsum over a of cumsum over b of out_diff, rewritten as a forward cumsum over a.
    st, sp, cl, vl = [none], [none], [none], [np.zeros(0)]
    last = np.zeros(0, dtype=np.int64)
    if len(ca.in_reader):
        r = pos[ca.in_reader]
        q = np.where(ca.in_producer >= 0, pos[np.maximum(ca.in_producer, 0)], -1)
        key, prev = _prev_in_group(ca.in_tensor, r, q)
        rs = r[key]
        st.append(prev + 1)
        sp.append(rs + 1)
        cl.append(rs)
        vl.append(ca.in_bytes_pair[key])
        produced = ca.in_entry >= 0
        last = np.full(len(ca.out_producer), -1, dtype=np.int64)
        np.maximum.at(last, ca.in_entry[produced], r[produced])
    cross: np.ndarray = np.zeros(n + 2, dtype=np.float64)
    if len(last):
        qo = pos[ca.out_producer]
        keep = last < n  # a tensor read by the last op of the order leaves no range ending before n
        b_out = ca.out_bytes_t
        # +b on rows [0, q], columns [q+1, last+1): start 0, stop q+1, column q+1 minus column last+1
        st += [np.zeros_like(qo), np.zeros_like(qo[keep])]
        sp += [qo + 1, qo[keep] + 1]
        cl += [qo, last[keep]]
        vl += [b_out, -b_out[keep]]
        cross = np.bincount(
            np.concatenate([qo + 1, last + 1]),
            weights=np.concatenate([np.ones(len(qo)), -np.ones(len(qo))]),
            minlength=n + 2,
        )
    io = (np.concatenate(st), np.concatenate(sp), np.concatenate(cl), np.concatenate(vl))
    max_end = int(pos[ca.last_ops].min()) if ca.last_ops.any() else n - 1
    min_first_end = max((int(pos[r].min()) for r in ca.input_readers), default=0) + 1
    return OrderTerms(order, pos, cum, pb, io, np.cumsum(cross)[: n + 1], max_end, min_first_end)


def range_costs(ca: CostArrays, order: Sequence[int] | np.ndarray) -> RangeCosts:
    """The range cost matrices of ``order``, a topological order of the graph behind ``ca``."""
    return whole_range_costs(ca, order_terms(ca, order))


def whole_range_costs(ca: CostArrays, sums: OrderTerms) -> RangeCosts:
    """:func:`range_costs` of the order of ``sums`` (:func:`order_terms`)."""
    t = _row_terms(ca, sums, None)
    order_t = tuple(sums.order.tolist())
    return RangeCosts(
        order_t,
        t.time,
        t.time_last,
        t.params,
        sums.crossings,
        sums.max_end,
        sums.min_first_end,
        t.io,
        t.io_last,
        link=t.io + t.streamed,
        link_last=t.io_last + t.streamed_last,
    )


class _Terms(NamedTuple):
    """The range terms of some rows: parameter bytes, activation bytes over the link, stage times and
    streamed parameter tile-bytes, of the non-last ranges (a row per start) and the last (one per start)."""

    params: np.ndarray
    io: np.ndarray
    time: np.ndarray
    time_last: np.ndarray
    io_last: np.ndarray
    streamed: np.ndarray
    streamed_last: np.ndarray


def _row_terms(ca: CostArrays, sums: OrderTerms, rows: np.ndarray | None) -> _Terms:
    """The :class:`_Terms` of the ranges starting at ``rows`` (None: every row)."""
    n = ca.n
    starts, stops, cols, nbytes, tile_bytes = sums.pb
    both = range_sum(n, starts, stops, cols, nbytes + 1j * tile_bytes, rows)
    params, tiles = both.real.copy(), both.imag
    io = range_sum(n, *sums.io, rows=rows)
    rows_ = np.arange(n + 1) if rows is None else rows
    # the last stage's outputs are the model outputs; no produced tensor leaves the range [a, n)
    io_last = io[:, n] + ca.model_out_bytes
    streamed, streamed_last = _streamed(params, tiles, io, io_last, ca.spec, rows_)
    time, time_last = _times(ca, sums, rows_, io, io_last, streamed, streamed_last)
    return _Terms(params, io, time, time_last, io_last, streamed, streamed_last)


def _checked_order(ca: CostArrays, order: Sequence[int] | np.ndarray) -> np.ndarray:
    n = ca.n
    if sorted(np.asarray(order).tolist()) != list(range(n)):
        raise StageMapError(f"order must list each of the {n} ops once", 0)
    return np.asarray(order, dtype=np.int64)


def _times(
    ca: CostArrays,
    sums: OrderTerms,
    rows: np.ndarray,
    io: np.ndarray,
    io_last: np.ndarray,
    streamed: np.ndarray,
    streamed_last: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Stage times of the ranges starting at ``rows`` (one row of ``io`` and ``streamed`` tile-bytes per
    entry): non-last ``time[i, b]`` (inf where not runnable) and last ``time_last[i]``."""
    n, spec, cum = ca.n, ca.spec, sums.cum
    compute = np.subtract.outer(-cum[rows], -cum)  # cum[b] - cum[a]
    time_last = terms.stage_seconds(spec, compute[:, n], terms.stream_seconds(spec, streamed_last), io_last)
    time = terms.stage_seconds(spec, compute, terms.stream_seconds(spec, streamed), io)
    time[_empty(rows, n + 1)] = np.inf
    time[:, sums.max_end + 1 :] = np.inf
    time_last[(rows > sums.max_end) | (rows == n)] = np.inf
    return time, time_last


def _empty(rows: np.ndarray, n1: int) -> np.ndarray:
    """Mask of the empty ranges (b <= a) of the rows ``rows``."""
    if len(rows) == n1 and rows[-1] == n1 - 1:
        return empty_ranges(n1)
    return np.arange(n1)[None, :] <= rows[:, None]


def range_rows(ca: CostArrays, sums: OrderTerms, rows: np.ndarray) -> RowCosts:
    """The sorted rows ``rows`` (range starts) of :func:`range_costs`' matrices for the order of ``sums``
    (:func:`order_terms`), bit-identical to those rows of the whole matrices, in O(len(rows) * n) work."""
    t = _row_terms(ca, sums, np.asarray(rows, dtype=np.int64))
    return RowCosts(t.time, t.time_last)


def _streamed(
    params: np.ndarray, tiles: np.ndarray, io: np.ndarray, io_last: np.ndarray, spec: EdgeTpuSpec, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Streamed tile-bytes of every range starting at ``rows`` (non-last and last): whole layers in the order's
    sequence are cached until the usable cache ``cache - share * io`` is full, the rest stream, each byte
    ``tiles`` times (``tiles[i, b]``: the range sum of bytes * tiles).

    ``params[i, j]`` (bytes of positions a..j-1, a = rows[i]) grows with j, so the cached prefix of range
    [a, b) ends at j* = the last j <= b with ``params[i, j] <= usable[i, b]``, and the range streams
    ``tiles[i, b] - tiles[i, j*]`` tile-bytes. Parameter bytes are whole numbers (exact in float64), so
    ``params <= usable`` is ``params <= floor(usable)``, and with each row shifted by ``i * shift``
    (``shift`` above every byte count) the flattened matrix is sorted: one searchsorted finds j* for every
    range that does not fit whole (the others stream nothing).
    """
    m, n1 = params.shape
    usable, usable_last = terms.usable_cache_bytes(spec, io), terms.usable_cache_bytes(spec, io_last)
    cache = terms.cache_bytes(spec)
    stream = np.zeros_like(params)
    empty = _empty(rows, n1)
    upper = ~empty
    # a row's bytes grow with b, so its last column holds its largest; usable never passes cache_bytes
    most = float(params[:, -1].max(initial=0.0))
    if not m or (most <= cache and most <= min(usable[upper].min(initial=np.inf), usable_last.min())):
        return stream, np.zeros(m)  # everything fits everywhere
    shift = 2.0 ** np.ceil(np.log2(max(float(params.max()), cache) + 2.0))
    base = np.arange(m, dtype=np.float64) * shift
    keys = params.copy()
    keys[empty] = -1.0  # below every query of its row: positions before a (and a itself) always count
    keys += base[:, None]
    flat = keys.ravel()
    a, b = np.nonzero(upper & (params > usable))  # ranges that do not fit whole
    j = np.searchsorted(flat, np.floor(usable[a, b]) + base[a], side="right") - a * n1 - 1  # j < b
    stream[a, b] = tiles[a, b] - tiles[a, j]
    i = np.arange(m)
    j_last = np.searchsorted(flat, np.floor(usable_last) + base, side="right") - i * n1 - 1
    return stream, tiles[:, n1 - 1] - tiles[i, j_last]


def cover_lower_bounds(ca: CostArrays, sums: OrderTerms, max_stages: int) -> tuple[np.ndarray, np.ndarray]:
    """(head, tail), each (max_stages + 1, n + 1): ``head[m, c]`` and ``tail[m, a]`` are bounds no m stages
    covering ``order[:c]``, or ``order[a:]``, can beat in total time: their compute, m invocations, the
    parameter bytes beyond m caches streamed at the cheapest rate (a range streams at least its bytes beyond
    the cache; the ranges' distinct bytes add up to at least those of the whole), and the activations
    crossing the cut at c (leaving) or a (entering; with the model outputs, for a tail), each moved once.
    They add over consecutive pieces: ``tail[m + 1, a] <= T[a, c] + tail[m, c]`` and
    ``head[m + 1, c] <= head[m, a] + T[a, c]``."""
    n, spec, pos = ca.n, ca.spec, sums.pos
    starts, stops, cols, nbytes, _ = sums.pb
    diff = np.bincount(starts, weights=nbytes, minlength=n + 2) - np.bincount(stops, weights=nbytes, minlength=n + 2)
    tail_params = np.cumsum(diff)[: n + 1]  # bytes of the distinct buffers order[a:] reads (exact)
    first = starts == 0  # each buffer's first reader
    head_params = np.cumsum(np.bincount(cols[first] + 1, weights=nbytes[first], minlength=n + 1))[: n + 1]
    entering, leaving = np.zeros(n + 2), np.zeros(n + 2)
    if len(ca.in_reader):  # a tensor made at q (-1: a model input) and last read at L crosses the cuts q+1..L
        r = pos[ca.in_reader]
        q = np.where(ca.in_producer >= 0, pos[np.maximum(ca.in_producer, 0)], -1)
        last = np.full(int(ca.in_tensor.max()) + 1, -1, dtype=np.int64)
        np.maximum.at(last, ca.in_tensor, r)
        tensors, one = np.unique(ca.in_tensor, return_index=True)
        entering += np.bincount(q[one] + 1, weights=ca.in_bytes_pair[one], minlength=n + 2)
        entering -= np.bincount(last[tensors] + 1, weights=ca.in_bytes_pair[one], minlength=n + 2)
        made = ca.in_entry[one] >= 0
        out = ca.out_bytes_t[ca.in_entry[one][made]]
        leaving += np.bincount(q[one][made] + 1, weights=out, minlength=n + 2)
        leaving -= np.bincount(last[tensors][made] + 1, weights=out, minlength=n + 2)
    per_byte = terms.stream_seconds(spec, float(ca.pb_tiles.min()) if len(ca.pb_tiles) else 1.0)
    m = np.arange(max_stages + 1)[:, None]
    fixed, cache = m * terms.invoke_seconds(spec), terms.cache_bytes(spec)
    head = sums.cum + fixed + np.maximum(head_params - m * cache, 0.0) * per_byte
    head += terms.link_seconds(spec, np.cumsum(leaving)[: n + 1])
    tail = (sums.cum[n] - sums.cum) + fixed + np.maximum(tail_params - m * cache, 0.0) * per_byte
    tail += terms.link_seconds(spec, np.cumsum(entering)[: n + 1] + ca.model_out_bytes)
    return head, tail


@lru_cache(maxsize=8)
def _nan_matrix(size: int) -> np.ndarray:
    nan = np.full((size, size), np.nan)
    nan.flags.writeable = False
    return nan


def partial_range_costs(
    ca: CostArrays, sums: OrderTerms, time: np.ndarray, time_last: np.ndarray, rows: np.ndarray
) -> RangeCosts:
    """A :class:`RangeCosts` of ``sums``' order from the rows ``rows`` of ``time`` and ``time_last`` (inf
    elsewhere) that :func:`range_rows` computed; ``params`` and ``io`` are NaN (shared, read-only)."""
    nan = _nan_matrix(ca.n + 1)
    return RangeCosts(
        tuple(sums.order.tolist()), time, time_last, nan, sums.crossings, sums.max_end, sums.min_first_end, nan, nan[0], rows
    )
