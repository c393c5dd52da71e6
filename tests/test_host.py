"""seqjax.host: which backend computes, and glibc keeping freed blocks (page faults counted)."""

import subprocess
import sys
import textwrap

import pytest

from seqjax import host

# Mallocs and frees a 64 MiB block from a new thread (as XLA's backend threads do) four times,
# touching every page, and prints the page faults of the last three rounds.
_FAULTS_SCRIPT = textwrap.dedent('''
    import ctypes, resource, sys, threading
    from seqjax import host
    if sys.argv[1] == 'keep':
      assert host.keep_freed_memory()
    libc = ctypes.CDLL('libc.so.6')
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    size = 64 << 20
    def one_round():
      block = libc.malloc(size)
      ctypes.memset(block, 1, size)
      libc.free(block)
    faults = []
    for _ in range(4):
      before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      worker = threading.Thread(target=one_round)
      worker.start()
      worker.join()
      faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(sum(faults[1:]))
''')


def _faults_after_first_round(mode: str) -> int:
  result = subprocess.run([sys.executable, '-c', _FAULTS_SCRIPT, mode], capture_output=True,
                          text=True, timeout=60, check=True)
  return int(result.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc settings')
def test_keep_freed_memory_reuses_large_blocks():
  pages = (64 << 20) // 4096
  # glibc's default: the block is mmapped and unmapped each time, so every page faults again.
  assert _faults_after_first_round('system') >= 3 * pages // 2
  # Kept: the later rounds reuse the first round's pages (a few faults for Python's own objects).
  assert _faults_after_first_round('keep') < pages // 10


def test_computes_on_cpu(monkeypatch):
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  assert host.computes_on_cpu()
  monkeypatch.setenv('JAX_PLATFORMS', 'tpu,cpu')
  assert not host.computes_on_cpu()
  monkeypatch.delenv('JAX_PLATFORMS')
  nvidia_gpu, nvidia_bridge, tpu, other = ('0x10de', '0x030200'), ('0x10de', '0x060400'), \
      ('0x1ae0', '0x120000'), ('0x8086', '0x060000')
  for devices, expected in [([other], True), ([other, nvidia_bridge], True),
                            ([other, nvidia_gpu], False), ([tpu], False)]:
    monkeypatch.setattr(host, '_pci_devices', lambda devices=devices: devices)
    assert host.computes_on_cpu() is expected
    assert host.on_cloud_tpu_vm() is (tpu in devices)
