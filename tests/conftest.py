"""Shared test settings."""

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models run fastest on one intra-op thread, and far faster than on oversubscribed shared cores
    (`make test` also sets OMP_NUM_THREADS=1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def header_cache_in_tmp(tmp_path_factory):
    """The image header check of the tests' data roots is remembered in a temporary folder, never in the user's cache
    (LEADRRG_HEADER_CACHE, which the processes a test starts inherit; session-wide, so that session fixtures that
    train are covered too), so temporary roots leave nothing behind."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LEADRRG_HEADER_CACHE", str(tmp_path_factory.mktemp("header_cache")))
        yield


@pytest.fixture(autouse=True)
def no_user_metric_models(tmp_path_factory, monkeypatch):
    """Tests never read the user's metric-model folder (`leadrrg metrics setup`, LEADRRG_METRICS_DIR): a machine where
    someone set it up would otherwise load real models into the evaluate tests."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))
    monkeypatch.delenv("LEADRRG_METRICS_DIR", raising=False)
