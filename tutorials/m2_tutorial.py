# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Semi-supervised learning with a deep generative model: M2, by hand and in Pyro
#
# This notebook walks through the M2 model of Kingma, Rezende, Mohamed and Welling
# (2014), "Semi-supervised learning with deep generative models", as it is written
# in `ppl-ssvae`. It is meant for a statistics course: every claim the text makes
# is checked by an `assert` in the cell below it, so if you change something and a
# claim stops being true, the notebook stops there.
#
# 1. the generative story, and sampling from the prior;
# 2. the evidence lower bound (ELBO) of a labelled and of an unlabelled image, by
#    hand in a few lines of torch, and the same number from Pyro's `TraceEnum_ELBO`;
# 3. why the exact sum over the label costs K decoder passes, and what the
#    Gumbel-Softmax relaxation trades for speed;
# 4. swapping the inference method under the same model, in one line;
# 5. a short training run on real MNIST (100 labels), and how to read its figures.
#
# It runs top to bottom in a few minutes on a laptop CPU: `python tutorials/m2_tutorial.py`
# runs it as a script (the continuous-integration test does exactly that), and
# `tutorials/m2_tutorial.ipynb` is the same file as a notebook, with its outputs.

# %%
import math
import os
import time
import warnings
from pathlib import Path

# a labelled-only batch has no y to enumerate, and Pyro says so; no progress bars here
warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites")
warnings.filterwarnings("ignore", message="IProgress not found")

import matplotlib.pyplot as plt
import pyro
import torch
from pyro.infer import TraceEnum_ELBO
from torch.distributions import Bernoulli, Normal
from torch.nn import functional as F

from ppl_ssvae import Batch, Settings, build, evaluate, load_mnist
from ppl_ssvae.data import balanced_labels, binarize
from ppl_ssvae.train import draw_batch

try:  # in a notebook, figures are shown inline; as a script, their paths are printed
    from IPython.display import Image, display
except ImportError:  # pragma: no cover
    Image = display = None

OUT = Path(os.environ.get("TUTORIAL_OUT", "runs/tutorial"))
OUT.mkdir(parents=True, exist_ok=True)


def show(path):
    """Display a saved figure (a notebook shows the picture, a script its path)."""
    if display is not None and Image is not None:
        display(Image(filename=str(path)))
    print(f"figure: {path}")


def save(fig, name):
    path = OUT / name
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    show(path)


pyro.set_rng_seed(0)
data = load_mnist()  # 50,000 / 10,000 / 10,000 images, pixels in [0, 1]
K = data.num_classes
# Kingma et al.'s networks: one hidden layer, softplus, no batch norm or dropout (the
# library's defaults add those; a deterministic network keeps the hand computation of
# section 2 comparable to Pyro's), made smaller so that the notebook runs in minutes.
settings = Settings(model="m2", inference="enum", hidden=(256,), z_dim=32, activation="softplus",
                    batch_norm=False, input_dropout=0.0, classifier_weight=0.1)
pair = build(settings)  # the model p, the guide q and the ELBO estimator
model, guide = pair.model, pair.guide
parameters = sum(p.numel() for p in pair.parameters())
print(f"{len(data.train)} training images; networks with {parameters:,} parameters")

# %% [markdown]
# ## 1. The generative story
#
# M2 says each image $x$ (784 binary pixels) is made in three steps:
#
# $$ y \sim \mathrm{Cat}(1/K, \dots, 1/K), \qquad z \sim \mathcal N(0, I_D), \qquad
#    x \sim \mathrm{Bernoulli}\big(\sigma(f_\theta(z, y))\big), $$
#
# a class $y$ (one of $K = 10$, a `Categorical` index), a "style" $z$ (here $D = 32$
# numbers) independent of the class, and pixels that are independent coin flips given
# $(y, z)$, whose probabilities a neural network $f_\theta$ (the *decoder*) computes.
# In code this is `M2.story`, written once for labelled and unlabelled images alike:

# %%
import inspect

print(inspect.getsource(type(model).story))

# %% [markdown]
# The only thing that differs between a labelled and an unlabelled image is `obs=y`: with a
# label, `y` is *observed* (conditioned on); without one, it is *latent*. The same
# function samples from the prior when we observe nothing: inside a `pyro.plate` of 8
# images, `story(None)` draws 8 classes, 8 styles and 8 images.

# %%
with torch.no_grad(), pyro.plate("images", 8):
    y, z, x = model.story(None)
print("classes drawn:", y.tolist())
assert y.shape == (8,) and bool(((0 <= y) & (y < K)).all())  # class indices
assert z.shape == (8, settings.z_dim)
assert set(x.unique().tolist()) <= {0.0, 1.0}  # binary pixels

with torch.no_grad(), pyro.plate("many", 20_000):
    _, z_many, _ = model.story(None)
assert abs(float(z_many.mean())) < 0.01 and abs(float(z_many.std()) - 1) < 0.01  # z ~ N(0, I)

# %% [markdown]
# The decoder is untrained, so these images are noise: a model is only a story until its
# parameters are fitted. Here are its pixel probabilities $p(x \mid y, z)$, one row per
# class, the same $z$ in every column (we will draw this figure again after training):

# %%
def class_samples(name, title, columns=10, seed=0):
    """p(x | y, z) for every class y (rows) and the same z in every column."""
    with evaluate.evaluation(pair), torch.random.fork_rng():
        torch.manual_seed(seed)
        z = torch.randn(columns, settings.z_dim).expand(K, -1, -1)  # (K, columns, D)
        y = torch.arange(K).unsqueeze(1).expand(-1, columns)  # (K, columns): class indices
        images = model.decode(z, y)  # (K, columns, 784) pixel probabilities
    grid = images.reshape(K, columns, 28, 28).permute(0, 2, 1, 3).reshape(K * 28, columns * 28)
    fig, ax = plt.subplots(figsize=(0.5 * columns, 0.5 * K + 0.3))
    ax.imshow(grid, cmap="gray_r", vmin=0, vmax=1)
    ax.set_yticks([28 * k + 14 for k in range(K)], [str(k) for k in range(K)])
    ax.set(xticks=[], ylabel="class y", title=title)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.savefig(OUT / name, dpi=90, bbox_inches="tight")
    plt.close(fig)
    show(OUT / name)
    return images


before = class_samples("samples_untrained.png", "untrained decoder: p(x | y, z)", columns=6)

# %% [markdown]
# The plate diagram of the model (left) and of the inference network, the *guide* (right),
# drawn by `ppl-ssvae render --model m2 --guide --out m2.png` from the code itself.
# Shaded nodes are observed: $y$ is shaded in the labelled plate and white in the
# unlabelled one. The guide's arrows say what it computes from what:
# $q(y \mid x)$ is a classifier, and $q(z \mid x, y)$ an encoder.

# %%
from ppl_ssvae.render import RenderError, render

try:
    render("m2", guide=True, out=OUT / "m2.png")
    show(OUT / "m2.png")
except RenderError as e:  # Graphviz is not installed: the rest runs without it
    print(f"(no diagram: {e})")

# %% [markdown]
# ## 2. The ELBO, by hand and by Pyro
#
# We cannot compute $\log p(x)$ (it integrates over $z$), so we maximise a lower bound of
# it. For a **labelled** image, with $z$ drawn from $q(z \mid x, y)$,
#
# $$ \mathrm{ELBO}(x, y) = \mathbb E_{q(z \mid x, y)}\big[\log p(x \mid y, z) + \log p(y) + \log p(z)
#    - \log q(z \mid x, y)\big] \le \log p(x, y). $$
#
# For an **unlabelled** image the label is one more latent variable, drawn from the
# classifier $q(y \mid x)$. Since $y$ takes only $K$ values, the expectation over it can be
# a sum, done exactly:
#
# $$ \mathrm{ELBO}(x) = \sum_{y=1}^{K} q(y \mid x)\, \mathrm{ELBO}(x, y) + \mathcal H[q(y \mid x)]
#    \le \log p(x). $$
#
# Each expectation over $z$ is estimated with one draw $z = \mu + \sigma \odot \epsilon$,
# $\epsilon \sim \mathcal N(0, I)$ (the reparameterisation trick). In torch:

# %%
def elbo_labelled(x, y, eps):
    """log p(x|y,z) + log p(y) + log p(z) - log q(z|x,y), at z = mu + sigma * eps."""
    loc, scale = guide.encode_z(x, y)  # q(z | x, y)
    z = loc + scale * eps
    log_px = Bernoulli(logits=model.decoder(z, y)).log_prob(x).sum(-1)
    log_py = math.log(1 / K)
    log_pz = Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_qz = Normal(loc, scale).log_prob(z).sum(-1)
    return log_px + log_py + log_pz - log_qz


def elbo_unlabelled(x, eps):
    """sum_y q(y|x) ELBO(x, y) + H[q(y|x)], all K classes at once."""
    q_y = F.softmax(guide.classify(x), dim=-1)  # (1, K)
    every_y = torch.arange(K).unsqueeze(1)  # (K, 1): the K classes
    per_class = elbo_labelled(x, every_y, eps)  # (K, 1): one ELBO(x, y) per class
    return (q_y.T * per_class).sum(0) - (q_y * q_y.log()).sum(-1)


# %% [markdown]
# Pyro computes the same thing from the model and the guide alone. `TraceEnum_ELBO` sees
# that the guide marks the unlabelled $y$ for parallel enumeration, runs the networks once
# with all $K$ values of $y$ stacked along a new tensor dimension, and weights each by
# $q(y \mid x)$. Fix the random seed so that both draw the same $\epsilon$, and compare:

# %%
x_u = binarize(data.valid.x[:1])
x_l, y_l = binarize(data.valid.x[1:2]), data.valid.y[1:2]
pyro_elbo = TraceEnum_ELBO(max_plate_nesting=1)

with torch.no_grad():
    pyro.set_rng_seed(1)
    by_pyro_u = -pyro_elbo.loss(model, guide, Batch(x_u=x_u))
    pyro.set_rng_seed(1)
    by_hand_u = float(elbo_unlabelled(x_u, torch.randn(K, 1, settings.z_dim)))

    pyro.set_rng_seed(2)
    by_pyro_l = -pyro_elbo.loss(model, guide, Batch(x_l=x_l, y_l=y_l))
    pyro.set_rng_seed(2)
    by_hand_l = float(elbo_labelled(x_l, y_l, torch.randn(1, settings.z_dim)))

print(f"unlabelled image: by hand {by_hand_u:.4f}, TraceEnum_ELBO {by_pyro_u:.4f} nats")
print(f"labelled image:   by hand {by_hand_l:.4f}, TraceEnum_ELBO {by_pyro_l:.4f} nats")
assert math.isclose(by_pyro_u, by_hand_u, rel_tol=1e-5)
assert math.isclose(by_pyro_l, by_hand_l, rel_tol=1e-5)

# %% [markdown]
# Training maximises the sum of these over all images (the library's `SSVAE` also adds
# Kingma et al.'s classifier term $\alpha \cdot (-\log q(y \mid x))$ on labelled images,
# since otherwise the labels would only train the decoder, not the classifier).
#
# ## 3. The price of the exact sum, and the Gumbel-Softmax alternative
#
# The unlabelled ELBO needs $\mathrm{ELBO}(x, y)$ for *every* $y$: the encoder and the
# decoder run on $K$ copies of the batch. We can count the rows the decoder sees in one
# training step of 100 unlabelled and 100 labelled images:

# %%
gumbel_pair = build(settings.replace(inference="gumbel"))  # the same model, y relaxed
gumbel_pair.load_state_dict(pair.state_dict())  # same weights: only the inference differs

g = torch.Generator().manual_seed(0)
labelled = balanced_labels(data.train.y, 100, K, seed=0)
batch = draw_batch(data, labelled, settings, torch.randperm(len(data.train), generator=g), 0, g)


def decoder_rows(p, batch):
    """How many (image, label) rows the decoder computes in one ELBO evaluation."""
    rows = []
    hook = p.model.decoder.register_forward_hook(lambda m, i, out: rows.append(out.shape[:-1].numel()))
    p.loss(batch)
    hook.remove()
    return sum(rows)


enum_rows, gumbel_rows = decoder_rows(pair, batch), decoder_rows(gumbel_pair, batch)
print(f"decoder rows per step: exact sum {enum_rows}, Gumbel-Softmax {gumbel_rows}")
assert enum_rows == K * len(batch.x_u) + len(batch.x_l)
assert gumbel_rows == len(batch.x_u) + len(batch.x_l)

# %% [markdown]
# The **Gumbel-Softmax** (or Concrete) relaxation of Jang et al. and Maddison et al. draws
# *one* $y$ per image instead: $y = \mathrm{softmax}((\log \pi + g) / \tau)$ with Gumbel
# noise $g$, a point inside the simplex that is differentiable in $\pi$, so gradients flow
# through it like through $z$. One row per image instead of $K$, so a step is faster,
# though by less than $K$: what does not depend on $y$ (the classifier, the encoder's
# first layer on $x$) runs once either way. We time a full step (forward and backward)
# for each, with the network sizes of Kingma et al. (500 hidden units, $D = 50$), after
# a few warm-up steps, the best of 10:

# %%
def best_step_times(pairs, batch, warmup=3, repeats=10):
    """The fastest of ``repeats`` training steps of each pair, timed in turn so that
    all of them see the same load on the machine."""
    best = [math.inf] * len(pairs)
    for i in range(warmup + repeats):
        for j, p in enumerate(pairs):
            start = time.perf_counter()
            p.loss_and_grads(batch)
            p.zero_grad()
            if i >= warmup:  # the first calls also pay for one-off memory allocation
                best[j] = min(best[j], time.perf_counter() - start)
    return best


paper_size = settings.replace(hidden=(500,), z_dim=50)
t_enum, t_gumbel = best_step_times(
    [build(paper_size), build(paper_size.replace(inference="gumbel"))], batch)
print(f"one step: exact sum {1000 * t_enum:.0f} ms, Gumbel-Softmax {1000 * t_gumbel:.0f} ms "
      f"({t_enum / t_gumbel:.1f} times faster)")
assert t_gumbel < t_enum < K * t_gumbel

# %% [markdown]
# What does it trade for that speed?
#
# - **A relaxed label.** At temperature $\tau$ the sample is not one-hot: the decoder is
#   shown a blend of classes, so the objective is not the ELBO of the discrete model. As
#   $\tau \to 0$ the samples approach one-hot (the largest coordinate approaches 1), but
#   the gradients' variance grows; Jang et al. anneal $\tau$ from 1 down to 0.5
#   (`--temperature-decay`, `--temperature-min`).
# - **Noise.** One sampled label replaces an exact sum, so the estimate of the objective
#   varies more from draw to draw.
# - **A choice of KL.** With $y$ relaxed in model and guide alike (`--inference gumbel`),
#   the KL term compares two relaxed densities. Jang et al. and the original code used the
#   KL of the categoricals instead (`--inference gumbel-cat-kl`). The two differ where it
#   matters: the relaxed KL keeps growing as $q(y \mid x)$ grows confident, the
#   categorical one stops at $\log K$. On MNIST the first pulls the classifier back
#   towards uniform (82.6% test accuracy after 5 epochs, against 89.2% for `gumbel-cat-kl`
#   and 90.7% for the exact sum; see the README's results).
#
# All three, measured:

# %%
logits = guide.classify(x_u).detach()
largest = {}
for tau in (2.0, 1.0, 0.5, 0.1):
    draws = pyro.distributions.RelaxedOneHotCategorical(torch.tensor(tau), logits=logits).sample((2000,))
    largest[tau] = float(draws.max(-1).values.mean())
    print(f"tau = {tau:>3}: mean largest coordinate of y {largest[tau]:.3f}")
assert largest[2.0] < largest[1.0] < largest[0.5] < largest[0.1]
assert largest[2.0] < 0.5 and largest[0.1] > 0.9

unlabelled = Batch(x_u=batch.x_u)
spread = {name: torch.tensor([p.loss(unlabelled) for _ in range(20)]).std().item()
          for name, p in [("exact sum", pair), ("Gumbel-Softmax", gumbel_pair)]}
print("std of the loss over 20 draws, nats per image:", {k: round(v, 3) for k, v in spread.items()})
assert spread["Gumbel-Softmax"] > spread["exact sum"]

uniform = torch.zeros(K)
for margin in (0.0, 5.0, 10.0):
    confident = torch.zeros(K)
    confident[0] = margin  # class 0 ahead of the others by `margin` in the logits
    q, p = (pyro.distributions.RelaxedOneHotCategorical(torch.tensor(0.5), logits=logits_)
            for logits_ in (confident, uniform))
    y = q.sample((20000,))
    relaxed_kl = float((q.log_prob(y) - p.log_prob(y)).mean())
    categorical_kl = float(torch.distributions.kl_divergence(
        torch.distributions.Categorical(logits=confident), torch.distributions.Categorical(logits=uniform)))
    print(f"logit margin {margin:>4}: relaxed KL {relaxed_kl:5.2f} nats, categorical KL {categorical_kl:.2f}")
assert categorical_kl <= math.log(K) < relaxed_kl - 3

# %% [markdown]
# ## 4. Swapping the inference method: one line
#
# The model does not change when the inference method does. `build` reads
# `settings.inference` and gives the model and the guide the family for the unobserved
# $y$ (exact and enumerated, sampled, or relaxed) and the matching Pyro ELBO class:
#
# ```python
# gumbel_pair = build(settings.replace(inference="gumbel"))
# ```
#
# That is the line we used above; on the command line it is `--inference gumbel`, and
# `ppl-ssvae list` shows every method a model accepts. The networks are the same, which
# is why the enumerated pair's weights loaded into the Gumbel pair unchanged:

# %%
shapes = lambda p: {name: tuple(t.shape) for name, t in p.state_dict().items()}
assert shapes(pair) == shapes(gumbel_pair)
assert type(pair.model) is type(gumbel_pair.model) and type(pair.guide) is type(gumbel_pair.guide)
print(type(pair.elbo).__name__, "->", type(gumbel_pair.elbo).__name__)

# %% [markdown]
# ## 5. A short training run, and how to read its figures
#
# We train both pairs from the same starting weights for 240 steps (100 unlabelled +
# 100 labelled images a step, 100 labels in all, Adam at 1e-3), measuring the
# validation accuracy of the classifier $q(y \mid x)$ every 20 steps. The loop is the
# library's training loop stripped to its core: draw a batch, compute the loss and its
# gradients, take an optimiser step. (`ppl-ssvae train` does the same per epoch and
# writes these figures into its output directory.)

# %%
STEPS, EVERY = 240, 20
start_weights = {name: t.clone() for name, t in pair.state_dict().items()}


def train_briefly(p, seed=0):
    p.load_state_dict(start_weights)
    pyro.set_rng_seed(seed)
    optimizer = torch.optim.Adam(p.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data.train), generator=g)
    curve, seconds = [], 0.0
    for step in range(1, STEPS + 1):
        batch = draw_batch(data, labelled, settings, order, step - 1, g)
        started = time.perf_counter()
        p.loss_and_grads(batch, step)
        optimizer.step()
        optimizer.zero_grad()
        seconds += time.perf_counter() - started
        if step % EVERY == 0:
            accuracy = evaluate.accuracy(p, data.valid.x[:2000], data.valid.y[:2000])
            curve.append((step, accuracy))
    return curve, seconds / STEPS


runs = {"exact sum (enum)": train_briefly(pair), "Gumbel-Softmax": train_briefly(gumbel_pair)}
for name, (curve, seconds) in runs.items():
    print(f"{name:>18}: validation accuracy {100 * curve[-1][1]:.1f}% after {STEPS} steps, "
          f"{1000 * seconds:.0f} ms a step")

# %% [markdown]
# **Accuracy curves.** The classifier learns from 100 labels and 24,000 unlabelled
# images seen once: after 240 steps it is far above chance (10%), though short of the
# 88% Kingma et al. report for M2 with 100 labels after long training.

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for name, (curve, _) in runs.items():
    steps, accuracy = zip(*curve, strict=True)
    ax.plot(steps, [100 * a for a in accuracy], marker="o", ms=3, label=name)
ax.axhline(10, color="gray", ls=":", label="chance")
ax.set(xlabel="training step", ylabel="validation accuracy (%)", ylim=(0, 100),
       title="q(y | x) on 2,000 validation images")
ax.legend(frameon=False)
save(fig, "accuracy_curves.png")

final = {name: curve[-1][1] for name, (curve, _) in runs.items()}
assert all(accuracy > 0.5 for accuracy in final.values())  # chance is 0.1

# %% [markdown]
# **Samples per class.** The same figure as before training: row $k$ is
# $p(x \mid y = k, z)$, with one $z$ per column. Read it along both directions. Down a
# column, only the class changes; along a row, only the style. If the model had
# separated class from style, each row would show one digit in ten styles. After 240
# steps it has not: the columns differ far more than the rows, i.e. the decoder draws
# digit-like shapes from $z$ and mostly ignores $y$ -- the style variable still carries
# the class. This is the typical state of M2 early in training (the labelled term and
# the classifier term pull $y$ into use only slowly), and it is why the figure is worth
# looking at: an accuracy curve alone would not show it. Two numbers say the same:
# how much the images vary across columns versus across rows, and how often the model's
# own classifier recognises the class a row was generated for.

# %%
after = class_samples("samples_trained.png", f"after {STEPS} steps: p(x | y, z)")
across_rows = float(after.var(dim=0).mean())  # the class changes, z fixed
across_columns = float(after.var(dim=1).mean())  # z changes, the class fixed
print(f"pixel variance across rows (class) {across_rows:.4f}, across columns (style) "
      f"{across_columns:.4f}")
assert across_columns > across_rows

with evaluate.evaluation(pair):
    recognised = pair.classify(after.reshape(-1, 784)).argmax(-1).reshape(K, -1)
self_consistency = float((recognised == torch.arange(K)[:, None]).float().mean())
print(f"the classifier labels {100 * self_consistency:.0f}% of the generated images as "
      f"the class they were generated from (chance: 10%)")
assert 0.15 < self_consistency < 0.9  # above chance, far from a clean separation

# %% [markdown]
# **The model's own answer.** The classifier $q(y \mid x)$ is the guide's guess. The
# model has its own: given an image and a style $z$, Bayes' rule gives
# $p(y \mid x, z) \propto p(y)\, p(x \mid y, z)$, one decoder pass per class. Pyro's
# `infer_discrete` computes it from the model's code alone: put the model under
# `config_enumerate`, fix $z$ (here one draw from the guide) with `poutine.condition`,
# and ask for the most probable $y$ (`temperature=0`; `1` draws from the posterior).
# It agrees with the same sum written by hand:

# %%
from pyro import poutine
from pyro.infer import config_enumerate, infer_discrete

from ppl_ssvae.distributions import BernoulliImage

x = binarize(data.valid.x[:500])
with evaluate.evaluation(pair):
    latents = evaluate.guide_latents(pair, x)  # {"unlabelled/z": (500, D)}: y ~ q(y|x), z ~ q(z|x,y)
    conditioned = poutine.condition(config_enumerate(model), data=latents)
    posterior = infer_discrete(conditioned, first_available_dim=-2, temperature=0)
    map_y = poutine.trace(posterior).get_trace(Batch(x_u=x)).nodes["unlabelled/y"]["value"]
    logits = model.decoder(latents["unlabelled/z"], torch.arange(K).unsqueeze(1))  # (K, 500, 784)
    # log p(x | y, z) + log p(y), with the model's own pixel likelihood (the same numbers)
    by_hand = BernoulliImage(logits).log_prob(x).T + math.log(1 / K)  # (500, K)
guide_y = evaluate.predict(pair, x).argmax(-1)
truth = data.valid.y[:500]
print(f"q(y|x): {100 * float((guide_y == truth).float().mean()):.0f}% right; "
      f"argmax p(y|x,z): {100 * float((map_y == truth).float().mean()):.0f}% right; "
      f"they agree on {100 * float((map_y == guide_y).float().mean()):.0f}% of the images")
assert torch.equal(map_y, by_hand.argmax(-1))

# %% [markdown]
# **KL per latent dimension.** $\mathrm{KL}(q(z \mid x, y) \,\|\, p(z))$, averaged over
# images and over $q(y \mid x)$, one bar per dimension of $z$: how many nats of
# information about an image each dimension carries beyond the prior. Their sum is the
# KL term of the ELBO, the price the model pays for encoding the style. A dimension
# whose bar is near 0 carries nothing (it has "collapsed" to the prior); long runs
# usually end with some of those, which is why `ppl-ssvae train` draws this figure for
# every epoch. Before training, the bars only reflect the random initial weights;
# training raises them as the encoder learns to put information into $z$.

# %%
def kl_bars(p):
    return evaluate.kl_per_dimension(p, data.valid.x[:1000])


kl_after = kl_bars(pair)
pair.load_state_dict(start_weights)
kl_before = kl_bars(pair)

fig, ax = plt.subplots(figsize=(7, 3))
dims = range(settings.z_dim)
ax.bar(dims, kl_after.tolist(), color="C0", label=f"after {STEPS} steps")
ax.bar(dims, kl_before.tolist(), color="C3", width=0.4, label="before training")
ax.set(xlabel="dimension of z", ylabel="nats", title="KL(q(z | x, y) || p(z)) per dimension")
ax.legend(frameon=False)
save(fig, "kl_per_dim.png")
print(f"total KL: {float(kl_before.sum()):.1f} nats before training, "
      f"{float(kl_after.sum()):.1f} after")
assert float(kl_after.sum()) > 1.5 * float(kl_before.sum())
assert float(kl_after.min()) > 0.05  # no dimension has collapsed yet

# %% [markdown]
# ## Where to go from here
#
# - Train for real: `ppl-ssvae train --model m2 --inference enum --labels 100 --epochs 50`
#   writes `learning_curves.png`, `samples.png` and `kl_per_dim.png` after every run.
# - Change the inference method: `--inference gumbel`, `score`, `iwae` ...
#   (`ppl-ssvae list`).
# - Change the model: `docs/extending.md` adds an auxiliary variable to M2 (the ADGM of
#   Maaloe et al. 2016) in two short files, and tests its ELBO against a hand computation
#   like the one in section 2.
