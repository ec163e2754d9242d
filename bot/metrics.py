"""Counters and latency histograms of this instance, exposed in the Prometheus text format at /metrics."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Mapping

from bot.contracts import Reply

# Seconds; chosen around what a turn costs here: guards (sub-ms to ms) up to a small LLM on a CPU (seconds).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Reply.latency_ms keys that are stages of the turn; the others, `guard.<name>`, are single plugins.
STAGES = ("guards_in", "queued", "retrieval", "guards_passages", "first_token", "generation", "guards_out", "total")

Labels = tuple[tuple[str, str], ...]


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    escaped = (v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for _, v in labels)
    return "{" + ",".join(f'{k}="{v}"' for (k, _), v in zip(labels, escaped, strict=True)) + "}"


class Metrics:
    """Thread-safe counters and histograms; one per app (never global)."""

    HELP = {
        "servicebot_turns_total": ("counter", "Answered turns, by channel and outcome (answered, refused, handoff)."),
        "servicebot_refusals_total": ("counter", "Turns refused, by the plugin whose verdict blocked them."),
        "servicebot_handoffs_total": ("counter", "Conversations handed to a human, by how (guard, button)."),
        "servicebot_feedback_total": ("counter", "Customer ratings of answers, by rating (up, down)."),
        "servicebot_errors_total": ("counter", "Turns that failed on our side, by channel."),
        "servicebot_http_requests_total": ("counter", "HTTP API requests, by route and status code."),
        "servicebot_rate_limited_total": ("counter", "Requests refused by a rate limit, by limit (ip, session)."),
        "servicebot_stage_seconds": ("histogram", "Time per turn stage (guards_in, retrieval, generation, ...)."),
        "servicebot_plugin_seconds": ("histogram", "Time spent in each guard plugin per turn."),
    }

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._histograms: dict[str, dict[Labels, _Histogram]] = defaultdict(dict)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add to a counter."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._counters[name][key] = self._counters[name].get(key, 0.0) + amount

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        """Record one duration in a histogram."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._histograms[name].setdefault(key, _Histogram()).observe(seconds)

    def count(self, name: str, **labels: str) -> float:
        """A counter's current value (0 when never incremented)."""
        with self._lock:
            return self._counters[name].get(tuple(sorted(labels.items())), 0.0)

    def record_reply(self, reply: Reply, channel: str) -> None:
        """Count one finished turn and its latencies."""
        outcome = "handoff" if reply.handoff else "refused" if reply.refused else "answered"
        self.inc("servicebot_turns_total", channel=channel, outcome=outcome)
        if reply.refused:
            blocker = next((v.plugin for v in reply.verdicts if v.blocked), "policy")
            self.inc("servicebot_refusals_total", plugin=blocker)
        if reply.handoff:
            self.inc("servicebot_handoffs_total", via="turn")
        self.record_latency(reply.latency_ms)

    def record_latency(self, latency_ms: Mapping[str, float]) -> None:
        """Histogram a reply's stage timings and per-plugin timings (`guard.<name>` keys)."""
        for key, ms in latency_ms.items():
            if key.startswith("guard."):
                self.observe("servicebot_plugin_seconds", ms / 1000, plugin=key.removeprefix("guard."))
            elif key in STAGES:
                self.observe("servicebot_stage_seconds", ms / 1000, stage=key)

    def render(self) -> str:
        """Everything in the Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []
        with self._lock:
            for name, (kind, text) in self.HELP.items():
                lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                for labels, value in sorted(self._counters.get(name, {}).items()):
                    lines.append(f"{name}{_labels(labels)} {value:g}")
                for labels, hist in sorted(self._histograms.get(name, {}).items()):
                    running = 0
                    for bound, count in zip((*BUCKETS, float("inf")), hist.counts, strict=True):
                        running += count
                        le = "+Inf" if bound == float("inf") else f"{bound:g}"
                        lines.append(f"{name}_bucket{_labels((*labels, ('le', le)))} {running}")
                    lines.append(f"{name}_sum{_labels(labels)} {hist.sum:.6f}")
                    lines.append(f"{name}_count{_labels(labels)} {running}")
        return "\n".join(lines) + "\n"
