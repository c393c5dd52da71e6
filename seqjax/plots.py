"""PNG plots written into the workdir."""

from typing import Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def attention_heatmaps(path: str, examples: Sequence[tuple[list[str], list[str], np.ndarray]],
                       title: str) -> None:
  """One heatmap per (source tokens, output tokens, weights [t, s]) example, side by side."""
  fig, axes = plt.subplots(1, len(examples), figsize=(4.5 * len(examples), 4.5), squeeze=False)
  for ax, (source, output, weights) in zip(axes[0], examples):
    ax.imshow(weights, cmap='viridis', vmin=0.0, aspect='auto')
    ax.set_xticks(range(len(source)), source, fontsize=7, rotation=90)
    ax.set_yticks(range(len(output)), output, fontsize=7)
    ax.set_xlabel('source')
    ax.set_ylabel('output')
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
