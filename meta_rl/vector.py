"""A Gymnasium vector env in which every sub-env has its own task, stepped in parallel slices.

Gymnasium's ``AsyncVectorEnv`` runs one process per sub-env. A meta-batch has ``T x E`` sub-envs
(800 for 40 HalfCheetah tasks x 20 episodes), so here the sub-envs are cut into ``W`` contiguous
slices, one per stepper: the main process steps the first slice itself while ``W - 1`` worker
processes step the others, so ``W`` steppers keep ``W`` cores busy with no process waiting idle
on the others. Each stepper steps its whole slice per step with ``family.step_envs`` (which a
family can make faster than one ``env.step`` at a time): one round trip per step per worker,
whatever ``T x E`` is. Workers run one thread each (torch and BLAS), so that they and the main
process's policy do not fight over cores. ``W = 1`` steps everything in the main process.

Episodes do not auto-reset: a sub-env that terminated or was truncated is not stepped again until
the next ``reset``; it reports its final observation, reward 0 and the flag that ended it.

Nothing hangs and nothing is left behind. Every call has a timeout (``timeout`` seconds: the
run's ``env_timeout``, or the family's ``call_timeout``): a worker that does not answer in time
is killed, and so is one whose parent dies, even by ``kill -9`` (Linux's parent-death signal;
workers ignore Ctrl-C and leave it to their parent). A call that fails, hangs or finds a worker
dead raises :class:`~meta_rl.errors.EnvError` naming the family, the call and the tasks of the
slice; the env is unusable after it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from multiprocessing.reduction import ForkingPickler
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import batch_space

from envs import TaskFamily
from meta_rl.errors import EnvError


class _Slice:
    """One stepper's sub-envs and their state; ``handle(cmd, arg)`` runs one command. Used in the
    main process for the first slice and in each worker process for its own."""

    def __init__(self, family: TaskFamily):
        self.family = family
        self.envs: list[gym.Env] = []
        self.done = np.zeros(0, dtype=bool)
        self.last = np.zeros(0)

    def handle(self, cmd: str, arg: Any) -> Any:
        envs = self.envs
        if cmd == "set_tasks":
            for i, task in enumerate(arg):
                if i < len(envs) and hasattr(envs[i].unwrapped, "set_task"):
                    envs[i].unwrapped.set_task(task)
                elif i < len(envs):
                    envs[i].close()
                    envs[i] = self.family.make_env(task)
                else:
                    envs.append(self.family.make_env(task))
            for env in envs[len(arg):]:
                env.close()
            del envs[len(arg):]
            return None
        if cmd == "reset":
            self.last = np.stack([env.reset(seed=s)[0] for env, s in zip(envs, arg)])
            self.done = np.zeros(len(envs), dtype=bool)
            return self.last
        if cmd == "step":
            n = len(envs)
            rew = np.zeros(n, np.float64)
            term = np.zeros(n, bool)
            trunc = np.zeros(n, bool)
            success = None
            live = np.flatnonzero(~self.done)
            if live.size:
                obs, rew[live], term[live], trunc[live], *reported = self.family.step_envs(
                    [envs[i] for i in live], arg[live])
                if reported and reported[0] is not None:
                    success = np.zeros(n, bool)
                    success[live] = reported[0]
                self.last[live] = obs
                self.done[live] = term[live] | trunc[live]
            return self.last, rew, term, trunc, success
        if cmd == "close":
            for env in envs:
                env.close()
            envs.clear()
            return None
        raise ValueError(f"unknown command {cmd!r}")


def _die_with_parent(parent: int) -> None:
    """Have Linux kill this process when its parent dies (a worker blocked in an env call never
    reads its pipe's end of file); exit at once if the parent is already gone."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(0)


def _worker(conn, family: TaskFamily, parent: int, parent_ends: list = ()) -> None:
    import torch

    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    for end in parent_ends:
        end.close()
    torch.set_num_threads(1)
    state = _Slice(family)
    try:
        while True:
            cmd, arg = conn.recv()
            conn.send(("ok", state.handle(cmd, arg)))
            if cmd == "close":
                return
    except EOFError:
        return
    except Exception as exc:  # report to the parent instead of dying silently
        conn.send(("error", f"raised {type(exc).__name__}: {exc}", traceback.format_exc()))


def _describe(tasks: list) -> str:
    """A few of ``tasks``, for a message: the distinct ones in order, the first three named."""
    distinct = list(dict.fromkeys(tasks))
    named = ", ".join(map(repr, distinct[:3]))
    return named + (f" and {len(distinct) - 3} more" if len(distinct) > 3 else "")


_resumes = [0]  # SIGCONTs this process has seen: time spent stopped (Ctrl-Z) is not a hang


def _count_resume(signum, frame) -> None:
    _resumes[0] += 1


def _watch_resumes() -> None:
    """Count SIGCONTs (from the main thread; the kernel resumes the process either way)."""
    if (hasattr(signal, "SIGCONT") and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGCONT) in (signal.SIG_DFL, None)):
        signal.signal(signal.SIGCONT, _count_resume)


#: seconds an env call may run past its timeout while the alarm checks for a stop (Ctrl-Z)
GRACE_S = 0.5


class _Alarm:
    """Raise :class:`EnvError` in the main thread if a block outlasts ``seconds`` (SIGALRM),
    not counting a stop (Ctrl-Z) during it; elsewhere (another thread, no ``setitimer``) the
    block just runs."""

    def __init__(self, seconds: float | None, message: str):
        self.seconds, self.message = seconds, message
        self.active = (bool(seconds) and hasattr(signal, "setitimer")
                       and threading.current_thread() is threading.main_thread())

    def _fire(self, signum, frame):
        if _resumes[0] != self._resumes:  # the process was stopped: time anew
            self._resumes, self._grace = _resumes[0], False
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
            return
        if not self._grace:
            # A SIGALRM that fell due while the process was stopped arrives with the SIGCONT,
            # and Python runs its handler first: give the SIGCONT's handler a moment to count.
            self._grace = True
            signal.setitimer(signal.ITIMER_REAL, GRACE_S)
            return
        raise EnvError(self.message)

    def __enter__(self):
        if self.active:
            self._resumes, self._grace = _resumes[0], False
            self._old = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc):
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old)


class TaskVectorEnv(gym.vector.VectorEnv):
    """``N`` Gymnasium envs of one family, sub-env ``i`` on ``tasks[i]``, stepped in ``W`` slices:
    the first in this process, the others in ``W - 1`` worker processes.

    Call :meth:`set_tasks` first (it fixes ``num_envs``), then ``reset(seed)`` (sub-env ``i`` is
    seeded with ``seed + i``) and ``step(actions [N, ...])``.
    """

    metadata = {"autoreset_mode": None}

    def __init__(self, family: TaskFamily, num_workers: int | None = None,
                 timeout: float | None = None):
        if num_workers is None:
            num_workers = os.cpu_count() or 1
        TaskFamily.check_count(num_workers, "num_workers")
        self.family = family
        self.num_workers = num_workers
        self.timeout = float(timeout if timeout is not None else family.call_timeout)
        self._tasks: list = []
        _watch_resumes()
        self.single_observation_space = family.observation_space
        self.single_action_space = family.action_space
        self.num_envs = 0
        self._local = _Slice(family)
        self._procs: list = []
        self._conns: list = []
        self._slices: list[slice] = []
        self._closed = False
        self._failed = ""  # why a call failed; the env is unusable after it
        self.failure_detail = ""  # the failing side's traceback, for a log

    def _start(self, workers: int) -> None:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        for _ in range(workers):
            parent, child = ctx.Pipe()
            # the child closes every parent end it inherited, so that when the main process
            # dies (even by SIGKILL) its pipe reaches EOF and the worker exits
            proc = ctx.Process(target=_worker, daemon=True,
                               args=(child, self.family, os.getpid(), [parent, *self._conns]))
            proc.start()
            child.close()
            self._procs.append(proc)
            self._conns.append(parent)

    def _call(self, messages: list[tuple[str, Any]]) -> list[Any]:
        """Run ``messages[0]`` here and ``messages[k]`` in worker ``k - 1``, all at once; their
        results in order. Every message is pickled before any is sent, and every worker's reply
        is read (or waited for, up to the timeout) even when another part fails, so the pipes
        stay in step. A part that fails, outlasts the timeout or finds its worker dead raises
        :class:`EnvError`; a worker that outlasted it is killed, and once a worker is gone the
        env refuses every call with the reason. Ctrl-C reaches the caller as it is."""
        self._check_usable()
        cmd = messages[0][0]
        try:  # pickled up front: a message that cannot be sent fails before any worker gets one
            payloads = [ForkingPickler.dumps(msg) for msg in messages[1:]]
        except Exception as exc:
            raise ValueError(
                f"cannot send {cmd!r} to the {self.family.name} worker processes "
                f"({type(exc).__name__}: {exc}); tasks must pickle (define their types at module "
                "level), or use num_workers=1"
            ) from None
        sent = [self._send(conn, payload) for conn, payload in zip(self._conns, payloads)]
        deadline, resumes = time.monotonic() + self.timeout, _resumes[0]
        try:
            with _Alarm(self.timeout, self._what(cmd, 0, "the main process")):
                out = [self._local.handle(*messages[0])]
        except BaseException as exc:
            # unwinding (an error, or Ctrl-C): the workers get a few seconds, not the timeout
            deadline = min(deadline, time.monotonic() + 5)
            if isinstance(exc, Exception) and not isinstance(exc, EnvError):
                # the main process's own envs failed; the workers stay in step
                raise EnvError(self._what(cmd, 0, "the main process", failed=exc)) from exc
            raise
        finally:
            replies = [self._receive(k, conn, deadline, resumes) for k, conn in enumerate(sent)]
            for k, reply in enumerate(replies):
                if reply[0] != "ok" and not self._failed:  # that worker is gone
                    self._failed = self._what(cmd, k + 1, f"worker {k}", reply[1])
                    self.failure_detail = reply[2] if len(reply) > 2 else ""
        if self._failed:
            error = EnvError(self._failed)
            error.detail = self.failure_detail
            raise error
        return out + [reply[1] for reply in replies]

    def _what(self, cmd: str, part: int, who: str, failed: object = None) -> str:
        """One line: which call of which slice (and its tasks) failed or hung, and how."""
        tasks = self._tasks[self._slices[part]] if part < len(self._slices) else []
        how = (f"raised {type(failed).__name__}: {failed}" if isinstance(failed, Exception)
               else failed if failed else f"did not answer within {self.timeout:g} s")
        return (f"{self.family.name} {cmd!r} in {who} {how}"
                + (f" (its envs run {_describe(tasks)})" if tasks else ""))

    @staticmethod
    def _send(conn, payload):
        """``conn`` if the pickled message went through, else None (the worker had exited)."""
        try:
            conn.send_bytes(payload)
            return conn
        except OSError:
            return None

    def _receive(self, k: int, conn, deadline: float, resumes: int) -> tuple:
        """Worker ``k``'s reply; a closed pipe (the worker died) or no reply by ``deadline``
        (the worker is then killed) as an error. A stop (Ctrl-Z) while waiting restarts the
        clock: a stopped job is not a hung env. ``resumes`` is the SIGCONT count when the
        clock started, so a stop while the main process ran its own part counts too."""
        if conn is None:
            return "error", "had exited"
        try:
            while not conn.poll(max(0.0, min(deadline - time.monotonic(), 1.0))):
                if time.monotonic() < deadline:
                    continue
                if _resumes[0] != resumes:
                    resumes, deadline = _resumes[0], time.monotonic() + self.timeout
                    continue
                self._procs[k].kill()
                self._procs[k].join(timeout=5)
                return ("error", f"did not answer within {self.timeout:g} s, so it was killed")
            return conn.recv()
        except (EOFError, OSError) as exc:
            return "error", f"exited without replying ({type(exc).__name__})"

    def _check_usable(self) -> None:
        if self._closed:
            raise RuntimeError("TaskVectorEnv is closed")
        if self._failed:
            raise EnvError(f"this TaskVectorEnv is unusable after a failure ({self._failed}); "
                           "close it and make a new one")

    def set_tasks(self, tasks: list) -> None:
        """Give sub-env ``i`` the task ``tasks[i]`` (envs are reused; tasks switched in place)."""
        self._check_usable()
        tasks = [self.family.check_task(t) for t in tasks]
        n = TaskFamily.check_count(len(tasks), "number of tasks")
        self._tasks = tasks
        steppers = min(self.num_workers, n)
        if len(self._procs) < steppers - 1:
            self._start(steppers - 1 - len(self._procs))
        bounds = np.linspace(0, n, steppers + 1).round().astype(int)
        self._slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        self._call([("set_tasks", tasks[s]) for s in self._slices])
        self.num_envs = n
        self.observation_space = batch_space(self.single_observation_space, n)
        self.action_space = batch_space(self.single_action_space, n)

    def reset(self, *, seed: int | None = None, options=None):
        if not self.num_envs:
            raise RuntimeError("call set_tasks before reset")
        seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        obs = self._call([("reset", seeds[s]) for s in self._slices])
        return np.concatenate(obs).astype(np.float32, copy=False), {}

    def step(self, actions):
        actions = np.asarray(actions)
        if actions.shape[0] != self.num_envs:
            raise ValueError(f"expected {self.num_envs} actions, got array of shape {actions.shape}")
        parts = self._call([("step", actions[s]) for s in self._slices])
        obs, rew, term, trunc = (np.concatenate(x) for x in list(zip(*parts))[:4])
        info = {}
        if any(p[4] is not None for p in parts):  # the family's envs report success
            info["success"] = np.concatenate([
                np.zeros(len(p[1]), bool) if p[4] is None else p[4] for p in parts])
        return obs.astype(np.float32, copy=False), rew, term, trunc, info

    def close_extras(self, **kwargs) -> None:
        """Close every worker: ask it to, wait a few seconds, then kill it."""
        if self._closed:
            return
        self._closed = True
        for conn, proc in zip(self._conns, self._procs):
            try:
                conn.send(("close", None))
                if conn.poll(5):
                    conn.recv()
            except (OSError, EOFError, BrokenPipeError):
                pass
            proc.join(timeout=1)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        try:
            self._local.handle("close", None)
        except Exception:  # noqa: BLE001 (a broken env must not keep the workers alive)
            pass

    def __del__(self):
        try:
            self.close_extras()
        except Exception:
            pass
