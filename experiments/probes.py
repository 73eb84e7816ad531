"""What a pair's networks do, measured: the pieces of ``experiments.diagnose``.

- ``where_the_class_is``: how much of its picture the decoder draws from the class, and
  how much of the class a linear probe reads from q(z | x, .) (``decoder_class_share``,
  ``linear_probe``);
- ``class_code``: what the logistic-normal prior's class scores a carry (their KL from
  the prior, the share of their mean's variance between classes, alpha's entropy);
- ``auxiliary_use``: what the ADGM's auxiliary a does for its classifier;
- ``shared_signal``: how much noise the labelled images add to the score function's
  learning signal when they share one ``Trace_ELBO`` call with the unlabelled ones;
- ``code_of_runs``: the first three on trained runs, at their best and last weights.

``python -m experiments.diagnose --code RUN ...`` and ``--signal RUN ...`` run them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyro
import torch
from torch.nn import functional as F

from ppl_ssvae import data as data_lib
from ppl_ssvae.batch import Batch
from ppl_ssvae.evaluate import evaluation
from ppl_ssvae.labels import label_sites, split_label
from ppl_ssvae.train import draw_batch


def classifier_parameters(pair, x: torch.Tensor) -> list[torch.nn.Parameter]:
    """The parameters that the classifier's logits depend on."""
    params = [p for p in pair.guide.parameters() if p.requires_grad]
    with torch.enable_grad():
        grads = torch.autograd.grad(pair.guide.classify(x[:4]).sum(), params, allow_unused=True)
    return [p for p, g in zip(params, grads, strict=True) if g is not None]


def flat_grad(params: list[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                      for p in params])


def kl_from_prior(pair, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """KL(N(loc, scale^2) || p(a)) per dimension, p(a) the model's own N(0, s^2 I)."""
    prior = torch.distributions.Normal(pair.model.a_loc, pair.model.a_scale)
    return torch.distributions.kl_divergence(torch.distributions.Normal(loc, scale), prior)


def where_the_class_is(pair, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Where a trained M2-family pair keeps the class of images ``x`` (classes ``y``):
    ``valid_accuracy``, its classifier's; ``decoder_class_share``, how much the decoder's
    picture depends on the class it is given (0: not at all); ``z_probe_accuracy``, how
    much of the class a linear read of q(z | x, .)'s mean recovers, the encoder given the
    classifier's soft prediction (high while the decoder ignores the class: z carries it).

    A model with several label sites (the two-digit model's y1, y2) adds, per site,
    ``{site}_accuracy`` (the classifier's, on that part of the class),
    ``decoder_{site}_share`` (the share of the pictures' variance between the values of
    that site alone, averaged over the others) and ``z_probe_{site}_accuracy``. The
    hierarchical model's z is z2 (``encode_z``), and ``z1_probe_accuracy`` reads the class
    from the mean of q(z1 | x), the code the decoder draws from: there the class should
    be (the decoder sees nothing else), while z2, if the hierarchy separates class from
    style, should carry little of it."""
    model, guide = pair.model, pair.guide
    # a supervised baseline (mlp, two-digit-mlp) has a classifier and nothing else:
    # its accuracies are measured, the decoder and z have nothing to measure
    generative = hasattr(guide, "encode_z")
    with evaluation(pair), torch.no_grad():
        logits = guide.classify(x)
        predicted = logits.argmax(-1)
        out = {"valid_accuracy": float((predicted == y).float().mean())}
        if generative:
            z_loc, _ = guide.encode_z(x, logits.softmax(-1))
            means = decoded_corners(model)
            out["decoder_class_share"] = between_share(means)
            out["z_probe_accuracy"] = linear_probe(z_loc, y)
        sites = label_sites(model)
        if len(sites) > 1:
            classes = torch.arange(logits.shape[-1], device=y.device)
            truth, guess = split_label(model, y), split_label(model, predicted)
            for site, values in split_label(model, classes).items():
                out[f"{site}_accuracy"] = float((guess[site] == truth[site]).float().mean())
                if generative:
                    # the main effect of the site: the pictures averaged within each of its values
                    out[f"decoder_{site}_share"] = between_share(means, values)
                    out[f"z_probe_{site}_accuracy"] = linear_probe(z_loc, truth[site])
        if hasattr(guide, "encode_z1"):
            z1_loc, _ = guide.encode_z1(x)
            out["z1_probe_accuracy"] = linear_probe(z1_loc, y)
            out["z2_probe_accuracy"] = out["z_probe_accuracy"]
        return out


def class_code(pair, x: torch.Tensor, y: torch.Tensor, draws: int = 10) -> dict:
    """What the class weights of a logistic-normal-prior pair encode, on images ``x`` of
    classes ``y``: ``where_the_class_is``, and the KL of q(a|x) from the prior (per
    dimension and in all: the nats that a carries; a class label needs at most log K),
    the share of the variance of q(a|x)'s mean that lies between classes (1: a codes the
    class alone, 0: nothing of it), and the entropy of alpha = softmax(a) at draws from
    q(a|x) (0 at a corner of the simplex, log K at its centre)."""
    where = where_the_class_is(pair, x, y)
    with evaluation(pair), torch.no_grad():
        loc, scale = pair.guide.scores(x)
        kl = kl_from_prior(pair, loc, scale)
        centred = loc - loc.mean(0)
        between = sum(float(((loc[y == k].mean(0) - loc.mean(0)) ** 2).sum()) * int((y == k).sum())
                      for k in y.unique().tolist())
        a = loc + scale * torch.randn((draws, *loc.shape))
        alpha = a.softmax(-1)
        entropy = -(alpha * alpha.clamp_min(1e-30).log()).sum(-1)
        return {**where,
                "kl_a_per_dim": [float(v) for v in kl.mean(0)], "kl_a": float(kl.sum(-1).mean()),
                "class_share_of_variance": between / float((centred ** 2).sum()),
                "alpha_entropy": float(entropy.mean()),
                "alpha_top": float(alpha.max(-1).values.mean()),
                "scale_mean": float(scale.mean()), "loc_norm": float(loc.norm(dim=-1).mean())}


def auxiliary_use(pair, x: torch.Tensor, y: torch.Tensor, draws: int = 20) -> dict:
    """What the ADGM's auxiliary a does for its classifier q(y | x) = E_q(a|x) q(y | a, x),
    on images ``x`` of classes ``y``, over ``draws`` draws of a per image: the mutual
    information between y and a under q (nats per image: H of the mixture minus the mean
    H of its components; 0: a changes nothing, and q(y | x) is an M2 classifier), the share
    of images whose predicted class changes between draws, the accuracy of the mixture
    and of q(y | a, x) at a = the mean of q(a | x) (what evaluation reports), and q(a|x)'s
    mean scale."""
    guide = pair.guide
    with evaluation(pair), torch.no_grad():
        loc, scale = guide.encode_a(x)
        a = loc + scale * torch.randn((draws, *loc.shape))
        log_q = torch.stack([guide.classify_given_a(x, a_s).log_softmax(-1) for a_s in a])
        mixture = log_q.logsumexp(0) - math.log(draws)
        entropy = -(log_q.exp() * log_q).sum(-1).mean(0)
        predicted = log_q.argmax(-1)
        at_mean = guide.classify_given_a(x, loc).argmax(-1)
        return {"valid_accuracy": float((at_mean == y).float().mean()),
                "valid_accuracy_mixture": float((mixture.argmax(-1) == y).float().mean()),
                "mutual_information_y_a": float((-(mixture.exp() * mixture).sum(-1) - entropy).mean()),
                "prediction_changes": float((predicted != predicted[0]).any(0).float().mean()),
                "a_scale_mean": float(scale.mean())}


def decoded_corners(model, n: int = 200, seed: int = 0) -> torch.Tensor:
    """The decoder's pixel means for ``n`` draws z ~ N(0, I), each decoded at every one of
    the K corners e_k of the simplex (every class): (n, K, D)."""
    g = torch.Generator().manual_seed(seed)
    k = model.num_classes
    z = torch.randn((n, model.z_dim), generator=g).to(model.z_loc)
    corners = torch.eye(k).to(model.z_loc)
    with torch.no_grad():
        return model.decode(z.repeat_interleave(k, 0), corners.repeat(n, 1)).reshape(n, k, -1)


def between_share(means: torch.Tensor, groups: torch.Tensor | None = None) -> float:
    """The share of the variance of ``means`` (n, K, D) that lies between the K pictures
    of one z (``groups=None``: every class apart); with ``groups`` (K,), a label site's
    value for each class, between the means of the groups only: that site's main effect."""
    centred = means - means.mean((0, 1))
    per_z = means - means.mean(1, keepdim=True)
    if groups is not None:
        grouped = torch.zeros_like(per_z)
        for value in groups.unique().tolist():
            members = groups == value
            grouped[:, members] = per_z[:, members].mean(1, keepdim=True)
        per_z = grouped
    return float((per_z ** 2).sum() / (centred ** 2).sum())


def decoder_class_share(model, n: int = 200, seed: int = 0) -> float:
    """How much the decoder's picture depends on the class it is given: for ``n`` draws
    z ~ N(0, I) decoded at each of the K corners e_k of the simplex, the share of the
    pixel means' variance that lies between the K pictures of one z (1: the class alone
    draws the image, 0: the decoder ignores it and z carries everything)."""
    return between_share(decoded_corners(model, n, seed))


def linear_probe(features: torch.Tensor, y: torch.Tensor, steps: int = 200) -> float:
    """The held-out accuracy of a multinomial logistic regression of ``y`` on
    ``features``: fit on the first half (standardised, a little L2), scored on the
    second; how much of the class a code carries, read linearly."""
    half = len(y) // 2
    mean, std = features[:half].mean(0), features[:half].std(0).clamp_min(1e-6)
    f = (features - mean) / std
    k = int(y.max()) + 1
    weight = torch.zeros((f.shape[1], k), requires_grad=True)
    bias = torch.zeros(k, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(f[:half] @ weight + bias, y[:half]) + 1e-3 * (weight ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return float(((f[half:] @ weight + bias).argmax(-1) == y[half:]).float().mean())


def elbo_gradients(pair, batch: Batch, params: list, draws: int) -> torch.Tensor:
    """The ELBO's gradient on ``params``, one row per draw on the same ``batch``, in the
    direction the ELBO term moves them."""
    samples = []
    for _ in range(draws):
        pair.zero_grad(set_to_none=True)
        pair.elbo.loss_and_grads(pair.model, pair.guide, batch)
        samples.append(-flat_grad(params))
    pair.zero_grad(set_to_none=True)
    return torch.stack(samples)


def run_data(settings, dataset: str | None) -> data_lib.Dataset:
    """The data a run was trained on (its --dataset, its split), or ``dataset`` instead."""
    return data_lib.load(dataset or settings.dataset, settings.data_dir, settings.seed)


def step_gradients(pair, batch: Batch, params: list, draws: int, clips: list[float]
                   ) -> dict[str, torch.Tensor]:
    """The training step's whole gradient (ELBO and classifier term) on ``params``, one
    row per draw, raw and as the step applies it after ``--clip-norm c`` for each c
    (the global norm over all parameters capped at c per image); and each draw's global
    norm per image."""
    rows: dict[str, list] = {"raw": [], "norm": [], **{f"clip{c:g}": [] for c in clips}}
    everything = [p for p in pair.parameters() if p.requires_grad]
    for _ in range(draws):
        pair.zero_grad(set_to_none=True)
        pair.loss_and_grads(batch, step=10**6)
        norm = float(torch.cat([g.grad.flatten() for g in everything if g.grad is not None]).norm())
        rows["norm"].append(torch.tensor(norm / batch.size))
        raw = -flat_grad(params)
        rows["raw"].append(raw)
        for c in clips:
            rows[f"clip{c:g}"].append(raw * min(1.0, c * batch.size / norm))
    pair.zero_grad(set_to_none=True)
    return {name: torch.stack(v) for name, v in rows.items()}


def signal_and_noise(v: torch.Tensor) -> tuple[float, float]:
    """(|mean draw|, root-mean-square deviation of one draw) of draws ``v`` (N, P)."""
    return float(v.mean(0).norm()), float(((v - v.mean(0)) ** 2).sum(-1).mean().sqrt())


def shared_signal(run: Path, draws: int, dataset: str | None = None,
                  clips: list[float] | None = None) -> dict:
    """At a trained run's best weights, on one training batch: the root-mean-square
    deviation of one draw of the classifier's ELBO gradient, for the unlabelled images
    alone and with the labelled ones in the same ELBO call. Trace_ELBO adds the log-ratio
    terms of every plate an unobserved site is not in to its learning signal, so with the
    labelled images beside them each unlabelled y's score-function term also carries
    the labelled batch's terms; apart, only its own image's (as the original's were).

    ``classifier_term_norm`` is the norm of the classifier term's gradient on the same
    parameters (the objective's supervised part), to set beside the unlabelled images'
    mean gradient (``unlabelled_alone_mean_norm``): what each part pulls with.

    With ``clips``, also the training step's whole gradient on the classifier (the
    objective as the loop calls it), raw and clipped at each ``--clip-norm``: the norm
    of its mean, one draw's deviation, their ratio, and how often the clip acts."""
    from ppl_ssvae.run import load_run

    loaded = load_run(run)
    pair, settings = loaded.pair, loaded.settings
    data = run_data(settings, dataset)
    labelled = data_lib.balanced_labels(data.train.y, settings.labels, data.num_classes,
                                        settings.seed)
    g = torch.Generator().manual_seed(1)
    batch = draw_batch(data, labelled, settings, torch.randperm(len(data.train), generator=g),
                       0, g)
    params = classifier_parameters(pair, data.valid.x[:8])
    unlabelled = Batch(x_u=batch.x_u, n_u=batch.n_u, idx_u=batch.idx_u)
    labelled_part = Batch(x_l=batch.x_l, y_l=batch.y_l, n_l=batch.n_l, idx_l=batch.idx_l)
    pair.train()
    pyro.set_rng_seed(0)
    alone = elbo_gradients(pair, unlabelled, params, draws)
    together = elbo_gradients(pair, batch, params, draws)
    on_labelled = elbo_gradients(pair, labelled_part, params, draws)  # its own share, as a check
    deviation = {name: float(((v - v.mean(0)) ** 2).sum(-1).mean().sqrt())
                 for name, v in (("alone", alone), ("together", together),
                                 ("labelled_part", on_labelled))}
    pair.zero_grad(set_to_none=True)
    pair.classifier_loss(batch).backward()  # the supervised term, in the direction it moves
    classifier_term = float(flat_grad(params).norm())
    pair.zero_grad(set_to_none=True)
    measured = {"draws": draws, "unlabelled_alone_rms_deviation": deviation["alone"],
                "classifier_term_norm": classifier_term,
                "with_labelled_rms_deviation": deviation["together"],
                "labelled_part_alone_rms_deviation": deviation["labelled_part"],
                "unlabelled_alone_mean_norm": float(alone.mean(0).norm())}
    if clips:  # the step as the optimiser sees it, before and after clipping
        step = step_gradients(pair, batch, params, draws, clips)
        measured["step_norm_per_image_median"] = float(step["norm"].median())
        for name in ("raw", *(f"clip{c:g}" for c in clips)):
            mean_norm, rms = signal_and_noise(step[name])
            measured[f"step_{name}"] = {"mean_norm": mean_norm, "rms_deviation": rms,
                                        "signal_to_noise": mean_norm / rms}
            if name != "raw":
                c = float(name[4:])
                measured[f"step_{name}"]["clipped_fraction"] = float((step["norm"] > c).float().mean())
    return measured


def code_of_runs(runs: list[Path], valid: int, dataset: str | None = None) -> dict:
    """where_the_class_is (class_code for the logistic-normal prior, auxiliary_use for
    the ADGM) of each run at its best-validation and its last weights, on the first
    ``valid`` validation images of its own data (or of ``dataset``)."""
    from ppl_ssvae.run import RunError, load_run

    settings = {}
    for run in runs:  # every run checked before the data are loaded
        settings[run] = load_run(run, which="last").settings
        if not (run / "summary.json").is_file():
            raise RunError(f"{run} has no summary.json: let its training finish (or resume it) "
                           f"first")
    loaded_data = {}  # each data set loaded once
    measured = {}
    for run in runs:
        s = settings[run]
        source = (dataset or s.dataset, s.data_dir, s.seed)
        if source not in loaded_data:
            loaded_data[source] = run_data(s, dataset)
        data = loaded_data[source]
        x, y = data.valid.x[:valid], data.valid.y[:valid]
        summary = json.loads((run / "summary.json").read_text())
        kept = ("best", "last") if (run / "best.pt").is_file() else ("last",)  # older runs
        if summary.get("best_epoch") == summary.get("epochs_trained"):
            kept = kept[:1]  # the best epoch is the last: the same weights
        for which in kept:
            loaded = load_run(run, which=which)
            torch.manual_seed(0)
            epoch = summary.get("best_epoch" if which == "best" else "epochs_trained")
            code = (class_code if hasattr(loaded.pair.guide, "scores") else
                    auxiliary_use if hasattr(loaded.pair.guide, "encode_a") else where_the_class_is)
            measured[f"{run} ({which})"] = {
                "epoch": epoch, **code(loaded.pair, x, y)}
    return measured
