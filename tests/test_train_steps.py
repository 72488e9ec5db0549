"""The training loop's steps, each on its own: the stopping decision, one epoch, resume."""

import math

import pytest
import torch

from glossy_cli.train import EpochPlan, new_state, resume, stopping_decision, train_one_epoch
from glossy_models.registry import build


def _run(losses, warmup=0, patience=2, max_epochs=100):
    state = new_state()
    improved = [stopping_decision(state, e, v, warmup=warmup, patience=patience, max_epochs=max_epochs)
                for e, v in enumerate(losses, 1) if not state["done"]]
    return state, improved


def test_early_stopping_after_patience_plus_one_epochs_without_improvement():
    state, improved = _run([5, 4, 4.5, 4.2, 4.1, 3.9])
    assert improved == [True, True, False, False, False]  # stops before epoch 6 could improve
    assert state["done"] and state["stop_reason"] == "early stopping after epoch 5"
    assert (state["best_epoch"], state["best_val"], state["epoch"]) == (2, 4, 5)


def test_the_counter_waits_for_the_warm_up_and_an_improvement_resets_it():
    state, _ = _run([5, 6, 6, 6, 6], warmup=4, patience=1)
    assert state["es_counter"] == 2 and state["done"]  # counted from epoch 4 on: 1, 2 > patience
    state, _ = _run([5, 6, 6, 4, 6], patience=3)
    assert state["es_counter"] == 1 and not state["done"] and state["best_epoch"] == 4


def test_train_epochs_ends_the_run():
    state, _ = _run([5, 4, 3], max_epochs=3)
    assert state["done"] and state["stop_reason"] == "reached train.epochs = 3"


def test_one_epoch_lowers_the_loss_and_a_stop_check_ends_it_between_steps():
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((200, 1, 6, 6), 0.2))
    model = build("vae", "standard", (1, 6, 6), "binary", z_dim=2, hidden=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    step = lambda xb, beta: (lambda t: (t["loss"].mean(), t["re"].mean().detach(), t["kl"].mean().detach()))(
        model.elbo(xb, beta))
    plan = EpochPlan(model, opt, step, x, batch_size=20, n_batches=10, gen=torch.Generator().manual_seed(0))
    first = train_one_epoch(plan, 1.0)
    for _ in range(4):
        later = train_one_epoch(plan, 1.0)
    assert all(math.isfinite(v) for v in first) and later[0] < first[0]
    steps = []

    def stop_check():
        steps.append(1)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_one_epoch(plan, 1.0, stop_check=stop_check)
    assert steps == [1]


def test_resume_without_last_pt_is_a_new_run(tmp_path):
    model = build("vae", "standard", (1, 6, 6), "binary", z_dim=2, hidden=16)
    opt = torch.optim.Adam(model.parameters())
    assert resume(tmp_path / "last.pt", model, opt, torch.Generator(), {}, torch.device("cpu")) is None
