"""Reading one data set's results and judging each claim on it: a `Cell` per (claim, data set).

A cell is a verdict (`validation.claims.verdict`, against `validation.claims.reference`), "not
converged" (a training run behind the measurement missed its target: no verdict), or "not
measured". `validation.report` lays the cells out as one row per claim and one column per data
set; `validation.tables` shows one data set's cells with both views.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from validation.claims import CLAIMS, DOES_NOT, NOT_CONVERGED, NOT_MEASURED, VERDICTS, Claim, Published, reference, verdict

Records = dict[str, dict[str, Any]]  # {experiment: record} of one data set


def format_stat(stat: Any, digits: int = 2) -> str:
    """'0.94 +- 0.01 (n=3)', with the bootstrap 95% interval where the measurement has one."""
    if not isinstance(stat, dict) or stat.get("mean") is None:
        return "-"
    text = f"{stat['mean']:.{digits}f} +- {stat['std']:.{digits}f} (n={stat['n']}"
    interval = stat.get("interval")
    if interval:
        text += f"; 95% [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"
    return text + ")"


def ok(records: Records) -> Records:
    """The records of the experiments that did not fail."""
    return {n: r for n, r in records.items() if "error" not in r["results"]}


def _walk(records: Records, path: Sequence[str] | None, key: str | None = None) -> Any:
    """The node at `path` (key None), or the deepest value of `key` in the dicts along `path`."""
    if path is None or path[0] not in records:
        return None
    node: Any = records[path[0]]["results"]
    found = node.get(key) if key is not None and isinstance(node, dict) else None
    for step in path[1:]:
        if not isinstance(node, dict) or step not in node:
            return None if key is None else found
        node = node[step]
        if key is not None and isinstance(node, dict) and key in node:
            found = node[key]
    return node if key is None else found


def runs_of(records: Records) -> list[dict[str, Any]]:
    """Every training run the data set's experiments used, once each (per-arm table rows)."""
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    for record in records.values():
        for run in record.get("runs", []):
            seen.setdefault((run["arm"], int(run["seed"])), run)
    return sorted(seen.values(), key=lambda r: (r["arm"], r["seed"]))


# -------------------------------------------------------------------------------------------------
# one cell: a claim on one data set


@dataclass
class Cell:
    claim: Claim
    data: str                      # the data set's slug
    verdict: str                   # one of claims.VERDICTS, NOT_CONVERGED or NOT_MEASURED
    ours: dict[str, Any] | None    # mean +- std over seeds (init-subtracted view)
    raw: dict[str, Any] | None
    reference: Published | None    # the published number the verdict compares with
    note: str = ""                 # why not measured / not converged / fits left out

    @property
    def text(self) -> str:
        """What the claims table shows for this cell."""
        if self.verdict == NOT_MEASURED:
            return "not measured" + (f": {self.note}" if self.note else "")
        if self.verdict == NOT_CONVERGED:
            return f"not converged ({self.note})"
        if self.ours is None or self.ours.get("mean") is None:  # every fit flagged
            return f"{self.note}: {self.verdict}"
        prefix = "frozen - learned: " if self.claim.kind == "accuracy_gap" else ""
        note = f"; {self.note}" if self.note else ""
        return f"{prefix}{format_stat(self.ours, 3 if self.claim.kind == 'accuracy_gap' else 2)}{note}: {self.verdict}"


def evaluate(claim: Claim, slug: str, records: Records) -> Cell:
    """The cell of `claim` on one data set (module docstring; rules in `validation.claims`)."""
    records = ok(records)
    if claim.source is None:
        return Cell(claim, slug, NOT_MEASURED, None, None, None, claim.reason)
    ours, raw = _walk(records, claim.source), _walk(records, claim.raw_source)
    ours = ours if isinstance(ours, dict) else None
    raw = raw if isinstance(raw, dict) else None
    if ours is None:
        found = records.get(claim.source[0], {}).get("results", {})
        note = (found.get("note") if found.get("skipped") else found.get("not_measured", {}).get(claim.source[1])
                or "its experiment is not in these results")
        return Cell(claim, slug, NOT_MEASURED, None, raw, None, note)
    arms = set(_walk(records, claim.source, "arms") or [])
    used = [r for r in runs_of(records) if r["arm"] in arms]
    missed = [r for r in used if not r.get("converged", True)]
    if missed:
        return Cell(claim, slug, NOT_CONVERGED, ours, raw, None, f"{len(missed)} of {len(used)} runs")
    flagged, fits = _walk(records, claim.source, "flagged") or 0, _walk(records, claim.source, "fits") or 0
    note = f"{flagged} of {fits} fits at the search bound or degenerate, left out" if flagged else ""
    if ours.get("mean") is None:
        if flagged:  # every fit flagged: no agreement
            return Cell(claim, slug, DOES_NOT, ours, raw, None, f"no valid fit ({note})")
        return Cell(claim, slug, NOT_MEASURED, ours, raw, None, "no value (e.g. no test split)")
    dataset = next(iter(records.values()))["data"].get("paper_dataset") if records else None
    ref = reference(claim, dataset, float(ours["mean"]))
    value = None if ref is None else ref.value
    text = verdict(ours["mean"], value, None if ref is None else ref.spread, kind=claim.kind)
    return Cell(claim, slug, text, ours, raw, ref, note)


def claim_cells(results: dict[str, Records]) -> list[tuple[Claim, dict[str, Cell]]]:
    """For each claim (one row), its cell on each data set (one column)."""
    return [(claim, {slug: evaluate(claim, slug, records) for slug, records in results.items()}) for claim in CLAIMS]


def tally(rows: list[tuple[Claim, dict[str, Cell]]]) -> dict[str, int]:
    """How many (claim, data set) pairs got each verdict, and how many were not converged / not measured."""
    cells = [cell for _, by_data in rows for cell in by_data.values()]
    return {v: sum(c.verdict == v for c in cells) for v in (*VERDICTS, NOT_CONVERGED, NOT_MEASURED)}


def tally_line(counts: dict[str, int]) -> str:
    measured = sum(counts[v] for v in VERDICTS)
    return (f"Tally over the {measured} (claim, data set) pairs with a verdict: "
            + ", ".join(f"{counts[v]} {v}" for v in VERDICTS)
            + f"; without a verdict: {counts[NOT_CONVERGED]} not converged, {counts[NOT_MEASURED]} not measured.")


def claims_table(rows: list[tuple[Claim, dict[str, Cell]]], slugs: list[str]) -> list[str]:
    """One row per claim, one column per data set, the paper's numbers with their own data sets."""
    lines = ["| claim | paper (its own data set) | " + " | ".join(f"ours: {s}" for s in slugs) + " |",
             "|---|---|" + "---|" * len(slugs)]
    for claim, by_data in rows:
        lines.append(f"| {claim.claim} | {claim.paper_text} | " + " | ".join(by_data[s].text for s in slugs) + " |")
    return lines


