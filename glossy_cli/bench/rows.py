"""One row of the benchmark per operation: its throughput beside the floor, the peak and the naive baseline."""

from __future__ import annotations

import json
import logging
import math
import resource
import subprocess
import sys
import time

import torch

from .baselines import naive_importance_sampling, naive_likelihood_matrix, train_steps
from .measure import _pseudo_macs, best_time, model_costs

log = logging.getLogger("glossy.bench")

SHAPE = (1, 28, 28)  # MNIST-shaped
CIFAR = (3, 32, 32)  # the logistic rows: CIFAR-10-shaped grey levels


def _binary(n: int, seed: int, p: float = 0.3) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, *SHAPE), p), generator=torch.Generator().manual_seed(seed))


def _gray(n: int, seed: int, shape: tuple = SHAPE) -> torch.Tensor:
    """Every one of the 256 levels equally likely: the worst case for the logistic table's cache."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, *shape), generator=g).float() + 0.5) / 256


def _build(name: str, prior: str, input_type: str = "binary", seed: int = 0, shape: tuple = SHAPE):
    from glossy_models import registry as models

    torch.manual_seed(seed)
    return models.build(name, prior, shape, input_type)


def _row(op: str, subject: tuple[str, str, str, str], fast: tuple[int, float], flop_per_item: float, peak: float,
         baseline: tuple[int, float] | None = None, note: str = "", **extra) -> dict:
    """One row: subject (model, prior, data, unit), fast and baseline (items, seconds) measured in this run."""
    (model, prior, data, unit), (items, seconds) = subject, fast
    thr = items / seconds
    gflops = thr * flop_per_item / 1e9
    r = {"operation": op, "model": model, "prior": prior, "data": data, "unit": unit,
         "throughput": thr, "seconds": seconds, "items": items, "floor_flop_per_item": flop_per_item,
         "floor_seconds": items * flop_per_item / (peak * 1e9), "gflops": gflops, "pct_of_peak": 100 * gflops / peak,
         "baseline_throughput": None, "speedup": None, "speedup_at_peak": None, "note": note}
    if baseline:
        r["baseline_throughput"] = baseline[0] / baseline[1]
        r["speedup"] = thr / r["baseline_throughput"]
        # the speed-up a run at 100% of the peak would have over this baseline: what any target can ask
        r["speedup_at_peak"] = (peak * 1e9 / flop_per_item) / r["baseline_throughput"]
    r.update(extra)
    return r


def bench_train(name, sz, device, peak, seed) -> dict:
    model = _build(name, "standard", seed=seed).to(device)
    x = _binary(sz["train_points"], seed)  # in [0, 1], binarised per batch (dynamic binarisation)
    steps = sz["pixel_train_steps"] if name == "pixelhvae" else sz["train_steps"]
    batch = sz["train_batch"]
    flop = 2 * 3 * model_costs(model, device).train_image  # forward + backward (2x forward) per image
    t_fast, t_naive, t_fused = math.inf, math.inf, math.inf
    for r in range(sz["repeats"]):  # interleaved, best of each
        t_fast = min(t_fast, train_steps(model, x, batch, steps, device, naive=False, seed=seed + r))
        t_naive = min(t_naive, train_steps(model, x, batch, steps, device, naive=True, seed=seed + r))
        t_fused = min(t_fused, train_steps(model, x, batch, steps, device, naive=False, seed=seed + r, fused=True))
    items = steps * batch
    return _row("train_step", (name, "standard", "binary", "images/s"), (items, t_fast), flop, peak, (items, t_naive),
                batch=batch, fused_adam_throughput=items / t_fused,
                note=f"batch {batch}, Adam as glossy train runs it; floor = 3 x forward (backward ~2x forward), "
                     f"Adam not counted; with torch.optim.Adam(fused=True) (not what glossy train uses) "
                     f"{items / t_fused:.4g} images/s ({t_naive / t_fused:.2f}x naive)")


def bench_is(name, prior, sz, device, peak, seed) -> dict:
    from glossy.importance import importance_sampling, is_block_bytes
    from glossy.memory import make_plan

    model = _build(name, prior, seed=seed).to(device).eval()
    s_fast = sz["pixel_is_samples"] if name == "pixelhvae" else sz["is_samples"]
    n_fast = sz["pixel_is_points"] if name == "pixelhvae" else sz["is_points"]
    x = _binary(max(n_fast, sz["naive_points"]), seed + 1)
    xf, xn = x[:n_fast], x[: sz["naive_points"]]
    costs = model_costs(model, device)
    flop = 2 * (costs.sample + costs.point / s_fast)
    plan = make_plan(model, len(xf), len(xf), s_fast, 4 * 2**30)
    chunk = min(sz["naive_chunk"], s_fast)

    def fast():
        with model.frozen():
            importance_sampling(model, xf, s_fast, plan, device)

    def naive():
        naive_importance_sampling(model, xn, s_fast, chunk, device)

    def warm():
        with model.frozen():
            importance_sampling(model, xf[:1], min(s_fast, 8), plan, device)

    t_fast = best_time(fast, sz["repeats"], device, warmup=warm)  # the warm-up calibrates the decoder block
    with model.frozen():
        block = is_block_bytes(model, device)
    t_naive = best_time(naive, max(1, sz["repeats"] - 1), device,
                        warmup=lambda: naive_importance_sampling(model, xn[:1], chunk, chunk, device))
    return _row("importance_sampling", (name, prior, "binary", "samples/s"), (len(xf) * s_fast, t_fast), flop, peak,
                (len(xn) * s_fast, t_naive), samples=s_fast, chunk=chunk, naive_flop_per_sample=2 * (
                    costs.sample + costs.point + (_pseudo_macs(model) / chunk)),
                block_samples=block // model.eval_bytes_per_sample(),
                note=f"S = {s_fast}, {len(xf)} points (plan: {plan.samples} samples per chunk; decoder blocks of "
                     f"{block // model.eval_bytes_per_sample()} samples, {block / 2**20:.1f} MiB, chosen at run time); "
                     f"naive: {len(xn)} point(s), chunks of {chunk}")


def bench_logistic(sz, device, peak, seed) -> list[dict]:
    """The logistic-256 decoder at CIFAR-10's shape (a VAE, standard prior, untrained): training steps (the
    baseline: the naive loop, as in train_step) and importance sampling of `logistic_is_points` images at S =
    is_samples (the baseline: the reference's way, as in importance_sampling), each beside its matrix-product
    floor."""
    from glossy.importance import importance_sampling, is_block_bytes
    from glossy.memory import make_plan

    model = _build("vae", "standard", "continuous", seed=seed, shape=CIFAR).to(device)
    costs = model_costs(model, device)
    x = _gray(max(sz["train_points"] // 4, sz["train_batch"]), seed, CIFAR)
    steps, batch = sz["train_steps"], sz["train_batch"]
    t_fast, t_naive = math.inf, math.inf
    for r in range(sz["repeats"]):
        t_fast = min(t_fast, train_steps(model, x, batch, steps, device, naive=False, seed=seed + r))
        t_naive = min(t_naive, train_steps(model, x, batch, steps, device, naive=True, seed=seed + r))
    train = _row("train_step_logistic", ("vae", "standard", "gray 3x32x32", "images/s"), (steps * batch, t_fast),
                 2 * 3 * costs.train_image, peak, (steps * batch, t_naive), batch=batch,
                 note=f"CIFAR-10's shape, batch {batch}, Adam as glossy train runs it; floor = 3 x forward")
    model.eval()
    s, n = sz["is_samples"], sz["logistic_is_points"]
    xf, xn = _gray(n, seed + 1, CIFAR), _gray(sz["naive_points"], seed + 1, CIFAR)
    plan = make_plan(model, n, n, s, 4 * 2**30)
    chunk = min(sz["naive_chunk"], s)

    def fast():
        with model.frozen():
            importance_sampling(model, xf, s, plan, device)

    t_is = best_time(fast, sz["repeats"], device, warmup=lambda: fast())
    with model.frozen():
        block = is_block_bytes(model, device)
    t_ref = best_time(lambda: naive_importance_sampling(model, xn, s, chunk, device), max(1, sz["repeats"] - 1),
                      device)
    is_row = _row("importance_sampling_logistic", ("vae", "standard", "gray 3x32x32", "samples/s"), (n * s, t_is),
                  2 * (costs.sample + costs.point / s), peak, (len(xn) * s, t_ref), samples=s,
                  note=f"CIFAR-10's shape, S = {s}, {n} images, {t_is / n:.3f} s an image (decoder blocks of "
                       f"{block // model.eval_bytes_per_sample()} samples); naive: {len(xn)} image(s), chunks of "
                       f"{chunk}")
    return [train, is_row]


def bench_pythae(sz, device, peak, seed) -> dict | None:
    """glossy's importance sampling of a pythae VAE (default networks, bce) through glossy.adapters against pythae's
    own `get_nll` (one batch of S samples an image, its fastest setting) on the same images at the same S; None
    without pythae (an optional extra)."""
    try:
        from pythae.models import VAE, VAEConfig
    except ImportError:
        log.info("pythae is not installed: no pythae row (pip install -e '.[pythae]')")
        return None
    from glossy.adapters import from_pythae
    from glossy.importance import importance_sampling
    from glossy.memory import make_plan

    torch.manual_seed(seed)
    net = VAE(VAEConfig(input_dim=SHAPE, latent_dim=16, reconstruction_loss="bce")).to(device)
    model, s, x = from_pythae(net), sz["is_samples"], _binary(sz["naive_points"], seed + 1)
    plan = make_plan(model, len(x), len(x), s, 4 * 2**30)

    def fast():
        with model.frozen():
            importance_sampling(model, x, s, plan, device)

    def theirs():
        with torch.no_grad():
            net.get_nll(x.to(device), n_samples=s, batch_size=s)

    t_fast = best_time(fast, sz["repeats"], device, warmup=lambda: fast())
    t_theirs = best_time(theirs, max(1, sz["repeats"] - 1), device)
    costs = model_costs(model, device)
    return _row("importance_sampling_pythae", ("pythae-vae", "standard", "binary", "samples/s"), (len(x) * s, t_fast),
                2 * (costs.sample + costs.point / s), peak, (len(x) * s, t_theirs),
                note=f"S = {s}, {len(x)} points; baseline: pythae's VAE.get_nll on the same images (batch_size = S)")


def bench_matrix(input_type, sz, device, peak, seed) -> dict:
    from glossy.candidates import likelihood_matrix, posterior_means
    from glossy.memory import make_plan

    model = _build("vae", "standard", input_type, seed=seed).to(device).eval()
    n = sz["matrix_n"] if input_type == "binary" else sz["logistic_n"]
    x = _binary(n, seed + 2) if input_type == "binary" else _gray(n, seed + 2)
    d = math.prod(SHAPE)
    costs = model_costs(model, device)
    with model.frozen():
        z = posterior_means(model, x, device)
        plan = make_plan(model, n, n, 1, 4 * 2**30 - 4 * n * n)
        t_fast = best_time(lambda: likelihood_matrix(model, x, z, plan, device), sz["repeats"], device,
                           warmup=lambda: likelihood_matrix(model, x[:8], z[:8], plan, device))
        m_naive = min(n, sz["naive_matrix_rows"])
        t_naive = best_time(lambda: naive_likelihood_matrix(model, x, z[:m_naive], 100, device), 1, device)
    per_pair = 2 * d if input_type == "binary" else d  # Bernoulli: one multiply-add per pixel; logistic: one add
    flop = per_pair + 2 * costs.decoder / n
    kind = "Bernoulli: logits @ x^T (one addmm)" if input_type == "binary" else (
        f"logistic-256: no matrix-product form; cache-sized bin tables (257 softplus per candidate and pixel) "
        f"gathered and summed per (pair, pixel): {t_fast / (n * n * d) * 1e9:.2f} ns per (pair, pixel), "
        f"a gather-bound operation, so its fraction of the matmul peak is small by nature")
    return _row(f"glossy_matrix_{'bernoulli' if input_type == 'binary' else 'logistic'}",
                ("vae", "standard", input_type, "pairs/s"), (n * n, t_fast), flop, peak, (m_naive * n, t_naive),
                note=f"M = N = {n}; {kind}; naive: {m_naive} candidates, per-pair decoder calls in "
                     "DataLoader batches of 100")


def bench_intervals(sz, device, peak, seed) -> dict:
    """The interval stage of the in-sample source on an N x N matrix: the delete-a-group jackknife that glossy
    reports (eval.jackknife groups) against the percentile bootstrap it reported before (B = 100 resamples),
    the baseline; the note adds the pass that nll_ba_ci takes (the mixture at the fitted weights)."""
    from glossy import bounds, intervals

    n, groups = sz["matrix_n"], sz["interval_groups"]
    g = torch.Generator().manual_seed(seed)
    L = (torch.randn(n, n, generator=g) * 30 - 500).to(device)
    lpx = torch.logsumexp(L.double(), 0) - math.log(n)
    t_jack = best_time(lambda: intervals.jackknife(L, lpx, groups, seed), sz["repeats"], device)
    t_boot = best_time(lambda: intervals.bootstrap(L, lpx, 100, seed), sz["repeats"], device)
    log_w = torch.full((n,), -math.log(n), dtype=torch.float64)
    t_mix = best_time(lambda: bounds.mixture_log_marginal(L, log_w), sz["repeats"], device)
    flop = 2 * groups + 2  # per pair: exp(L - max) @ weights^T (groups columns), and the shift
    return _row("intervals_jackknife", ("any", "any", "any", "pairs/s"), (n * n, t_jack), flop, peak, (n * n, t_boot),
                note=f"M = N = {n}: jackknife with {groups} groups {t_jack:.3f} s against the percentile bootstrap "
                     f"(100 resamples, the baseline) {t_boot:.3f} s; nll_ba_ci's mixture pass {t_mix:.3f} s")


def bench_best_prior(sz, device, peak, seed) -> dict:
    """The held-out fit's solve at its default size and budget: the best prior on heldout_atoms atoms plus one (the
    model's prior, kept in play) for heldout_points points, a float32 matrix beside which the default 4 GiB budget
    leaves 1.76 GiB (so Blahut-Arimoto streams it), by glossy's working set; the baseline is the plain
    Blahut-Arimoto that ran before it, `best_prior_steps` of its streamed steps timed and scaled to eval.ba_iters
    (500). The problem: Gaussian likelihoods of the points under the atoms in 8 dimensions (an optimum on a few
    hundred atoms, as on a trained model's held-out fit). Floor: one matrix-vector product over L per pass
    (2 M N flop; the exponentials are not counted)."""
    from glossy import bounds

    m, n, d = int(sz["heldout_atoms"]) + 1, int(sz["heldout_points"]), 8
    g = torch.Generator().manual_seed(seed)
    z, x = torch.randn(m, d, generator=g), torch.randn(n, d, generator=g) * 1.2
    L = torch.empty(m, n)
    for i in range(0, m, 4096):  # in blocks: cdist's temporaries of the whole matrix would double it
        L[i : i + 4096] = -0.5 * torch.cdist(z[i : i + 4096], x) ** 2
    L = L.to(device)
    lw0 = torch.full((m,), -math.log(2 * (m - 1)), dtype=torch.float64)
    lw0[-1] = -math.log(2)
    budget = int(1.76 * 2**30)
    kw = {"max_iter": 500, "tol": 1e-4, "max_bytes": budget, "keep": m - 1}
    res = {}

    def working_set():
        res["ws"] = bounds.best_prior(L, lw0, **kw)

    t_ws = best_time(working_set, max(1, int(sz["repeats"]) - 1), device)
    steps = int(sz["best_prior_steps"])
    t0 = time.perf_counter()
    ba = bounds.blahut_arimoto(L, lw0, **{**kw, "max_iter": steps})
    t_step = (time.perf_counter() - t0) / ba.iterations
    ws = res["ws"]
    passes = len(ws.history)
    return _row("best_prior_heldout", ("any", "any", "any", "solves/s"), (1, t_ws), passes * 2.0 * m * n, peak,
                (1, t_step * 500),
                note=f"M = {m} atoms, N = {n} points, budget {budget / 2**30:.2f} GiB: working set ({ws.solver}) "
                     f"{t_ws:.2f} s, {passes} pricing passes, gap {ws.gap:.1e}, support "
                     f"{int(torch.isfinite(ws.log_w).sum())}; plain Blahut-Arimoto {t_step:.3f} s a step "
                     f"({ba.iterations} timed), 500 steps (eval.ba_iters) {500 * t_step:.1f} s: the baseline; "
                     f"its gap after {ba.iterations} steps {ba.gap:.1e}")


def e2e_child(n: int, s: int, threads: int | None, device: str, jackknife: int = 20) -> dict:
    """`glossy eval` on one VAE in this (fresh) process: wall time, evaluate()'s own timings and the
    process's peak resident memory."""
    from glossy.context import RunOptions
    from glossy.evaluation import evaluate

    if threads:
        torch.set_num_threads(int(threads))
    model = _build("vae", "standard").to(device)
    x = _binary(n, 7, p=0.13)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    r = evaluate(model, x, is_samples=s, jackknife=jackknife, run=RunOptions(device, show_progress=False))
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "timing_s": r["timing_s"], "nll": r["nll"], "glossy_max": r["glossy_max"],
            "ba_iterations": r.get("ba_iterations"), "plan": r["plan"],
            "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_mib": rss0 / 1024}


def bench_e2e(sz, device, peak, threads, is_row: dict, matrix_row: dict) -> dict:
    """glossy eval's evaluate() on one VAE in a fresh process at `threads`, and the wall time that the
    importance-sampling and Bernoulli-matrix rows measured at the same thread count predict for it (IS:
    N x S samples; the test candidates' N x N matrix), with the relative error of that prediction."""
    n, s = int(sz["e2e_points"]), int(sz["e2e_samples"])
    n_full, s_full = 10000, 5000
    cmd = [sys.executable, "-m", "glossy_cli.bench", "e2e-child", str(n), str(s), str(threads or 0), str(device),
           str(sz["e2e_jackknife"])]
    log.info("end to end: evaluate() on a VAE, N=%d, S=%d, in a fresh process", n, s)
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"the end-to-end child failed:\n{p.stderr[-3000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    model = _build("vae", "standard").to(device)
    costs = model_costs(model, device)
    flop_is = 2 * (costs.sample * s_full + costs.point)  # per point, at the reported size (S = s_full)
    run_floor = n * 2 * (costs.sample * s + costs.point) / (peak * 1e9)  # the measured run's flop floor
    full = n >= n_full and s >= s_full
    t = res["timing_s"]
    if full:
        wall, label = res["wall_s"], "measured"
    else:
        t_is = t["importance_sampling"] * (n_full * s_full) / (n * s)
        rest = (res["wall_s"] - t["importance_sampling"]) * (n_full / n) ** 2  # matrix, BA, intervals: ~N^2
        wall, label = t_is + rest, f"EXTRAPOLATED from N={n}, S={s}"
    mem = res["maxrss_mib"]
    grow = (4 + 8 + 8) * (n_full**2 - n**2) / 2**20  # L (float32), exp(L) and a float64 copy in BA
    mem_note = f"peak RSS {mem:.0f} MiB" + ("" if n >= n_full else f" at N={n} (the N x N matrices grow as N^2: "
                                                                  f"~{grow:.0f} MiB more at N={n_full})")
    r = _row("e2e_eval", ("vae", "standard", "binary", "points/s"), (n_full, wall), flop_is, peak,
             note=f"glossy eval equivalent (evaluate(): IS, matrix, BA, jackknife {sz['e2e_jackknife']}) "
                  f"on N={n_full}, S={s_full}: {label}; {mem_note}; run: IS {t['importance_sampling']:.1f}s, "
                  f"matrix {t['glossy_matrix']:.1f}s, total {res['wall_s']:.1f}s, BA iterations "
                  f"{res['ba_iterations']}")
    predicted = n * s / is_row["throughput"] + n * n / matrix_row["throughput"]
    r.update({"run_pct_of_floor": 100 * run_floor / res["wall_s"],
              "wall_s": wall, "peak_rss_mib": mem, "e2e_points": n, "e2e_samples": s, "e2e_label": label,
              "e2e_run_s": res["wall_s"], "predicted_s": predicted,
              "prediction_error_pct": 100 * (res["wall_s"] / predicted - 1)})
    r["note"] += (f"; the measured run (N={n}, S={s}) ran at {r['run_pct_of_floor']:.0f}% of its flop floor "
                  f"({run_floor:.1f} s at this thread count's peak)")
    r["note"] += (f"; the IS and matrix rows at {threads} thread(s) predict {predicted:.1f} s for this run "
                  f"(N={n}, S={s}): measured {res['wall_s']:.1f} s, {r['prediction_error_pct']:+.0f}% (the "
                  f"rest is BA, intervals and start-up, which the rows do not time)")
    return r
