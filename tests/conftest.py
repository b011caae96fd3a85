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
