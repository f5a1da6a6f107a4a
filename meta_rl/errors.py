"""The errors meta_rl raises besides ``ValueError`` (bad input, named with its fix).

Kept in a module of their own, with no heavy imports, so that the command line can catch them
without importing torch first.
"""


class NonFiniteError(RuntimeError):
    """A loss, gradient or meta-parameter became NaN or infinite."""


class EnvError(RuntimeError):
    """A task family's env misbehaved: it raised, hung, died, or returned non-finite values.
    The message names the family, the task and the call."""


class TrainingError(RuntimeError):
    """Training stopped; the finished iterations are saved (the message says where)."""
