# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.16.0
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Semi-supervised learning on your own data, in ten minutes
#
# A second, short lesson (the first is `m2_tutorial`). The question: with **50 labelled
# images and 1,150 unlabelled ones**, does a generative model of the images help a
# classifier? We use scikit-learn's handwritten digits (8 x 8 pixels, shipped inside
# scikit-learn) and compare three ideas on the same examples:
#
# 1. ignore the unlabelled images: a classifier trained on the 50 labels;
# 2. spread the labels along a graph of nearest neighbours (`LabelSpreading`);
# 3. model how the images are made, p(x | y, z), and treat the missing labels as
#    latent variables (M2, with the label summed out exactly).
#
# Every claim below is checked by an `assert`; CI runs the notebook top to bottom.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.semi_supervised import LabelSpreading

from ppl_ssvae import SSVAEClassifier
from ppl_ssvae.evaluate import latent_means, pca_2d

try:  # in a notebook, figures are shown inline; as a script, their paths are printed
    from IPython.display import Image, display
except ImportError:  # pragma: no cover
    Image = display = None

torch.set_num_threads(1)
OUT = os.environ.get("TUTORIAL_OUT", "runs/digits_tutorial")
os.makedirs(OUT, exist_ok=True)


def show(fig, name):
    """Save a figure and display it (a notebook shows the picture, a script its path)."""
    path = f"{OUT}/{name}"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    if display is not None:
        display(Image(filename=path))
    print(f"figure: {path}")

# %% [markdown]
# ## The data, and hiding most labels
#
# scikit-learn's convention for semi-supervised learning: a label of **-1 means
# unknown**. We keep a third of the images aside as a test set, and 5 labels of each
# class among the rest.

# %%
x, y = load_digits(return_X_y=True)
x = x / 16.0  # 16 grey levels -> [0, 1], what a Bernoulli pixel model needs
rng = np.random.default_rng(0)
order = rng.permutation(len(y))
test, train = order[:600], order[600:]
y_partial = np.full(len(train), -1)
for c in range(10):
    members = np.flatnonzero(y[train] == c)
    y_partial[rng.choice(members, 5, replace=False)] = c
labelled = y_partial != -1
print(f"{len(train)} training images, {labelled.sum()} of them labelled; {len(test)} test images")
assert labelled.sum() == 50 and np.all(np.bincount(y_partial[labelled]) == 5)

# %% [markdown]
# ## 1. The labelled images alone

# %%
supervised = LogisticRegression(max_iter=2000).fit(x[train][labelled], y_partial[labelled])
acc_supervised = supervised.score(x[test], y[test])
print(f"logistic regression on 50 labels: {100 * acc_supervised:.1f}%")

# %% [markdown]
# ## 2. Spreading labels along a graph
#
# `LabelSpreading` links every image to its 7 nearest neighbours and lets the labels
# flow along the links. It sees the unlabelled images, but only through distances.

# %%
spreading = LabelSpreading(kernel="knn", n_neighbors=7, alpha=0.2, max_iter=100)
spreading.fit(x[train], y_partial)
acc_spreading = spreading.score(x[test], y[test])
print(f"LabelSpreading: {100 * acc_spreading:.1f}%")
assert acc_spreading > acc_supervised  # the unlabelled images help here

# %% [markdown]
# ## 3. A generative model: M2
#
# M2 tells a story of how each image is made: pick a class y ~ Cat(1/10), a style
# z ~ N(0, I), then pixels x ~ Bernoulli(f(y, z)). For an unlabelled image, y is a
# latent variable and the training objective sums over its 10 values. The estimator
# below has scikit-learn's interface (`fit`, `predict`, `score`, usable in
# `GridSearchCV`), and it is a thin layer over the library's training loop.

# %%
m2 = SSVAEClassifier(hidden=(128,), z_dim=16, input_dropout=0.0, epochs=40, seed=0)
m2.fit(x[train], y_partial)
acc_m2 = m2.score(x[test], y[test])
print(f"M2 (exact sum over y): {100 * acc_m2:.1f}%")
assert acc_m2 > 0.75

# %% [markdown]
# The comparison over 5 seeds, with 100 epochs, is in the README
# (`python -m experiments.digits`): M2 gains a little over the same network trained on
# the labels alone, and LabelSpreading is ahead on this data set, where nearest
# neighbours in pixel space already follow the classes. What M2 gives besides a
# classifier is a model of the images. Let us look at it.
#
# ## What the generative model learned
#
# **Samples.** Each row fixes the class y, each column the style z.

# %%
run = m2.run  # the trained run: Pyro model and guide, sample, log_marginal, ...
grid = run.sample_grid(8, seed=1).reshape(10, 8, 8, 8)
fig, axes = plt.subplots(10, 8, figsize=(4, 5))
for (row, col), ax in np.ndenumerate(axes):
    ax.imshow(grid[row, col], cmap="gray_r", vmin=0, vmax=1)
    ax.axis("off")
fig.suptitle("p(x | y, z): one row per class, one z per column", fontsize=9)
show(fig, "digits_samples.png")

# %% [markdown]
# **log p(x).** The importance-sampled estimate of the log-likelihood (Burda et al.
# 2016) scores how probable an image is under the model. A real digit should be far
# more probable than an image of random pixels with the same average brightness.

# %%
digits = x[test][:50]
noise = rng.permutation(digits.ravel()).reshape(digits.shape)  # same pixel values, shuffled
log_p_digits = run.log_marginal(digits, samples=50).mean().item()
log_p_noise = run.log_marginal(noise, samples=50).mean().item()
print(f"log p(x): digits {log_p_digits:.1f} nats, shuffled pixels {log_p_noise:.1f} nats")
assert log_p_digits > log_p_noise + 10

# %% [markdown]
# **The latent space.** The means of q(z | x, y) of the test images at their true
# labels, projected on their first two principal axes. In M2, z is meant to carry
# the *style* that y does not explain, so classes should overlap rather than
# form separate clusters.

# %%
z = latent_means(run.pair, torch.tensor(x[test], dtype=torch.float32), torch.tensor(y[test]))
points = pca_2d(z).numpy()
fig, ax = plt.subplots(figsize=(5, 4))
scatter = ax.scatter(points[:, 0], points[:, 1], c=y[test], cmap="tab10", s=6)
ax.legend(*scatter.legend_elements(), title="class", fontsize=7, frameon=False,
          bbox_to_anchor=(1, 1), loc="upper left")
ax.set(xlabel="principal axis 1", ylabel="principal axis 2", title="means of q(z | x, y)")
fig.tight_layout()
show(fig, "digits_latent.png")

# %% [markdown]
# ## Things to try
#
# - More labels (10 per class) or fewer (2): which method degrades first?
# - `SSVAEClassifier(inference="gumbel-cat-kl")`: a relaxed label instead of the exact sum.
# - `GridSearchCV(SSVAEClassifier(...), {"classifier_weight": [0.1, 1.0]})`.
# - Your own data: save `x` and `y` (with -1) with `numpy.savez` and run
#   `ppl-ssvae train --dataset mine.npz` (see the README's "Your own data").
