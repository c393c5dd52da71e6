"""setup.cfg's pytest warning filters: deprecations show, none hidden wholesale.

A blanket `ignore::DeprecationWarning` hid the announcements of the next JAX, Flax and optax
breakages; only a named third-party warning (a message or a module given) may be silenced.
"""

import builtins
import configparser
import os
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _filters() -> list[str]:
  parser = configparser.ConfigParser()
  parser.read(os.path.join(ROOT, 'setup.cfg'))
  return [line.strip() for line in parser['tool:pytest']['filterwarnings'].splitlines()
          if line.strip()]


def test_no_warning_category_is_ignored_wholesale():
  for entry in _filters():
    action, message, category, module = (entry.split(':') + [''] * 5)[:4]
    if action == 'ignore':
      assert message or module, f'{entry!r} silences every {category}: name the warning'


def test_a_deprecation_reaches_the_test_report():
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('default')
    for entry in _filters():  # as pytest applies them, in order
      action, message, category, module = (entry.split(':') + [''] * 5)[:4]
      warnings.filterwarnings(action, message, getattr(builtins, category.strip()), module)
    warnings.warn('jax.something is deprecated', DeprecationWarning)
  assert [str(w.message) for w in caught] == ['jax.something is deprecated']
