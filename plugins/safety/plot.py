"""Draws the safety Pareto front: attack success against over-refusal, current operating point marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pareto_front(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Points no other point beats on both objectives (lower is better on each)."""
    return sorted(
        (
            p
            for p in points
            if not any(
                q["attack_success"] <= p["attack_success"]
                and q["over_refusal"] <= p["over_refusal"]
                and (q["attack_success"], q["over_refusal"]) != (p["attack_success"], p["over_refusal"])
                for q in points
            )
        ),
        key=lambda p: p["over_refusal"],
    )


def pareto_plot(points: list[dict[str, Any]], path: Path) -> None:
    """Write the plot as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    ax.scatter(
        [p["over_refusal"] * 100 for p in points],
        [p["attack_success"] * 100 for p in points],
        color="#8aa",
        label="threshold settings",
    )
    for p in points:
        ax.annotate(
            f"t={p['threshold']:.2f}",
            (p["over_refusal"] * 100, p["attack_success"] * 100),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=7,
        )
    front = pareto_front(points)
    ax.plot(
        [p["over_refusal"] * 100 for p in front],
        [p["attack_success"] * 100 for p in front],
        color="#264",
        label="Pareto front",
    )
    for p in points:
        if p.get("current"):
            ax.scatter(
                [p["over_refusal"] * 100],
                [p["attack_success"] * 100],
                s=140,
                marker="*",
                color="#d22",
                label="current operating point",
                zorder=5,
            )
    ax.set_xlabel("over-refusal of benign prompts (%)")
    ax.set_ylabel("attack success, mean over families (%)")
    ax.set_title("servicebot guards: safety vs helpfulness")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
