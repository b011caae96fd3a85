import pytest


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
