"""What the charts plot: one point per experiment, its line (the settings that tell it from
the other lines), short names, a colour per line."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from pytest_llem.base.digests import canonical_json, json_digest
from pytest_llem.energy.quality import UNMEASURED_CODES
from pytest_llem.gating.compare import Comparison
from pytest_llem.gating.metrics import METRICS
from pytest_llem.gating.stats import sample_summary
from pytest_llem.output import DEFAULT_POWER_CHARTS
from pytest_llem.output.summary import model_name
from pytest_llem.results import DeviceEnergy, ExperimentResult
from pytest_llem.store.report import ReportEntry, SessionReport
from pytest_llem.values import NON_MEASUREMENT_FIELDS

FIGURES = ("tokens_per_s", "energy_per_token_j")
#: A colour per group of points, in the order groups are met.
PALETTE = ("#1f5fa8", "#d95f02", "#2e8b57", "#8e44ad", "#c0392b", "#7f8c8d", "#b8860b", "#17a2b8")
#: What a caption calls each colour of the palette, so the text names what the eye sees.
COLOUR_NAMES = dict(
    zip(PALETTE, ("blue", "orange", "green", "purple", "red", "grey", "ochre", "teal"), strict=True)
)


#: The batch-size chart's x axis: points that differ in nothing else lie on one line.
X_AXIS = "batch_size"


@dataclass(frozen=True)
class Point:
    """One experiment's result as the charts see it."""

    nodeid: str
    label: str
    #: Its line (and colour): the settings that tell it from the other experiments' lines.
    group: str
    batch_size: int | None
    tokens_per_s: float | None
    energy_per_token_j: float | None
    result: ExperimentResult
    #: Per figure, the interquartile range of its samples, where there are several.
    spread: dict[str, tuple[float, float]] = field(default_factory=dict)


def chart_points(entries: list[ReportEntry]) -> list[Point]:
    names = shorten([e.nodeid for e in entries])
    measured = [e for e in entries if e.result is not None]
    lines = line_labels([line_settings(e) for e in measured])
    points = []
    for entry, line in zip(measured, lines, strict=True):
        result = entry.result
        assert result is not None
        config = result.config or entry.config or {}
        batch_size = config.get(X_AXIS)
        # bool is an int; a flag that slipped into batch_size is not a size.
        if not isinstance(batch_size, int) or isinstance(batch_size, bool):
            batch_size = None
        figures = {name: sample_summary(result, METRICS[name]) for name in FIGURES}
        tokens_per_s, per_token = figures["tokens_per_s"], figures["energy_per_token_j"]
        points.append(
            Point(
                nodeid=entry.nodeid,
                label=config.get("label") or names[entry.nodeid],
                group=line,
                batch_size=batch_size,
                # The figures the results table shows (the samples' median), so both agree.
                tokens_per_s=tokens_per_s.median if tokens_per_s else None,
                energy_per_token_j=per_token.median if per_token else None,
                result=result,
                spread={name: (f.q1, f.q3) for name, f in figures.items() if f is not None and f.n > 1},
            )
        )
    return points


def line_settings(entry: ReportEntry) -> dict[str, str]:
    """What puts an experiment on its line: its model (a local directory by its name and
    files, never where it was built), its workload, and every config field but the x axis
    and those that do not change what is measured (`NON_MEASUREMENT_FIELDS`: a label, a
    budget). A field holding a mapping (`params`, `env`) counts key by key."""
    result = entry.result
    assert result is not None
    config = result.config or entry.config or {}
    model = model_name(config["model"]) if config.get("model") else None
    workload = result.workload or entry.workload
    model = model or workload or "custom workload"
    if entry.model_fingerprint:
        model = f"{model} [{entry.model_fingerprint[:8]}]"
    settings = {"model": model, "workload": workload.rsplit(":", 1)[-1] if workload else "none"}
    for name, value in config.items():
        if name in NON_MEASUREMENT_FIELDS or name in (X_AXIS, "model"):
            continue
        if isinstance(value, dict):
            settings |= {f"{name}.{key}": _setting_text(name, item) for key, item in value.items()}
        else:
            settings[name] = _setting_text(name, value)
    return settings


def _setting_text(name: str, value: object) -> str:
    if name == "env":
        # An environment variable may hold a token: its value is told apart, never shown.
        return "#" + json_digest(value)[:8]
    return value if isinstance(value, str) else canonical_json(value)


def line_labels(settings: list[dict[str, str]]) -> list[str]:
    """Each experiment's line, named by its model and the settings whose values differ between
    the experiments (`max_new_tokens=32, precision=bf16`): equal names, one line."""
    names = dict.fromkeys(name for each in settings for name in each if name != "model")
    differing = [name for name in names if len({each.get(name) for each in settings}) > 1]
    return [
        ", ".join([each["model"], *(f"{name}={each.get(name, 'none')}" for name in differing)])
        for each in settings
    ]


def shorten(nodeids: list[str]) -> dict[str, str]:
    """Test names without their file, where that leaves them unique; charts have little room."""
    short = {n: n.split("::", 1)[1] if "::" in n else n for n in nodeids}
    clashes = {s for s, count in Counter(short.values()).items() if count > 1}
    return {n: n if s in clashes else s for n, s in short.items()}


def short_names(report: SessionReport, comparison: Comparison) -> dict[str, str]:
    nodeids = [e.nodeid for e in report.experiments] + [c.nodeid for c in comparison.changes]
    return shorten(list(dict.fromkeys(nodeids)))


def group_colours(points: list[Point]) -> dict[str, str]:
    groups = sorted({p.group for p in points})
    return {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(groups)}


def unmeasured_reasons(results: list[ExperimentResult]) -> list[str]:
    return sorted({w.message for r in results for w in r.warnings if w.code in UNMEASURED_CODES})


def power_chart_points(points: list[Point], patterns: tuple[str, ...] = ()) -> tuple[list[Point], int]:
    """The experiments whose power over time is drawn, and how many others recorded it.

    A pattern chooses the tests whose id or label contains it or matches it as a glob (ids
    hold brackets, which a glob alone would read as a set of characters); without one, the
    first `DEFAULT_POWER_CHARTS` with a timeline, so a large run's page stays readable."""
    timed = [p for p in points if power_series(p.result.energy_by_device)]
    if not patterns:
        chosen = timed[:DEFAULT_POWER_CHARTS]
    else:
        chosen = [p for p in timed if any(_matches(p, pattern) for pattern in patterns)]
    return chosen, len(timed) - len(chosen)


def _matches(point: Point, pattern: str) -> bool:
    return any(pattern in name or fnmatchcase(name, pattern) for name in (point.nodeid, point.label))


def power_series(devices: list[DeviceEnergy]) -> list[tuple[DeviceEnergy, list[tuple[float, float]]]]:
    """Each device's power samples (seconds, watts), for the devices with at least two."""
    series = []
    for device in devices:
        samples = [(s.t_s, s.power_w) for s in device.timeline if s.power_w is not None]
        if len(samples) >= 2:
            series.append((device, samples))
    return series
