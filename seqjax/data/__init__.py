"""The dataset registry: configs name a dataset (`data.name`), the trainer reads it from here."""

from seqjax.data import base
from seqjax.data import dates

DATASETS: dict[str, base.Dataset] = {
    'dates': base.Dataset(dates.DatesConfig, dates.load_split),
}


def get(name: str) -> base.Dataset:
  """The dataset registered as `name`."""
  try:
    return DATASETS[name]
  except KeyError:
    raise ValueError(
        f'Unknown dataset {name!r}; known datasets: {", ".join(sorted(DATASETS))}.') from None
