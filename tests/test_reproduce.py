"""The refactors change no number: the synthetic quick run, trained and evaluated by today's code, gives the
result.json that the code before them wrote (tests/data/quick_synthetic_reference.json, made by
`python -m tests.reference_run make ...`).

Bit for bit where the arithmetic is known to be the reference's: the same fingerprint (tests/fingerprint.py: torch's
version, its CPU capability, the BLAS, and the bits of the matrix products, element-wise functions, reductions and
Adam steps that glossy is made of). A machine's model name does not say it: two "AMD EPYC" machines with one torch
gave different low bits. Forcing another kernel path on one machine (ATEN_CPU_CAPABILITY=avx2,
MKL_ENABLE_INSTRUCTIONS=AVX2, both) changed the fingerprint each time, and the run's floats each time too, by at
most 1.2e-5 relative and 3.5e-4 nats absolute (docs/robustness.md, "Determinism"). Elsewhere every float agrees to
`reference_run.REL` relative or `reference_run.ABS` nats absolute, and every other value exactly except where
Blahut-Arimoto stopped (`reference_run.SOLVER_PATH`: other low bits may cross its tolerance a step earlier or
later; with its SQUAREM jumps on, which are kept by comparing two NLLs, they did: 89 steps, converged, against
100 under ATEN_CPU_CAPABILITY=avx2).

The reference may be regenerated only in a commit that says which fields change and why, after checking that every
estimate agrees with the old reference within its solver tolerance or Monte Carlo error.
"""

import json

import pytest

from tests.fingerprint import fingerprint_of_a_run
from tests.reference_run import ABS, REFERENCE, REL, differences, quick_run


@pytest.mark.slow  # a training and its evaluation through the console script
def test_the_quick_synthetic_run_reproduces_the_reference_result():
    ref = json.loads(REFERENCE.read_text())
    same = fingerprint_of_a_run() == ref["environment"]
    diffs = differences(quick_run(), ref["result"], strict=same)  # non-floats are compared exactly inside
    if same:
        assert diffs == [], diffs[:10]  # the same arithmetic: bit for bit
    else:
        assert all(rel <= REL or absolute <= ABS for _, rel, absolute in diffs), diffs[:10]


@pytest.mark.slow  # three fresh interpreters importing torch (~10 s); the fingerprint serves the slow tier
def test_the_arithmetic_fingerprint_is_repeatable_and_sees_a_forced_kernel_path():
    """The fingerprint that decides bit-for-bit comparison: the same twice, another when torch is made to
    dispatch to another vectorised kernel set (where this CPU has more than the default one)."""
    here = fingerprint_of_a_run()
    assert fingerprint_of_a_run() == here and len(here["digest"]) == 16
    forced = fingerprint_of_a_run({"ATEN_CPU_CAPABILITY": "default"})
    assert forced["capability"] == "DEFAULT"
    if here["capability"] != "DEFAULT":
        assert forced["digest"] != here["digest"]


@pytest.mark.slow  # a second training and evaluation
def test_on_other_arithmetic_the_run_differs_in_its_low_bits_only():
    """The tolerance branch, exercised on this machine: torch made to dispatch to a lower kernel set changes the
    fingerprint and the run's low bits, and every float stays within the stated tolerance of the reference."""
    ref = json.loads(REFERENCE.read_text())
    here = fingerprint_of_a_run()
    lower = {"ATEN_CPU_CAPABILITY": "avx2" if here["capability"].startswith("AVX512") else "default"}
    if fingerprint_of_a_run(lower) == here:
        pytest.skip("this CPU has no second kernel set to dispatch to")
    own = quick_run()
    diffs = differences(quick_run(lower), own, strict=False)
    assert diffs, "another kernel set gave the same bits: the fingerprint would call it different arithmetic"
    assert all(rel <= REL or absolute <= ABS for _, rel, absolute in diffs), diffs[:10]
    assert all(rel <= REL or absolute <= ABS for _, rel, absolute in differences(own, ref["result"], strict=False))
