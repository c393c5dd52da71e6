"""experiments/benchmarks/profile_step.py's trace arithmetic, on synthetic traces."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'experiments', 'benchmarks'))
import profile_step  # pylint: disable=wrong-import-position


def _event(name, ts, dur, pid=1, tid=1):
  return {'ph': 'X', 'name': name, 'ts': ts, 'dur': dur, 'pid': pid, 'tid': tid}


def test_concurrency_shares_match_a_per_microsecond_count(rng):
  events = [_event(f'op.{i}', int(rng.integers(0, 200)), int(rng.integers(1, 60)))
            for i in range(40)]
  shares, covered = profile_step.concurrency_shares(events)
  expected, busy = np.zeros(len(events)), 0
  for tick in range(300):  # each microsecond [tick, tick + 1) split among the events running
    running = [i for i, e in enumerate(events) if e['ts'] <= tick < e['ts'] + e['dur']]
    busy += bool(running)
    for i in running:
      expected[i] += 1 / len(running)
  np.testing.assert_allclose(shares, expected, atol=1e-9)
  assert covered == busy
  assert shares.sum() == pytest.approx(busy)


def test_operation_events_host_and_device():
  instructions = profile_step.hlo_instructions(
      'ENTRY %main {\n  %copy.3 = f32[8]{0} copy(%p), metadata={op_name="jit(f)/copy"}\n'
      '  ROOT %ynn_fusion.1 = f32[8,8]{1,0} fusion(%a), kind=kCustom\n}\n')
  assert instructions == {'copy_3': ('f32[8]{0}', 'jit(f)/copy'),
                          'ynn_fusion_1': ('f32[8,8]{1,0}', '')}
  host_events = [_event('copy.3', 0, 5), _event('$python frame', 0, 9),
                 _event('ThunkExecutor::Execute', 0, 9), _event('ynn_fusion.1', 5, 4)]
  trace = {'traceEvents': [{'ph': 'M', 'name': 'process_name', 'pid': 1,
                            'args': {'name': '/host:CPU'}}] + host_events}
  assert [e['name'] for e in profile_step.operation_events(trace, instructions)] == [
      'copy.3', 'ynn_fusion.1']
  # On an accelerator: its "XLA Ops" line, not the module line spanning the step or the host.
  device = [{'ph': 'M', 'name': 'process_name', 'pid': 2, 'args': {'name': '/device:GPU:0'}},
            {'ph': 'M', 'name': 'thread_name', 'pid': 2, 'tid': 1, 'args': {'name': 'XLA Modules'}},
            {'ph': 'M', 'name': 'thread_name', 'pid': 2, 'tid': 2, 'args': {'name': 'XLA Ops'}},
            {'ph': 'M', 'name': 'thread_name', 'pid': 2, 'tid': 3, 'args': {'name': 'Stream #7'}},
            _event('jit_train_step', 0, 100, pid=2, tid=1), _event('fusion.4', 1, 10, pid=2, tid=2),
            _event('loop_add_fusion', 2, 10, pid=2, tid=3)]
  trace['traceEvents'] += device
  assert [e['name'] for e in profile_step.operation_events(trace, instructions)] == ['fusion.4']
  # Without an "XLA Ops" line: the stream kernels.
  trace['traceEvents'] = [e for e in trace['traceEvents'] if e.get('tid') != 2]
  assert [e['name'] for e in profile_step.operation_events(trace, instructions)] == [
      'loop_add_fusion']
