"""`glossy table` on hand-made result.json files, and `glossy figure` on a hand-made trajectory."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from glossy_cli.figure import make_figure
from glossy_cli.table import make_table
from tests.helpers import REPO, glossy_in_process, run_glossy


def result(dataset, model, prior, nll, gmax, gstd, **extra):
    """In-sample (test) statistics gmax, gstd; those of the training candidates ten times larger."""
    return {"dataset": dataset, "model": model, "prior": prior, "nll": nll, "glossy_max": gmax,
            "glossy_std": gstd, "lower_bound": nll - max(gmax, 0), "nll_ba": nll - 1.0, "complete": True,
            "glossy_max_ci": [gmax - 1, gmax + 1], "glossy_max_train": 10 * gmax, "glossy_std_train": 10 * gstd,
            "glossy_max_train_ci": [10 * gmax - 2, 10 * gmax + 2], "lower_bound_train": nll - 10 * gmax,
            "nll_ba_heldout": nll + 0.5, **extra}


def md_cells(md: str) -> list[list[str]]:
    """The markdown table's rows as stripped cells (the renderer pads them to the column width)."""
    return [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in md.splitlines() if ln.startswith("|")]


def tex_cells(tex: str) -> list[list[str]]:
    return [[c.strip() for c in ln.removesuffix("\\\\").split("&")] for ln in tex.splitlines() if " & " in ln]


def starts(rows: list[list[str]], *cells: str) -> bool:
    return any(r[:len(cells)] == list(cells) for r in rows)


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    items = {"frey-vae-standard-seed0": result("frey", "vae", "standard", 1800.0, 100.0, 10.0),
             "caltech101-hvae-vamp-seed0": result("caltech101", "hvae", "vamp", 120.5, 50.25, 200.0),
             "synthetic-vae-standard-seed0": result("synthetic", "vae", "standard", 85.0, 7.5, 0.7,
                                                    true_nll=79.3, exact_lower_bound=77.0)}
    for name, r in items.items():
        (root / name).mkdir(parents=True)
        (root / name / "result.json").write_text(json.dumps(r))
    return root


def test_table_lays_out_table1_with_the_paper_beside_ours_and_blanks_for_missing_runs(runs, tmp_path):
    df, problems = make_table(runs, tmp_path / "res")
    assert problems == []
    csv = pd.read_csv(tmp_path / "res" / "table1.csv")
    # the six paper datasets in blocks of six rows, plus the synthetic block (only our row is real)
    assert list(csv["dataset"].drop_duplicates()) == ["synthetic", "mnist", "omniglot", "caltech101", "frey",
                                                       "histopathology", "cifar10"]
    assert len(csv) == 7 * 6
    frey = csv[(csv.dataset == "frey") & (csv.model == "vae") & (csv.prior == "standard")].iloc[0]
    assert frey.nll == 1800.0 and frey.nll_paper == 1808.19 and frey.nll_diff == pytest.approx(1800.0 - 1808.19)
    # the paper's glossy columns against the training-candidate statistics, the in-sample ones beside them
    assert frey.glossy_max_paper == 89.3 and frey.glossy_std_diff == pytest.approx(100.0 - 331.5)
    assert frey.glossy_max_train == 1000.0 and frey.glossy_max == 100.0 and frey.glossy_std == 10.0
    assert frey.lower_bound == 1700.0 and frey.nll_ba == 1799.0 and frey.nll_ba_heldout == 1800.5
    missing = csv[(csv.dataset == "mnist") & (csv.model == "pixelhvae") & (csv.prior == "vamp")].iloc[0]
    assert math.isnan(missing.nll) and missing.nll_paper == 79.86  # blank, not zero
    assert csv["nll"].notna().sum() == 3
    md = md_cells((tmp_path / "res" / "table1.md").read_text())
    assert starts(md, "frey", "vae", "standard", "1", "1800.00", "1808.19", "-8.19", "", "", "", "1000.0",
                  "[998.0, 1002.0]", "89.3", "100.0", "", "331.5", "100.0", "10.0", "1700.00", "800.00", "1799.00",
                  "1800.50")
    assert starts(md, "mnist", "pixelhvae", "vamp", "", "", "79.86", "")
    synthetic = next(r for r in md if r[:3] == ["synthetic", "vae", "standard"])
    assert synthetic[3:11] == ["1", "85.00", "", "", "", "", "", "75.0"] and synthetic[-2:] == ["79.30", "77.00"]
    raw = (tmp_path / "res" / "table1.tex").read_text()
    assert "\\begin{tabular}" in raw and "\\end{tabular}" in raw
    tex = tex_cells(raw)
    assert starts(tex, "caltech101", "hvae", "vamp", "120.50", "121.02", "502.5", "47.2", "2000.0", "210.7", "50.2",
                  "200.0")
    assert starts(tex, "mnist", "pixelhvae", "vamp", "", "79.86")
    assert not (tmp_path / "res" / "paper_table1.csv").exists()  # one copy of the paper's table: the packaged one


def test_training_seeds_are_one_row_with_mean_sd_and_n_and_other_eval_settings_stay_apart(tmp_path):
    root = tmp_path / "runs"
    nlls = {0: 127.0, 1: 128.0, 2: 129.5}
    for seed, nll in nlls.items():
        r = result("caltech101", "vae", "standard", nll, 60.0 + seed, 150.0 + 2 * seed)
        r.update(seed=seed, run_dir=f"/x/caltech101-vae-standard-seed{seed}", eval_config={"is_samples": 5000})
        (root / f"caltech101-vae-standard-seed{seed}").mkdir(parents=True)
        (root / f"caltech101-vae-standard-seed{seed}" / "result.json").write_text(json.dumps(r))
    other = result("caltech101", "vae", "standard", 140.0, 1.0, 2.0)  # the same model evaluated otherwise
    other.update(seed=0, run_dir="/y/caltech101-vae-standard-seed0", eval_config={"is_samples": 100})
    (root / "elsewhere" / "caltech101-vae-standard-seed0").mkdir(parents=True)
    (root / "elsewhere" / "caltech101-vae-standard-seed0" / "result.json").write_text(json.dumps(other))
    make_table(root, tmp_path / "res")
    csv = pd.read_csv(tmp_path / "res" / "table1.csv")
    rows = csv[(csv.dataset == "caltech101") & (csv.model == "vae") & (csv.prior == "standard")]
    assert sorted(rows.n_seeds) == [1, 3]
    three = rows[rows.n_seeds == 3].iloc[0]
    assert three.nll == pytest.approx(sum(nlls.values()) / 3) and three.seeds == "0,1,2"
    assert three.nll_sd == pytest.approx(pd.Series(list(nlls.values())).std(ddof=1))
    assert three.glossy_std_train_sd == pytest.approx(10.0 * 2)  # result(): glossy_std_train = 10 x std
    assert three.nll_diff == pytest.approx(three.nll - 128.63) and math.isnan(three.glossy_max_train_ci_lo)
    assert rows[rows.n_seeds == 1].iloc[0].nll == 140.0  # never averaged with the others
    # verdicts: |127.0..129.5 mean - 128.63| = 0.46 <= 2 x 1.26 (consistent); glossy max (train) 600..620 against the
    # paper's 79.4 (differs); glossy std (train) 1500..1540 against 160.5 (differs); one seed: no verdict
    assert (three.nll_verdict, three.glossy_max_verdict, three.glossy_std_verdict) == ("consistent", "differs",
                                                                                       "differs")
    assert pd.isna(rows[rows.n_seeds == 1].iloc[0].nll_verdict)
    seeds = pd.read_csv(tmp_path / "res" / "table1_seeds.csv")
    assert len(seeds) == 4 and sorted(seeds.seed) == [0, 0, 1, 2]
    raw = (tmp_path / "res" / "table1.md").read_text()
    md = md_cells(raw)
    assert any(r[3:6] == ["3", f"{three.nll:.2f} ± {three.nll_sd:.2f}", "128.63"] for r in md)
    assert any(r[3] == "3" and r[7] == "nll ok, max differs, std differs" for r in md)
    assert "kept apart" in raw and "elsewhere/caltech101-vae-standard-seed0" in raw
    tex = (tmp_path / "res" / "table1.tex").read_text()
    assert f"{three.nll:.2f} $\\pm$ {three.nll_sd:.2f}" in tex


def test_the_one_paper_table_is_the_papers():
    from glossy_cli.table import paper_table

    src = (REPO / "glossy_cli" / "paper_table1.csv").read_text()
    assert src.startswith("# source: Lastras") and len(paper_table()) == 36
    shared = REPO.parent / "shared" / "paper" / "table1.csv"
    if shared.is_file():  # the workplace's copy of the paper's CSV: the same numbers
        pd.testing.assert_frame_equal(paper_table(), pd.read_csv(shared))


@pytest.mark.slow  # a training with a trajectory, then matplotlib
def test_figure_writes_png_and_pdf_from_a_trajectory(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    epochs = list(range(0, 100, 10))
    pd.DataFrame({"epoch": epochs, "nll": [120 - 0.3 * e for e in epochs],
                  "lower_bound": [60 + 0.15 * e for e in epochs], "nll_ba": [100 - 0.1 * e for e in epochs],
                  "glossy_std": [5 - 0.02 * e for e in epochs], "true_nll": 79.2,
                  "exact_lower_bound": [50 + 0.2 * e for e in epochs]}).to_csv(run / "trajectory.csv", index=False)
    paths = make_figure(str(run))
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    png = paths[0].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    p = run_glossy(["figure", f"checkpoint={run}", f"out={tmp_path / 'fig1'}"], tmp_path, check=True)
    assert (tmp_path / "fig1.png").stat().st_size > 10_000 and "wrote" in p.stdout
    # the same trajectory gives the same bytes (no creation date), so committed figures do not churn
    assert b"/CreationDate" not in paths[1].read_bytes()
    assert (tmp_path / "fig1.pdf").read_bytes() == paths[1].read_bytes()
    assert (tmp_path / "fig1.png").read_bytes() == png


def test_figure_without_a_trajectory_is_a_clear_error(tmp_path, capsys, monkeypatch):
    (tmp_path / "run").mkdir()
    code, _, err = glossy_in_process(["figure", f"checkpoint={tmp_path / 'run'}"], capsys, monkeypatch, tmp_path)
    assert code == 2 and "has no trajectory.csv" in err and "Traceback" not in err


def test_figure_draws_the_training_candidate_bound_and_the_heldout_prior_when_the_trajectory_has_them():
    from glossy_cli.figure import draw

    epochs = list(range(0, 50, 10))
    df = pd.DataFrame({"epoch": epochs, "nll": [100 - 0.1 * e for e in epochs], "lower_bound": 60.0,
                       "glossy_std": 5.0, "bound_train_atoms": 70.0, "glossy_std_train": 150.0,
                       "nll_ba_heldout": [101 - 0.1 * e for e in epochs]})

    def labels(fig):
        return [t.get_text() for ax in fig.axes for leg in [ax.get_legend()] if leg for t in leg.get_texts()]

    full = labels(draw(df))
    assert "NLL - glossy max (training codes): a bound on priors over those codes only" in full
    assert "held-out BA prior (fitted on validation images)" in full
    assert "glossy std, training candidates (right axis)" in full
    old = labels(draw(df.drop(columns=["bound_train_atoms", "glossy_std_train", "nll_ba_heldout"])))
    assert len(old) == len(full) - 3 and not any("training candidates" in t for t in old)


def test_the_latex_table_header_is_exactly_the_intended_text():
    from glossy_cli.table import build_table, to_latex

    tex = to_latex(build_table([])).splitlines()
    assert tex[2:6] == ["\\begin{tabular}{lll rr rr rr rr rr}", "\\toprule",
                        "dataset & model & prior & NLL & paper & max & paper & std & paper & max (test) & std (test) "
                        "& lower bd. & held-out BA \\\\", "\\midrule"]
    assert sum(" & " in line for line in tex) == 1 + 36  # the header and the paper's 36 rows
    assert tex[-2:] == ["\\bottomrule", "\\end{tabular}"]
    assert not any("\\_{" in line or "\\mathrm" in line for line in tex)  # no half-escaped maths


def test_monte_carlo_spread_is_pooled_over_runs_and_shown_but_the_verdict_counts_the_seed_spread_once(tmp_path):
    # three seeds whose NLL spread (sd 1.26) leaves 128.63 - 131.0 = 2.37 outside 2 sd, and a Monte Carlo sd
    # measured on two of them (1.0 and 2.0, pooled sqrt((1 + 4) / 2) = 1.58). Each seed was evaluated with its own
    # draws, so the seed sd already holds the Monte Carlo spread: `differs`. The old rule, which added the Monte
    # Carlo sd again (2 sqrt(1.26^2 + 1.58^2) = 4.05 > 2.37), said `consistent`.
    root = tmp_path / "runs"
    for seed, nll in {0: 130.0, 1: 131.0, 2: 132.5}.items():
        r = result("caltech101", "vae", "standard", nll, 60.0, 150.0)
        r.update(seed=seed, run_dir=f"/x/caltech101-vae-standard-seed{seed}",
                 eval_config={"is_samples": 5000, "jackknife": 20} if seed else {"is_samples": 5000, "bootstrap": 100})
        d = root / f"caltech101-vae-standard-seed{seed}"
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps(r))
        if seed:
            (d / "mc_spread.json").write_text(json.dumps({"sd": {"nll": float(seed), "glossy_max_train": 0.5}}))
    no_mc = make_table(root, tmp_path / "a")[0]
    assert len(no_mc[no_mc.dataset.eq("caltech101") & no_mc.n_seeds.gt(0)]) == 1  # interval settings: one group
    (root / "caltech101-vae-standard-seed0" / "mc_spread.json").write_text("{not json")
    df, problems = make_table(root, tmp_path / "res")
    row = df[(df.dataset == "caltech101") & (df.n_seeds == 3)].iloc[0]
    assert row.nll_mc_sd == pytest.approx(math.sqrt(2.5)) and row.nll_mc_runs == 2
    assert "nll_combined_sd" not in df and abs(row.nll_diff) > 2 * row.nll_sd
    assert abs(row.nll_diff) < 2 * math.sqrt(row.nll_sd**2 + row.nll_mc_sd**2)  # where the two rules part
    assert row.nll_verdict == "differs"
    assert any("not a readable Monte Carlo spread" in p for p in problems)
    md = md_cells((tmp_path / "res" / "table1.md").read_text())
    assert any(r[3] == "3" and r[9] == "1.58, 0.50, - (2 runs)" for r in md), [r[:10] for r in md if r[3] == "3"]


def test_the_paper_p_value_is_calibrated_where_the_two_sd_verdict_is_not():
    """Draws where the paper's number is one more run like ours (same mean and sd): p < 0.05 for 5% of them, while
    the 2-sd verdict with three seeds says `differs` for P(|t_2| > 2 / sqrt(4/3)) = 22.5%."""
    from glossy_cli.table import judge

    rng = np.random.default_rng(0)
    draws, n = 40000, 3
    ours = rng.normal(100.0, 3.0, size=(draws, n))
    paper = rng.normal(100.0, 3.0, size=draws)
    mean, sd = ours.mean(1), ours.std(1, ddof=1)
    cols = {}
    for c, key in (("nll", "nll"), ("glossy_max", "glossy_max_train"), ("glossy_std", "glossy_std_train")):
        cols[f"{c}_diff"], cols[f"{key}_sd"] = mean - paper, sd
    df = judge(pd.DataFrame({**cols, "n_seeds": n}))
    mc_err = (0.05 * 0.95 / draws) ** 0.5
    assert abs((df.nll_p < 0.05).mean() - 0.05) < 4 * mc_err
    t = 2 / (1 + 1 / n) ** 0.5  # closed form of t_2's two-sided tail: 1 - t / sqrt(2 + t^2)
    assert abs((df.nll_verdict == "differs").mean() - (1 - t / (2 + t * t) ** 0.5)) < 4 * (0.225 * 0.775 / draws) ** 0.5
    assert 1 - t / (2 + t * t) ** 0.5 == pytest.approx(0.2254, abs=1e-4)
    # one seed: no p-value; a known case: diff 3.8, sd 1.7, three seeds -> t = 1.936 -> p = 0.192
    one = judge(pd.DataFrame({"nll_diff": [3.8, 3.8], "nll_sd": [1.7, None], "n_seeds": [3, 1],
                              "glossy_max_diff": [None, None], "glossy_max_train_sd": [None, None],
                              "glossy_std_diff": [None, None], "glossy_std_train_sd": [None, None]}))
    assert one.nll_p[0] == pytest.approx(1 - 1.9359 / (2 + 1.9359**2) ** 0.5, abs=1e-3) and np.isnan(one.nll_p[1])


def test_seeds_are_averaged_only_where_their_stamps_agree_on_what_moves_an_estimate(tmp_path):
    """Three seeds: one from older code (no stamp), two stamped alike but for their commit (which moves no
    estimate): the two are averaged, the unstamped one is kept apart; a stamp with other numerics splits again."""
    root = tmp_path / "runs"
    ecfg = {"is_samples": 5000, "ba_tol": 1e-4, "ba_iters": 500}
    stamp = {"glossy": "0.1.0", "numerics": 1, "solver": "Blahut-Arimoto, plain steps, active set; tol 0.0001, "
             "at most 500 steps", "interval_method": "x", "heldout": {"atoms": 4100, "fit_images": 2264,
                                                                      "is_samples": 5000}}
    stamps = {0: None, 1: {**stamp, "commit": "aaaaaaaaaaaa"}, 2: {**stamp, "commit": "bbbbbbbbbbbb+"}}
    for seed, st in stamps.items():
        r = result("caltech101", "vae", "standard", 128.0 + seed, 60.0, 150.0, seed=seed, eval_config=ecfg,
                   run_dir=f"/x/caltech101-vae-standard-seed{seed}", **({"stamp": st} if st else {}))
        d = root / f"caltech101-vae-standard-seed{seed}"
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps(r))
    df = make_table(root, tmp_path / "a")[0]
    rows = df[(df.dataset == "caltech101") & (df.model == "vae") & (df.prior == "standard") & (df.n_seeds > 0)]
    assert sorted(rows.n_seeds) == [1, 2] and rows[rows.n_seeds == 2].iloc[0].nll == pytest.approx(129.5)
    r = json.loads((root / "caltech101-vae-standard-seed2" / "result.json").read_text())
    r["stamp"]["numerics"] = 2
    (root / "caltech101-vae-standard-seed2" / "result.json").write_text(json.dumps(r))
    df = make_table(root, tmp_path / "b")[0]
    rows = df[(df.dataset == "caltech101") & (df.model == "vae") & (df.prior == "standard") & (df.n_seeds > 0)]
    assert sorted(rows.n_seeds) == [1, 1, 1]


def test_an_older_result_is_read_with_todays_name_for_the_bound_over_the_training_codes(tmp_path):
    # older result.json files called NLL - max over the training codes lower_bound_train, as if it bounded every prior
    run = tmp_path / "runs" / "mnist-vae-standard-seed0"
    run.mkdir(parents=True)
    old = result("mnist", "vae", "standard", 80.0, 3.0, 1.0, lower_bound_train_ci=[40.0, 60.0])
    (run / "result.json").write_text(json.dumps(old))
    df, problems = make_table(tmp_path / "runs", tmp_path / "out")
    row = df[df["run"].notna()].iloc[0]
    assert not problems and row["bound_train_atoms"] == 50.0 and row["bound_train_atoms_ci_lo"] == 40.0
    assert not any(c.startswith("lower_bound_train") for c in df.columns)
    assert "lower_bound_train" not in (tmp_path / "out" / "table1.csv").read_text()


def test_settings_added_later_at_their_default_do_not_split_a_seed_group():
    from glossy_cli.table import eval_settings_of

    old = {"eval_config": {"is_samples": 5000, "candidates": ["test", "train"]}}
    new = {"eval_config": {**old["eval_config"], "sup_search_steps": 0, "sup_search_starts": 8,
                           "heldout_fit_points": None, "heldout_is_samples": None}}
    assert eval_settings_of(old) == eval_settings_of(new)
    searched = {"eval_config": {**new["eval_config"], "sup_search_steps": 300}}
    assert eval_settings_of(searched) != eval_settings_of(new)
