"""The progress line of a long training run: epochs and time left under the early-stopping rule."""

import itertools

import pytest

from glossy_cli.train import epochs_left, progress_line, seconds_per_epoch


def simulate(epoch, counter, warmup, patience, max_epochs, improve_until=0):
    """The training loop's stopping rule, epoch by epoch: the validation loss improves up to epoch
    `improve_until` and never after. Returns how many epochs run after `epoch`."""
    e, n = epoch, 0
    while True:
        e += 1
        n += 1
        if e <= improve_until:
            counter = 0
        else:
            counter = 0 if e < warmup else counter + 1
        if counter > patience or e >= max_epochs:
            return n


@pytest.mark.parametrize("warmup,patience,max_epochs", [pytest.param(100, 50, 2000, marks=pytest.mark.slow),
                                                         (2, 5, 3), (0, 3, 40), (10, 0, 30)])
def test_epochs_left_brackets_every_future_of_the_stopping_rule(warmup, patience, max_epochs):
    for epoch, counter in itertools.product(range(0, max_epochs), range(0, patience + 1)):
        if counter and epoch < warmup:
            continue  # the counter is 0 during the warm-up
        lo, hi = epochs_left(epoch, counter, warmup, patience, max_epochs)
        assert lo == simulate(epoch, counter, warmup, patience, max_epochs)  # never improves again
        assert hi == simulate(epoch, counter, warmup, patience, max_epochs, improve_until=max_epochs)
        for until in (epoch + 1, epoch + 7, warmup + 3):  # improves for a while
            assert lo <= simulate(epoch, counter, warmup, patience, max_epochs, improve_until=until) <= hi


def test_progress_line_says_epoch_best_patience_and_a_time_range():
    line = progress_line(213, 2000, 209, 4, 50, 100, 6.0)
    assert line == "epoch 213/2000, best 209, patience 46 of 50 left; 5m to 2h59m left (47-1787 epochs at 6 s)"
    warm = progress_line(10, 2000, 10, 0, 50, 100, 30.0)
    assert "KL warm-up until epoch 100" in warm and "1h10m to 16h35m left (140-1990 epochs" in warm
    assert progress_line(300, 2000, 249, 51, 50, 100, 6.0).endswith("; done")
    assert "2d22h to" in progress_line(200, 2000, 200, 0, 50, 100, 5000.0)


def test_seconds_per_epoch_keeps_trajectory_epochs_and_drops_a_suspension():
    assert seconds_per_epoch([7.0]) == 7.0
    # one epoch in 20 carries a trajectory evaluation: a real cost, averaged in
    assert seconds_per_epoch([7.0] * 19 + [30.0]) == pytest.approx((19 * 7 + 30) / 20)
    # the machine was suspended for 40 minutes during one epoch (seen in a real log: "2d19h left" at 131 s)
    assert seconds_per_epoch([7.0] * 19 + [2400.0]) == pytest.approx(7.0)
    assert seconds_per_epoch([5.0, 9.0]) == 7.0
