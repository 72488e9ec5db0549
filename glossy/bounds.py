"""The information-theoretic quantities of Lastras (ICLR 2019) as pure tensor functions.

Nothing here knows about models: every function takes a matrix L[i, j] = log l(x_j | z_i) of M
candidate latents by N data points (a tensor, processed in row blocks so that temporaries stay
bounded), and the log-marginals log tau(x_j) of the data under the model (usually the importance-
sampled log p^(x_j); Theorem 2 holds for any positive tau).

    log c(z_i)  = logsumexp_j (L[i, j] - log tau(x_j)) - log N
    glossy_max  = max_i log c(z_i)          glossy_std = std_i log c(z_i)  (ddof = 1)
    lower bound = nll - glossy_max,  nll = -(1/N) sum_j log tau(x_j)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .storage import (
    EXP_FLOOR,
    PRUNE_EVERY,
    PRUNE_LOG_WEIGHT,
    ba_step_exp,
    ba_step_streamed,
    exp_capacity,
    exp_log_c,
    exp_rows_into,
    row_block,
    stream_rows,
)
from .working_set import fit as working_set_fit


def _logsumexp_(a: torch.Tensor, dim: int) -> torch.Tensor:
    """logsumexp of the float64 `a` along dim, overwriting a. Exponents below -708 (subnormal, where exp
    takes a slow path) are raised to -708: each such term adds under e^-708 of the largest, so the result
    moves by under n e^-708 relative, far below float64's precision. A line whose max is not finite (all
    -inf, or +inf or NaN somewhere) gives that max, as torch.logsumexp does."""
    r = a.amax(dim, keepdim=True)
    finite = torch.isfinite(r)
    a.sub_(torch.where(finite, r, 0.0)).clamp_min_(EXP_FLOOR[torch.float64]).exp_()
    return torch.where(finite, r + torch.log(a.sum(dim, keepdim=True)), r).squeeze(dim)


def log_c(L: torch.Tensor, log_px: torch.Tensor, block_rows: int | None = None) -> torch.Tensor:
    """[M] log c(z_i) for L [M, N] and log_px [N], accumulated in float64 over row blocks."""
    if L.ndim != 2 or log_px.ndim != 1 or L.shape[1] != log_px.shape[0]:
        raise ValueError(f"L must be [M, N] and log_px [N]; got {tuple(L.shape)} and {tuple(log_px.shape)}")
    n = L.shape[1]
    lpx = log_px.to(device=L.device, dtype=torch.float64)
    out = torch.empty(L.shape[0], dtype=torch.float64, device=L.device)
    step = row_block(L, block_rows)
    buf = torch.empty(min(step, L.shape[0]), n, dtype=torch.float64, device=L.device)
    for i in range(0, L.shape[0], step):
        a = torch.sub(L[i : i + step], lpx, out=buf[: len(L[i : i + step])])
        out[i : i + step] = _logsumexp_(a, 1)
    return out - math.log(n)


def glossy_stats(log_c_values: torch.Tensor) -> dict[str, float]:
    """max and unbiased (ddof = 1) std of log c(z_i), and the index of the maximiser."""
    v = log_c_values.to(torch.float64)
    std = v.std(unbiased=True).item() if v.numel() > 1 else float("nan")
    return {"glossy_max": v.max().item(), "glossy_std": std, "argmax": int(v.argmax().item())}


def nll(log_px: torch.Tensor) -> float:
    return -log_px.to(torch.float64).mean().item()


def lower_bound(nll_value: float, log_c_values: torch.Tensor) -> float:
    """nll - sup_z log c(z) (Theorem 2), with the sup estimated by the max over the candidates and
    the model's own prior as one more candidate: its c is (1/N) sum_j p(x_j)/tau(x_j), which is 1 when
    tau is the model's marginal, so sup_z log c(z) >= 0 and a negative candidate max (the paper reports
    some) never lifts the bound above the NLL. For any other tau this only lowers the bound."""
    return nll_value - max(log_c_values.max().item(), 0.0)


def mixture_log_marginal(L: torch.Tensor, log_w: torch.Tensor, block_rows: int | None = None) -> torch.Tensor:
    """[N] log sum_i w_i l(x_j | z_i): the log-marginal of every data point under the prior w on the atoms."""
    lw = log_w.to(device=L.device, dtype=torch.float64)
    acc = torch.full((L.shape[1],), -math.inf, dtype=torch.float64, device=L.device)
    step = row_block(L, block_rows)
    buf = torch.empty(min(step, L.shape[0]), L.shape[1], dtype=torch.float64, device=L.device)
    for i in range(0, L.shape[0], step):
        a = torch.add(L[i : i + step], lw[i : i + step, None], out=buf[: len(lw[i : i + step])])
        acc = torch.logaddexp(acc, _logsumexp_(a, 0))
    return acc


@dataclass
class BAResult:
    log_w: torch.Tensor  # [M] log weights of the best prior found on the atoms
    nll: float  # NLL reached by that prior (an achievable upper bound on the best prior)
    gap: float  # max_i log c_w(z_i) >= 0: nll - gap <= min over priors <= nll
    iterations: int
    converged: bool
    # (nll, lower) per iteration; while atoms are left out (active_set), a step's lower end is over the atoms in
    # play only, so it is certified at the last step (over every atom) and at steps with none left out
    history: list[tuple[float, float]] = field(default_factory=list)
    solver: str = "Blahut-Arimoto"  # or "working set" (`best_prior`)

    @property
    def lower(self) -> float:
        return self.nll - self.gap


def _ba_step_log(L, log_w, block_rows):
    lpw = mixture_log_marginal(L, log_w, block_rows)
    return lpw, log_c(L, lpw, block_rows)


@dataclass(frozen=True)
class Speedups:
    """What `blahut_arimoto` does beyond the plain iteration; neither changes what it converges to or its
    certificate. active_set: atoms whose weight fell below e^-69 leave the products (see `blahut_arimoto`).
    squarem is off by default: its jumps are kept or not by comparing two NLLs, so the low bits of the arithmetic
    (another memory budget's float32 rows, another machine) can send it along another path to the optimum, and
    two evaluations then agree only to within their certified gaps (measured: nll_ba_heldout 6e-3 apart between
    a 2 MiB and a 4 GiB budget on one run), where the plain iteration agrees to float rounding. Measured on a
    default glossy eval (docs/performance.md) it brought the held-out fit from 108 s to 93 s.
    squarem: the squared extrapolation of Varadhan and Roland (2008, scheme S3) on the log weights: from a point
    and two plain steps, a jump along their squared difference, kept only where its NLL is at most that of the
    point the second plain step started from (else that plain step is taken), so every accepted point descends."""

    active_set: bool = True
    squarem: bool = False
    working_set: bool = True  # `best_prior` only: glossy.working_set's solver, Blahut-Arimoto where it cannot run


PLAIN = Speedups(active_set=False, squarem=False)
ACCELERATED = Speedups(active_set=True, squarem=True)


def blahut_arimoto(L: torch.Tensor, log_w0: torch.Tensor | None = None, max_iter: int = 1000,
                   tol: float = 1e-6, block_rows: int | None = None,
                   max_bytes: int = 2 * 2**30, speedups: Speedups = Speedups(), keep: int | None = None) -> BAResult:
    """Blahut-Arimoto on a finite set of atoms: w_i <- w_i c_w(z_i). The NLL never increases and, at
    every step, nll(w) - max_i log c_w(z_i) <= min_w nll(w) <= nll(w); stops when that gap < tol (at the
    step's own w: the certificate holds for any w, so it is unchanged by the speedups).

    When exp(L - column max) of the atoms in play fits in `max_bytes` (as float64, else as float32), each
    step is two matrix-vector products on it; otherwise the same products on it recomputed in float32 row
    blocks at every step (`storage.ba_step_streamed`); at any step where a column's mixture would underflow,
    or where not one row fits max_bytes (max_bytes=0), the step is done exactly in the log domain on all of L.

    speedups.active_set: atoms whose weight has fallen below e^-69 get weight 0 and leave the products (their
    rows are compacted out of the exp-matrix, which is built as soon as the remaining atoms fit `max_bytes`),
    so that late iterations cost what the surviving atoms cost. The answer stays certified over every atom:
    before stopping, log c of the left-out atoms is computed from L, and any with log c >= tol come back
    with their old weight, for good, and the iterations go on (so the rounds end: each brings back at least
    one atom). The returned gap is always the max over all atoms. speedups.squarem: see `Speedups`; a step
    is one evaluation of the weights (max_iter counts them), three to an extrapolation cycle. keep: one atom
    never left out (prior_fit's prior, whose weight is reported)."""
    ba = _ActiveSet(L, log_w0, block_rows, max_bytes, keep)
    sq = _Squarem() if speedups.squarem else None
    history: list[tuple[float, float]] = []
    it = 0
    while True:
        lpw, lc, exact = ba.step()
        cur_nll = -lpw.mean().item()
        gap = max(lc.max().item(), 0.0)
        if (gap < tol or it >= max_iter) and len(ba.idx) < ba.m:  # certify over the left-out atoms too
            gap, lc = ba.certify(lc, exact, gap, tol, bring_back=it < max_iter)
        history.append((cur_nll, cur_nll - gap))
        if gap < tol or it >= max_iter:
            return BAResult(ba.log_w, cur_nll, gap, it, gap < tol, history)
        if sq is None:  # the plain step
            ba.log_w[ba.idx] += lc
        else:
            here = ba.log_w[ba.idx]
            step = here + lc
            ba.log_w[ba.idx] = sq.next(ba.idx, here, step - torch.logsumexp(step, 0), cur_nll,
                                       last=it + 1 >= max_iter)
        ba.log_w = ba.log_w - torch.logsumexp(ba.log_w, 0)
        it += 1
        if speedups.active_set and (ba.E is None or it % PRUNE_EVERY == 0) and not (sq and sq.pending):
            ba.prune()  # without E, every step: E may fit now


def best_prior(L: torch.Tensor, log_w0: torch.Tensor | None = None, max_iter: int = 1000, tol: float = 1e-6,
               block_rows: int | None = None, max_bytes: int = 2 * 2**30, speedups: Speedups = Speedups(),
               keep: int | None = None) -> BAResult:
    """The best prior on the atoms (rows) of L, with Blahut-Arimoto's certificate: by `glossy.working_set` (a
    working set and sequential quadratic steps, which ends at the optimum itself, gap at float32's rounding of
    its last pass, in a few passes over L; max_iter counts its pricing passes) where speedups.working_set and
    the working set fits max_bytes, else `blahut_arimoto` (max_iter its steps). Either way nll - gap <= the
    best prior's NLL on the atoms <= nll, and converged says gap < tol."""
    if speedups.working_set:
        m = L.shape[0]
        lw0 = torch.full((m,), -math.log(m), dtype=torch.float64) if log_w0 is None else log_w0
        got = working_set_fit(L, lw0, max_iter, tol, max_bytes, keep)
        if got is not None:
            return BAResult(*got, solver="working set")
    return blahut_arimoto(L, log_w0, max_iter=max_iter, tol=tol, block_rows=block_rows, max_bytes=max_bytes,
                          speedups=speedups, keep=keep)


class _Squarem:
    """The extrapolation cycle over the atoms in play (`Speedups.squarem`), in the weights themselves: at w0 the
    plain step gives w1, at w1 it gives w2, and the next point is w' = w0 - 2a r + a^2 v (r = w1 - w0,
    v = w2 - 2 w1 + w0, a = -|r| / |v| capped at -1), each weight kept at least e^-20 of its w0 value (so an
    atom the jump would end shrinks fast but can come back, and one the active set leaves out is certified as
    any other); at w' its NLL decides: below w1's, and w''s plain step is next, else w2 (w1's plain step)
    is. Jumping in the log weights instead was measured to be rejected nearly always. A change of the atoms in
    play starts a new cycle; the last step of a run is always a plain one, so the returned point is never a
    rejected jump."""

    FLOOR = math.exp(-20.0)

    def __init__(self) -> None:
        self.phase, self.idx, self.saved = 0, None, ()

    @property
    def pending(self) -> bool:
        """A jump is to be evaluated next (the atoms in play must not change before it is judged)."""
        return self.phase == 2

    def next(self, idx: torch.Tensor, here: torch.Tensor, step: torch.Tensor, nll_here: float,
             last: bool) -> torch.Tensor:
        """The log weights to evaluate next, from the point just evaluated (`here`, its NLL) and its plain step;
        last: the next evaluation is the final one, so it is of a plain step, never a jump."""
        if idx is not self.idx:  # atoms left out or brought back: start again from here
            self.phase, self.idx = 0, idx
        if self.phase == 0:  # here = w0, step = w1
            self.phase, self.saved = 1, (here, step)
            return step
        if self.phase == 1:  # here = w1, step = w2: the extrapolated point
            w0, w1 = self.saved
            ref = w0.max()
            p0, p1, p2 = (torch.exp(w - ref) for w in (w0, w1, step))
            r, v = p1 - p0, p2 - 2 * p1 + p0
            nv = torch.linalg.vector_norm(v).item()
            a = min(-1.0, -torch.linalg.vector_norm(r).item() / nv) if nv > 0 else -1.0
            if last or a == -1.0:  # the jump would be w2 itself
                self.phase = 0
                return step
            jump = torch.log((p0 - 2 * a * r + a * a * v).clamp_min(0.0)) + ref
            x = torch.maximum(jump, w0 + math.log(self.FLOOR))  # in log weights: tiny w0 do not underflow
            self.phase, self.saved = 2, (step, nll_here)
            return x - torch.logsumexp(x, 0)
        w2, nll_w1 = self.saved  # here = w', step = its plain step
        self.phase = 0
        return step if nll_here < nll_w1 else w2  # strictly: at float64's floor the plain steps go on


class _ActiveSet:
    """Blahut-Arimoto's state: the log weights, the atoms in play (`idx`, whose exp-rows are E[:len(idx)] in that
    order once E exists), the left-out atoms' last log weights (`parked`, -inf for the atoms in play) and the
    atoms never left out (again)."""

    def __init__(self, L: torch.Tensor, log_w0: torch.Tensor | None, block_rows: int | None, max_bytes: int,
                 keep: int | None) -> None:
        self.L, self.block_rows, self.max_bytes = L, block_rows, max_bytes
        self.m, self.n = m, _ = L.shape
        if log_w0 is None:
            self.log_w = torch.full((m,), -math.log(m), dtype=torch.float64, device=L.device)
        else:
            lw = log_w0.to(device=L.device, dtype=torch.float64)
            self.log_w = lw - torch.logsumexp(lw, 0)
        self.col_max = L.amax(0).to(torch.float64)  # amax: 17x faster than max(0) on a row-major matrix
        self.idx = torch.arange(m, device=L.device)
        self.parked = torch.full((m,), -math.inf, dtype=torch.float64, device=L.device)
        self.stays = torch.zeros(m, dtype=torch.bool, device=L.device)
        if keep is not None:
            self.stays[keep] = True
        self.rows = row_block(L, block_rows)
        self.stream = stream_rows(self.n, max_bytes)  # rows of the streamed step's block (None: log domain)
        self.E = self.build()

    def build(self) -> torch.Tensor | None:
        """The exp-matrix of the atoms in play, where it fits `max_bytes`."""
        fit = exp_capacity(len(self.idx), self.n, self.max_bytes, self.m)
        if fit is None:
            return None
        out = torch.empty(fit[1], self.n, dtype=fit[0], device=self.L.device)
        exp_rows_into(out, self.L, self.idx if len(self.idx) < self.m else None, self.col_max, self.rows)
        return out

    def step(self):
        """(log p_w(x_j) [N], log c_w of the atoms in play, how the step was made): on the exp-matrix, or on its
        rows recomputed block by block where it does not fit, or exactly in the log domain on every row of L
        (left-out atoms have weight 0 there too) where not one row fits or a column's mixture would underflow.
        The last is ("log", log c of every atom) or ("exp", (inv_s, shift))."""
        lw = self.log_w[self.idx]
        if self.E is not None:
            step = ba_step_exp(self.E[: len(self.idx)], self.col_max, lw)
        elif self.stream is not None:
            whole = len(self.idx) == self.m and bool((self.idx[1:] > self.idx[:-1]).all())  # L itself, in order
            step = ba_step_streamed(self.L, None if whole else self.idx, self.col_max, lw, self.stream)
        else:
            step = None
        if step is None:
            lpw, lc_all = _ba_step_log(self.L, self.log_w, self.block_rows)
            return lpw, lc_all[self.idx], ("log", lc_all)
        lpw, lc, inv_s, shift = step
        return lpw, lc, ("exp", (inv_s, shift))

    def certify(self, lc: torch.Tensor, exact, gap: float, tol: float, bring_back: bool):
        """(the gap over every atom, log c of the atoms in play): log c of the left-out atoms from L; where the
        iterations may go on, those with log c >= tol come back with their old weight, for good."""
        out = torch.nonzero(torch.isfinite(self.parked)).squeeze(1)
        if exact[0] == "log":
            lc_out = exact[1][out]
        else:
            dtype = self.E.dtype if self.E is not None else torch.float32  # the streamed step's
            lc_out = exp_log_c(self.L, out, self.col_max, *exact[1], dtype, self.block_rows)
        gap = max(gap, lc_out.max().item())
        back = out[lc_out >= tol]
        if gap >= tol and bring_back and len(back):
            k = len(self.idx)
            self.log_w[back] = self.parked[back]
            self.parked[back] = -math.inf
            self.stays[back] = True  # out once too early: in for good, so that the rounds end
            if self.E is not None and k + len(back) <= self.E.shape[0]:
                exp_rows_into(self.E[k:], self.L, back, self.col_max, self.rows)
            else:
                self.E = None  # no room: streamed (or the log domain) until the atoms in play fit again
            self.idx = torch.cat([self.idx, back])
            self.log_w = self.log_w - torch.logsumexp(self.log_w, 0)
            lc = torch.cat([lc, lc_out[lc_out >= tol]])
        return gap, lc

    def prune(self) -> None:
        """Leave out the atoms whose weight fell below e^-69 (not those that stay, never the heaviest), when
        there is no exp-matrix or they are an eighth of those in play; compact E in place, or build it."""
        lw = self.log_w[self.idx]
        drop = (lw < PRUNE_LOG_WEIGHT) & ~self.stays[self.idx]
        drop[lw.argmax()] = False  # never an empty set
        if not (drop.any() and (self.E is None or int(drop.sum()) * 8 >= len(self.idx))):
            return
        pos = torch.nonzero(~drop).squeeze(1)  # ascending, pos[i] >= i: an in-place compaction is safe
        gone = self.idx[drop]
        self.parked[gone] = self.log_w[gone]
        self.log_w[gone] = -math.inf
        self.log_w = self.log_w - torch.logsumexp(self.log_w, 0)
        if self.E is not None:
            for i in range(0, len(pos), self.rows):  # each block's source rows are read before it is written
                src = pos[i : i + self.rows]
                self.E[i : i + len(src)] = self.E[src]
        self.idx = self.idx[pos]
        if self.E is None:
            self.E = self.build()


def prior_fit(L: torch.Tensor, log_px: torch.Tensor, max_iter: int = 500, tol: float = 1e-4,
              block_rows: int | None = None, max_bytes: int = 2 * 2**30, speedups: Speedups = Speedups()) -> dict:
    """Blahut-Arimoto weights on atoms z_1..z_M plus the model's own prior (atom M, whose likelihood
    column is p^(x_j)), fitted on the sample of L [M, N] = log l(x_j | z_i) and log_px [N] from equal
    mass on the prior and the atoms. Returns the log weights [M + 1] (`log_w`, the prior's last) and what
    the fit reached on that sample; `sandwich` reports it in-sample, `heldout_nll` scores it on other data."""
    aug = torch.cat([L, log_px.to(device=L.device, dtype=L.dtype).unsqueeze(0)], 0)
    return prior_fit_augmented(aug, max_iter, tol, block_rows, max_bytes, speedups)


def prior_fit_augmented(aug: torch.Tensor, max_iter: int = 500, tol: float = 1e-4, block_rows: int | None = None,
                        max_bytes: int = 2 * 2**30, speedups: Speedups = Speedups()) -> dict:
    """`prior_fit` on the augmented matrix [M + 1, N] whose last row is the prior's log p^(x_j). speedups: see
    `blahut_arimoto` (off only to measure what they save)."""
    m = aug.shape[0] - 1
    log_w0 = torch.full((m + 1,), -math.log(2 * max(m, 1)), dtype=torch.float64)
    log_w0[m] = -math.log(2) if m else 0.0
    res = best_prior(aug, log_w0, max_iter=max_iter, tol=tol, block_rows=block_rows, max_bytes=max_bytes,
                     speedups=speedups, keep=m)
    return {"log_w": res.log_w, "fit_nll": res.nll, "fit_gap": res.gap, "iterations": res.iterations,
            "converged": res.converged, "prior_weight": math.exp(res.log_w[m].item()), "solver": res.solver}


def sandwich(L: torch.Tensor, log_px: torch.Tensor, max_iter: int = 500, tol: float = 1e-4,
             block_rows: int | None = None, max_bytes: int = 2 * 2**30,
             augmented: torch.Tensor | None = None, level: float | None = None) -> dict:
    """The re-weighted prior of `prior_fit`, fitted and reported on the same sample. Returns nll_ba
    (never above nll: if BA ends above it, the prior alone is kept), the weight on the original prior,
    the duality gap and the certified lower end of the best prior on these atoms. augmented: L with
    log_px as one more row, [M + 1, N], if the caller built it (no copy of L is made then); max_bytes:
    what Blahut-Arimoto's exp-matrix may take (beyond it, the log domain in row blocks). level: also
    nll_ba_ci, the normal interval of the points' -log p_w(x_j) at the fitted weights (the weights held
    fixed: to first order their own variation does not move the optimum's value)."""
    if augmented is not None:
        fit = prior_fit_augmented(augmented, max_iter, tol, block_rows, max_bytes)
    else:
        fit = prior_fit(L, log_px, max_iter=max_iter, tol=tol, block_rows=block_rows, max_bytes=max_bytes)
    base = nll(log_px)
    out = {"ba_gap": fit["fit_gap"], "ba_best_prior_lower": fit["fit_nll"] - fit["fit_gap"],
           "ba_iterations": fit["iterations"], "ba_converged": fit["converged"], "ba_solver": fit["solver"]}
    if fit["fit_nll"] > base:  # the prior alone (w = e_M) reaches `base`; never report worse than it
        out.update(nll_ba=base, ba_prior_weight=1.0)
        scores = -log_px.to(torch.float64)
    else:
        out.update(nll_ba=fit["fit_nll"], ba_prior_weight=fit["prior_weight"])
        aug = augmented if augmented is not None else torch.cat(
            [L, log_px.to(device=L.device, dtype=L.dtype).unsqueeze(0)], 0)
        scores = -mixture_log_marginal(aug, fit["log_w"], block_rows)
    if level is not None:  # a mean over the points with the weights held fixed (the envelope theorem)
        from .intervals import normal_interval
        out["nll_ba_ci"] = list(normal_interval(scores, level))
    return out


def heldout_scores(log_w: torch.Tensor, log_px_score: torch.Tensor, mixture_atoms: torch.Tensor) -> torch.Tensor:
    """[N] -log (w_prior p^(x_j) + sum_i w_i l(x_j | z_i)) of each scored point, given mixture_atoms[j] =
    log sum_i w_i l(x_j | z_i) over the atoms (log_w[:-1]) and the prior's weight log_w[-1]."""
    lp = log_px_score.to(torch.float64) + log_w[-1].item()
    return -torch.logaddexp(lp, mixture_atoms.to(lp.device, torch.float64))


def heldout_nll(log_w: torch.Tensor, log_px_score: torch.Tensor, mixture_atoms: torch.Tensor) -> float:
    """The mean of `heldout_scores`: the held-out prior's NLL on the scored sample. Never clamped: it may
    come out above the model's own NLL."""
    return heldout_scores(log_w, log_px_score, mixture_atoms).mean().item()


def popoviciu(glossy_max: float, glossy_std: float, n: int) -> dict:
    """The in-sample check: when every candidate's own image dominates its c (log c(z_i) >= -log N),
    log c lies in [-log N, max], so Popoviciu's inequality bounds its std by (max + log N) / 2 (times
    sqrt(N / (N - 1)) for the unbiased std). A reported std above that bound cannot come
    from in-sample candidates."""
    bound = (glossy_max + math.log(n)) / 2 * math.sqrt(n / (n - 1))
    return {"popoviciu_bound": bound, "violates": glossy_std > bound}
