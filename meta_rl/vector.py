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
"""

from __future__ import annotations

import multiprocessing as mp
import os
import traceback
from multiprocessing.reduction import ForkingPickler
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import batch_space

from envs import TaskFamily


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
            live = np.flatnonzero(~self.done)
            if live.size:
                obs, rew[live], term[live], trunc[live] = self.family.step_envs(
                    [envs[i] for i in live], arg[live])
                self.last[live] = obs
                self.done[live] = term[live] | trunc[live]
            return self.last, rew, term, trunc
        if cmd == "close":
            for env in envs:
                env.close()
            envs.clear()
            return None
        raise ValueError(f"unknown command {cmd!r}")


def _worker(conn, family: TaskFamily, parent_ends: list = ()) -> None:
    import torch

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
    except (KeyboardInterrupt, EOFError):
        return
    except Exception as exc:  # report to the parent instead of dying silently
        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


class TaskVectorEnv(gym.vector.VectorEnv):
    """``N`` Gymnasium envs of one family, sub-env ``i`` on ``tasks[i]``, stepped in ``W`` slices:
    the first in this process, the others in ``W - 1`` worker processes.

    Call :meth:`set_tasks` first (it fixes ``num_envs``), then ``reset(seed)`` (sub-env ``i`` is
    seeded with ``seed + i``) and ``step(actions [N, ...])``.
    """

    metadata = {"autoreset_mode": None}

    def __init__(self, family: TaskFamily, num_workers: int | None = None):
        if num_workers is None:
            num_workers = os.cpu_count() or 1
        TaskFamily.check_count(num_workers, "num_workers")
        self.family = family
        self.num_workers = num_workers
        self.single_observation_space = family.observation_space
        self.single_action_space = family.action_space
        self.num_envs = 0
        self._local = _Slice(family)
        self._procs: list = []
        self._conns: list = []
        self._slices: list[slice] = []
        self._closed = False
        self._failed = ""  # why a worker failed; the env is unusable after it

    def _start(self, workers: int) -> None:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        for _ in range(workers):
            parent, child = ctx.Pipe()
            # the child closes every parent end it inherited, so that when the main process
            # dies (even by SIGKILL) its pipe reaches EOF and the worker exits
            proc = ctx.Process(target=_worker, args=(child, self.family, [parent, *self._conns]),
                               daemon=True)
            proc.start()
            child.close()
            self._procs.append(proc)
            self._conns.append(parent)

    def _call(self, messages: list[tuple[str, Any]]) -> list[Any]:
        """Run ``messages[0]`` here and ``messages[k]`` in worker ``k - 1``, all at once; their
        results in order. Every message is pickled before any is sent, and every worker's reply
        is read even when another part fails, so the pipes stay in step; a failure here (or
        Ctrl-C, which stops the workers too) reaches the caller as it is. A worker that fails or
        dies has exited, so after it every call is refused with the reason, instead of hitting a
        broken pipe."""
        self._check_usable()
        try:  # pickled up front: a message that cannot be sent fails before any worker gets one
            payloads = [ForkingPickler.dumps(msg) for msg in messages[1:]]
        except Exception as exc:
            raise ValueError(
                f"cannot send {messages[0][0]!r} to the {self.family.name} worker processes "
                f"({type(exc).__name__}: {exc}); tasks must pickle (define their types at module "
                "level), or use num_workers=1"
            ) from None
        sent = [self._send(conn, payload) for conn, payload in zip(self._conns, payloads)]
        try:
            out = [self._local.handle(*messages[0])]
        finally:
            replies = [self._receive(conn) if conn else ("error", "it had exited")
                       for conn in sent]
            failures = [f"worker {k} failed: {value}"
                        for k, (status, value) in enumerate(replies) if status == "error"]
            if failures:
                self._failed = failures[0]
        if failures:
            raise RuntimeError(f"a {self.family.name} {failures[0]}")
        return out + [value for _, value in replies]

    @staticmethod
    def _send(conn, payload):
        """``conn`` if the pickled message went through, else None (the worker had exited)."""
        try:
            conn.send_bytes(payload)
            return conn
        except OSError:
            return None

    @staticmethod
    def _receive(conn) -> tuple[str, Any]:
        """A worker's reply; a closed pipe (the worker died, e.g. killed) as its error."""
        try:
            return conn.recv()
        except (EOFError, OSError) as exc:
            return "error", f"it exited without replying ({type(exc).__name__})"

    def _check_usable(self) -> None:
        if self._closed:
            raise RuntimeError("TaskVectorEnv is closed")
        if self._failed:
            raise RuntimeError(f"this TaskVectorEnv is unusable: a {self.family.name} "
                               f"{self._failed.splitlines()[0]}; close it and make a new one")

    def set_tasks(self, tasks: list) -> None:
        """Give sub-env ``i`` the task ``tasks[i]`` (envs are reused; tasks switched in place)."""
        self._check_usable()
        tasks = [self.family.check_task(t) for t in tasks]
        n = TaskFamily.check_count(len(tasks), "number of tasks")
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
        obs, rew, term, trunc = (np.concatenate(x) for x in zip(*parts))
        return obs.astype(np.float32, copy=False), rew, term, trunc, {}

    def close_extras(self, **kwargs) -> None:
        if self._closed:
            return
        self._closed = True
        for conn in self._conns:
            try:
                conn.send(("close", None))
                conn.recv()
            except (OSError, EOFError, BrokenPipeError):
                pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        self._local.handle("close", None)

    def __del__(self):
        try:
            self.close_extras()
        except Exception:
            pass
