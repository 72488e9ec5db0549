"""The sup of log c(z) over all z, searched: Theorem 2 bounds the NLL of every prior with sup_z log c(z), and the
max over N candidates only approaches it from below. From the best candidates, gradient ascent on the decoder
(Adam on z, the whole glossy row log l(x_j | z) of each code at each step) climbs to codes of higher log c; their
max is a tighter (lower, more honest) bound, and they join the in-sample Blahut-Arimoto prior as atoms."""

from __future__ import annotations

import math

import torch

SEARCH_LR = 0.05  # Adam's step on z (codes live on the prior's unit scale)


def search_sup(model, x: torch.Tensor, log_px: torch.Tensor, starts: torch.Tensor, steps: int,
               lr: float = SEARCH_LR) -> torch.Tensor:
    """The codes [k, latent] of highest log c that `steps` Adam steps reach from each of `starts` [k, latent]
    (each start's best point along its path, the start itself included, so that no code is worse than its start).
    log c is computed from `model.log_likelihood_matrix(x, z)` with gradients taken with respect to z only; x and
    log_px [N] on z's device."""
    z = starts.detach().clone().requires_grad_(True)
    lpx = log_px.to(device=z.device, dtype=torch.float32)
    opt = torch.optim.Adam([z], lr=lr)
    best_z, best = starts.detach().clone(), torch.full((len(starts),), -math.inf, device=z.device)
    for step in range(steps + 1):
        with torch.enable_grad():
            lc = torch.logsumexp(model.log_likelihood_matrix(x, z) - lpx, 1) - math.log(len(lpx))
            better = lc.detach() > best
            best_z[better], best[better] = z.detach()[better], lc.detach()[better]
            if step == steps:
                break
            (grad,) = torch.autograd.grad(-lc.sum(), z)  # the networks' parameters get no gradient
        z.grad = grad
        opt.step()
    return best_z


def searched_stats(found_lc: torch.Tensor, candidate_max: float, nll_value: float, steps: int, starts: int) -> dict:
    """result.json's numbers of the search: the searched sup (the max of log c over the candidates and the found
    codes), the bound from it, and how far the search moved the max."""
    searched = max(candidate_max, found_lc.max().item())
    return {"glossy_max_searched": searched, "lower_bound_searched": nll_value - max(searched, 0.0),
            "sup_search": {"steps": steps, "starts": starts, "lr": SEARCH_LR, "gain": searched - candidate_max,
                           "found_log_c": [float(v) for v in found_lc]}}

