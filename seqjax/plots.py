"""PNG plots written into the workdir (local or gs://: drawn into memory, written through epath).
"""

import io
from typing import Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from seqjax import paths  # noqa: E402


def save(fig: matplotlib.figure.Figure, path: str, dpi: int = 120) -> None:
  """Writes `fig` as a PNG at `path` (local or a URL) and closes it."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=dpi)
  plt.close(fig)
  paths.write_bytes(path, buffer.getvalue())


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
  save(fig, path)


def attention_rollout(path: str, images: np.ndarray, maps: np.ndarray, titles: Sequence[str],
                      title: str) -> None:
  """Each image [H, W, C] above its rollout map [g_h, g_w] (values in [0, 1]) laid over it.

  Images are min-max scaled per image for display; the map is stretched over the whole image
  (each cell covering its patch) and drawn half-transparent.
  """
  fig, axes = plt.subplots(2, len(images), figsize=(2.2 * len(images), 4.6), squeeze=False)
  for column, (image, heat, name) in enumerate(zip(images, maps, titles)):
    shown = (image - image.min()) / max(float(image.max() - image.min()), 1e-6)
    shown = shown[..., 0] if shown.shape[-1] == 1 else shown
    height, width = shown.shape[:2]
    for row in (0, 1):
      axes[row, column].imshow(shown, cmap='gray' if shown.ndim == 2 else None,
                               extent=(0, width, height, 0))
      axes[row, column].set_axis_off()
    axes[1, column].imshow(heat, cmap='inferno', alpha=0.6, vmin=0.0, vmax=1.0,
                           extent=(0, width, height, 0), interpolation='nearest')
    axes[0, column].set_title(name, fontsize=8)
  fig.suptitle(title)
  fig.tight_layout()
  save(fig, path)
