"""Task-family mixtures: a named mixture's target shares -> per-family weights -> a sample's entries.

A recipe states the share of training entries each task family should have in a
named shard mixture (``[instruct.mixtures.<name>] shares = {caption = 33.7, ...}``,
GMAI-VL's stage proportions). What a corpus *has* per family rarely matches, so each
family gets a weight ``w_f = share_f * N / n_f`` (``n_f`` its entries, ``N`` all
entries of the families the mixture takes): weighted counts then hit the shares
while the total stays ``N``. A weight of 0.4 keeps a seeded 40% of that family's
entries, 2.5 writes each twice and a seeded half a third time. A family with a
share but no entries cannot be reached; its share is reported as such and the
others are rescaled.

The shard stage calls :func:`family_weights` once per mixture and
:func:`select_entries` per sample; :func:`mixture_table` is what the build summary
and the report print.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from curator.adapters.base import short_hash
from curator.config import TASK_FAMILIES, InstructMixture


def family_counts(
    con,
    splits: tuple[str, ...] = ("train",),
    source_weights: Mapping[str, float] | None = None,
    default_weight: float = 1.0,
):
    """Entries per family in ``splits``; with ``source_weights``, each sample counts its source's weight
    (``default_weight`` for a source not listed)."""
    rows = con.execute(
        """
        SELECT i.family, c.source_id, count(*) FROM instructions i
        JOIN members c ON c.sample_id = i.sample_id AND c.canonical
        WHERE list_contains(?, i.split) GROUP BY 1, 2
        """,
        [list(splits)],
    ).fetchall()
    counts = dict.fromkeys(TASK_FAMILIES, 0.0)
    for family, source, n in rows:
        counts[family] = counts.get(family, 0.0) + n * (
            1.0 if source_weights is None else source_weights.get(source, default_weight)
        )
    return counts


def family_weights(counts: Mapping[str, float], shares: Mapping[str, float]) -> dict[str, float]:
    """Weight per family so that the weighted entry counts have the target shares (total unchanged)."""
    reachable = {f: s for f, s in shares.items() if s > 0 and counts.get(f, 0) > 0}
    total = sum(counts.get(f, 0) for f in reachable)
    norm = sum(reachable.values())
    weights = dict.fromkeys(TASK_FAMILIES, 0.0)
    for family, share in reachable.items():
        weights[family] = share / norm * total / counts[family]
    return weights


def plan_mixture(counts: Mapping[str, float], shares: Mapping[str, float]) -> list[dict]:
    """Per family: entries available, target share, weight, expected entries and the share they give."""
    weights = family_weights(counts, shares)
    target_norm = sum(shares.values()) or 1.0
    expected = {f: counts.get(f, 0) * weights[f] for f in TASK_FAMILIES}
    total = sum(expected.values()) or 1.0
    return [
        {
            "family": f,
            "entries": int(counts.get(f, 0)),
            "target_percent": round(100 * shares.get(f, 0) / target_norm, 1),
            "weight": round(weights[f], 3),
            "expected_entries": round(expected[f]),
            "percent": round(100 * expected[f] / total, 1),
            "note": "no entries: share not reachable" if shares.get(f, 0) > 0 and not counts.get(f, 0) else "",
        }
        for f in TASK_FAMILIES
    ]


def mixture_table(con, mixtures: Mapping[str, InstructMixture], splits: tuple[str, ...] = ("train",)) -> list[dict]:
    """:func:`plan_mixture` of every named mixture (over the train split), one row per mixture and family."""
    if not mixtures:
        return []
    counts = family_counts(con, splits)
    return [{"mixture": name, **row} for name, m in sorted(mixtures.items()) for row in plan_mixture(counts, m.shares)]


def select_entries(entries: list[dict], weights: Mapping[str, float], seed: int, mixture: str, sample_id: str):
    """A sample's entries in one mixture: ``floor(w)`` copies of each, one more with probability ``w - floor(w)``.

    Seeded by (seed, mixture, sample_id): the same sample gets the same entries in every
    run, whatever order samples are visited in.
    """
    rng = np.random.default_rng([seed, int(short_hash(mixture, sample_id, n=16), 16)])
    out = []
    for e in entries:
        w = weights.get(e["family"], 0.0)
        whole = math.floor(w)
        draw = rng.random()  # drawn for every entry, so one family's weight never shifts another's draws
        out += [e] * (whole + (draw < w - whole))
    return out
