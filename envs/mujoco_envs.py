"""Gymnasium MuJoCo v5 robots (HalfCheetah, Ant) whose task can be switched in place.

Imported only by :mod:`envs.locomotion` once MuJoCo is known to be installed. The reward terms
that depend on the task come from the family (``family.forward_reward``); the rest (control and
contact costs, health, spaces, reset noise) are Gymnasium's v5 robots with the MAML paper's cost
weights. Each env

- clips actions to its action box before simulating and costing them;
- returns float32 observations and truncates itself after ``family.horizon`` steps;
- has ``set_task(task)``, which switches the task in place (call ``reset`` next);
- is cheap to construct: the MuJoCo model is compiled once per process and copied.
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
        return super()._get_obs().astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._elapsed = 0
        return super().reset(seed=seed, options=options)

    def _clip(self, action: Any) -> np.ndarray:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(
                f"action must have shape {self.action_space.shape}, got shape {action.shape}"
            )
        return np.clip(action, self.action_space.low, self.action_space.high)

    def _tick(self) -> bool:
        self._elapsed += 1
        return self._elapsed >= self._horizon


class MetaHalfCheetahEnv(_TaskMixin, HalfCheetahEnv):
    """Gymnasium's HalfCheetah-v5 with a task: 17 float32 observations (``qpos[1:]``, ``qvel``),
    6 actions in ``[-1, 1]``, ``reward = family.forward_reward(task, v_x) -
    family.ctrl_cost_weight * sum(a^2)``, never terminates."""

    def __init__(self, family: Any, task: Any):
        HalfCheetahEnv.__init__(self)
        self._setup(family, task, 17)

    def step(self, action):
        action = self._clip(action)
        x_before = self.data.qpos[0]
        self.do_simulation(action, self.frame_skip)
        x_velocity = (self.data.qpos[0] - x_before) / self.dt
        forward = self.family.forward_reward(self.task, x_velocity)
        ctrl_cost = self.family.ctrl_cost_weight * float(np.sum(np.square(action)))
        info = {"x_velocity": x_velocity, "reward_forward": forward, "reward_ctrl": -ctrl_cost}
        return self._get_obs(), float(forward - ctrl_cost), False, self._tick(), info


class MetaAntEnv(_TaskMixin, AntEnv):
    """Gymnasium's Ant-v5 with a task and without contact forces in the observation: 27 float32
    observations (``qpos[2:]``, ``qvel``), 8 actions in ``[-1, 1]``,
    ``reward = family.forward_reward(task, v_x) + family.survive_reward
    - family.ctrl_cost_weight * sum(a^2) - family.contact_cost_weight * sum(clip(cfrc_ext, -1, 1)^2)``,
    terminates when unhealthy (torso height outside [0.2, 1.0] or a non-finite state)."""

    def __init__(self, family: Any, task: Any):
        AntEnv.__init__(self, include_cfrc_ext_in_observation=False)
        self._setup(family, task, 27)

    def step(self, action):
        action = self._clip(action)
        x_before = self.data.body(self._main_body).xpos[0]
        self.do_simulation(action, self.frame_skip)
        x_velocity = (self.data.body(self._main_body).xpos[0] - x_before) / self.dt
        fam = self.family
        forward = fam.forward_reward(self.task, x_velocity)
        ctrl_cost = fam.ctrl_cost_weight * float(np.sum(np.square(action)))
        contact_cost = fam.contact_cost_weight * float(np.sum(np.square(self.contact_forces)))
        reward = forward + fam.survive_reward - ctrl_cost - contact_cost
        info = {
            "x_velocity": x_velocity,
            "reward_forward": forward,
            "reward_ctrl": -ctrl_cost,
            "reward_contact": -contact_cost,
            "reward_survive": fam.survive_reward,
        }
        terminated = not self.is_healthy
        return self._get_obs(), float(reward), terminated, self._tick() and not terminated, info
