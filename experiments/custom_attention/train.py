"""Trains the default Transformer (configs/default.py) with the attention function of
my_attention.py, at smoke size (a few steps):

  python experiments/custom_attention/train.py --workdir=workdirs/custom_attention

`python -m seqjax.main` would not know the name: registration happens when my_attention.py is
imported, so a run that uses it starts from a script like this one.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [ROOT, HERE]
import my_attention  # noqa: E402,F401  (registers 'my_attention')
from configs import default  # noqa: E402
from seqjax import train  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--full', action='store_true', help='the full default run, not smoke size')
  args = parser.parse_args()
  config = default.get_config(None if args.full else 'smoke')
  config.model.attention.name = 'my_attention'
  metrics = train.train_and_evaluate(config, args.workdir)
  print(metrics)


if __name__ == '__main__':
  main()
