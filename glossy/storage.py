"""How the bounds' matrices are held: row blocks sized in bytes, and Blahut-Arimoto's exp-matrix (its dtype,
its capacity within a budget, its construction and its products). The maths that uses them is bounds.py."""

from __future__ import annotations

import math

import torch

DEFAULT_BLOCK_BYTES = 2 * 2**20  # cache-sized float64 temporaries: fresh 64 MiB ones cost more in page faults
# than their arithmetic (log c of a 2000 x 10^4 block: 18 ns per entry with torch.logsumexp, 7 in these blocks)
FLOAT64_BA_ENTRIES = 2**22  # Blahut-Arimoto's exp-matrix is float64 up to this many entries, float32 beyond


def row_block(L: torch.Tensor, block_rows: int | None) -> int:
    if block_rows is not None:
        return max(1, int(block_rows))
    return max(1, DEFAULT_BLOCK_BYTES // (8 * max(1, L.shape[1])))


# exp(d) is subnormal below these (so zero, with flushing) and torch's exp takes a slow path there, 30x slower
# in float32 on the matrices Blahut-Arimoto meets (most entries lie hundreds of nats below their column's max)
EXP_FLOOR = {torch.float32: -87.3, torch.float64: -708.0}


def ba_step_exp(E, col_max, log_w):
    """One BA evaluation on E = exp(L - column max): two matrix-vector products. Returns None where a
    column's mixture is too small for E's precision (then the exact log-domain step is used): in
    float64 below 1e-280; in float32, whose entries under e^-87.3 of their column's max are zero
    (at most M e^-87 < 1e-33 in all), below 1e-27, so that the zeroed part stays under 1e-6 of it.
    Returns (log p_w(x_j) [N], log c_w(z_i) [M], the column scale 1 / s [N], the weight shift): the last
    two give log c of rows not in E (see `exp_log_c`)."""
    shift = log_w.max()
    w = torch.exp(log_w - shift)  # [M], relative weights (atoms below e^-745 of the largest drop out)
    s = w.to(E.dtype) @ E  # [N]: p_w(x_j) = exp(col_max_j + shift) * s_j
    if s.min().item() < (1e-280 if E.dtype == torch.float64 else 1e-27):
        return None
    inv_s = 1.0 / s
    c = (E @ inv_s).to(torch.float64)  # [M]: sum_j E_ij / s_j = exp(-shift) * sum_j l_ij / p_w(x_j)
    lpw = col_max + shift + torch.log(s.to(torch.float64))
    return lpw, torch.log(c) - shift - math.log(E.shape[1]), inv_s, shift


def exp_into(out: torch.Tensor, L_rows: torch.Tensor, col_max: torch.Tensor) -> torch.Tensor:
    """out = exp(L_rows - col_max) in out's dtype (float32: to ~5e-6 relative, as L - col_max >= -87.3 is
    rounded to float32; float64: exact), entries below the dtype's smallest normal set to zero."""
    floor = EXP_FLOOR[out.dtype]
    wide = torch.promote_types(L_rows.dtype, out.dtype)  # the difference in the wider of the two, then rounded
    if wide == out.dtype:
        torch.sub(L_rows.to(wide), col_max.to(wide), out=out)
    else:
        out.copy_(L_rows - col_max.to(wide))
    below = out < floor
    torch.exp(out.clamp_min_(floor), out=out)
    return out.masked_fill_(below, 0.0)


def exp_rows_into(out: torch.Tensor, L: torch.Tensor, rows: torch.Tensor | None, col_max, step: int) -> None:
    """out[:len(rows)] = exp(L[rows] - col_max) (`exp_into`), `step` rows at a time, so that no gathered
    temporary is as large as out; rows None: all of L, in order, without a gather."""
    for i in range(0, len(L) if rows is None else len(rows), step):
        src = L[i : i + step] if rows is None else L[rows[i : i + step]]
        exp_into(out[i : i + len(src)], src, col_max)


def exp_log_c(L: torch.Tensor, rows: torch.Tensor, col_max, inv_s, shift, dtype, block_rows) -> torch.Tensor:
    """log c_w(z_i) of the atoms `rows` of L, which are not in E, from the last exp step's scale and shift."""
    step = row_block(L, block_rows)
    out = []
    for i in range(0, len(rows), step):
        blk = exp_into(torch.empty(len(rows[i : i + step]), L.shape[1], dtype=dtype, device=L.device),
                        L[rows[i : i + step]], col_max)
        out.append(torch.log((blk @ inv_s).to(torch.float64)) - shift - math.log(L.shape[1]))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.float64, device=L.device)


LOG_DOMAIN = "log domain (blocked)"
STREAMED = "float32 recomputed in row blocks"
STREAM_BYTES = 32 * 2**20  # the streamed step's block of exp(L - column max): large enough for fast products


def ba_storage(m: int, n: int, max_bytes: int) -> str:
    """How `blahut_arimoto` holds exp(L - column max) for an [m, n] matrix within `max_bytes`: float64 for
    small matrices (exact to ~1e-15, cheap); float32 for large ones or when float64 does not fit (half the
    memory traffic of these memory-bound products, each entry exact to ~5e-6 relative, far below any
    useful tol); when not even float32 fits, recomputed in float32 row blocks at every step (`ba_step_streamed`:
    the same products, two exps an entry a step); the log domain in row blocks only when not one row fits."""
    if 4 * n > max_bytes:
        return LOG_DOMAIN
    if 4 * m * n > max_bytes:
        return STREAMED
    return "float64" if 8 * m * n <= max_bytes and m * n <= FLOAT64_BA_ENTRIES else "float32"


def stream_rows(n: int, max_bytes: int) -> int | None:
    """Rows of the streamed step's float32 block within max_bytes (at most STREAM_BYTES); None: not one fits."""
    rows = min(max_bytes, STREAM_BYTES) // (4 * max(1, n))
    return rows if rows >= 1 else None


def ba_step_streamed(L: torch.Tensor, idx: torch.Tensor | None, col_max, log_w, rows: int):
    """`ba_step_exp` for the atoms in play `idx` of L (None: all of L) without their exp-matrix: exp(L - column
    max) recomputed in float32 blocks of `rows` rows, once for the mixture and once for log c. The same
    returns (and None where a column's mixture is too small for float32, as there)."""
    m, n = (L.shape[0] if idx is None else len(idx)), L.shape[1]
    shift = log_w.max()
    w = torch.exp(log_w - shift).to(torch.float32)
    buf = torch.empty(min(rows, m), n, dtype=torch.float32, device=L.device)
    cm = col_max.to(torch.float32)
    floor = EXP_FLOOR[torch.float32]

    def blocks():  # three passes a block: the difference, the floor, the exp (entries under the floor count as
        # e^-87.3 rather than 0: under M e^-87.3 < 1e-33 in a column's sum, which is at least 1e-27 here)
        for i in range(0, m, rows):
            src = L[i : i + rows] if idx is None else L[idx[i : i + rows]]
            blk = torch.sub(src, cm, out=buf[: len(src)]) if src.dtype == torch.float32 else \
                buf[: len(src)].copy_(src - col_max)
            yield i, blk.clamp_min_(floor).exp_()

    s = torch.zeros(n, dtype=torch.float64, device=L.device)
    for i, blk in blocks():
        s += (w[i : i + len(blk)] @ blk).to(torch.float64)
    if s.min().item() < 1e-27:
        return None
    inv_s = (1.0 / s).to(torch.float32)
    c = torch.cat([(blk @ inv_s).to(torch.float64) for _, blk in blocks()])
    lpw = col_max + shift + torch.log(s)
    return lpw, torch.log(c) - shift - math.log(n), inv_s, shift


PRUNE_LOG_WEIGHT = -69.0  # an atom whose weight falls below e^-69 (~1e-30) leaves the active set...


PRUNE_EVERY = 5  # ...checked every few iterations, and the rows compacted once an eighth of them can go


def exp_capacity(k: int, n: int, max_bytes: int, m: int) -> tuple[torch.dtype, int] | None:
    """The dtype and the row capacity of an exp-matrix for k active atoms of m on n points within max_bytes
    (see `ba_storage`): room for up to m rows, so that atoms can come back; None if not even k rows fit."""
    storage = ba_storage(k, n, max_bytes)
    if storage in (LOG_DOMAIN, STREAMED):
        return None
    dtype = getattr(torch, storage)
    cap = max_bytes // (dtype.itemsize * n)
    if dtype == torch.float64:
        cap = min(cap, FLOAT64_BA_ENTRIES // n)
    return dtype, min(m, cap)
