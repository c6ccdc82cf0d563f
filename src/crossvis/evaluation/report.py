"""Readable tables of evaluation results."""

from __future__ import annotations

from crossvis.evaluation.ytvis_eval import STAT_NAMES, EvalResult


def format_metrics(result: EvalResult, per_category: bool = True) -> str:
    """The 12 stats (in %), per-category AP and the identity diagnostics as text."""
    lines = [
        "  ".join(f"{k:>6s}" for k in STAT_NAMES),
        "  ".join(
            f"{100 * result.stats[k]:6.2f}" if result.stats[k] >= 0 else f"{'-':>6s}" for k in STAT_NAMES
        ),
    ]
    if per_category and result.per_category:
        lines.append("per-category AP:")
        for name, ap in result.per_category.items():
            lines.append(
                f"  {name:24s} {100 * ap:6.2f}" if ap >= 0 else f"  {name:24s}      - (no ground truth)"
            )
    if result.identity:
        i = result.identity
        lines.append(
            f"identity switches: {i['id_switches']}  fragmentations: {i['fragmentations']}  "
            f"(over {i['gt_tracks']} GT tracks)"
        )
    return "\n".join(lines)
