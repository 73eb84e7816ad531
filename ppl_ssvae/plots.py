"""The figures of a run: learning curves, class-conditional samples, and the KL
of each latent dimension over training."""

from __future__ import annotations

import math
import os
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ppl_ssvae.io import save_figure  # noqa: E402

plt.rcParams.update({"font.size": 10, "axes.spines.top": False, "axes.spines.right": False})
MAX_ROWS = 20  # class_samples draws a row per class up to this many classes
MAX_FIGURE_INCHES = 40.0  # class_samples: a side of the figure, at 150 dpi 6,000 pixels


def _title(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width))


def epochs_run(history: list[dict]) -> list[float]:
    """Epochs run by the end of each row: 3 after three whole epochs, 0.4 for a run
    stopped by --max-steps two fifths into its first."""
    return [row["epoch"] - 1 + row.get("epoch_fraction", 1.0) for row in history]


def _padded(values: list[float], lowest: float, highest: float, minimum_span: float
            ) -> tuple[float, float]:
    """Axis limits around ``values``, at least ``minimum_span`` wide, within bounds."""
    low, high = min(values), max(values)
    pad = max((high - low) * 0.1, (minimum_span - (high - low)) / 2)
    return max(lowest, low - pad), min(highest, high + pad)


def learning_curves(history: list[dict], path: str | os.PathLike, title: str = ""):
    """Training loss per image and validation accuracy against the epochs run (a
    fraction for a run stopped within an epoch). Few points are drawn large, on axes
    from 0 epochs and at least 10 accuracy points tall, so one point is visible
    where it lies. Returns the (closed) figure."""
    epochs = epochs_run(history)
    size = 7 if len(history) <= 3 else 3
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    # an epoch whose every step was skipped has no loss (null): a gap in the curve
    losses = tuple([math.nan if row[key] is None else row[key] for row in history]
                   for key in ("loss", "negative_elbo"))
    ax_loss.plot(epochs, losses[0], marker="o", ms=size, label="objective")
    ax_loss.plot(epochs, losses[1], marker="s", ms=size * 0.7, label="-ELBO")
    ax_loss.set(xlabel="epochs", ylabel="nats per image", title="training loss")
    values = [v for series in losses for v in series if math.isfinite(v)]
    if values:
        ax_loss.set_ylim(*_padded(values, -math.inf, math.inf, 0.2 * max(abs(v) for v in values)))
    ax_loss.legend(frameon=False)
    accuracy = [100 * row["valid_accuracy"] for row in history]
    ax_acc.plot(epochs, accuracy, marker="o", ms=size, color="C2")
    ax_acc.set(xlabel="epochs", ylabel="accuracy (%)", title="validation accuracy")
    ax_acc.set_ylim(*_padded(accuracy, 0.0, 100.0, 10.0))
    ax_acc.grid(alpha=0.3)
    for ax in (ax_loss, ax_acc):
        ax.set_xlim(0, max(epochs) * 1.05)
    if title:
        fig.suptitle(_title(title, 90))
    fig.tight_layout()
    save_figure(fig, path, dpi=150)
    plt.close(fig)
    return fig


def class_samples(images: torch.Tensor, path: str | os.PathLike, title: str = "",
                  shape: tuple[int, ...] | None = None, names: list[str] | None = None) -> None:
    """``images`` of shape (K, S, D): one row per class, S samples per row, each drawn as an
    image of ``shape`` (H, W) (default: square); a feature vector (``shape`` of one
    dimension) is drawn as a strip one pixel high. With more than ``MAX_ROWS`` classes a
    row per class would be unreadable: the first sample of each class is drawn instead,
    in a grid of ten classes a row (class 10 r + c in row r, column c). ``names`` names
    the rows of one-row-per-class grids (default: the classes 0..K-1); values that leave
    [0, 1] (a Gaussian's means) widen the grey scale."""
    k, s = images.shape[:2]
    if shape is None:
        side = int(round(images.shape[-1] ** 0.5))
        shape = (side, side)
    height, width = shape if len(shape) == 2 else (1, shape[0])
    if k > MAX_ROWS:
        columns = 10
        rows = -(-k // columns)
        cells = images[:, 0].reshape(k, height, width)
        cells = torch.cat([cells, cells.new_zeros(rows * columns - k, height, width)])
        grid = cells.reshape(rows, columns, height, width).permute(0, 2, 1, 3)
        grid = grid.reshape(rows * height, columns * width)
        row_labels = [str(columns * r) for r in range(rows)]
        column_ticks = (np.arange(columns) * width + width / 2, [f"+{c}" for c in range(columns)])
    else:
        rows, columns = k, s
        grid = images.reshape(k, s, height, width).permute(0, 2, 1, 3).reshape(k * height, s * width)
        row_labels = names or [str(i) for i in range(k)]
        column_ticks = ([], [])
    cell_width = 0.45 * (width / height if len(shape) == 2 else 1.0)  # inches; a row is 0.45
    # at most MAX_FIGURE_INCHES a side: examples far wider than high (a shape of (1, 20000))
    # would otherwise ask for more pixels than matplotlib draws, and fail
    fig, ax = plt.subplots(figsize=(min(columns * cell_width + 0.6, MAX_FIGURE_INCHES),
                                    min(rows * 0.45 + 0.4, MAX_FIGURE_INCHES)))
    lo, hi = min(0.0, float(grid.min())), max(1.0, float(grid.max()))
    ax.imshow(grid.cpu().numpy(), cmap="gray_r", vmin=lo, vmax=hi, interpolation="nearest")
    ax.set_yticks(np.arange(rows) * height + height / 2, row_labels)
    ax.set_xticks(*column_ticks)
    ax.set_ylabel("class y")
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(_title(title or "samples of p(x | y, z), z ~ N(0, I)", 60), fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=150)
    plt.close(fig)


def kl_heatmap(history: list[dict], path: str | os.PathLike, title: str = ""):
    """The KL of each latent dimension (rows) at each epoch (columns): by default
    sum_y q(y|x) KL(q(z|x,y) || p(z)), what ``evaluate.kl_per_dimension`` computes
    for M2; ``title`` says what it is for another guide. Returns the (closed) figure."""
    rows = [row for row in history if "kl_per_dim" in row]
    kl = np.array([row["kl_per_dim"] for row in rows]).T  # (D, epochs)
    epochs = [row["epoch"] for row in rows]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.25 * len(epochs) + 2.5), 5))
    image = ax.imshow(kl, aspect="auto", cmap="viridis", interpolation="nearest",
                      extent=(epochs[0] - 0.5, epochs[-1] + 0.5, kl.shape[0] - 0.5, -0.5))
    active = int((kl[:, -1] > 0.05).sum())
    title = title or "sum_y q(y|x) KL(q(z|x,y) || p(z)) per dimension"
    ax.set_title(_title(f"{title} ({active} of {kl.shape[0]} dimensions above 0.05 nats at "
                        "the end)", 50), fontsize=9)
    ax.set(xlabel="epoch", ylabel="latent dimension of z")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    fig.colorbar(image, ax=ax, label="nats")
    fig.tight_layout()
    save_figure(fig, path, dpi=150)
    plt.close(fig)
    return fig


def _saved(fig, path: str | os.PathLike | None):
    """Save ``fig`` to ``path`` and close it; with no path, the figure, open, for the
    caller to write (``io.write_all``) and close."""
    if path is None:
        return fig
    save_figure(fig, path, dpi=150)
    plt.close(fig)
    return None


def close(fig) -> None:
    plt.close(fig)


def confusion_matrix(counts: torch.Tensor, path: str | os.PathLike | None, title: str = ""):
    """Counts (K, K), true class in rows, predicted in columns; each row shaded by its
    share of the true class. ``path`` None: the figure is returned, not saved."""
    counts = counts.cpu().float()
    k = counts.shape[0]
    shares = counts / counts.sum(1, keepdim=True).clamp(min=1)
    size = min(12.0, 2.5 + 0.45 * k)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    ax.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if counts[i, j] > 0:
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if shares[i, j] > 0.5 else "black")
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
    ax.set(xlabel="predicted class", ylabel="true class")
    ax.set_title(_title(title or "confusion matrix", 60), fontsize=9)
    fig.tight_layout()
    return _saved(fig, path)


def latent_scatter(points: torch.Tensor, labels: torch.Tensor, path: str | os.PathLike | None,
                   title: str = ""):
    """2-D points (N, 2), coloured by class; fewer than two coordinates (the principal
    axes of one or two images) are drawn with 0 for the missing ones. ``path`` None: the
    figure is returned, not saved."""
    points, labels = points.cpu().numpy(), labels.cpu().numpy()
    if points.ndim != 2 or points.shape[1] < 2:
        points = points.reshape(len(labels), -1)
        points = np.concatenate([points, np.zeros((len(points), 2 - points.shape[1]))], axis=1)
    classes = sorted(set(labels.tolist()))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(6, 5))
    for i, c in enumerate(classes):
        chosen = labels == c
        ax.scatter(points[chosen, 0], points[chosen, 1], s=4, alpha=0.6,
                   color=cmap(i % cmap.N), label=str(c))
    if len(classes) <= 20:
        ax.legend(title="class", markerscale=3, frameon=False, fontsize=7,
                  bbox_to_anchor=(1.0, 1.0), loc="upper left")
    ax.set(xlabel="principal axis 1", ylabel="principal axis 2")
    ax.set_title(_title(title, 60), fontsize=9)
    fig.tight_layout()
    return _saved(fig, path)
