"""A run folder survives faults (docs/reliability.md lists them with these tests): one writer at a
time, no hangs and no orphans, honest and resumable exits, causes named, nothing lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from meta_rl.checkpoint import load_checkpoint
from meta_rl.config import TrainConfig
from meta_rl.errors import TrainingError
from meta_rl.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--meta-batch", "4", "--episodes", "2", "--hidden", "8"]
FAULTY = ["--env", "tests.faulty:Faulty", "--horizon", "10", "--num-workers", "2", *TINY]


def start(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "meta_rl", *args], cwd=cwd, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def metrics(folder: Path) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("wall_s")
    return rows


# -- 1. one writer per run folder ------------------------------------------------------------------


def test_a_second_writer_is_refused_and_readers_keep_working(tmp_path):
    run = tmp_path / "run"
    first = start("train", *FAULTY, "--iterations", "1000", "--checkpoint-every", "1",
                  "--out", str(run), env={"FAULTY_SLOW_RESET": "0.02"})
    try:
        wait_for(lambda: (run / "checkpoint.pt").exists())
        before = (run / "metrics.jsonl").read_text().splitlines()[:1]
        for args in (["train", "--resume", str(run)],
                     ["train", *FAULTY, "--out", str(run), "--force"],
                     ["evaluate", str(run), "--tasks", "2", "--steps", "1", "--methods", "meta"]):
            code, _, err = finish(start(*args))
            assert code == 2
            assert f"process {first.pid} trains there" in one_line(err)
        # a reader writing elsewhere is not blocked, and nothing of the live run was touched
        code, out, err = finish(start("evaluate", str(run), "--tasks", "2", "--steps", "1",
                                      "--methods", "meta", "--out", str(tmp_path / "eval")))
        assert code == 0, err
        assert (run / "metrics.jsonl").read_text().splitlines()[:1] == before
        assert first.poll() is None  # the first writer runs on
    finally:
        first.send_signal(signal.SIGINT)
        finish(first)
    iterations = [r["iteration"] for r in metrics(run)]
    assert iterations == list(range(1, len(iterations) + 1))  # no duplicates, no gaps


# -- 2. no hangs, no orphans -----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["worker", "main"])
def test_a_hung_env_is_stopped_within_its_timeout_and_no_process_is_left(tmp_path, where):
    pids = tmp_path / "pids"
    pids.mkdir()
    run = tmp_path / "run"
    started = time.monotonic()
    proc = start("train", *FAULTY, "--iterations", "3", "--env-timeout", "3", "--out", str(run),
                 env={"FAULTY_HANG": where, "FAULTY_PIDS": str(pids)})
    code, out, err = finish(proc, timeout=60)
    elapsed = time.monotonic() - started
    assert code == 1
    line = one_line(err)
    who = "worker 0" if where == "worker" else "the main process"
    assert f"Faulty 'step' in {who}" in line and "did not answer within 3 s" in line
    assert "FaultyTask(goal=" in line  # the tasks of the slice that hung
    assert "nothing to save" in line  # it hung in the first iteration
    assert elapsed < 3 + 5 + 10  # the timeout, 5 s to stop, and the start-up
    wait_for(lambda: not any(alive(int(p.name)) for p in pids.iterdir()), timeout=5)


def test_workers_die_with_their_parent_even_by_kill_9(tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    proc = start("train", *FAULTY, "--iterations", "3", "--out", str(tmp_path / "run"),
                 env={"FAULTY_HANG": "worker", "FAULTY_PIDS": str(pids)})
    wait_for(lambda: len(list(pids.iterdir())) >= 2)  # the main process and the worker
    time.sleep(0.5)
    proc.kill()
    finish(proc)
    workers = [int(p.name) for p in pids.iterdir() if int(p.name) != proc.pid]
    assert workers
    wait_for(lambda: not any(alive(pid) for pid in workers), timeout=5)


def test_a_second_ctrl_c_exits_at_once_with_one_line(tmp_path):
    proc = start("train", *FAULTY, "--iterations", "3", "--env-timeout", "600",
                 "--out", str(tmp_path / "run"), env={"FAULTY_HANG": "worker"})
    wait_for(lambda: (tmp_path / "run" / "config.yaml").exists())
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)  # the main process waits for the hung worker...
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)  # ...and a second Ctrl-C does not wait
    code, out, err = finish(proc, timeout=10)
    assert code == 130
    assert err.strip().splitlines()[-1] == (
        "meta-rl: interrupted again; exiting now (what was saved stays)")
    assert "Traceback" not in err


def test_one_ctrl_c_does_not_wait_for_a_hung_worker(tmp_path):
    proc = start("train", *FAULTY, "--iterations", "3", "--env-timeout", "600",
                 "--out", str(tmp_path / "run"), env={"FAULTY_HANG": "worker"})
    wait_for(lambda: (tmp_path / "run" / "config.yaml").exists())
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    code, out, err = finish(proc, timeout=30)
    assert code == 130 and time.monotonic() - started < 10
    assert "nothing to save" in one_line(err)


# -- 3. a signal before the first iteration --------------------------------------------------------


def test_a_signal_before_the_first_iteration_leaves_a_folder_resume_and_force_accept(tmp_path):
    run = tmp_path / "run"
    proc = start("train", *FAULTY, "--iterations", "2", "--out", str(run),
                 env={"FAULTY_SLOW_RESET": "3"})
    wait_for(lambda: (run / "config.yaml").exists())
    proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc)
    assert code == 130
    line = one_line(err)
    assert "No iteration had finished, so there is nothing to save" in line
    assert "saved;" not in line and not (run / "checkpoint.pt").exists()
    code, _, err = finish(start("train", "--resume", str(run)))
    assert code == 0, err
    assert [r["iteration"] for r in metrics(run)] == [1, 2]
    code, _, err = finish(start("train", *FAULTY, "--iterations", "1", "--out", str(run),
                                "--force"))
    assert code == 0, err


# -- 4. failures after iteration 2 save iterations 1-2 ---------------------------------------------


def faulty_config(**settings) -> TrainConfig:
    return TrainConfig.from_dict({"env": "tests.faulty:Faulty", "env_kwargs": {"horizon": 10},
                                  "meta_batch": 4, "episodes": 2, "hidden": (8,),
                                  "num_workers": 2, "checkpoint_every": 10, **settings})


def fail_after_two(trainer: Trainer, how: str, flag: Path) -> None:
    def after(record):
        if record["iteration"] == 2:
            if how == "raise":
                flag.touch()  # the workers' envs raise from now on
            else:
                trainer.setup.sampler.vec._procs[0].kill()

    trainer.callbacks.append(after)


@pytest.mark.parametrize("how", ["raise", "dead worker"])
def test_a_failure_after_iteration_2_saves_it_and_resumes_as_if_uninterrupted(
        tmp_path, monkeypatch, how):
    flag = tmp_path / "boom"
    monkeypatch.setenv("FAULTY_BOOM", str(flag))
    run, whole = tmp_path / "run", tmp_path / "whole"
    trainer = Trainer(faulty_config(iterations=4), run, progress=False)
    fail_after_two(trainer, how, flag)
    try:
        with pytest.raises(TrainingError) as info:
            trainer.train()
    finally:
        trainer.close()
    message = str(info.value)
    assert message.startswith("training stopped at iteration 3: Faulty ")
    assert "Iterations 1-2 are saved; continue with: meta-rl train --resume" in message
    assert f"The full traceback is in {run / 'error.log'}" in message
    assert "\n" not in message and (run / "error.log").read_text().count("Traceback") >= 1
    assert load_checkpoint(run)["iteration"] == 2
    flag.unlink(missing_ok=True)
    resumed = Trainer.resume(run, progress=False)
    resumed.train()
    resumed.close()
    reference = Trainer(faulty_config(iterations=4), whole, progress=False)
    reference.train()
    reference.close()
    assert metrics(run) == metrics(whole)


# -- 5. smaller findings ---------------------------------------------------------------------------


def test_stale_temp_files_are_removed_when_a_run_starts(tmp_path):
    run = tmp_path / "run"
    trainer = Trainer(faulty_config(iterations=1, num_workers=1), run, progress=False)
    trainer.train()
    trainer.close()
    stale = [run / ".checkpoint.pt.abc123.tmp", run / ".metrics.jsonl.tmp"]
    for path in stale:
        path.write_bytes(b"cut short by kill -9")
    resumed = Trainer.resume(run, iterations=2, progress=False)
    resumed.train()
    resumed.close()
    assert not any(path.exists() for path in stale)


def test_non_finite_observations_are_reported_as_the_envs(tmp_path):
    config = TrainConfig.from_dict({"env": "tests.faulty:NaNObservations", "meta_batch": 2,
                                    "episodes": 2, "hidden": (8,), "iterations": 2,
                                    "num_workers": 1, "env_kwargs": {"horizon": 10}})
    trainer = Trainer(config, tmp_path / "run", progress=False)
    try:
        with pytest.raises(TrainingError) as info:
            trainer.train()
    finally:
        trainer.close()
    message = str(info.value)
    assert "Faulty returned a non-finite observation after 3 steps of an episode of task " \
           "FaultyTask(goal=" in message
    assert "the env is at fault" in message and "learning rate" not in message


def test_a_folder_that_cannot_be_written_is_found_before_the_work(tmp_path):
    run = tmp_path / "run"
    code, _, _ = finish(start("train", *FAULTY, "--iterations", "1", "--out", str(run)))
    assert code == 0
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    started = time.monotonic()
    code, _, err = finish(start("evaluate", str(run), "--out", str(blocker / "eval")))
    assert code == 2 and "cannot write in" in one_line(err)
    with pytest.raises(ValueError, match="cannot write in"):
        Trainer(faulty_config(iterations=1), blocker / "run", progress=False)
    assert time.monotonic() - started < 30


def test_a_disk_error_at_a_checkpoint_saves_the_iterations_elsewhere(tmp_path, monkeypatch):
    from meta_rl import trainer as trainer_module

    real_save, run = trainer_module.save_checkpoint, tmp_path / "run"

    def read_only(path, state):
        if Path(path).parent == run:
            raise OSError(30, "Read-only file system")
        real_save(path, state)

    monkeypatch.setattr(trainer_module, "save_checkpoint", read_only)
    trainer = Trainer(faulty_config(iterations=5, num_workers=1, checkpoint_every=3), run,
                      progress=False)
    try:
        with pytest.raises(TrainingError) as info:
            trainer.train()
    finally:
        trainer.close()
    message = str(info.value)
    assert "could not be written (Read-only file system), so iterations 1-3 are saved in" in message
    rescue = Path(message.split("are saved in ")[1].split(" instead")[0])
    assert load_checkpoint(rescue)["iteration"] == 3


def test_absurd_sizes_are_refused_with_an_estimate(tmp_path):
    code, _, err = finish(start("train", "--meta-batch", "100000", "--episodes", "10000",
                                "--out", str(tmp_path / "run")))
    assert code == 2
    assert "would need about" in one_line(err) and "GiB" in err and "use fewer" in err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_ctrl_c_while_starting_up_is_one_line(tmp_path):
    proc = start("train", "--iterations", "1", "--out", str(tmp_path / "run"))
    time.sleep(0.3)  # while torch is being imported
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc)
    assert code == 130 and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_files_of_a_run_have_one_mode(tmp_path):
    run = tmp_path / "run"
    code, _, err = finish(start("train", *FAULTY, "--iterations", "1", "--out", str(run)))
    assert code == 0, err
    code, _, err = finish(start("evaluate", str(run), "--tasks", "2", "--steps", "1",
                                "--methods", "meta"))
    assert code == 0, err
    mask = os.umask(0)
    os.umask(mask)
    for name in ("config.yaml", "metrics.jsonl", "checkpoint.pt", "eval.json", "adaptation.png"):
        assert (run / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_a_deleted_metrics_file_is_restored_from_the_checkpoint_on_resume(tmp_path):
    run = tmp_path / "run"
    trainer = Trainer(faulty_config(iterations=2, num_workers=1, checkpoint_every=1), run,
                      progress=False)
    trainer.train()
    trainer.close()
    before = metrics(run)
    (run / "metrics.jsonl").unlink()
    notes = []
    resumed = Trainer.resume(run, iterations=3, progress=notes.append)
    resumed.train()
    resumed.close()
    assert metrics(run)[:2] == before and len(metrics(run)) == 3
    assert any("held 0 of the 2 finished iterations; rewritten from the checkpoint" in e.note
               for e in notes)
    torch.set_num_threads(torch.get_num_threads())  # (Trainer may have set threads)


def test_a_stopped_job_is_not_a_hung_one(tmp_path):
    """Ctrl-Z (SIGSTOP to the job) for longer than the env timeout, then fg (SIGCONT): the run
    goes on, as time spent stopped is not counted."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "FAULTY_SLOW_RESET": "0.02"}
    proc = subprocess.Popen([sys.executable, "-m", "meta_rl", "train", *FAULTY, "--iterations",
                             "6", "--env-timeout", "3", "--out", str(tmp_path / "run")],
                            env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    wait_for(lambda: (tmp_path / "run" / "config.yaml").exists())
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGSTOP)
    time.sleep(6)  # twice the timeout
    os.killpg(proc.pid, signal.SIGCONT)
    code, _, err = finish(proc)
    assert code == 0, err
    assert len(metrics(tmp_path / "run")) == 6
