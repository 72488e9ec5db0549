"""The best prior on a finite set of atoms (what Blahut-Arimoto converges to) by a working set and sequential
quadratic steps, at the cost of a few passes over the matrix.

The optimum of min_w -(1/N) sum_j log sum_i w_i l(x_j | z_i) over the simplex puts weight on few atoms (measured:
~150 of 50001 on a synthetic VAE's held-out fit, 10^4 points). Blahut-Arimoto multiplies every weight by its c at
every step, so its cost is hundreds of passes over all of L while most atoms' weights decay towards zero. Here:

1. the working set S: the atom to keep and the atoms of largest c at the starting weights;
2. the problem restricted to S is solved to float64's precision by sequential quadratic programming (the
   mixsqp scheme of Kim, Carbonetto, Stephens and Anitescu, 2020): on x >= 0, phi(x) = -(1/N) sum_j log (E_S' x)_j +
   sum_i x_i, whose minimiser lies on the simplex; each step solves the quadratic model
   min_{y >= 0} g'(y - x) + (1/2)(y - x)' H (y - x) (gradient g = 1 - c, Hessian H = E_S D^2 E_S' / N,
   D = diag(1 / s)) by an active-set method, then backtracks along y - x until phi decreases enough;
3. one pass over every atom gives log c_w(z_i) at the restricted optimum w: its max is Blahut-Arimoto's
   certificate, nll(w) - max_i log c_w(z_i) <= min over priors on the atoms <= nll(w), the same as
   `bounds.blahut_arimoto` reports; atoms outside S with log c above `ADD_LOG_C` join S and step 2 runs again.

It stops when no atom outside S has log c above ADD_LOG_C and the restricted solve has converged, that is at
the optimum on the atoms up to float32's rounding of the pricing pass, far inside `tol`; the answer then does
not depend on the path taken (another memory budget, another machine's rounding), unlike an iteration stopped
at its tolerance. Where S would not fit the memory budget as a float64 matrix, or its Hessian would cost more
than the Blahut-Arimoto steps it replaces, `fit` returns None and the caller runs Blahut-Arimoto."""

from __future__ import annotations

import math

import torch

from .storage import EXP_FLOOR, FLOAT64_BA_ENTRIES, stream_rows

ADD_LOG_C = 1e-6  # an atom outside the working set with log c above this joins it (the pricing pass's float32
# products are exact to ~1e-7 relative, so no atom joins on rounding alone); with float64 products, above
# the smaller of this and tol / 2
START_ATOMS = 256  # the working set's first atoms (those of largest c at the starting weights; at most half
# of what the budget holds)...
ADD_ATOMS = 256  # ...and at most this many more (those of largest log c) at each pricing pass
MAX_ATOMS = 4096  # beyond this many atoms in S, Blahut-Arimoto (a Hessian costs S^2 N)
RESTRICTED_STEPS = 500  # at most this many quadratic steps in one restricted solve (~10 where measured)
RESTRICTED_LOG_C = 1e-10  # the restricted solve's own tolerance: max log c over S at its optimum...
FLAT = 1e-14  # ...or a step whose predicted decrease of phi is below its float64 rounding
FLUSH_LOG = -345.0  # entries of the restricted rows below e^FLUSH_LOG of their column's max are zero
QP_ADD = 32  # entries freed at once by the quadratic program's active-set method
RIDGE = 1e-10  # the Hessian's diagonal is raised by this, relative to each entry and absolutely (a step's damping)


def pricing_dtype(L: torch.Tensor) -> torch.dtype:
    """float64 for matrices of up to FLOAT64_BA_ENTRIES entries (exact), float32 beyond (see `_exp_blocks`)."""
    return torch.float64 if L.numel() <= FLOAT64_BA_ENTRIES else torch.float32


def price(L: torch.Tensor, col_max: torch.Tensor, lp: torch.Tensor, max_bytes: int) -> torch.Tensor:
    """[M] log c_w(z_i) = log (1/N) sum_j l(x_j | z_i) / p_w(x_j) of every row of L, given log p_w(x_j) = lp
    [N]: one pass of float32 exp(L - column max) in row blocks. l / p_w = exp(L - col_max) exp(col_max - lp), and
    col_max - lp >= 0; its shift by its max keeps every factor in (0, 1]."""
    n = L.shape[1]
    delta = col_max - lp
    top = delta.max()
    dtype = pricing_dtype(L)
    v = torch.exp(delta - top).to(dtype)
    out = torch.empty(L.shape[0], dtype=torch.float64, device=L.device)
    for i, blk in _exp_blocks(L, col_max, max_bytes, dtype):
        out[i : i + len(blk)] = (blk @ v).to(torch.float64)
    return torch.log(out) + top - math.log(n)


def _exp_blocks(L: torch.Tensor, col_max: torch.Tensor, max_bytes: int, dtype: torch.dtype):
    """(first row, exp(L - column max) of a block of rows in dtype), blocks within max_bytes: three passes a
    block (the difference, the floor, the exp); entries under the dtype's floor (e^-87.3 in float32) count as
    that floor rather than 0 (under M e^-87.3 < 1e-33 in any sum these blocks make, off the slow subnormal
    path). float32 for large matrices (half the memory traffic; each entry to ~5e-6 relative), float64 for
    small ones, as `storage.ba_storage` chooses."""
    rows = max(1, stream_rows(L.shape[1], max_bytes) or 1) * 4 // dtype.itemsize
    buf = torch.empty(min(rows, L.shape[0]), L.shape[1], dtype=dtype, device=L.device)
    cm = col_max.to(dtype)
    for i in range(0, L.shape[0], rows):
        src = L[i : i + rows]
        blk = torch.sub(src, cm, out=buf[: len(src)]) if src.dtype == dtype else \
            torch.sub(buf[: len(src)].copy_(src), cm, out=buf[: len(src)])
        yield i, blk.clamp_min_(EXP_FLOOR[dtype]).exp_()


class _Gram:
    """The restricted solve's Hessian H = A A' / n (its diagonal raised by RIDGE), a column computed the first time
    the quadratic program asks for it: the program touches only the atoms it frees, a few dozen to a hundred
    where S holds ~300 (the atoms of the last pricing pass, most of which stay at zero), so the k^2 n multiply-adds
    of the whole matrix become k |freed| n. Each new block is symmetrised, so H stays symmetric."""

    def __init__(self, A: torch.Tensor, n: int) -> None:
        k = A.shape[0]
        self.A, self.n = A, n
        self.H = torch.zeros(k, k, dtype=A.dtype, device=A.device)
        self.have = torch.zeros(k, dtype=torch.bool, device=A.device)

    def cols(self, idx: torch.Tensor) -> torch.Tensor:
        """H[:, idx]"""
        miss = idx[~self.have[idx]]
        if len(miss):
            c = self.A @ self.A[miss].T / self.n  # [k, len(miss)]
            sub = c[miss]
            sub = (sub + sub.T) / 2
            sub.diagonal().mul_(1.0 + RIDGE).add_(RIDGE)  # positive definite where atoms' rows coincide
            c[miss] = sub
            self.H[:, miss] = c
            self.H[miss, :] = c.T
            self.have[miss] = True
        return self.H[:, idx]


def _nonneg_qp(H: torch.Tensor | _Gram, b: torch.Tensor, y: torch.Tensor, max_iter: int) -> torch.Tensor:
    """argmin_{y >= 0} (1/2) y'Hy + b'y for a positive definite H (a matrix, or `_Gram`'s columns on demand), by a
    primal active-set method (Lawson and Hanson's): from the feasible y, solve on the free set (Cholesky); where
    that solution z has non-positive entries, step from y towards z until the first entry reaches 0 and fix those
    that did at 0; else free the entries whose gradient is negative, most negative first, up to QP_ADD at a time;
    ends when none is. Every step lowers the objective or fixes an entry, so it ends."""
    cols = H.cols if isinstance(H, _Gram) else lambda idx: H[:, idx]
    free = y > 0
    if not free.any():
        free[torch.argmin(b)] = True
        y = torch.zeros_like(y)
    thr = -1e-12 * (1.0 + b.abs().max().item())
    for _ in range(max_iter):
        idx = torch.nonzero(free).squeeze(1)
        z = torch.zeros_like(y)
        Hc = cols(idx)
        Hff = Hc[idx]
        chol, info = torch.linalg.cholesky_ex(Hff)
        z[idx] = torch.cholesky_solve(-b[idx, None], chol).squeeze(1) if int(info) == 0 else \
            torch.linalg.lstsq(Hff, -b[idx, None]).solution.squeeze(1)
        if bool((z[idx] > 0).all()):
            y = z
            grad = Hc @ y[idx] + b
            grad[free] = 0.0
            add = torch.nonzero(grad < thr).squeeze(1)
            if not len(add):
                return y
            free[add[torch.argsort(grad[add])[:QP_ADD]]] = True
            continue
        neg = idx[z[idx] <= 0]
        alpha = torch.min(y[neg] / (y[neg] - z[neg])).clamp(0.0, 1.0)
        y = (y + alpha * (z - y)).clamp_min_(0.0)
        free &= ~((y <= 1e-300) & (z <= 0))  # those that reached 0 on their way to a non-positive value
        y[~free] = 0.0
        if not free.any():
            free[torch.argmin(b)] = True
    return y


def _restricted(E: torch.Tensor, x: torch.Tensor, max_iter: int) -> tuple[torch.Tensor, int]:
    """The optimum of phi on the float64 rows E [k, N] (an unnormalised x >= 0 whose sum is 1 at the optimum),
    from x, by sequential quadratic steps; (x, steps taken). Ends when the normalised weights' own certificate
    over S, max_i log c_i, is below RESTRICTED_LOG_C; where phi's float64 rounding hides the decrease a step
    predicts, the full step is taken if it lowers that certificate (Newton's quadratic convergence), and the
    solve ends when it does not."""
    n = E.shape[1]

    def state(x):
        s = x @ E
        c = E @ (1.0 / s) / n
        return s, c, -torch.log(s).mean() + x.sum(), torch.log(c * x.sum()).max().item()

    s, c, phi, kkt = state(x)
    for it in range(1, max_iter + 1):
        if kkt < RESTRICTED_LOG_C:
            return x, it - 1
        g = 1.0 - c
        H = _Gram(E / s, n)
        on = torch.nonzero(x > 0).squeeze(1)
        y = _nonneg_qp(H, g - H.cols(on) @ x[on], x.clone(), 10 * len(x) + 100)
        d = y - x
        slope = (g @ d).item()
        if slope >= -FLAT * max(1.0, abs(phi.item())):  # phi cannot tell: the certificate decides
            nxt = state(y)
            if not nxt[3] < kkt:
                return x, it
            x, (s, c, phi, kkt) = y, nxt
            continue
        u = d @ E
        alpha = 1.0
        while alpha > 1e-12:
            s_new = s + alpha * u
            if bool((s_new > 0).all()):
                phi_new = -torch.log(s_new).mean() + (x + alpha * d).sum()
                if phi_new <= phi + 1e-4 * alpha * slope:
                    break
            alpha *= 0.5
        else:
            return x, it
        x = (x + alpha * d).clamp_min_(0.0)
        s, c, phi, kkt = state(x)
    return x, max_iter


def capacity(n: int, max_bytes: int) -> int:
    """The most atoms S may hold on n points within max_bytes: k float64 rows, their scaled copy and the k x k
    Hessian (16 n k + 8 k^2 bytes), at most MAX_ATOMS."""
    k = int((math.sqrt((16 * n) ** 2 + 32 * max_bytes) - 16 * n) / 16)
    return max(0, min(MAX_ATOMS, k))


def fit(L: torch.Tensor, log_w0: torch.Tensor, max_iter: int, tol: float, max_bytes: int, keep: int | None):
    """Blahut-Arimoto's answer on the atoms (rows) of L [M, N] from the log weights log_w0 [M]: (log weights [M],
    nll, gap over every atom, pricing passes made (at most max_iter: a pass over L is what a Blahut-Arimoto
    step costs), converged, history of (nll, nll - gap) at each pricing pass), or None where the working set
    outgrows `max_bytes` or MAX_ATOMS (then Blahut-Arimoto)."""
    m, n = L.shape
    dev = L.device
    half = max_bytes // 2  # half for the pricing pass's blocks, half for S's matrices
    cap = capacity(n, half)
    start = min(START_ATOMS, cap // 2, max(1, n // 2))  # a Hessian of full rank (it has rank <= n)
    col_max = L.amax(0).to(torch.float64)
    if start < 1 or not bool(torch.isfinite(col_max).all()):
        return None
    # the starting weights' mixture and log c, as one Blahut-Arimoto step would have them
    lw0 = log_w0.to(device=dev, dtype=torch.float64)
    lw0 = lw0 - torch.logsumexp(lw0, 0)
    lp0 = _mixture(L, col_max, lw0, half)
    lc = price(L, col_max, lp0, half)
    order = torch.argsort(lc + lw0, descending=True)  # the atoms a first step would weigh most
    S = order[:start]
    if keep is not None and not bool((S == keep).any()):
        S = torch.cat([S, torch.tensor([keep], device=dev)])
    x = torch.exp(lw0[S] + lc[S])
    x = x / x.sum()
    passes, history = 0, []
    add = ADD_LOG_C if pricing_dtype(L) == torch.float32 else min(ADD_LOG_C, tol / 2)
    while True:
        E_S, cm = _rows(L, S)
        if not bool(torch.isfinite(cm).all()):  # a point no atom of S can explain
            return None
        x, _ = _restricted(E_S, x, RESTRICTED_STEPS)
        passes += 1
        w = x / x.sum()
        lp = cm + torch.log(w @ E_S)
        nll = -lp.mean().item()
        lc = price(L, col_max, lp, half)
        lc[S] = torch.log(E_S @ torch.exp(-(lp - cm)) / n)  # exact, for the atoms in play
        gap = max(lc.max().item(), 0.0)
        history.append((nll, nll - gap))

        out = torch.ones(m, dtype=torch.bool, device=dev)
        out[S] = False
        join = torch.nonzero(out & (lc > add)).squeeze(1)
        if not len(join) or passes >= max_iter:
            log_w = torch.full((m,), -math.inf, dtype=torch.float64, device=dev)
            log_w[S] = torch.log(w)
            return log_w, nll, gap, passes, gap < tol, history
        # atoms of S at weight 0 whose log c is negative leave it (a pricing pass brings them back if needed)
        stay = (x > 0) | (lc[S] >= 0)
        if keep is not None:
            stay |= S == keep
        S, x = S[stay], x[stay]
        if len(S) >= cap:  # no room for another atom
            return None
        join = join[torch.argsort(lc[join], descending=True)[: min(ADD_ATOMS, cap - len(S))]]
        S = torch.cat([S, join])
        x = torch.cat([x, torch.zeros(len(join), dtype=x.dtype, device=dev)])


def _rows(L: torch.Tensor, S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """exp(L[S] - their column max) in float64, and that column max. Entries below e^-345 (1e-150) of their
    column's max are set to zero: each column holds a 1, so they move its sums by under 1e-146 relative, and
    the Hessian's products of two of them would be subnormal numbers, which the CPU handles ~100x slower."""
    d = L[S].to(torch.float64)
    cm = d.amax(0)
    d.sub_(cm)
    below = d < FLUSH_LOG
    return d.exp_().masked_fill_(below, 0.0), cm


def _mixture(L: torch.Tensor, col_max: torch.Tensor, log_w: torch.Tensor, max_bytes: int) -> torch.Tensor:
    """[N] log sum_i w_i l(x_j | z_i) in float32 row blocks of exp(L - column max), float64 sums."""
    shift = log_w.max()
    dtype = pricing_dtype(L)
    w = torch.exp(log_w - shift).to(dtype)
    s = torch.zeros(L.shape[1], dtype=torch.float64, device=L.device)
    for i, blk in _exp_blocks(L, col_max, max_bytes, dtype):
        s += (w[i : i + len(blk)] @ blk).to(torch.float64)
    return col_max + shift + torch.log(s)
