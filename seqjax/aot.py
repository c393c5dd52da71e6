"""`--mode=compile --topology=NAME`: a config's memory and speed on a TPU slice, without the slice.

With `libtpu` installed, JAX compiles for a TPU topology on any machine
(`jax.experimental.topologies`). This module builds the config's real mesh over the topology's
chips, compiles the trainer's own train step (and eval step and decoder, when the task decodes)
with the config's shardings, and reads per-chip memory and FLOPs from the compiled programs.
Nothing reads the dataset or trains a tokenizer: the model is built at the configured
vocabulary size (padded as the trainer pads it) and the batches have the shapes the trainer's
iterators give (packed rows with segmentation and positions when `data.pack` is set).

`DIR/compile_report.json` holds the numbers; a step that does not fit in a chip's HBM raises
UserError naming the chip's HBM and what to change.
"""

import dataclasses
import json
import logging
import os
import re
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from seqjax import config as config_lib
from seqjax import data as data_lib
from seqjax import errors
from seqjax import models
from seqjax import tasks
from seqjax import train
from seqjax.data import batching
from seqjax.data import packing
from seqjax.data import tokenizer as tokenizer_lib
from seqjax.data import translation

_LOG = logging.getLogger(__name__)
GIB = 2**30
REPORT_NAME = 'compile_report.json'
_COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all', 'collective-permute')


@dataclasses.dataclass(frozen=True)
class Chip:
  """One TPU chip kind: HBM capacity (bytes), peak bfloat16 FLOP/s and HBM bandwidth (bytes/s)."""
  hbm_bytes: int
  peak_flops: float
  hbm_bandwidth: float


# Per chip, from the Cloud TPU system architecture pages (cloud.google.com/tpu/docs/v4, /v5e,
# /v5p, /v6e, read 2026-12): v4 275 TFLOP/s bf16, 32 GiB HBM2 at 1,200 GB/s; v5e 197 TFLOP/s,
# 16 GB HBM2 at 819 GB/s; v5p 459 TFLOP/s, 95 GiB HBM2e at 2,765 GB/s; v6e 918 TFLOP/s, 32 GB
# HBM at 1,640 GB/s. float32 matmuls also run at the bf16 rate (one bf16 pass at JAX's default
# precision on TPU), so the bf16 peak bounds every dtype.
CHIPS = {
    'v4': Chip(32 * GIB, 275e12, 1200e9),
    'v5e': Chip(16 * GIB, 197e12, 819e9),
    'v5p': Chip(95 * GIB, 459e12, 2765e9),
    'v6e': Chip(32 * GIB, 918e12, 1640e9),
}


@dataclasses.dataclass(frozen=True)
class Topology:
  """A slice as Cloud TPU sells it: JAX's topology name, the accelerator type, and how its chips
  sit on hosts (what `jax.process_count()` will be on it)."""
  name: str  # as JAX spells it, e.g. 'v5e:4x4'
  accelerator_type: str  # as `gcloud compute tpus tpu-vm create --accelerator-type` spells it
  chips_per_host: tuple[int, int, int]

  @property
  def chip(self) -> Chip:
    return CHIPS[self.name.split(':')[0]]


def _topologies() -> dict[str, Topology]:
  """The slices this mode knows. Hosts: 4 chips (2x2x1) on v4 and v5p hosts and on v5e / v6e
  slices of more than 8 chips; v5e and v6e slices of up to 8 chips are one host
  (cloud.google.com/tpu/docs/v5e, /v6e, "Configurations")."""
  known = {}
  for version, shapes in (('v4', ('2x2x1', '2x2x2', '2x2x4', '2x4x4', '4x4x4')),
                          ('v5p', ('2x2x1', '2x2x2', '2x2x4', '2x4x4', '4x4x4'))):
    for shape in shapes:
      chips = np.prod([int(n) for n in shape.split('x')])
      # v4 and v5p accelerator types count TensorCores, two per chip.
      known[f'{version}:{shape}'] = Topology(f'{version}:{shape}', f'{version}-{2 * chips}',
                                             (2, 2, 1))
  for version, prefix in (('v5e', 'v5litepod'), ('v6e', 'v6e')):
    for shape in ('2x2', '2x4', '4x4', '4x8', '8x8'):
      x, y = (int(n) for n in shape.split('x'))
      per_host = (x, y, 1) if x * y <= 8 else (2, 2, 1)
      known[f'{version}:{shape}'] = Topology(f'{version}:{shape}', f'{prefix}-{x * y}', per_host)
  return known


TOPOLOGIES = _topologies()


def get_topology(name: str) -> Topology:
  """The known slice `name`; UserError listing the known ones otherwise."""
  if name not in TOPOLOGIES:
    given = f'Unknown --topology={name!r}' if name else '--mode=compile needs --topology=NAME'
    raise errors.UserError(f'{given}; known: {", ".join(TOPOLOGIES)}.')
  return TOPOLOGIES[name]


def topology_devices(topology: Topology) -> list[jax.Device]:
  """The slice's chips as compile-only JAX devices (one per chip: v4 in megacore mode, as on a
  v4 TPU VM)."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  # libtpu takes /tmp/libtpu_lockfile so that one process owns a host's chips; compiling for a
  # topology owns none, and a second compile (or a test's subprocess) must not be refused.
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  kwargs = {'chip_config_name': 'megacore'} if topology.name.startswith('v4') else {}
  description = topologies.get_topology_desc(
      platform='tpu', topology_name=topology.name,
      chips_per_host_bounds=topology.chips_per_host, **kwargs)
  return list(description.devices)


class VocabularyOfSize:
  """Stands in for the trained tokenizer: the configured vocabulary size, and every text encodes
  to no ids (end of sequence and padding follow), so batches get their shapes, not contents."""
  eos_id = tokenizer_lib.EOS_ID

  def __init__(self, vocab_size: int, special_tokens: Sequence[str] = ()):
    self.vocab_size = vocab_size
    self.special_tokens = tuple(special_tokens)

  def encode(self, texts: Sequence[str]) -> list[list[int]]:
    return [[] for _ in texts]

  def piece_id(self, piece: str) -> int:
    """A task's special piece: the id a trained vocabulary gives it (right after unknown)."""
    return tokenizer_lib.UNK_ID + 1 + self.special_tokens.index(piece)

  def pieces(self, ids: Sequence[int]) -> list[str]:
    """The special pieces at their ids; a placeholder for every other id."""
    first = tokenizer_lib.UNK_ID + 1
    return [self.special_tokens[i - first] if 0 <= i - first < len(self.special_tokens)
            else f'<{i}>' for i in ids]


def build(config: ml_collections.ConfigDict, devices: Sequence[jax.Device]) -> train.Experiment:
  """The trainer's Experiment on `devices`, without reading the dataset for a tokenizer: the
  model has data.vocab_size ids (padded as the trainer pads them), the most a trained tokenizer
  of that size may have."""
  cfg = config_lib.typed(config)
  stand_in = None
  task = tasks.for_model(data_lib.get(cfg.data_name).task, cfg.model_name,
                         models.reads_bert_inputs(cfg.model_name, cfg.model))
  if task.tokenized:
    stand_in = VocabularyOfSize(cfg.data.vocab_size, task.special_tokens)
  return train.build(cfg, workdir='', devices=devices, tokenizer=stand_in)


def _global_shapes(row: dict[str, np.ndarray], rows: int,
                   sharding) -> dict[str, jax.ShapeDtypeStruct]:
  """A batch of one row -> the shapes of a global batch of `rows` rows, laid out on the mesh."""
  return {key: jax.ShapeDtypeStruct((rows, *value.shape[1:]), value.dtype, sharding=sharding)
          for key, value in row.items()}


def _shape_records(exp: train.Experiment, split: str) -> Sequence[Any]:
  """Records that give batch shapes: an empty text, or the first record of array data."""
  if exp.tokenizer is not None:
    return [batching.empty_record(exp.task.name)]
  return exp.load_split(split)[:1]


def train_batch(exp: train.Experiment) -> dict[str, jax.ShapeDtypeStruct]:
  """The global training batch, keys, dtypes and shapes as the trainer's iterator makes them
  (one row is made by the trainer's own code, then counted batch_size times)."""
  cfg = exp.cfg
  if isinstance(cfg.data, translation.TranslationConfig) and cfg.data.pack:
    # A row filled by the trainer's packing code with one example a row long on each side.
    row = {}
    for side, width in (('inputs', cfg.data.max_source_length),
                        ('targets', cfg.data.max_target_length)):
      tokens, segmentation, position = packing.fill_side(
          np.ones(width, np.int32), np.zeros(1, np.int64), np.array([width]),
          np.zeros(1, np.int64), rows=1, width=width)
      row.update({side: tokens, side + '_segmentation': segmentation,
                  side + '_position': position})
  else:
    row = next(batching.train_iterator(_shape_records(exp, 'train'), exp.encoder, batch_size=1,
                                       seed=cfg.seed))
  return _global_shapes(row, cfg.batch_size, exp.batch_sharding)


def eval_batch(exp: train.Experiment) -> dict[str, jax.ShapeDtypeStruct]:
  """The evaluation batch (eval.batch_size rows, with the row weights evaluation adds)."""
  row = next(batching.padded_batches(_shape_records(exp, 'eval'), exp.encoder, 1))
  return _global_shapes(row, exp.cfg.eval.batch_size, exp.batch_sharding)


def memory(compiled) -> dict[str, int]:
  """Per-chip bytes of a compiled program: arguments, outputs, temporaries, and the total live at
  its peak (outputs that reuse donated argument buffers count once; generated code included)."""
  stats = compiled.memory_analysis()
  return {'arguments': stats.argument_size_in_bytes, 'outputs': stats.output_size_in_bytes,
          'aliased': stats.alias_size_in_bytes, 'temps': stats.temp_size_in_bytes,
          'code': stats.generated_code_size_in_bytes,
          'total': (stats.argument_size_in_bytes + stats.output_size_in_bytes
                    - stats.alias_size_in_bytes + stats.temp_size_in_bytes
                    + stats.generated_code_size_in_bytes)}


def cost(compiled) -> dict[str, float]:
  """Per-chip FLOPs and HBM bytes accessed of a compiled program (XLA's cost analysis of the
  partitioned, per-chip module)."""
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return {'flops': float(analysis.get('flops', 0.0)),
          'bytes_accessed': float(analysis.get('bytes accessed', 0.0))}


def compile_programs(exp: train.Experiment) -> dict[str, Any]:
  """The trainer's jitted programs compiled for exp.mesh: {'train': ..., 'eval': ...,
  'decode': ... (tasks that decode)}."""
  evaluation = eval_batch(exp)
  programs = {  # name: (jitted function, its abstract arguments)
      'train': (train.make_train_step(exp), (exp.abstract_state, train_batch(exp))),
      'eval': (train.make_eval_step(exp), (exp.abstract_state.params, evaluation)),
  }
  decode_fn = train.make_decode_fn(exp)
  if decode_fn is not None:
    programs['decode'] = (decode_fn, (exp.abstract_state.params, evaluation['inputs']))
  compiled = {}
  for name, (fn, args) in programs.items():
    _LOG.info('Compiling the %s program.', name)
    try:
      compiled[name] = fn.lower(*args).compile()
    except jax.errors.JaxRuntimeError as error:
      if not str(error).startswith('RESOURCE_EXHAUSTED'):
        raise
      compiled[name] = Refused(args, str(error))
  return compiled


@dataclasses.dataclass(frozen=True)
class Refused:
  """A program the TPU compiler refused because its temporaries alone exceed a chip's HBM."""
  args: Any  # the abstract arguments, with their shardings
  message: str  # '... memory required for HLO temporaries (389.50G) exceeds available HBM ...'

  def bytes_per_chip(self) -> dict[str, int]:
    """Arguments from their shapes and shardings, temporaries from the compiler's message (XLA
    writes G for GiB); outputs and code are not known, so the total is a lower bound."""
    def shard_bytes(leaf) -> int:
      return int(np.prod(leaf.sharding.shard_shape(leaf.shape))) * leaf.dtype.itemsize
    arguments = sum(shard_bytes(leaf) for leaf in jax.tree.leaves(self.args))
    found = re.search(r'HLO temporaries \(([\d.]+)([KMGT]?)', self.message)
    temps = int(float(found.group(1)) * 1024**' KMGT'.index(found.group(2) or ' ')) if found else 0
    return {'arguments': arguments, 'outputs': 0, 'aliased': 0, 'temps': temps, 'code': 0,
            'total': arguments + temps}


def program_report(compiled, chip: Chip, num_chips: int) -> dict[str, Any]:
  """Memory, FLOPs and a roofline time of one compiled program.

  The roofline time is the larger of compute time at peak (per-chip FLOPs / peak FLOP/s) and
  memory time (per-chip HBM bytes accessed / HBM bandwidth); collectives and the host are not in
  it, so a real step is slower.
  """
  if isinstance(compiled, Refused):
    return {'bytes_per_chip': compiled.bytes_per_chip(), 'fits': False,
            'compiler_message': compiled.message.splitlines()[0], 'flops_per_chip': None,
            'flops_per_step': None, 'hbm_bytes_accessed_per_chip': None,
            'roofline_seconds': None, 'bound': None, 'collectives': None}
  bytes_per_chip = memory(compiled)
  costs = cost(compiled)
  hlo = compiled.as_text()
  # Collective ops of the per-chip program ('-start' for the asynchronous forms), to compare
  # shardings: their count, not their bytes.
  collectives = {op: len(re.findall(rf' {op}(?:-start)?\(', hlo)) for op in _COLLECTIVES}
  compute_seconds = costs['flops'] / chip.peak_flops
  memory_seconds = costs['bytes_accessed'] / chip.hbm_bandwidth
  return {'bytes_per_chip': bytes_per_chip,
          'fits': bytes_per_chip['total'] <= chip.hbm_bytes,
          'flops_per_chip': costs['flops'],
          'flops_per_step': costs['flops'] * num_chips,
          'hbm_bytes_accessed_per_chip': costs['bytes_accessed'],
          'roofline_seconds': max(compute_seconds, memory_seconds),
          'bound': 'compute' if compute_seconds >= memory_seconds else 'memory',
          'collectives': collectives}


def report(exp: train.Experiment, topology: Topology, devices: Sequence[jax.Device],
           compiled: dict[str, Any]) -> dict[str, Any]:
  """The compile report: the slice, and the train step's numbers at the top level, with every
  program's own under 'programs'. FLOPs per step count every chip of the mesh."""
  programs = {name: program_report(program, topology.chip, exp.mesh.size)
              for name, program in compiled.items()}
  step = programs['train']
  return {
      'topology': topology.name,
      'accelerator_type': topology.accelerator_type,
      'device_kind': devices[0].device_kind,
      'num_chips': len(devices),
      'num_hosts': len({device.process_index for device in devices}),
      'mesh': dict(exp.mesh.shape),
      'hbm_bytes_per_chip': topology.chip.hbm_bytes,
      'peak_flops_per_chip': topology.chip.peak_flops,
      'hbm_bandwidth_per_chip': topology.chip.hbm_bandwidth,
      'bytes_per_chip': step['bytes_per_chip'],
      'fits': all(program['fits'] for program in programs.values()),
      'flops_per_step': step['flops_per_step'],
      'roofline_seconds_per_step': step['roofline_seconds'],
      'programs': programs,
  }


def _advice(exp: train.Experiment) -> str:
  """What to change when a program does not fit, for this config."""
  cfg = exp.cfg
  changes = [f'a smaller batch_size (now {cfg.batch_size}; with optimizer.accumulation_steps '
             'for the same tokens per update)']
  if 'remat' in cfg.model and cfg.model['remat'] != 'full':
    changes.append('--config.model.remat=full')
  if exp.mesh.shape['fsdp'] < exp.mesh.size:
    changes.append('FSDP (--config.mesh.data=1 --config.mesh.fsdp=-1) to shard parameters and '
                   'optimizer state')
  return ', '.join(changes)


def _gib(num_bytes: float) -> str:
  return f'{num_bytes / GIB:.2f} GiB' if num_bytes >= GIB / 10 else f'{num_bytes / 2**20:.1f} MiB'


def compile_and_report(config: ml_collections.ConfigDict, workdir: str,
                       topology_name: str) -> dict[str, Any]:
  """--mode=compile: compiles the config's programs for the slice, prints and writes
  workdir/compile_report.json; UserError when a program does not fit in a chip's HBM."""
  topology = get_topology(topology_name)  # before anything is built or compiled
  devices = topology_devices(topology)
  exp = build(config, devices)
  result = report(exp, topology, devices, compile_programs(exp))
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, REPORT_NAME), 'w', encoding='utf-8') as f:
    json.dump(result, f, indent=2)
  print(f'{topology.name} ({topology.accelerator_type}, {result["device_kind"]}): '
        f'{result["num_chips"]} chips on {result["num_hosts"]} hosts, mesh {result["mesh"]}, '
        f'{_gib(topology.chip.hbm_bytes)} HBM per chip')
  for name, program in result['programs'].items():
    sizes = program['bytes_per_chip']
    line = (f'  {name:6s} per chip: arguments {_gib(sizes["arguments"])}, outputs '
            f'{_gib(sizes["outputs"])}, temporaries {_gib(sizes["temps"])}, total '
            f'{_gib(sizes["total"])} ({"fits" if program["fits"] else "DOES NOT FIT"})')
    if program['flops_per_step'] is not None:
      line += (f'; {program["flops_per_step"]:.3g} FLOPs, roofline '
               f'{program["roofline_seconds"] * 1e3:.1f} ms ({program["bound"]}-bound)')
    print(line)
  print(f'Report written to {os.path.join(workdir, REPORT_NAME)}', flush=True)
  too_big = [name for name, program in result['programs'].items() if not program['fits']]
  if too_big:
    worst = max(result['programs'][name]['bytes_per_chip']['total'] for name in too_big)
    raise errors.UserError(
        f'The {" and ".join(too_big)} program(s) need {_gib(worst)} per chip on {topology.name}, '
        f'more than its {_gib(topology.chip.hbm_bytes)} of HBM per chip: try {_advice(exp)}.')
  return result
