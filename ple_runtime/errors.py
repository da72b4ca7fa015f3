"""The one error base class of the pipeline's stages, and the exit codes their jobs return.

A stage raises a `StageError` subclass for a failure its job reports in one line (bad input, a
refused day, a lost publish lease); the job (`jobs/*.py`), `ple pipeline` and the DAGs catch
`StageError` alone and return its `exit_code`, instead of each repeating a tuple of exception
types. Programming errors stay ordinary exceptions and keep their traceback.
Configuration errors are `ple_runtime.config.ConfigError` (exit 2, raised before any work).
"""

from __future__ import annotations

FAILED = 1          # the stage failed; a retry may help (the DAG retries these)
CONFIG_INVALID = 2  # ConfigError: fix the named file or value
GATE_REFUSED = 3    # publish: the quality gate refused the candidate (a verdict, not a failure)
DAY_UNHEALTHY = 4   # extract: the day failed its health checks; retrying cannot help


class StageError(RuntimeError):
    """A stage failed for a reason its job reports as one line; `exit_code` is what the job returns."""

    exit_code: int = FAILED


class InputError(StageError):
    """An input or table problem that stops a job before it writes; the message names the
    path at fault and what to do."""
