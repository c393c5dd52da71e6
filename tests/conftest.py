"""Test set-up before anything imports jax: 8 fake CPU devices, strict numerics, a compilation
cache, and the environment of the GCS server that the gs:// tests start (tests/gcs_server.py)."""

import itertools
import os
import tempfile

from tests import gcs_server

# Before fsspec, gcsfs or tensorstore are imported (they read it once); inherited by subprocesses.
gcs_server.configure_environment()

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# libtpu is installed for the compile-mode tests; without this every JAX process would probe for
# TPU chips first, and processes started together contend for /tmp/libtpu_lockfile.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# transformers (tests/test_hf_*.py builds its reference models from configs) fetches nothing.
os.environ["HF_HUB_OFFLINE"] = "1"
# JAX's persistent compilation cache, shared by the xdist workers and the training subprocesses
# they start (which inherit the environment): the resume, preemption and multi-host tests compile
# the same steps in several processes. Entries are keyed by the program and the jax version.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "seqjax-tests-jax-cache"))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def rng():
  """A NumPy generator with a fixed seed, so failures reproduce."""
  return np.random.default_rng(0)


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
  """fake-gcs-server on 127.0.0.1 for the whole session (started in well under a second)."""
  server = gcs_server.GcsServer(str(tmp_path_factory.mktemp("gcs") / "server.log"))
  yield server
  server.stop()


_BUCKETS = itertools.count()


@pytest.fixture
def gcs_workdir(gcs):
  """A gs:// workdir in a fresh bucket of the session's server."""
  return gcs.create_bucket(f"seqjax-test-{next(_BUCKETS)}") + "/workdir"
