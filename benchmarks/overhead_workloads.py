"""Workloads for isolation_overhead.py (a module of their own so the child imports them by name)."""

from __future__ import annotations


def trivial(ctx) -> None:
    with ctx.window():
        pass
    ctx.record(output_tokens=1)


def compute(ctx) -> None:
    with ctx.window():
        total = 0
        for i in range(6_000_000):
            total += i * i
    ctx.record(output_tokens=1, total=total)
