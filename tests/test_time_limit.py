"""--time-limit stops a run at a step boundary with its checkpoint and summary, --resume
with a larger limit goes on, and the run ends exactly as one never stopped;
--eval-every-seconds logs validation accuracy within epochs against training seconds,
evaluation excluded, without changing what is trained (from --eval-from-seconds at
doubling times); --stop-at-accuracy ends a run
at the first epoch that reaches it, as a finished run that --resume can take further.

The clocks are replaced by fakes that advance at each reading, so each step takes
exactly 0.5 s of CPU time and 0.25 s of wall time here: the stopping points are
exact, whatever the machine's load."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

from clitools import assert_error, train_cli

train_lib = importlib.import_module("ppl_ssvae.train")  # ppl_ssvae.train is also a function
budget = importlib.import_module("ppl_ssvae.budget")  # the training clocks

STEPS_PER_EPOCH = 10  # 2,000 synthetic images, batches of 200 (clitools.FAST)


class FakeTime:
    def __init__(self):
        self.cpu = self.wall = 0.0

    def process_time(self) -> float:
        self.cpu += 0.5
        return self.cpu

    def perf_counter(self) -> float:
        self.wall += 0.25
        return self.wall


@pytest.fixture(autouse=True)
def fake_clocks(monkeypatch):
    monkeypatch.setattr(budget, "time", FakeTime())


def train(capsys, out, *argv):
    code, err = train_cli(capsys, "--epochs", "2", "--seed", "1", "--out", str(out), *argv)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    return summary, read_rows(out / "evaluations.jsonl")


def read_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def networks(out):
    return torch.load(out / "checkpoint.pt", weights_only=True)["networks"]


def test_stopped_on_the_time_limit_then_resumed_ends_as_an_uninterrupted_run(capsys, tmp_path):
    out = tmp_path / "run"
    summary, evaluations = train(capsys, out, "--time-limit", "3")
    assert summary["stopped_by"] == "time-limit"
    assert summary["steps"] == 6 and summary["epochs"] == 0  # 6 steps of 0.5 s: 3 s
    assert summary["epochs_trained"] == pytest.approx(0.6)
    assert (summary["train_cpu_seconds"], summary["train_wall_seconds"]) == (3.0, 1.5)
    # no epoch finished: the open one is reported as partial
    assert [(row["step"], row.get("partial")) for row in read_rows(out / "metrics.jsonl")] == [
        (6, True)]
    assert [row["step"] for row in evaluations] == [6]  # measured where it stopped
    assert summary["final_valid_accuracy"] == evaluations[-1]["valid_accuracy"]
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert saved["step"] == 6 and saved["in_epoch"]["position"] == 6

    summary, evaluations = train(capsys, out, "--time-limit", "7", "--resume")
    assert (summary["stopped_by"], summary["steps"], summary["epochs"]) == ("time-limit", 14, 1)
    assert [(row["step"], row["cpu_seconds"]) for row in evaluations] == [(6, 3.0), (10, 5.0),
                                                                          (14, 7.0)]
    assert evaluations[1]["epoch"] == 1 and evaluations[2]["epoch"] == pytest.approx(1.4)
    assert [(row["step"], row.get("partial")) for row in read_rows(out / "metrics.jsonl")] == [
        (10, None), (14, True)]

    again, _ = train(capsys, out, "--time-limit", "7", "--resume")  # nothing left to do
    assert again["steps"] == 14

    summary, _ = train(capsys, out, "--resume")  # no limit: to the end of epoch 2
    assert (summary["stopped_by"], summary["steps"], summary["epochs"]) == ("epochs", 20, 2)
    assert summary["train_cpu_seconds"] == 10.0

    whole = tmp_path / "whole"
    expected, _ = train(capsys, whole)
    for name, tensor in networks(whole).items():
        assert torch.equal(tensor, networks(out)[name]), name
    assert summary["test_accuracy"] == expected["test_accuracy"]
    drop = {"seconds", "examples_per_second"}
    assert ([{k: v for k, v in row.items() if k not in drop}
             for row in read_rows(out / "metrics.jsonl")]
            == [{k: v for k, v in row.items() if k not in drop}
                for row in read_rows(whole / "metrics.jsonl")])


def test_evaluations_within_epochs_change_nothing_trained(capsys, tmp_path):
    out = tmp_path / "often"
    summary, evaluations = train(capsys, out, "--eval-every-seconds", "2")
    # every 4 steps (2 s of CPU) and at each epoch's end; 4 steps after the last
    assert [row["step"] for row in evaluations] == [4, 8, 10, 14, 18, 20]
    assert [row["cpu_seconds"] for row in evaluations] == [2.0, 4.0, 5.0, 7.0, 9.0, 10.0]
    assert all(0.0 <= row["valid_accuracy"] <= 1.0 for row in evaluations)
    assert summary["stopped_by"] == "epochs" and summary["train_wall_seconds"] == 5.0
    plain = tmp_path / "plain"
    train(capsys, plain)
    for name, tensor in networks(plain).items():
        assert torch.equal(tensor, networks(out)[name]), name
    epoch_rows = [row for row in evaluations if row["step"] % STEPS_PER_EPOCH == 0]
    assert [row["valid_accuracy"] for row in epoch_rows] == [
        row["valid_accuracy"] for row in read_rows(plain / "metrics.jsonl")]


def test_measurements_begin_at_doubling_times_from_eval_from_seconds(capsys, tmp_path):
    _, evaluations = train(capsys, tmp_path / "run", "--eval-every-seconds", "4",
                           "--eval-from-seconds", "0.5")
    # 0.5, 1, 2, 4 s (doubling, nearer than 4 s later), then 4 s apart: 8 s was due but
    # epoch 1's end measured at 5 s, so 9 s; and epoch 2's end
    assert [row["cpu_seconds"] for row in evaluations] == [0.5, 1.0, 2.0, 4.0, 5.0, 9.0, 10.0]
    assert [row["step"] for row in evaluations] == [1, 2, 4, 8, 10, 18, 20]


def test_the_wall_clock_can_be_the_budget(capsys, tmp_path):
    summary, evaluations = train(capsys, tmp_path / "run", "--time-clock", "wall",
                                 "--time-limit", "2", "--eval-every-seconds", "1")
    assert summary["steps"] == 8 and summary["train_wall_seconds"] == 2.0  # 0.25 s a step
    assert [row["step"] for row in evaluations] == [4, 8]


@pytest.mark.parametrize("flag, value, message", [
    ("--time-limit", "0", "--time-limit must be positive"),
    ("--eval-every-seconds", "-1", "--eval-every-seconds must be positive"),
    ("--time-clock", "gpu", "--time-clock takes cpu or wall"),
    ("--eval-from-seconds", "1", "give --eval-every-seconds too"),
])
def test_bad_time_settings_are_refused_in_one_line(capsys, tmp_path, flag, value, message):
    code, err = train_cli(capsys, flag, value, "--out", str(tmp_path / "run"))
    assert_error(code, err, message)


def test_a_run_stops_at_the_epoch_that_reaches_its_target_accuracy(capsys, tmp_path):
    out = tmp_path / "run"
    # 2,000 synthetic images of 2 well-separated classes: past 10% after the first epoch
    code, err = train_cli(capsys, "--epochs", "4", "--seed", "1", "--out", str(out),
                          "--stop-at-accuracy", "0.1", "--progress")
    assert code == 0, err
    assert "reached --stop-at-accuracy 0.1: stopping after epoch 1" in err
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["stopped_by"], summary["epochs"], summary["steps"]) == ("accuracy", 1,
                                                                            STEPS_PER_EPOCH)
    assert summary["best_valid_accuracy"] >= 0.1 and summary["stop_at_accuracy"] == 0.1
    assert summary["test_accuracy"] is not None  # a finished run: its test number is reported
    assert len(read_rows(out / "metrics.jsonl")) == 1

    # a higher target (or none) goes on from the checkpoint, as a run never stopped would
    summary, _ = train(capsys, out, "--epochs", "4", "--resume")
    assert (summary["stopped_by"], summary["epochs"]) == ("epochs", 4)
    whole = tmp_path / "whole"
    train(capsys, whole, "--epochs", "4")
    for name, tensor in networks(whole).items():
        assert torch.equal(tensor, networks(out)[name]), name


def test_a_target_given_as_a_percentage_is_refused(capsys, tmp_path):
    code, err = train_cli(capsys, "--stop-at-accuracy", "94.1", "--out", str(tmp_path / "bad"))
    assert_error(code, err, "--stop-at-accuracy is a fraction in (0, 1]")
    assert not (tmp_path / "bad").exists()
