"""MuJoCo locomotion families of the MAML paper (HalfCheetahVel/Dir, AntDir/Vel) and a dynamics
family (HalfCheetahDynamics), on Gymnasium's MuJoCo v5 robots. No batched env: samplers step
these in slices (the main process one, each worker process another) with ``family.step_envs``,
switching tasks in place with ``env.unwrapped.set_task(task)``.

Rewards follow the MAML paper as implemented in the widely used pytorch-maml-rl envs; robots,
observations (without Ant's contact forces), reset noise and health rules are Gymnasium v5's.
Every env clips its actions to ``[-1, 1]`` before simulating and costing them (a Gaussian
policy's samples are unbounded), returns float32 observations and is truncated after ``horizon``
steps (default 200).

The families import without MuJoCo; constructing one without it raises an ``ImportError`` that
says ``pip install "gymnasium[mujoco]"``.

``MujocoFamily`` adds a second level below ``TaskFamily`` (against STYLE's one-level habit): the
five families differ only in their task type, task distribution and forward reward, and the
shared base keeps each of them to those few lines.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from envs.base import Task, TaskFamily

MUJOCO_HINT = 'pip install "gymnasium[mujoco]"'


# What to run when ``import mujoco`` finds a package but cannot load its library. The usual cause:
# MuJoCo 4 ships as mujoco + mujoco-core + mujoco-studio, and pip's downgrade to a 3.x release
# (Meta-World pins 3.3.0) removes only ``mujoco``, leaving mujoco-core's files in the same folder.
MUJOCO_REPAIR = ('pip uninstall -y mujoco mujoco-core mujoco-studio mujoco-studio-wasm, then '
                 'reinstall this project (pip install -e . or -e ".[metaworld]")')


def broken_mujoco(exc: OSError) -> ImportError:
    """The error for a mujoco package that is installed but cannot load its shared library."""
    return ImportError(f"the installed mujoco package does not load ({exc}); two MuJoCo releases "
                       f"are probably mixed in one environment. Repair it with: {MUJOCO_REPAIR}")


def require_mujoco():
    """The :mod:`envs.mujoco_envs` module, or an ``ImportError`` saying how to install MuJoCo
    (or how to repair a broken install)."""
    try:
        import mujoco  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"the MuJoCo task families need the mujoco package ({exc}); install it with: "
            f"{MUJOCO_HINT}"
        ) from exc
    except OSError as exc:
        raise broken_mujoco(exc) from exc
    from envs import mujoco_envs

    return mujoco_envs


class MujocoFamily(TaskFamily):
    """Shared machinery of the MuJoCo families: spaces, env construction, cost weights, and the
    time step.

    Every family takes ``horizon`` and ``frame_skip``: each env step simulates ``frame_skip``
    MuJoCo steps of 0.01 s, Gymnasium v5's 5 by default (0.05 s a step, 10 s in 200 steps). The
    MAML paper's rllab envs took one MuJoCo step per env step (2 s in 200 steps);
    ``frame_skip=1`` gives that timing.
    """

    default_horizon: ClassVar[int] = 200
    #: MuJoCo steps per env step, Gymnasium v5's for both robots
    default_frame_skip: ClassVar[int] = 5
    #: "half_cheetah" or "ant"
    robot: ClassVar[str] = ""
    ctrl_cost_weight: ClassVar[float] = 0.0
    contact_cost_weight: ClassVar[float] = 0.0
    survive_reward: ClassVar[float] = 0.0
    _sizes: ClassVar[dict[str, tuple[int, int]]] = {"half_cheetah": (17, 6), "ant": (27, 8)}

    def __init__(self, horizon: int | None = None, frame_skip: int | None = None):
        super().__init__(horizon)
        self.frame_skip = self.check_count(
            self.default_frame_skip if frame_skip is None else frame_skip, "frame_skip")
        self._envs = require_mujoco()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(horizon={self.horizon}, frame_skip={self.frame_skip})"

    @property
    def observation_space(self) -> gym.spaces.Box:
        return gym.spaces.Box(-np.inf, np.inf, (self._sizes[self.robot][0],), np.float32)

    @property
    def action_space(self) -> gym.spaces.Box:
        return gym.spaces.Box(-1.0, 1.0, (self._sizes[self.robot][1],), np.float32)

    def make_env(self, task: Task) -> gym.Env:
        task = self.check_task(task)
        if self.robot == "half_cheetah":
            return self._envs.MetaHalfCheetahEnv(self, task)
        return self._envs.MetaAntEnv(self, task)

    def step_envs(self, envs: list[gym.Env], actions: np.ndarray):
        """``env.step`` for many of this family's envs: the simulation per env, the rest in numpy
        (:func:`envs.mujoco_envs.step_envs`); equal to stepping them one by one."""
        return self._envs.step_envs(envs, actions)

    def forward_reward(self, task: Any, x_velocity: float) -> float:
        """The task-dependent reward term, from the torso's forward velocity ``v_x``."""
        raise NotImplementedError

    def dynamics_scales(self, task: Any) -> tuple[float, float]:
        """``(body-mass scale, joint-damping scale)`` of ``task``; 1 for goal families."""
        return (1.0, 1.0)

    def _rng(self, n: int, seed: int) -> tuple[int, np.random.Generator]:
        return self.check_count(n), np.random.default_rng(self.check_seed(seed))


@dataclasses.dataclass(frozen=True)
class DirectionTask(Task):
    """A running direction along x: +1 forward, -1 backward (base of the Dir families' tasks)."""

    direction: int

    def __post_init__(self):
        if self.direction not in (-1, 1) or isinstance(self.direction, bool):
            raise ValueError(f"direction must be -1 or +1, got {self.direction!r}")


@dataclasses.dataclass(frozen=True)
class VelocityTask(Task):
    """A target forward velocity (base of the Vel families' tasks)."""

    velocity: float


class DirectionTasks:
    """Tasks of a Dir family: the direction ``d`` is -1 or +1 with equal probability; the
    forward reward is ``d * v_x``. Listed before :class:`MujocoFamily` in a family's bases."""

    def sample_tasks(self, n: int, seed: int) -> list[DirectionTask]:
        n, rng = self._rng(n, seed)
        return [self.task_type(int(d)) for d in rng.choice([-1, 1], n)]

    def forward_reward(self, task: DirectionTask, x_velocity: float) -> float:
        return task.direction * x_velocity


class VelocityTasks:
    """Tasks of a Vel family: the target velocity is uniform in ``velocity_range``; the forward
    reward is ``-|v_x - v_goal| + velocity_bonus``. Listed before :class:`MujocoFamily`."""

    velocity_range: ClassVar[tuple[float, float]] = (0.0, 2.0)
    #: a constant added to the forward reward (the MAML code's +1 for the ant)
    velocity_bonus: ClassVar[float] = 0.0

    def sample_tasks(self, n: int, seed: int) -> list[VelocityTask]:
        n, rng = self._rng(n, seed)
        return [self.task_type(float(v)) for v in rng.uniform(*self.velocity_range, n)]

    def forward_reward(self, task: VelocityTask, x_velocity: float) -> float:
        return -abs(x_velocity - task.velocity) + self.velocity_bonus


# -- HalfCheetah -----------------------------------------------------------------------------------


class HalfCheetahVelTask(VelocityTask):
    """The target forward velocity of a :class:`HalfCheetahVel` task."""

    family: ClassVar[str] = "HalfCheetahVel"


class HalfCheetahVel(VelocityTasks, MujocoFamily):
    """Run the half-cheetah at a target forward velocity (MAML paper).

    ## Spaces
    Observation ``Box(-inf, inf, (17,), float32)``: ``qpos[1:]`` and ``qvel`` (Gymnasium v5).
    Action ``Box(-1, 1, (6,), float32)``: joint torques, clipped to the box by the env.

    ## What varies
    The target velocity ``v_goal ~ U[0, 2]``.

    ## Reward
    ``-|v_x - v_goal| - 0.05 * sum(a^2)``, ``v_x`` the torso's forward velocity.

    ## Episode end
    Reset noise as Gymnasium v5's. Never terminates; truncated after ``horizon`` (200) steps.
    """

    name: ClassVar[str] = "HalfCheetahVel"
    task_type: ClassVar[type[Task]] = HalfCheetahVelTask
    varies: ClassVar[str] = "target velocity ~ U[0, 2]"
    robot: ClassVar[str] = "half_cheetah"
    ctrl_cost_weight: ClassVar[float] = 0.05
    velocity_range: ClassVar[tuple[float, float]] = (0.0, 2.0)


class HalfCheetahDirTask(DirectionTask):
    """The running direction (+1 forward, -1 backward) of a :class:`HalfCheetahDir` task."""

    family: ClassVar[str] = "HalfCheetahDir"


class HalfCheetahDir(DirectionTasks, MujocoFamily):
    """Run the half-cheetah forward or backward (MAML paper).

    ## Spaces
    Observation ``Box(-inf, inf, (17,), float32)``: ``qpos[1:]`` and ``qvel`` (Gymnasium v5).
    Action ``Box(-1, 1, (6,), float32)``: joint torques, clipped to the box by the env.

    ## What varies
    The direction ``d``, -1 or +1 with equal probability.

    ## Reward
    ``d * v_x - 0.05 * sum(a^2)``, ``v_x`` the torso's forward velocity.

    ## Episode end
    Reset noise as Gymnasium v5's. Never terminates; truncated after ``horizon`` (200) steps.
    """

    name: ClassVar[str] = "HalfCheetahDir"
    task_type: ClassVar[type[Task]] = HalfCheetahDirTask
    varies: ClassVar[str] = "direction in {-1, +1}"
    robot: ClassVar[str] = "half_cheetah"
    ctrl_cost_weight: ClassVar[float] = 0.05


@dataclasses.dataclass(frozen=True)
class HalfCheetahDynamicsTask(Task):
    """Scale factors of a :class:`HalfCheetahDynamics` task's body masses and joint damping."""

    family: ClassVar[str] = "HalfCheetahDynamics"
    mass_scale: float
    damping_scale: float


class HalfCheetahDynamics(MujocoFamily):
    """Run the half-cheetah forward with body masses and joint damping that vary per task.

    ## Spaces
    Observation ``Box(-inf, inf, (17,), float32)``: ``qpos[1:]`` and ``qvel`` (Gymnasium v5).
    Action ``Box(-1, 1, (6,), float32)``: joint torques, clipped to the box by the env.

    ## What varies
    ``mass_scale`` multiplies every body's mass and inertia (a uniform change of density) and
    ``damping_scale`` every joint's damping, each log-uniform in ``[0.5, 2]``
    (``exp(U[log 0.5, log 2])``, so halving and doubling are equally likely).

    ## Reward
    Gymnasium HalfCheetah-v5's: ``v_x - 0.1 * sum(a^2)``.

    ## Episode end
    Reset noise as Gymnasium v5's. Never terminates; truncated after ``horizon`` (200) steps.
    """

    name: ClassVar[str] = "HalfCheetahDynamics"
    task_type: ClassVar[type[Task]] = HalfCheetahDynamicsTask
    varies: ClassVar[str] = "body-mass and joint-damping scales, each log-uniform in [0.5, 2]"
    robot: ClassVar[str] = "half_cheetah"
    ctrl_cost_weight: ClassVar[float] = 0.1
    scale_range: ClassVar[tuple[float, float]] = (0.5, 2.0)

    def sample_tasks(self, n: int, seed: int) -> list[HalfCheetahDynamicsTask]:
        n, rng = self._rng(n, seed)
        lo, hi = (math.log(s) for s in self.scale_range)
        scales = np.exp(rng.uniform(lo, hi, (n, 2)))
        return [HalfCheetahDynamicsTask(float(m), float(d)) for m, d in scales]

    def forward_reward(self, task: HalfCheetahDynamicsTask, x_velocity: float) -> float:
        return x_velocity

    def dynamics_scales(self, task: HalfCheetahDynamicsTask) -> tuple[float, float]:
        return (task.mass_scale, task.damping_scale)


# -- Ant -------------------------------------------------------------------------------------------

class AntDirTask(DirectionTask):
    """The running direction along x (+1 forward, -1 backward) of an :class:`AntDir` task."""

    family: ClassVar[str] = "AntDir"


class AntDir(DirectionTasks, MujocoFamily):
    """Run the ant forward or backward along x (MAML paper).

    ## Spaces
    Observation ``Box(-inf, inf, (27,), float32)``: ``qpos[2:]`` and ``qvel`` (Gymnasium Ant-v5
    without its 78 contact forces).
    Action ``Box(-1, 1, (8,), float32)``: hip and ankle torques, clipped to the box by the env.

    ## What varies
    The direction ``d``, -1 or +1 with equal probability.

    ## Reward
    ``d * v_x + 0.05 - 0.005 * sum(a^2) - 0.0005 * sum(clip(cfrc_ext, -1, 1)^2)``: forward
    reward, survive bonus, control and contact costs (MAML paper's weights).

    ## Episode end
    Reset noise as Gymnasium v5's. Terminates when unhealthy, as Gymnasium's Ant (torso height
    outside ``[0.2, 1.0]`` or a non-finite state); truncated after ``horizon`` (200) steps.
    """

    name: ClassVar[str] = "AntDir"
    task_type: ClassVar[type[Task]] = AntDirTask
    varies: ClassVar[str] = "direction in {-1, +1} along x"
    robot: ClassVar[str] = "ant"
    ctrl_cost_weight: ClassVar[float] = 0.005
    contact_cost_weight: ClassVar[float] = 0.0005
    survive_reward: ClassVar[float] = 0.05


class AntVelTask(VelocityTask):
    """The target forward velocity of an :class:`AntVel` task."""

    family: ClassVar[str] = "AntVel"


class AntVel(VelocityTasks, MujocoFamily):
    """Run the ant at a target forward velocity (MAML paper).

    ## Spaces
    Observation ``Box(-inf, inf, (27,), float32)``: ``qpos[2:]`` and ``qvel`` (Gymnasium Ant-v5
    without its 78 contact forces).
    Action ``Box(-1, 1, (8,), float32)``: hip and ankle torques, clipped to the box by the env.

    ## What varies
    The target velocity ``v_goal ~ U[0, 3]``.

    ## Reward
    ``-|v_x - v_goal| + 1.0 + 0.05 - 0.005 * sum(a^2) - 0.0005 * sum(clip(cfrc_ext, -1, 1)^2)``:
    velocity tracking with the MAML code's +1 offset, survive bonus, control and contact costs.

    ## Episode end
    Reset noise as Gymnasium v5's. Terminates when unhealthy, as Gymnasium's Ant (torso height
    outside ``[0.2, 1.0]`` or a non-finite state); truncated after ``horizon`` (200) steps.
    """

    name: ClassVar[str] = "AntVel"
    task_type: ClassVar[type[Task]] = AntVelTask
    varies: ClassVar[str] = "target velocity ~ U[0, 3]"
    robot: ClassVar[str] = "ant"
    ctrl_cost_weight: ClassVar[float] = 0.005
    contact_cost_weight: ClassVar[float] = 0.0005
    survive_reward: ClassVar[float] = 0.05
    velocity_range: ClassVar[tuple[float, float]] = (0.0, 3.0)
    velocity_bonus: ClassVar[float] = 1.0


MUJOCO_FAMILIES: tuple[type[MujocoFamily], ...] = (
    HalfCheetahVel,
    HalfCheetahDir,
    HalfCheetahDynamics,
    AntDir,
    AntVel,
)
