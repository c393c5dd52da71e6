"""The device mesh and the mapping of logical axis names onto it.

The mesh has three axes: 'data' (batch split, parameters replicated), 'fsdp' (batch split and
parameters sharded, gathered per use) and 'model' (tensor parallel: heads and feed-forward units
split). Which parameter dimension goes where is decided by the config's rules table alone, so
the strategy is chosen by the mesh sizes: data parallel `mesh.data=-1`; FSDP `mesh.data=1
mesh.fsdp=-1` (parameters and optimizer state split along 'embed'); tensor parallel
`mesh.model=N` ('heads', 'mlp' and 'vocab' split, Megatron-style); or any product of them.
"""

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from seqjax import config as config_lib
from seqjax import errors

MESH_AXES = ('data', 'fsdp', 'model')


def mesh_shape(cfg: config_lib.MeshConfig, num_devices: int) -> tuple[int, int, int]:
  """Axis sizes with a -1 (at most one) filled by the devices the other axes leave over."""
  sizes = [cfg.data, cfg.fsdp, cfg.model]
  if sizes.count(-1) > 1 or any(size == 0 or size < -1 for size in sizes):
    raise errors.UserError(
        f'mesh sizes {dict(zip(MESH_AXES, sizes))} must be positive, with at most '
        'one -1 (= the remaining devices).')
  known = math.prod(size for size in sizes if size != -1)
  if -1 in sizes:
    if num_devices % known:
      raise errors.UserError(f'{num_devices} devices do not divide into mesh axes of sizes '
                             f'{dict(zip(MESH_AXES, sizes))}.')
    sizes[sizes.index(-1)] = num_devices // known
  elif known > num_devices:
    raise errors.UserError(f'mesh {dict(zip(MESH_AXES, sizes))} needs {known} devices; '
                           f'only {num_devices} are available.')
  return tuple(sizes)


def make_mesh(cfg: config_lib.MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ('data', 'fsdp', 'model') mesh; explicit sizes may use fewer devices than exist."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(cfg, len(devices))
  used = math.prod(shape)
  # Auto axes: XLA propagates shardings from the annotated parameters and inputs (GSPMD).
  axis_types = (AxisType.Auto,) * len(MESH_AXES)
  if used == len(devices):
    return jax.make_mesh(shape, MESH_AXES, devices=devices, axis_types=axis_types)
  return Mesh(np.asarray(devices[:used]).reshape(shape), MESH_AXES, axis_types=axis_types)


def logical_to_sharding(logical_specs: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]]) -> Any:
  """A tree of logical PartitionSpecs -> a tree of NamedShardings on `mesh`."""
  return nn.logical_to_mesh_sharding(logical_specs, mesh, list(rules))


def batch_sharding(mesh: Mesh, rules: Sequence[tuple[str, Any]]) -> NamedSharding:
  """How a [b, ...] input batch is laid out: its leading axis split like the 'batch' rule."""
  spec = nn.logical_to_mesh_axes(('batch',), list(rules))
  return NamedSharding(mesh, spec)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def check_divisible(shape_tree: Any, sharding_tree: Any) -> None:
  """Fails before compilation, naming both numbers, when a dimension does not divide its axes."""
  def check(path, shape, sharding):
    for dim, (size, axes) in enumerate(zip(shape.shape, sharding.spec)):
      if axes is None:
        continue
      axes = axes if isinstance(axes, tuple) else (axes,)
      devices = math.prod(sharding.mesh.shape[axis] for axis in axes)
      if size % devices:
        raise errors.UserError(
            f'{jax.tree_util.keystr(path, simple=True, separator="/")}: dimension {dim} of '
            f'size {size} is sharded over mesh axes {axes} of {devices} devices, which does not '
            'divide it.')
  jax.tree_util.tree_map_with_path(check, shape_tree, sharding_tree)
