"""Gymnasium MuJoCo v5 robots (HalfCheetah, Ant) whose task can be switched in place.

Imported only by :mod:`envs.locomotion` once MuJoCo is known to be installed. The reward terms
that depend on the task come from the family (``family.forward_reward``); the rest (control and
contact costs, health, spaces, reset noise) are Gymnasium's v5 robots with the MAML paper's cost
weights. Each env

- clips actions to its action box before simulating and costing them;
- returns float32 observations and truncates itself after ``family.horizon`` steps;
- has ``set_task(task)``, which switches the task in place (call ``reset`` next);
- is cheap to construct: the MuJoCo model is compiled once per process and copied.

:func:`step_envs` steps many envs of one robot class at once, and ``env.step`` is
``step_envs([env], ...)``, so the two cannot disagree. Per env it does only the simulation
(Gymnasium's ``_step_mujoco_simulation``) and the task's reward in Python; the action clipping,
control costs and observation buffer are one numpy operation for the whole list. For
HalfCheetah, whose MuJoCo step is short, this cuts the Python time around it by more than
half (``docs/benchmarks.md``).
"""

from __future__ import annotations

import copy
import os
import re
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

_MODELS: dict[str, mujoco.MjModel] = {}


def _compiled(xml_file: str) -> mujoco.MjModel:
    """The compiled model of one of Gymnasium's MuJoCo assets, compiled once per process.

    ``half_cheetah.xml`` sets ``settotalmass``, which MuJoCo 3.3+ warns about on every compile;
    the attribute is stripped and applied with ``mj_setTotalmass`` + ``mj_setConst`` instead,
    which gives the identical model.
    """
    if xml_file not in _MODELS:
        import gymnasium.envs.mujoco as assets

        with open(os.path.join(os.path.dirname(assets.__file__), "assets", xml_file)) as f:
            xml = f.read()
        total = re.search(r'\ssettotalmass="([^"]*)"', xml)
        model = mujoco.MjModel.from_xml_string(re.sub(r'\ssettotalmass="[^"]*"', "", xml))
        if total:
            mujoco.mj_setTotalmass(model, float(total.group(1)))
            mujoco.mj_setConst(model, mujoco.MjData(model))
        _MODELS[xml_file] = model
    return _MODELS[xml_file]


def _float32_box(size: int) -> gym.spaces.Box:
    return gym.spaces.Box(-np.inf, np.inf, (size,), np.float32)


class _TaskMixin:
    """Task switching, horizon, float32 observations and model caching shared by the two robots
    (placed before the Gymnasium robot in the bases, so ``super()`` is the robot; no physics)."""

    family: Any
    task: Any
    model: mujoco.MjModel
    width: int
    height: int

    def _initialize_simulation(self):
        model = copy.deepcopy(_compiled(os.path.basename(self.fullpath)))
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        return model, mujoco.MjData(model)

    def _setup(self, family: Any, task: Any, obs_size: int) -> None:
        utils.EzPickle.__init__(self, family, task)
        self.family, self._horizon, self._elapsed = family, family.horizon, 0
        self.observation_space = _float32_box(obs_size)
        self._base_mass = self.model.body_mass.copy()
        self._base_inertia = self.model.body_inertia.copy()
        self._base_damping = self.model.dof_damping.copy()
        self._scales = (1.0, 1.0)
        self.set_task(task)

    def set_task(self, task: Any) -> None:
        """Switch to ``task`` (one of this family's) in place; call ``reset`` next."""
        self.task = self.family.check_task(task)
        scales = self.family.dynamics_scales(self.task)
        if scales != self._scales:  # goal tasks leave the model as compiled
            mass, damping = self._scales = scales
            self.model.body_mass[:] = self._base_mass * mass
            self.model.body_inertia[:] = self._base_inertia * mass
            self.model.dof_damping[:] = self._base_damping * damping
            mujoco.mj_setConst(self.model, self.data)

    def _get_obs(self) -> np.ndarray:
        obs = np.empty(self.observation_space.shape, np.float32)
        self._write_obs(obs)
        return obs

    def _write_obs(self, out: np.ndarray) -> None:
        """Write the observation, ``qpos[skip:]`` then ``qvel`` as float32, into ``out``: the
        Gymnasium robot's ``_get_obs`` without its copies (``skip`` = the positions it leaves out)."""
        qpos = self.data.qpos
        skip, nq = self._skip_positions, len(qpos)
        out[: nq - skip] = qpos[skip:]
        out[nq - skip:] = self.data.qvel

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._elapsed = 0
        return super().reset(seed=seed, options=options)

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(
                f"action must have shape {self.action_space.shape}, got shape {action.shape}"
            )
        obs, reward, terminated, truncated, infos = _step([self], action[None], infos=True)
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), infos[0]

    def _simulate(self, action: np.ndarray) -> float:
        """Run ``frame_skip`` MuJoCo steps under the (clipped) ``action``, as Gymnasium's
        ``do_simulation`` does after its shape check; return the main body's x velocity."""
        x_before = self._x_position()
        self._step_mujoco_simulation(action, self.frame_skip)
        return (self._x_position() - x_before) / self.dt

    def _tick(self) -> bool:
        self._elapsed += 1
        return self._elapsed >= self._horizon


def step_envs(
    envs: list[_TaskMixin], actions: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Step envs of one robot class (and one family) once each, ``envs[i]`` with ``actions[i]``:
    ``(obs [n, O] float32, reward [n] float64, terminated [n], truncated [n] bool)``, equal to
    stacking ``envs[i].step(actions[i])`` (which is this function on one env)."""
    if not envs:
        raise ValueError("step_envs needs at least one env")
    first = envs[0]
    kind = type(first)
    if any(type(env) is not kind or env.family is not first.family for env in envs):
        raise ValueError(f"step_envs steps envs of one robot and family; got a mix in {envs!r}")
    actions = np.asarray(actions, dtype=np.float64)
    if actions.shape != (len(envs), *first.action_space.shape):
        raise ValueError(
            f"actions must have shape {(len(envs), *first.action_space.shape)} for {len(envs)} "
            f"envs, got shape {actions.shape}"
        )
    return _step(envs, actions, infos=False)[:4]


def _step(envs: list[_TaskMixin], actions: np.ndarray, infos: bool) -> tuple:
    """The step of :func:`step_envs` and ``env.step`` on checked ``actions`` ``[n, A]``;
    ``infos`` also builds each env's info dict."""
    first, n = envs[0], len(envs)
    actions = np.clip(actions, first.action_space.low, first.action_space.high)
    ctrl_costs = first.family.ctrl_cost_weight * np.sum(np.square(actions), axis=1)
    obs = np.empty((n, *first.observation_space.shape), np.float32)
    reward = np.empty(n, np.float64)
    terminated = np.zeros(n, bool)
    truncated = np.zeros(n, bool)
    info_list = []
    for i, env in enumerate(envs):
        x_velocity = env._simulate(actions[i])
        reward[i], terminated[i], terms = env._outcome(x_velocity, ctrl_costs[i])
        truncated[i] = env._tick() and not terminated[i]
        env._write_obs(obs[i])
        if infos:
            info_list.append({"x_velocity": x_velocity, **terms})
    return obs, reward, terminated, truncated, info_list


class MetaHalfCheetahEnv(_TaskMixin, HalfCheetahEnv):
    """Gymnasium's HalfCheetah-v5 with a task: 17 float32 observations (``qpos[1:]``, ``qvel``),
    6 actions in ``[-1, 1]``, ``reward = family.forward_reward(task, v_x) -
    family.ctrl_cost_weight * sum(a^2)``, never terminates."""

    _skip_positions = 1  # the torso's x

    def __init__(self, family: Any, task: Any):
        HalfCheetahEnv.__init__(self, frame_skip=family.frame_skip)
        self._setup(family, task, 17)

    def _x_position(self) -> float:
        return self.data.qpos[0]

    def _outcome(self, x_velocity: float, ctrl_cost: float) -> tuple[float, bool, dict]:
        """``(reward, terminated, reward terms)`` of the step just simulated."""
        forward = self.family.forward_reward(self.task, x_velocity)
        return forward - ctrl_cost, False, {"reward_forward": forward, "reward_ctrl": -ctrl_cost}


class MetaAntEnv(_TaskMixin, AntEnv):
    """Gymnasium's Ant-v5 with a task and without contact forces in the observation: 27 float32
    observations (``qpos[2:]``, ``qvel``), 8 actions in ``[-1, 1]``,
    ``reward = family.forward_reward(task, v_x) + family.survive_reward
    - family.ctrl_cost_weight * sum(a^2) - family.contact_cost_weight * sum(clip(cfrc_ext, -1, 1)^2)``,
    terminates when unhealthy (torso height outside [0.2, 1.0] or a non-finite state)."""

    _skip_positions = 2  # the torso's x and y

    def __init__(self, family: Any, task: Any):
        AntEnv.__init__(self, frame_skip=family.frame_skip, include_cfrc_ext_in_observation=False)
        self._setup(family, task, 27)
        self._main_body_id = self.data.body(self._main_body).id

    def _x_position(self) -> float:
        return self.data.xpos[self._main_body_id, 0]

    def _outcome(self, x_velocity: float, ctrl_cost: float) -> tuple[float, bool, dict]:
        """``(reward, terminated, reward terms)`` of the step just simulated."""
        fam = self.family
        forward = fam.forward_reward(self.task, x_velocity)
        contact_cost = fam.contact_cost_weight * float(np.sum(np.square(self.contact_forces)))
        reward = forward + fam.survive_reward - ctrl_cost - contact_cost
        terms = {
            "reward_forward": forward,
            "reward_ctrl": -ctrl_cost,
            "reward_contact": -contact_cost,
            "reward_survive": fam.survive_reward,
        }
        return reward, not self.is_healthy, terms
