"""The one exception type for errors in the user's input.

`seqjax.main` prints a `UserError` as one line, `seqjax: <message>`, and exits with code 1: a bad
config value, a dataset line over the maximum length, a checkpoint that does not fit the model, a
workdir without checkpoints. Anything else that goes wrong is a bug and keeps its traceback. The
message names the bad value and says what is allowed.
"""


class UserError(ValueError):
  """An error in the user's input (config, command line, data, workdir), not in seqjax's code.

  A ValueError, so code that catches those keeps working.
  """
