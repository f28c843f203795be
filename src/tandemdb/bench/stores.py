"""One benchmark with the control plane on each store asked for, side by side in one run.

`tandem bench switchover|failover --store sqlite,etcd` runs the same measurement on a fresh
deployment per store (docs/deploy.md: `sqlite` is one controller on its own file, `etcd` a
3-member cluster with a controller per site). Rounds alternate the stores (sqlite, etcd,
sqlite, etcd, …) so that whatever else loads the machine weighs on both alike. Each run
prints its own JSON line, marked with its `store`; with two stores one more line compares
them: the median of each main figure over the rounds, per store, and etcd / sqlite.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator, Sequence

from tandemdb.common.layout import ETCD, SQLITE, Shape

STORES = (SQLITE, ETCD)


def parse_stores(text: str) -> list[str]:
    """`sqlite`, `etcd` or `sqlite,etcd` (either order) as a list; ValueError otherwise."""
    stores = [part.strip() for part in text.split(",")]
    if any(s not in STORES for s in stores) or len(set(stores)) != len(stores):
        raise ValueError(f"--store must be sqlite, etcd, or both as sqlite,etcd; not {text!r}")
    return stores


def shape(store: str) -> Shape:
    """The control plane `tandem up --store STORE` would run (its defaults otherwise)."""
    return Shape.parse(store)


def side_by_side(run: Callable[..., dict], stores: Sequence[str], rounds: int,
                 figures: Sequence[str], progress: Callable[[str], None] | None = None,
                 goal_ratio: float | None = None, **options: object) -> Iterator[dict]:
    """Every run's result as it ends (alternating stores, `rounds` times), then, with two
    stores, the comparison of `figures` (see `compare`). `run(store=…, progress=…,
    **options)` is one benchmark on a deployment of its own. A generator, so that a run
    that fails late does not take the lines of those before it along."""
    say = progress or (lambda _m: None)
    lines = []
    for k in range(1, rounds + 1):
        for store in stores:
            where = f"{store}, round {k}/{rounds}" if rounds > 1 else store
            result = run(store=store, progress=lambda m, w=where: say(f"[{w}] {m}"),
                         **options)
            lines.append({**result, "round": k} if rounds > 1 else result)
            yield lines[-1]
    if len(stores) > 1:
        yield compare(lines, figures, goal_ratio)


def compare(results: Sequence[dict], figures: Sequence[str],
            goal_ratio: float | None = None) -> dict:
    """Per figure: each store's median over its runs, and etcd / sqlite (null when either
    is missing). With `goal_ratio`, whether the first figure's ratio is within it."""
    line: dict = {"bench": results[0]["bench"], "comparison": f"{ETCD}/{SQLITE}",
                  "rounds": sum(r["store"] == SQLITE for r in results)}
    for figure in figures:
        medians = {store: _median([r.get(figure) for r in results if r["store"] == store])
                   for store in STORES}
        line[f"{figure}_{SQLITE}"] = medians[SQLITE]
        line[f"{figure}_{ETCD}"] = medians[ETCD]
        line[f"{figure}_ratio"] = ratio(medians[ETCD], medians[SQLITE])
    if goal_ratio is not None:
        main = line[f"{figures[0]}_ratio"]
        line["goal_ratio"] = goal_ratio
        line[f"{figures[0]}_within_goal"] = None if main is None else main <= goal_ratio
    return line


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b to three places; None when either is unknown or b is 0."""
    return None if a is None or not b else round(a / b, 3)


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if isinstance(v, int | float)]
    return round(statistics.median(known), 3) if known else None
