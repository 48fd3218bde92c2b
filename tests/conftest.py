"""Hypothesis profiles and shared fixtures.

HYPOTHESIS_PROFILE=ci (the default) runs a modest, derandomized number of examples so the
suite is fast and reproducible; HYPOTHESIS_PROFILE=dev explores more.
"""

import os
import sys

import pytest
import torch
from hypothesis import HealthCheck, settings

# Make tests/strategies.py importable however pytest imports the test modules.
sys.path.insert(0, os.path.dirname(__file__))

_SUPPRESSED = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True,
                          suppress_health_check=_SUPPRESSED, print_blob=True)
settings.register_profile("dev", max_examples=300, deadline=None, suppress_health_check=_SUPPRESSED,
                          print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Small networks: threads cost more than they give, and one thread keeps float results stable.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def innvestigate_worker():
    """The innvestigate backend's worker process. Skips without .venv-tf, unless
    XAIBENCH_REQUIRE_TF is set (`make test`, CI): then a missing TF environment fails."""
    from xaibench.backends import innvestigate_backend
    from xaibench.errors import BackendUnavailableError

    try:
        innvestigate_backend.check_available()
    except BackendUnavailableError as error:
        if os.environ.get("XAIBENCH_REQUIRE_TF"):
            pytest.fail(f"the innvestigate tests must run here: {error}")
        pytest.skip(str(error))
    return innvestigate_backend


@pytest.fixture
def float64():
    return torch.float64




def train_small_radar1(root):
    """A radar1 network trained for one epoch on 16 synthetic 16x16 scenes, in root/model (data in
    root/data.nc): the small trained radar case the case and scatter tests explain."""
    from xaibench.studies.data import make_radar, write_dataset
    from xaibench.studies.models.training import train

    write_dataset(make_radar(n_samples=16, size=16, footprint_radius=2, seed=0), root / "data.nc")
    train("radar1", root / "data.nc", {"epochs": 1, "batch_size": 4}, out=root / "model")
    return root
