"""An independent recount of a trained workdir's test accuracy: the latest checkpoint's
parameters applied to the test split outside the trainer's evaluation, argmax against the labels
in NumPy."""

import os

import numpy as np

from seqjax import checkpoint as checkpoint_lib
from seqjax import train
from seqjax.data import batching


def recounted_test_accuracy(config, workdir: str) -> float:
  """Percentage of test records whose argmax class is their label, by the latest checkpoint."""
  exp = train.build(config, workdir)
  with checkpoint_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), 1,
                                   read_only=True) as checkpointer:
    state = checkpointer.restore(checkpointer.latest_step(), exp.abstract_state, None)
  records = exp.load_split('test')
  correct = 0
  for batch in batching.padded_batches(records, exp.encoder, exp.cfg.eval.batch_size):
    logits = np.asarray(exp.model.apply({'params': state.params}, batch['inputs']))  # [b, c]
    real = batch['weights'] > 0
    correct += int(np.sum(np.argmax(logits, -1)[real] == batch['label'][real]))
  return 100.0 * correct / len(records)
