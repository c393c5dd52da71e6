"""What this host has, and one process-wide setting for training on the CPU backend.

Called from entry points only (`seqjax.main`, the benchmarks), before JAX starts its backend.
"""

import ctypes
import glob
import os
import sys

_PCI_TPU_VENDOR = '0x1ae0'  # Google, as JAX itself checks for Cloud TPU VMs
_PCI_NVIDIA_VENDOR = '0x10de'
_PCI_DISPLAY_CLASS = '0x03'  # VGA / 3D controllers (not NVIDIA's audio or bridge functions)

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def _pci_devices() -> list[tuple[str, str]]:
  """(vendor, class) of every PCI function, as hex strings; empty off Linux."""
  devices = []
  for path in glob.glob('/sys/bus/pci/devices/*'):
    try:
      with open(os.path.join(path, 'vendor'), encoding='ascii') as vendor, \
           open(os.path.join(path, 'class'), encoding='ascii') as klass:
        devices.append((vendor.read().strip(), klass.read().strip()))
    except OSError:
      continue
  return devices


def on_cloud_tpu_vm() -> bool:
  """Whether this host has Google TPU chips."""
  return any(vendor == _PCI_TPU_VENDOR for vendor, _ in _pci_devices())


def computes_on_cpu() -> bool:
  """Whether JAX will compute on this host's CPU: JAX_PLATFORMS says cpu, or no TPU and no
  NVIDIA GPU is attached. Answered without starting a JAX backend."""
  platforms = os.environ.get('JAX_PLATFORMS', '')
  if platforms:
    return platforms.split(',')[0].strip() == 'cpu'
  return not any(vendor == _PCI_TPU_VENDOR or
                 (vendor == _PCI_NVIDIA_VENDOR and klass.startswith(_PCI_DISPLAY_CLASS))
                 for vendor, klass in _pci_devices())


def keep_freed_memory() -> bool:
  """Make glibc keep freed large blocks for reuse instead of handing them back to the kernel.

  XLA:CPU allocates each step's temporaries as one block (887 MB for a Transformer-base step
  at 16 x (32 + 32) tokens) with malloc from a backend thread; glibc serves blocks that large
  by mmap and returns them by munmap, so every step faults each page back in and the kernel
  zeroes it: 233k page faults and 0.45 s of system time per step, 15% of the step on a 2-core
  host (README.md, "Training-step speed"). One arena (so backend threads allocate from the
  main heap), no mmap, and no trimming make the second step reuse the first step's pages.
  The price: the process's resident memory stays at its peak, which suits a training run.

  Must run before JAX starts its backend: a thread keeps the arena it first allocated from.
  Returns whether the setting was applied (glibc only).
  """
  if not sys.platform.startswith('linux'):
    return False
  try:
    libc = ctypes.CDLL('libc.so.6')
    mallopt = libc.mallopt
  except (OSError, AttributeError):  # musl and other C libraries have no mallopt
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  return all(mallopt(param, value) == 1 for param, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1)))
