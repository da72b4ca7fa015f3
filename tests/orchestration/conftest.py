"""One torch thread for these tests (tiny models on a shared 2-core box); the shared fixtures are in
tests/evaluation_fixtures.py (imported by tests/conftest.py)."""

from evaluation_fixtures import one_torch_thread  # noqa: F401
