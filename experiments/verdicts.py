"""The verdicts of the time-budget comparison (``experiments.timebudget``): what each
target measures at a panel's K, with its numbers, and at the K where it is set whether it
holds. The original's thesis (a relaxed M2 as accurate as the exact sum at a fraction of
the time), issue 22's targets for the new estimators and issue 23's for the models with
structure."""

from __future__ import annotations

EXACT = "m2/enum"  # the exact sum, the reference of every panel
RELAXED = "m2/gumbel-cat-kl"
NEW_ESTIMATORS = ("m2/sum-and-sample", "m2/rloo", "m2/unordered-set", "m2/gumbel-rao")
TARGET_CLASSES = 100  # the targets are set at K = 100; at other K the same numbers, unjudged
AT_LEAST = "at least the exact sum's accuracy"
# issue 23's references at K = 10 (MNIST, 100 labels): M2's exact sum over 3 seeds and 30
# epochs (the reproduction's row, test accuracy), and Kingma et al.'s stacked M1+M2
M2_TEST_K10, M2_TEST_K10_SD, M1_M2_TEST = 95.01, 0.61, 96.67


def targets(panel: dict, budget: float) -> list[str]:
    """What the targets measure, at this panel's K, with numbers; at K = 100, where they
    are set (TARGET_CLASSES), each is said to hold or not."""
    methods, exact = panel["methods"], panel["methods"].get(EXACT)
    relaxed = {key: m for key, m in methods.items()  # M2's relaxations: the original's thesis
               if key.startswith("m2/") and "gumbel" in key and key not in NEW_ESTIMATORS}
    if not exact or exact["final_accuracy"] is None:
        return []
    k, final = panel["classes"], exact["final_accuracy"]
    judged = k == TARGET_CLASSES

    def verdict(text: str, holds: bool) -> str:
        return f": the target of {text} {'holds' if holds else 'does not hold'}." if judged else "."

    lines = _relaxed_targets(relaxed, k, final, budget, verdict) if relaxed else []
    lines += _new_estimator_targets(methods, k, final, budget, verdict)
    lines += _structure_targets(methods, k, verdict)
    if not all(m["complete"] for m in methods.values()):  # a run still going
        lines = [f"{line} (So far: some of these runs have not used their budget yet.)"
                 for line in lines]
    return lines


def _relaxed_targets(relaxed: dict, k: int, final: float, budget: float, verdict) -> list[str]:
    """The original's targets: a relaxed method reaches the exact sum's final accuracy in
    1/5 of the budget, and one ends at least at it."""
    timed = {key: m["seconds_to_100"] for key, m in relaxed.items()
             if m["seconds_to_100"] is not None}
    lines = []
    if timed:
        fastest = min(timed, key=timed.get)
        share = timed[fastest] / budget
        bound = ("at most ", " (its first measurement)") if relaxed[fastest].get(
            "seconds_to_100_is_bound") else ("", "")
        lines.append(f"K = {k}: {fastest} reaches the exact sum's final accuracy "
                     f"({100 * final:.1f}%) in {bound[0]}{timed[fastest]:,.0f} s{bound[1]}, "
                     f"{share:.2f} of the budget{verdict('at most 1/5', share <= 0.2)}")
    else:
        lines.append(f"K = {k}: no relaxed method reaches the exact sum's final accuracy "
                     f"({100 * final:.1f}%) within the budget in every seed"
                     f"{verdict('at most 1/5 of the budget', False)}")
    best = max(relaxed, key=lambda key: relaxed[key]["final_accuracy"] or 0.0)
    gap = 100 * ((relaxed[best]["final_accuracy"] or 0.0) - final)
    lines.append(f"K = {k}: the best relaxed method, {best}, ends at "
                 f"{100 * (relaxed[best]['final_accuracy'] or 0.0):.1f}%, {gap:+.1f} points from the "
                 f"exact sum{verdict(AT_LEAST, gap >= 0)}")
    return lines


def _new_estimator_targets(methods: dict, k: int, final: float, budget: float, verdict) -> list[str]:
    """Issue 22's targets for the new estimators: at K = 100 the best of them reaches the
    exact sum's final accuracy in 1/10 of the budget and ends above Gumbel-Softmax; at
    K = 10 sum-and-sample ends at or above the exact sum and reaches 95% validation
    before every other method."""
    new = {key: m for key, m in methods.items() if key in NEW_ESTIMATORS and m["final_accuracy"]}
    if not new:
        return []
    best = max(new, key=lambda key: new[key]["final_accuracy"])
    lines = []
    if k == TARGET_CLASSES:
        seconds = new[best]["seconds_to_100"]
        fast = seconds is not None and seconds <= budget / 10
        reached = ("never reaches the exact sum's final accuracy" if seconds is None else
                   f"reaches the exact sum's final accuracy in {seconds:,.0f} s")
        relaxed = methods.get(RELAXED, {}).get("final_accuracy")
        above = relaxed is not None and new[best]["final_accuracy"] > relaxed
        lines.append(f"K = {k}: the best new estimator, {best}, ends at "
                     f"{100 * new[best]['final_accuracy']:.1f}% and {reached} "
                     f"({100 * final:.1f}%)" + verdict("1/10 of the budget", fast).rstrip(".")
                     + (f"; against {RELAXED}'s {100 * relaxed:.1f}%"
                        + verdict("ending above it", above) if relaxed is not None else "."))
        return lines
    sas = methods.get("m2/sum-and-sample")
    if sas and sas["final_accuracy"] is not None:
        others = {key: m["seconds_to_95_valid"] for key, m in methods.items()
                  if key != "m2/sum-and-sample" and m["seconds_to_95_valid"] is not None}
        mine = sas["seconds_to_95_valid"]
        first = mine is not None and all(mine < t for t in others.values())
        fastest = min(others, key=others.get) if others else None
        holds = first and sas["final_accuracy"] >= final
        # issue 22 sets this target at K = 10 itself: it is judged here
        lines.append(f"K = {k}: m2/sum-and-sample ends at {100 * sas['final_accuracy']:.1f}% "
                     f"(exact sum {100 * final:.1f}%) and reaches 95% validation "
                     + ("never" if mine is None else f"in {mine:,.0f} s")
                     + (f" (fastest other: {fastest}, {others[fastest]:,.0f} s)" if fastest
                        else "")
                     + f": the target of ending at or above the exact sum and reaching 95% "
                     f"first {'holds' if holds else 'does not hold'}.")
    return lines


def _structure_targets(methods: dict, k: int, verdict) -> list[str]:
    """Issue 23's targets at K = 100: the two-digit model at 85% or more and 10 points or
    more above its supervised baseline (two-digit-mlp); the hierarchical model's exact-sum
    step at most twice M2's Gumbel-Softmax step, and its final accuracy above every flat
    M2 method's. Each model is judged on the best of its rows and configs (another
    classifier weight is the same model)."""
    lines = []
    baseline = methods.get("two-digit-mlp/ml", {}).get("final_accuracy")
    best = _best(methods, "two-digit", but="two-digit-mlp")  # not its baseline
    if best:
        final = methods[best]["final_accuracy"]
        line = (f"K = {k}: the two-digit model, {best}, ends at {100 * final:.1f}%"
                + _alone(methods[best]) + verdict("85% or more", final >= 0.85).rstrip("."))
        if baseline is not None:
            gain = 100 * (final - baseline)
            line += (f"; its supervised baseline two-digit-mlp/ml ends at {100 * baseline:.1f}%, "
                     f"{gain:+.1f} points" + verdict("10 points or more", gain >= 10))
        lines.append(line if line.endswith(".") else line + ".")
    name, relaxed = _best(methods, "hierarchical"), methods.get(RELAXED)
    hierarchical = methods.get(name)
    if hierarchical and k != TARGET_CLASSES:
        return lines + _hierarchical_at_k10(methods, name, k)
    if hierarchical:
        flat = {key: m["final_accuracy"] for key, m in methods.items()
                if key.startswith("m2/") and m["final_accuracy"] is not None}
        line = (f"K = {k}: the hierarchical model, {name}, ends at "
                f"{100 * hierarchical['final_accuracy']:.1f}%" + _alone(hierarchical))
        if flat:
            top = max(flat, key=flat.get)
            line += (f" (best flat M2: {top}, {100 * flat[top]:.1f}%)"
                     + verdict("above every flat M2", hierarchical["final_accuracy"] > flat[top])
                     .rstrip("."))
        if relaxed and hierarchical["step_seconds"] and relaxed["step_seconds"]:
            ratio = hierarchical["step_seconds"] / relaxed["step_seconds"]
            line += (f"; its exact-sum step costs {ratio:.2f} times {RELAXED}'s"
                     + verdict("at most 2 times", ratio <= 2).rstrip("."))
        lines.append(line + ".")
    return lines


def _best(methods: dict, model: str, but: str | None = None) -> str | None:
    """The row of ``model`` (its rows ``model/...`` and its configs ``model-...``, but not
    those that start with ``but``) that ends highest, or None if none has ended."""
    rows = {key: m["final_accuracy"] for key, m in methods.items()
            if key.startswith(model) and not (but and key.startswith(but))
            and m["final_accuracy"] is not None}
    return max(rows, key=rows.get) if rows else None


def _alone(row: dict) -> str:
    """Said of a row measured on one seed so far."""
    seeds = row["seeds"]
    return f" (seed {', '.join(map(str, seeds))} alone so far)" if len(seeds) < 2 else ""


def _hierarchical_at_k10(methods: dict, name: str, k: int) -> list[str]:
    """Issue 23 at K = 10: the hierarchical model's test accuracy (at its best validation
    weights) beside M2's and Kingma et al.'s M1+M2, and its time to 95% validation beside
    the other methods'."""
    hierarchical = methods[name]
    test = hierarchical.get("test_accuracy")
    if test is None:
        return []
    spread = hierarchical.get("test_accuracy_sd")
    line = (f"K = {k}: {name}'s test accuracy is {100 * test:.2f}%"
            + (f" ± {100 * spread:.2f}" if spread is not None else "")
            + f" (at its best validation weights, seeds {', '.join(map(str, hierarchical['seeds']))}),"
            f" beside M2's exact sum {M2_TEST_K10} ± {M2_TEST_K10_SD} (30 epochs, the "
            f"reproduction) and Kingma et al.'s M1+M2 {M1_M2_TEST}")
    others = {key: m["seconds_to_95_valid"] for key, m in methods.items()
              if key != name and m["seconds_to_95_valid"] is not None}
    mine = hierarchical["seconds_to_95_valid"]
    line += ("; it reaches 95% validation " + (f"in {mine:,.0f} s" if mine is not None else
                                                "in none of its seeds' budgets"))
    if others:
        fastest = min(others, key=others.get)
        line += f" (the fastest other method, {fastest}: {others[fastest]:,.0f} s)"
    return [line + "."]
