import os

import pytest

# Runs in this suite use one process unless a test asks for workers: a pool per small run would
# cost more than it saves, and the suite itself may run beside other work on 2 cores.
os.environ.setdefault("OVT_WORKERS", "1")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny torch models gain nothing from a second intra-op thread, and on a shared 2-core machine
    OpenMP spinning makes them many times slower. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Property-based tests: the same examples on every run and machine (derandomize: the seed is fixed by
# the test's source), a bounded count so the suite keeps its time, no example database on disk.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ovt",
    derandomize=True,
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("ovt")
