"""The time-budget comparison: every method x seed runs to its budget and no further, a
larger budget goes on from the checkpoints, and the aggregate reads accuracy at fractions
of the budget, the time to reach the exact sum's final accuracy, and the step time."""

from __future__ import annotations

import json

import pytest

from experiments import compare, readme, timebudget

TINY = {"hidden": [16], "z_dim": 4, "batch_size": 500, "labelled_batch_size": 50}


def write_run(results, dataset, key, seed, rows, classes, steps=40, cpu=80.0, test=None):
    run = timebudget.run_dir(results, dataset, key, seed)
    run.mkdir(parents=True)
    run.joinpath("evaluations.jsonl").write_text("".join(
        json.dumps({"cpu_seconds": t, "wall_seconds": 2 * t, "valid_accuracy": a, "step": i})
        + "\n" for i, (t, a) in enumerate(rows)))
    run.joinpath("summary.json").write_text(json.dumps({
        "classes": classes, "steps": steps, "train_cpu_seconds": cpu, "epochs_trained": 0.5,
        "stopped_by": "time-limit", "time_limit": 80.0, "test_accuracy_last": 0.5,
        "test_accuracy": test}))


def test_the_aggregate_reads_the_curves(tmp_path):
    enum = {0: [(10, 0.1), (40, 0.3), (80, 0.5)], 1: [(10, 0.1), (40, 0.3), (80, 0.7)]}
    gumbel = {0: [(5, 0.4), (10, 0.62), (20, 0.65), (80, 0.66)],
              1: [(5, 0.5), (10, 0.55), (20, 0.61), (80, 0.7)]}
    for seed in (0, 1):
        write_run(tmp_path, "two-digit-mnist", "m2/enum", seed, enum[seed], 100)
        write_run(tmp_path, "two-digit-mnist", "m2/gumbel-cat-kl", seed, gumbel[seed], 100,
                  steps=800)
        write_run(tmp_path, "mnist", "m2/enum", seed, [(10, 0.8), (80, 0.9)], 10)
    datasets = [("two-digit-mnist", 1000), ("mnist", 100)]
    keys = ["m2/enum", "m2/gumbel-cat-kl"]
    summary = timebudget.aggregate(tmp_path, datasets, keys, [0, 1], 80.0)

    k100 = summary["panels"]["two-digit-mnist"]
    assert k100["classes"] == 100 and k100["exact_final_accuracy"] == pytest.approx(0.6)
    exact, relaxed = k100["methods"]["m2/enum"], k100["methods"]["m2/gumbel-cat-kl"]
    assert [exact["accuracy_at"][f] for f in ("0.125", "0.25", "0.5", "1.0")] == pytest.approx(
        [0.1, 0.1, 0.3, 0.6])
    assert relaxed["accuracy_at"]["0.125"] == pytest.approx((0.62 + 0.55) / 2)
    # 90% of 0.6 = 0.54: both seeds at 10 s; 100%: seed 0 at 10 s, seed 1 at 20 s
    assert (relaxed["seconds_to_90"], relaxed["seconds_to_100"]) == (10.0, 15.0)
    assert exact["seconds_to_100"] is None and exact["reached_100"] == 1  # seed 0 ends at 0.5
    assert (exact["step_seconds"], relaxed["step_seconds"]) == (2.0, 0.1)
    assert summary["panels"]["mnist"]["classes"] == 10
    assert "m2/gumbel-cat-kl" not in summary["panels"]["mnist"]["methods"]
    verdicts = " ".join(k100["targets"])
    assert "15 s, 0.19 of the budget: the target of at most 1/5 holds" in verdicts
    assert "ends at 68.0%, +8.0 points from the exact sum: the target of at least" in verdicts

    table = (tmp_path / "results.md").read_text()
    assert ("| 100 | m2/gumbel-cat-kl | 58.5 | 63.0 | 63.0 | 68.0 | 10 | 15 | not reached (0/2) "
            "| 100.0 | 0.5 | 0, 1 |") in table
    assert ("| 100 | m2/enum | 10.0 | 10.0 | 30.0 | 60.0 | not reached (1/2) | not reached (1/2) "
            "| not reached (0/2) | 2,000.0 |") in table
    # s to 95% validation: MNIST's exact sum gets there in neither seed (0.9 at 80 s)
    assert summary["panels"]["mnist"]["methods"]["m2/enum"]["reached_95_valid"] == 0
    assert "| 10 | m2/enum |" in table
    assert (tmp_path / "figures" / "accuracy_vs_time.png").stat().st_size > 0
    wall = timebudget.aggregate(tmp_path, datasets, keys, [0, 1], 160.0, "wall")
    assert wall["panels"]["mnist"]["methods"]["m2/enum"]["accuracy_at"]["0.125"] == 0.8  # at 20 s
    timebudget.aggregate(tmp_path, datasets, keys, [0, 1, 2], 80.0)  # a seed not run yet
    assert "| 0.5 | 0, 1 (2 of 3) |" in (tmp_path / "results.md").read_text()
    (timebudget.run_dir(tmp_path, "two-digit-mnist", "m2/enum", 1) / "summary.json").unlink()
    running = timebudget.aggregate(tmp_path, datasets, keys, [0, 1], 80.0)  # seed 1 still going
    assert all(line.endswith("have not used their budget yet.)")
               for line in running["panels"]["two-digit-mnist"]["targets"])

    page = tmp_path / "README.md"
    page.write_text("<!-- generated from results.md -->\n<!-- end generated -->\n")
    assert readme.main([str(page)]) == 0 and "| 10 | m2/enum |" in page.read_text()


def test_a_target_met_at_the_first_measurement_is_a_bound(tmp_path):
    write_run(tmp_path, "two-digit-mnist", "m2/enum", 0, [(10, 0.2), (80, 0.5)], 100)
    write_run(tmp_path, "two-digit-mnist", "m2/gumbel-cat-kl", 0, [(30, 0.55), (80, 0.6)], 100)
    write_run(tmp_path, "mnist", "m2/enum", 0, [(10, 0.9), (80, 0.95)], 10)
    write_run(tmp_path, "mnist", "m2/gumbel-cat-kl", 0, [(20, 0.96), (80, 0.97)], 10)
    summary = timebudget.aggregate(tmp_path, [("two-digit-mnist", 1000), ("mnist", 100)],
                                   ["m2/enum", "m2/gumbel-cat-kl"], [0], 80.0)
    # the targets are set at K = 100: at K = 10 the same measurements, not judged
    assert summary["panels"]["mnist"]["targets"] == [
        "K = 10: m2/gumbel-cat-kl reaches the exact sum's final accuracy (95.0%) in at most 20 s "
        "(its first measurement), 0.25 of the budget.",
        "K = 10: the best relaxed method, m2/gumbel-cat-kl, ends at 97.0%, +2.0 points from the "
        "exact sum."]
    relaxed = summary["panels"]["two-digit-mnist"]["methods"]["m2/gumbel-cat-kl"]
    assert relaxed["seconds_to_100"] == 30.0 and relaxed["seconds_to_100_is_bound"]
    exact = summary["panels"]["two-digit-mnist"]["methods"]["m2/enum"]
    assert exact["seconds_to_100"] == 80.0 and not exact["seconds_to_100_is_bound"]
    assert "| 100 | m2/gumbel-cat-kl | – | – | 55.0 | 60.0 | ≤ 30 | ≤ 30 |" in (
        tmp_path / "results.md").read_text()
    assert "in at most 30 s (its first measurement), 0.38 of the budget" in " ".join(
        summary["panels"]["two-digit-mnist"]["targets"])


def test_runs_stop_at_the_budget_and_a_larger_one_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(compare, "config_for", lambda model, inference: dict(TINY))
    args = ["--results", str(tmp_path), "--datasets", "synthetic:20", "--methods", "m2/gumbel",
            "mlp/ml", "--seeds", "0", "--eval-every", "0.25"]
    assert timebudget.main([*args, "--budget", "1"]) == 0
    runs = {key: timebudget.run_dir(tmp_path, "synthetic", key, 0) for key in ("m2/gumbel", "mlp/ml")}
    first = {}
    for key, run in runs.items():
        summary = json.loads((run / "summary.json").read_text())
        assert summary["stopped_by"] == "time-limit" and summary["time_limit"] == 1.0
        assert 1.0 <= summary["train_cpu_seconds"] < 2.0
        rows = (run / "evaluations.jsonl").read_text().splitlines()
        assert len(rows) >= 4  # every 0.25 s and at epochs' ends
        first[key] = summary["steps"]
    panel = json.loads((tmp_path / "summary.json").read_text())["panels"]["synthetic"]
    assert set(panel["methods"]) == {"m2/gumbel", "mlp/ml"} and panel["classes"] == 10

    capsys.readouterr()
    assert timebudget.main([*args, "--budget", "1"]) == 0  # nothing to do
    assert capsys.readouterr().out.count("[done already]") == 2

    assert timebudget.main([*args, "--budget", "2", "--methods", "mlp/ml"]) == 0
    summary = json.loads((runs["mlp/ml"] / "summary.json").read_text())
    assert summary["time_limit"] == 2.0 and summary["steps"] > first["mlp/ml"]
    assert 2.0 <= summary["train_cpu_seconds"] < 3.0


def test_bad_arguments_are_refused(tmp_path, capsys):
    assert timebudget.main(["--budget", "1", "--datasets", "nothing:100", "--results",
                            str(tmp_path)]) == 2
    assert "unknown dataset 'nothing'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        timebudget.main(["--budget", "1", "--datasets", "mnist"])


def test_a_running_run_has_no_accuracy_past_where_it_got():
    import numpy as np

    running = {"seed": 0, "summary": None, "seconds": np.array([10.0, 20.0]),
               "accuracy": np.array([0.3, 0.4])}
    assert timebudget.accuracy_at(running, 20.0) == 0.4
    assert timebudget.accuracy_at(running, 40.0) is None  # it has not got there yet
    assert timebudget.accuracy_at({**running, "summary": {}}, 40.0) == 0.4  # it stopped there
    assert timebudget.accuracy_at(running, 5.0) is None


def test_the_new_estimators_are_judged_by_their_own_targets(tmp_path):
    """At K = 100: the best new estimator against 1/10 of the budget and Gumbel-Softmax's
    final accuracy; at K = 10: sum-and-sample against the exact sum and the first to 95%."""
    for seed in (0, 1):
        write_run(tmp_path, "two-digit-mnist", "m2/enum", seed, [(10, 0.2), (80, 0.6)], 100)
        write_run(tmp_path, "two-digit-mnist", "m2/gumbel-cat-kl", seed, [(5, 0.5), (80, 0.62)], 100)
        write_run(tmp_path, "two-digit-mnist", "m2/sum-and-sample", seed, [(4, 0.4), (7, 0.61),
                                                                           (80, 0.66)], 100)
        write_run(tmp_path, "mnist", "m2/enum", seed, [(10, 0.9), (60, 0.951), (80, 0.955)], 10)
        write_run(tmp_path, "mnist", "m2/sum-and-sample", seed, [(10, 0.93), (30, 0.952),
                                                                  (80, 0.96)], 10)
    keys = ["m2/enum", "m2/gumbel-cat-kl", "m2/sum-and-sample"]
    summary = timebudget.aggregate(tmp_path, [("two-digit-mnist", 1000), ("mnist", 100)], keys,
                                   [0, 1], 80.0)
    k100 = " ".join(summary["panels"]["two-digit-mnist"]["targets"])
    assert ("m2/sum-and-sample, ends at 66.0% and reaches the exact sum's final accuracy in 7 s "
            "(60.0%)") in k100
    assert "the target of 1/10 of the budget holds" in k100
    assert "m2/gumbel-cat-kl's 62.0%: the target of ending above it holds" in k100
    k10 = " ".join(summary["panels"]["mnist"]["targets"])
    assert "m2/sum-and-sample ends at 96.0% (exact sum 95.5%) and reaches 95% validation in 30 s" in k10
    assert "(fastest other: m2/enum, 60 s): the target of ending at or above" in k10
    assert k10.endswith("first holds.")
    assert summary["panels"]["mnist"]["methods"]["m2/sum-and-sample"]["seconds_to_95_valid"] == 30.0


def test_the_models_with_structure_are_judged_by_their_own_targets(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path, "two-digit-mnist", "m2/enum", seed, [(10, 0.2), (80, 0.57)], 100,
                  steps=40)
        write_run(tmp_path, "two-digit-mnist", "m2/gumbel-cat-kl", seed, [(5, 0.5), (80, 0.61)],
                  100, steps=800)
        write_run(tmp_path, "two-digit-mnist", "two-digit/gumbel-cat-kl", seed,
                  [(5, 0.7), (80, 0.86)], 100)
        write_run(tmp_path, "two-digit-mnist", "two-digit-mlp/ml", seed, [(5, 0.77), (80, 0.74)], 100)
        write_run(tmp_path, "two-digit-mnist", "hierarchical/enum", seed, [(5, 0.5), (80, 0.63)],
                  100, steps=500)
    keys = ["m2/enum", "m2/gumbel-cat-kl", "two-digit/gumbel-cat-kl", "two-digit-mlp/ml",
            "hierarchical/enum"]
    summary = timebudget.aggregate(tmp_path, [("two-digit-mnist", 1000)], keys, [0, 1], 80.0)
    verdicts = " ".join(summary["panels"]["two-digit-mnist"]["targets"])
    assert ("the two-digit model, two-digit/gumbel-cat-kl, ends at 86.0%: the target of 85% or "
            "more holds; its supervised baseline two-digit-mlp/ml ends at 74.0%, +12.0 points: "
            "the target of 10 points or more holds.") in verdicts
    # 0.16 s a step against gumbel-cat-kl's 0.1: 1.6 times
    assert ("the hierarchical model, hierarchical/enum, ends at 63.0% (best flat M2: "
            "m2/gumbel-cat-kl, 61.0%): the target "
            "of above every flat M2 holds; its exact-sum step costs 1.60 times m2/gumbel-cat-kl's: "
            "the target of at most 2 times holds.") in verdicts
    # the original's thesis is judged on M2's relaxations alone
    assert "the best relaxed method, m2/gumbel-cat-kl" in verdicts

    # a config of the two-digit model (another classifier weight) is the two-digit model
    # too, and the best of its rows is judged; its baseline never is
    for seed in (0, 1):
        write_run(tmp_path, "two-digit-mnist", "two-digit-gumbel-cat-kl-cw01", seed,
                  [(5, 0.8), (80, 0.9)], 100)
    summary = timebudget.aggregate(tmp_path, [("two-digit-mnist", 1000)],
                                   [*keys, "two-digit-gumbel-cat-kl-cw01"], [0, 1], 80.0)
    verdicts = " ".join(summary["panels"]["two-digit-mnist"]["targets"])
    assert "the two-digit model, two-digit-gumbel-cat-kl-cw01, ends at 90.0%" in verdicts

    # so is the hierarchical model's; a row with one seed so far says so
    write_run(tmp_path, "two-digit-mnist", "hierarchical-enum-cw01", 0, [(5, 0.5), (80, 0.66)],
              100, steps=500)
    summary = timebudget.aggregate(tmp_path, [("two-digit-mnist", 1000)],
                                   [*keys, "hierarchical-enum-cw01"], [0, 1], 80.0)
    verdicts = " ".join(summary["panels"]["two-digit-mnist"]["targets"])
    assert ("the hierarchical model, hierarchical-enum-cw01, ends at 66.0% (seed 0 alone so far) "
            "(best flat M2: m2/gumbel-cat-kl, 61.0%)") in verdicts


def test_a_row_run_on_more_seeds_keeps_them_in_the_aggregate(tmp_path):
    """A method run on a third seed (the hierarchical model at K = 10) is averaged over
    its three seeds by any later aggregate, and the rows with the two planned seeds do
    not read as incomplete."""
    for seed in (0, 1):
        write_run(tmp_path, "mnist", "m2/enum", seed, [(10, 0.5), (80, 0.9)], 10)
    for seed, final, test in ((0, 0.96, 0.95), (1, 0.96, 0.96), (2, 0.6, 0.97)):
        write_run(tmp_path, "mnist", "hierarchical/enum", seed, [(10, 0.5), (40, final),
                                                                 (80, final)], 10, test=test)
    summary = timebudget.aggregate(tmp_path, [("mnist", 100)], ["m2/enum", "hierarchical/enum"],
                                   [0, 1], 80.0, also=timebudget.seeds_on_disk(tmp_path))
    methods = summary["panels"]["mnist"]["methods"]
    assert methods["hierarchical/enum"]["seeds"] == [0, 1, 2]
    assert methods["hierarchical/enum"]["final_accuracy"] == pytest.approx(0.84)
    table = (tmp_path / "results.md").read_text()
    assert "| 0, 1, 2 |" in table and "| 0, 1 |" in table and "of 2)" not in table
    # issue 23 at K = 10: test accuracy (mean ± sd over seeds) beside M2's and M1+M2's,
    # and the time to 95%, which seed 2 never reaches (so no mean), the exact sum neither
    line = next(t for t in summary["panels"]["mnist"]["targets"] if "hierarchical" in t)
    assert "96.00% ± 1.00" in line and "95.01 ± 0.61" in line and "96.67" in line
    assert "in none of its seeds' budgets" in line
