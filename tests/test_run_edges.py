"""The edges a user meets first: flags checked before JAX loads, a failed start that leaves --out as found,
and the per-iteration log lines (stderr and run.log)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from rls3_jax import loop, main
from tests.test_loop_mechanics import ScalarLearner, smoke_config

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_every_choice():
    text = main.build_parser().format_help()
    for choices in ("{paligemma,clip,negclip,weakspot}", "{sac,random}", "{smoke,default,paper}",
                    "{batch,per-sample}", "{debug,info,warning,error}"):
        assert choices in text


@pytest.mark.parametrize("argv, needle", [(["--beta", "nan"], "--beta"), (["--learning-rate", "inf"], "--learning-rate"),
                                          (["--eta", "nan"], "--eta"), (["--vlm", "gpt"], "--vlm"),
                                          (["--log-level", "loud"], "--log-level"),
                                          (["--observation", "sideways"], "--observation"),
                                          (["--caption-subject", "nearest"], "--caption-subject"),
                                          (["--agent-learning-rate", "-1e-3"], "--agent-learning-rate"),
                                          (["--pretraining-buffer", "reuse"], "--pretraining-buffer"),
                                          (["--action", "surface-point", "--env", "unity", "--unity-port", "5005"],
                                           "--action surface-point"),
                                          (["--action", "surface", "--env", "unity", "--unity-port", "5005"],
                                           "--action surface"),
                                          (["--observation", "selected-first", "--env", "unity", "--unity-port",
                                            "5005"], "--observation selected-first")])
def test_bad_values_stop_before_jax_loads(tmp_path, argv, needle):
    code = ("import sys; from rls3_jax import main; rc = main.main(sys.argv[1:]); "
            "print(rc, 'jax' in sys.modules)")
    out = tmp_path / "o"
    done = subprocess.run([sys.executable, "-c", code, *argv, "--out", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.split() == ["2", "False"], done.stdout + done.stderr
    err = done.stderr.strip()
    assert err.startswith("error: ") and needle in err and "\n" not in err
    assert not out.exists()


@pytest.mark.parametrize("out_exists", [False, True])
def test_a_failed_start_leaves_out_as_it_found_it(tmp_path, capsys, out_exists):
    weights = tmp_path / "weights"
    weights.mkdir()  # a directory, but no checkpoint in it: the learner fails while the run starts
    out = tmp_path / "out"
    if out_exists:
        out.mkdir()
    code = main.main(["--vlm", "paligemma", "--preset", "smoke", "--weights", str(weights), "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and str(weights) in err
    assert out.is_dir() == out_exists and (not out_exists or not any(out.iterdir()))
    # the corrected command then starts in the same directory
    assert main.main(["--vlm", "weakspot", "--preset", "smoke", "--pretrain-steps", "0", "--out", str(out)]) == 0


def test_one_log_line_per_iteration_in_run_log_and_on_stderr(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="rls3_jax"):
        records = loop.run(smoke_config(iterations=2), tmp_path / "r", learner=ScalarLearner())
    lines = (tmp_path / "r" / "run.log").read_text().splitlines()
    assert len(lines) == len(records) == 3
    for line, record in zip(lines, records):
        assert f"iteration {record['iteration']}/2:" in line
        assert f"{record['generated_samples']} samples" in line and f"test {record['test_metric']:.3f}" in line
        assert f"image-blind val {record['val_blind_metric']:.3f}" in line and "training" in line
    assert [r.getMessage() for r in caplog.records if r.name == "rls3_jax"] == [line.split(" ", 3)[3] for line in lines]
    # a resumed run appends its iterations to the same log
    loop.run(smoke_config(iterations=3), tmp_path / "r", resume=True, learner=ScalarLearner())
    assert len((tmp_path / "r" / "run.log").read_text().splitlines()) == 4
    assert json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[-1])["iteration"] == 3


def test_tensorboard_holds_the_settings_and_each_iterations_samples_with_the_vlms_answers(tmp_path):
    from rls3_jax.vlm.weakspot import WeakSpotLearner
    from tests.test_tensorboard import accumulator, text_summaries

    learner = WeakSpotLearner(("above",), 0, 2)
    loop.run(smoke_config(iterations=2).replace(vlm="weakspot"), tmp_path / "r", learner=learner)
    acc = accumulator(tmp_path / "r" / "tensorboard")
    (settings,) = text_summaries(acc, "settings")
    assert "| seed | 0 |" in settings[1] and "| vlm | weakspot |" in settings[1]
    assert sorted(acc.Tags()["images"]) == [f"samples/image_{i}" for i in range(4)]
    assert [e.step for e in acc.Images("samples/image_0")] == [1, 2]
    tables = text_summaries(acc, "samples/captions")
    assert [step for step, _ in tables] == [1, 2]
    rows = [row for row in tables[0][1].splitlines()[2:]]
    assert len(rows) == 4 and all(row.rstrip(" |").endswith(("wrong", "right")) for row in rows)
    assert all(" is " in row for row in rows)  # the caption's sentence


def _attempt(out: Path, argv: list[str]) -> subprocess.Popen:
    resume = ["--resume"] if (out / "run.json").is_file() else []
    return subprocess.Popen([sys.executable, "-m", "rls3_jax.main", *argv, "--out", str(out), *resume], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_kill_9_at_several_moments_then_resume_reaches_the_uninterrupted_runs_metrics(tmp_path):
    import signal
    import time

    argv = ["--vlm", "weakspot", "--preset", "smoke", "--iterations", "6", "--patience", "10", "--seed", "4",
            "--weakspot-learns", "6"]
    reference = _attempt(tmp_path / "full", argv)
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    out, kills = tmp_path / "killed", 0
    for delay in (1.0, 3.0, 5.0, 7.0, 9.0, None):  # seconds after each start: import, start, mid-iteration, ...
        attempt = _attempt(out, argv)
        if delay is None:
            assert attempt.wait(timeout=300) == 0, attempt.stderr.read()
            break
        time.sleep(delay)
        if attempt.poll() is None:
            attempt.send_signal(signal.SIGKILL)
            kills += 1
        attempt.wait()
    assert kills >= 3

    def comparable(path):
        return [{k: v for k, v in json.loads(line).items() if not k.endswith("_s")}
                for line in (path / "metrics.jsonl").read_text().splitlines()]

    assert [r["iteration"] for r in comparable(tmp_path / "full")] == list(range(7))
    assert comparable(out) == comparable(tmp_path / "full")


def test_an_older_checkpoint_is_refused_with_one_line(tmp_path):
    out = tmp_path / "r"
    loop.run(smoke_config(iterations=1), out, learner=ScalarLearner())
    shutil.rmtree(out / "checkpoint")
    (out / "checkpoint").mkdir()
    (out / "checkpoint" / "tree.json").write_text("{}")  # the safetensors format of rls3_jax before orbax
    (out / "checkpoint" / "arrays.safetensors").write_bytes(b"")
    with pytest.raises(loop.RunError, match="older rls3_jax") as err:
        loop.run(smoke_config(iterations=2), out, resume=True, learner=ScalarLearner())
    assert "\n" not in str(err.value)


def test_checkpoint_files_are_group_readable(tmp_path):
    previous = os.umask(0o022)
    try:
        loop.run(smoke_config(iterations=1), tmp_path / "r", learner=ScalarLearner())
    finally:
        os.umask(previous)
    paths = [p for p in (tmp_path / "r" / "checkpoint").rglob("*")]
    assert paths and all(p.stat().st_mode & stat.S_IRGRP for p in paths)
    assert all(p.stat().st_mode & stat.S_IXGRP for p in [tmp_path / "r" / "checkpoint", *paths] if p.is_dir())


def test_debug_level_logs_each_episode_and_phase(tmp_path, caplog):
    with caplog.at_level(logging.DEBUG, logger="rls3_jax"):
        loop.run(smoke_config(iterations=1, episodes=2), tmp_path / "r", learner=ScalarLearner())
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG and r.name == "rls3_jax"]
    assert "iteration 1 episode 2/2: vlm feedback" in debug and "iteration 1: fine-tuning" in debug
    assert len((tmp_path / "r" / "run.log").read_text().splitlines()) == 2  # run.log keeps one line per iteration
