"""Samplers: shapes, masks, seeding, and the worker-process path equals the batched path."""

import dataclasses

import numpy as np
import pytest
import torch

import envs
from meta_rl.config import PolicyConfig, SamplingConfig
from meta_rl.policies import batch_params, make_policy
from meta_rl.sampling import BatchedSampler, VectorSampler, make_sampler


def setup(name="Navigation2D", T=3, E=4, **kw):
    family = envs.make(name, **kw)
    policy = make_policy(family.observation_space, family.action_space, PolicyConfig(hidden=(16,)))
    params = batch_params(policy.init_params(torch.Generator().manual_seed(0)), T)
    return family, policy, params, family.sample_tasks(T, seed=1)


def test_batched_episodes_have_documented_shapes_and_flags():
    family, policy, params, tasks = setup(horizon=30)
    ep = BatchedSampler(family, policy, SamplingConfig(episodes=4)).sample(tasks, params, seed=0)
    assert ep.obs.shape == (3, 4, 30, 2) and ep.actions.shape == (3, 4, 30, 2)
    assert ep.rewards.shape == ep.mask.shape == ep.terminated.shape == (3, 4, 30)
    assert ep.last_obs.shape == (3, 4, 2)
    # every episode ends exactly once, by termination or truncation, at its last valid step
    ends = (ep.terminated | ep.truncated).sum(-1)
    assert torch.equal(ends, torch.ones_like(ends))
    assert not bool((ep.terminated & ep.truncated).any())
    last = ep.lengths.long() - 1
    assert bool((ep.terminated | ep.truncated).gather(-1, last.unsqueeze(-1)).all())
    assert float((ep.rewards * (1 - ep.mask)).abs().sum()) == 0.0


def test_same_seed_same_episodes_and_tasks_differ():
    family, policy, params, tasks = setup()
    s = BatchedSampler(family, policy, SamplingConfig(episodes=4))
    a, b = s.sample(tasks, params, seed=5), s.sample(tasks, params, seed=5)
    assert all(x is y is None or torch.equal(x, y) for x, y in zip(a, b))
    c = s.sample(tasks, params, seed=6)
    assert not torch.equal(a.actions, c.actions)
    assert not torch.equal(a.rewards[0], a.rewards[1])  # different goals, different rewards


def test_vector_sampler_equals_batched_sampler():
    """Same tasks, same seeds: the worker-process Gymnasium path reproduces the batched one."""
    family, policy, params, tasks = setup(horizon=25)
    batched = BatchedSampler(family, policy, SamplingConfig(episodes=4)).sample(tasks, params, seed=3)
    vec = VectorSampler(family, policy, SamplingConfig(episodes=4), num_workers=2)
    try:
        vector = vec.sample(tasks, params, seed=3)
        vector_again = vec.sample(tasks, params, seed=3)  # envs reused with tasks switched
    finally:
        vec.close()
    assert batched.success is vector.success is None  # neither reports success
    for name, x, y in zip(batched._fields[:-1], batched, vector):
        torch.testing.assert_close(y.to(x.dtype), x, msg=name, atol=1e-5, rtol=1e-5)
    assert all(x is y is None or torch.equal(x, y) for x, y in zip(vector, vector_again))


def test_sampler_rejects_unbatched_params():
    family, policy, params, tasks = setup()
    with pytest.raises(ValueError, match="leading dim"):
        BatchedSampler(family, policy, SamplingConfig(episodes=2)).sample(tasks, policy.init_params(), seed=0)


def test_make_sampler_chooses_path():
    family, policy, _, _ = setup()
    assert isinstance(make_sampler(family, policy, SamplingConfig(episodes=2)), BatchedSampler)


def check_steps_batch(ep, by_episodes, E: int, H: int) -> None:
    """Every task holds whole episodes totalling at least E x H env steps, and one episode fewer
    would fall short; its first E rows are the ``"episodes"`` batch, and the padding rows that
    even out the tasks hold no steps."""
    assert ep.horizon == H and ep.episodes_per_task > E  # episodes ended early: more were drawn
    for name, x, y in zip(ep._fields, ep, by_episodes):
        if x is not None or y is not None:
            torch.testing.assert_close(x[:, :E], y, msg=name)
    lengths, valid = ep.lengths, ep.valid
    for t in range(ep.num_tasks):
        n = int(valid[t].sum())
        assert bool(valid[t, :n].all()) and not bool(valid[t, n:].any())  # episodes first
        kept = lengths[t, :n]
        assert kept.sum() >= E * H > kept.sum() - kept[-1]
        assert float(ep.mask[t, n:].abs().sum()) == 0.0
    # every held episode ends exactly once, as in an episodes batch
    ends = (ep.terminated | ep.truncated).sum(-1)
    assert torch.equal(ends, valid.long())


def test_steps_batch_fills_each_task_with_whole_episodes():
    family, policy, params, tasks = setup("CartPoleDynamics", horizon=30)
    by_episodes = BatchedSampler(family, policy, SamplingConfig(episodes=4)).sample(tasks, params, seed=2)
    ep = BatchedSampler(family, policy, SamplingConfig(episodes=4, batch_unit="steps")).sample(tasks, params, seed=2)
    check_steps_batch(ep, by_episodes, 4, 30)


def test_steps_batch_without_early_ends_is_the_episodes_batch():
    family, policy, params, tasks = setup("PendulumDynamics", horizon=20)
    a = BatchedSampler(family, policy, SamplingConfig(episodes=3)).sample(tasks, params, seed=4)
    b = BatchedSampler(family, policy, SamplingConfig(episodes=3, batch_unit="steps")).sample(tasks, params, seed=4)
    assert all(x is y is None or torch.equal(x, y) for x, y in zip(a, b))


def test_vector_sampler_counts_steps_like_the_batched_sampler():
    family, policy, params, tasks = setup("CartPoleDynamics", horizon=25)
    vec = VectorSampler(family, policy, SamplingConfig(episodes=3), num_workers=2)
    try:
        by_episodes = vec.sample(tasks, params, seed=7)
        vec.batch_unit = "steps"
        ep = vec.sample(tasks, params, seed=7)
    finally:
        vec.close()
    check_steps_batch(ep, by_episodes, 3, 25)


def test_task_returns_average_each_tasks_own_episodes():
    family, policy, params, tasks = setup("CartPoleDynamics", horizon=30)
    ep = BatchedSampler(family, policy, SamplingConfig(episodes=4, batch_unit="steps")).sample(tasks, params, seed=2)
    for t in range(3):
        own = ep.returns()[t][ep.valid[t]]
        torch.testing.assert_close(ep.task_returns()[t], own.mean())
    assert ep.num_episodes() == int(ep.valid.sum()) > 12


def test_unknown_batch_unit_is_a_value_error():
    family, policy, _, _ = setup()
    with pytest.raises(ValueError, match="batch_unit must be one of episodes, steps, got 'steps_'"):
        BatchedSampler(family, policy, SamplingConfig(episodes=2, batch_unit="steps_"))


@pytest.mark.parametrize("name", ["Navigation2D", "HalfCheetahDir"])
def test_vector_sampler_gives_the_same_episodes_however_many_steppers(name):
    """The main process alone (1), the main process and one worker (2), and three steppers for a
    batch that does not divide evenly give bit-identical episodes."""
    family, policy, params, tasks = setup(name, horizon=15)
    out = []
    for workers in (1, 2, 3):
        vec = VectorSampler(family, policy, SamplingConfig(episodes=4), num_workers=workers)
        try:
            out.append(vec.sample(tasks, params, seed=3))
            assert len(vec.vec._procs) == workers - 1
        finally:
            vec.close()
    for other in out[1:]:
        assert all(x is y is None or torch.equal(x, y) for x, y in zip(out[0], other))


def test_vector_sampler_restores_the_callers_torch_threads():
    family, policy, params, tasks = setup(horizon=5)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        vec = VectorSampler(family, policy, SamplingConfig(episodes=2), num_workers=2)
        try:
            vec.sample(tasks, params, seed=0)
        finally:
            vec.close()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


class _FailsOnStep(type(envs.make("Navigation2D"))):
    """Navigation2D whose envs fail on the first step of task 0 (in the main process's slice)."""

    error = RuntimeError("env blew up")

    def step_envs(self, envs_, actions):
        if any(env.unwrapped.task == self.bad for env in envs_):
            raise self.error
        return super().step_envs(envs_, actions)


def test_a_failing_slice_in_the_main_process_leaves_the_workers_in_step():
    from meta_rl.vector import TaskVectorEnv

    family = _FailsOnStep(horizon=5)
    tasks = family.sample_tasks(4, seed=0)
    family.bad = tasks[0]
    vec = TaskVectorEnv(family, num_workers=2)
    try:
        vec.set_tasks(tasks)
        vec.reset(seed=0)
        with pytest.raises(RuntimeError, match="env blew up"):
            vec.step(torch.zeros(4, 2).numpy())
        vec.set_tasks(tasks[1:] + tasks[1:2])  # no bad task: every stepper answers in turn
        obs, _ = vec.reset(seed=0)
        obs, reward, *_ = vec.step(torch.zeros(4, 2).numpy())
        assert obs.shape == (4, 2) and reward.shape == (4,)
    finally:
        vec.close()


def test_ctrl_c_in_the_main_process_slice_reaches_the_caller_as_such():
    """The trainer checkpoints on KeyboardInterrupt; it must not turn into a pipe error."""
    from meta_rl.vector import TaskVectorEnv

    family = _FailsOnStep(horizon=5)
    family.error = KeyboardInterrupt()
    tasks = family.sample_tasks(4, seed=0)
    family.bad = tasks[0]
    vec = TaskVectorEnv(family, num_workers=2)
    try:
        # the bad task in both slices: the worker stops on Ctrl-C too, without replying
        vec.set_tasks([tasks[0], tasks[1], tasks[0], tasks[3]])
        vec.reset(seed=0)
        with pytest.raises(KeyboardInterrupt):
            vec.step(torch.zeros(4, 2).numpy())
    finally:
        vec.close()
    assert not any(proc.is_alive() for proc in vec._procs)


def test_a_failing_worker_is_reported_and_the_env_refuses_later_calls():
    """The bad task is in worker 0's slice; worker 1's reply is still read, and since worker 0
    has exited, the next call names the failure instead of hitting a broken pipe."""
    from meta_rl.vector import TaskVectorEnv

    family = _FailsOnStep(horizon=5)
    tasks = family.sample_tasks(6, seed=0)
    family.bad = tasks[2]
    vec = TaskVectorEnv(family, num_workers=3)  # slices [0, 2), [2, 4), [4, 6)
    try:
        vec.set_tasks(tasks)
        vec.reset(seed=0)
        with pytest.raises(RuntimeError, match="'step' in worker 0 raised RuntimeError: env blew "
                                               "up \\(its envs run NavigationTask"):
            vec.step(torch.zeros(6, 2).numpy())
        assert not vec._conns[1].poll()  # nothing left unread in the healthy worker's pipe
        with pytest.raises(RuntimeError, match="unusable.*worker 0 raised.*make a new one"):
            vec.reset(seed=0)
    finally:
        vec.close()
    assert not any(proc.is_alive() for proc in vec._procs)


def test_tasks_that_cannot_reach_a_worker_fail_before_any_worker_gets_a_message():
    """Worker 1's task cannot be pickled (its type is local). Had worker 0 been sent its tasks
    first, its reply would sit unread and answer the next call: nothing is sent, the error names
    the cause, and the env works on."""
    from meta_rl.vector import TaskVectorEnv

    family = envs.make("Navigation2D", horizon=5)
    task_type = type(family.sample_tasks(1, seed=0)[0])

    class LocalTask(task_type):
        pass

    tasks = family.sample_tasks(6, seed=0)
    vec = TaskVectorEnv(family, num_workers=3)  # slices [0, 2), [2, 4), [4, 6)
    try:
        vec.set_tasks(tasks)
        bad = tasks[:4] + [LocalTask(*dataclasses.astuple(tasks[4])), tasks[5]]
        with pytest.raises(ValueError, match="cannot send 'set_tasks' to the Navigation2D worker "
                                             "processes.*tasks must pickle"):
            vec.set_tasks(bad)
        assert not any(conn.poll() for conn in vec._conns)
        obs, _ = vec.reset(seed=0)
        obs, reward, *_ = vec.step(np.zeros((6, 2), np.float32))
        assert obs.shape == (6, 2) and reward.shape == (6,)
        assert not any(conn.poll() for conn in vec._conns)
    finally:
        vec.close()


def test_a_killed_worker_is_reported_and_the_others_stay_in_step():
    from meta_rl.vector import TaskVectorEnv

    family = envs.make("Navigation2D", horizon=5)
    tasks = family.sample_tasks(6, seed=0)
    vec = TaskVectorEnv(family, num_workers=3)
    try:
        vec.set_tasks(tasks)
        vec.reset(seed=0)
        vec._procs[0].kill()
        vec._procs[0].join()
        with pytest.raises(RuntimeError, match="worker 0 (had exited|exited without replying)"):
            vec.step(torch.zeros(6, 2).numpy())
        assert not vec._conns[1].poll()
        with pytest.raises(RuntimeError, match="unusable"):
            vec.set_tasks(tasks)
    finally:
        vec.close()


@pytest.mark.parametrize("name", ["Navigation2D", "CartPoleDynamics"])
def test_a_float64_policy_samples_and_adapts_in_float64(name):
    """make_policy(dtype=float64): both samplers hand the policy float64 observations (envs
    step in float32), and an inner step stays in float64."""
    from meta_rl import FixedStep, adapt

    family = envs.make(name, horizon=8)
    policy = make_policy(family.observation_space, family.action_space, PolicyConfig(hidden=(8,)),
                         dtype=torch.float64)
    meta = policy.init_params(torch.Generator().manual_seed(0))
    assert all(v.dtype == torch.float64 for v in meta.values())
    tasks = family.sample_tasks(2, seed=0)
    for sampler in (BatchedSampler(family, policy, SamplingConfig(episodes=3)),
                    VectorSampler(family, policy, SamplingConfig(episodes=3), num_workers=1)):
        try:
            adaptation = adapt(policy, FixedStep(0.1), meta, tasks, sampler, steps=1, seed=0)
        finally:
            sampler.close()
        assert adaptation.episodes[0].obs.dtype == torch.float64
        assert all(v.dtype == torch.float64 for v in adaptation.params.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_batched_rollout_on_the_gpu_never_waits_for_the_host():
    """The README's claim: stepping a batched family on the GPU, with the policy there too,
    makes no host synchronisation (torch raises on one in this debug mode)."""
    from meta_rl.sampling import rollout

    family = envs.make("Navigation2D", horizon=20)
    policy = make_policy(family.observation_space, family.action_space,
                         PolicyConfig(hidden=(16,))).cuda()
    tasks = family.sample_tasks(4, seed=0)
    params = batch_params({k: v.cuda() for k, v in policy.init_params().items()}, len(tasks))
    env = family.make_batched(tasks, 5, "cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.no_grad():
            episodes = rollout(env, policy, params, seed=0)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert episodes.obs.shape == (4, 5, 20, 2) and episodes.obs.is_cuda
