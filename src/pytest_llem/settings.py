"""Session-wide settings, resolved from the command line, the environment and ini keys.

Every setting is one row of `SETTINGS`: its command-line flag, its ini key (`llem_<name>`)
and how its text is parsed. The plugin registers options and ini keys from the table, so a
setting can never exist on one side only. Precedence, highest first: command-line option,
environment variable (state dir only), ini key, built-in default. Kept free of pytest so a
CLI can reuse it.

Imported by the plugin module at pytest start-up, with or without `--llem`, so it imports
only the standard library and the names in `energy`, `errors` and `values` (the checks it
shares with `config`'s case fields); the parsers that need more (limits, meter options,
platformdirs) import it when a value is actually given.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_llem.energy import (
    CPU_MIN_WINDOW_S,
    DEFAULT_BASELINE_S,
    DEFAULT_HOST_BUSY_SHARE,
    DEFAULT_SAMPLE_INTERVAL_S,
    GPU_MIN_WINDOW_S,
    METER_NAMES,
)
from pytest_llem.errors import ConfigError
from pytest_llem.output import DEFAULT_POWER_CHARTS
from pytest_llem.store.urls import STORE_ENV, checked_store_url
from pytest_llem.values import (
    meter_name,
    number_of_seconds,
    parse_repeats,
    round_count,
    seconds_above_zero,
    seconds_from_zero,
    whole_number,
)

if TYPE_CHECKING:
    from pytest_llem.energy.meter import MeterOptions
    from pytest_llem.gating.limits import Limit
    from pytest_llem.output.summary import SummaryView

STATE_DIR_ENV = "PYTEST_LLEM_STATE_DIR"
PRELOAD_DEFAULT = "auto"
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
DEFAULT_METER = "auto"


def default_state_dir() -> Path:
    import platformdirs

    return platformdirs.user_state_path("pytest-llem")


@dataclass(frozen=True)
class LlemSettings:
    enabled: bool = False
    state_dir: Path = Path()
    #: The results store's URL; None: SQLite in the state dir (see store.database).
    store_url: str | None = None
    timeout_s: float | None = None
    resume: bool = False
    json_path: Path | None = None
    energy: str = DEFAULT_METER
    sample_interval_s: float = DEFAULT_SAMPLE_INTERVAL_S
    baseline_s: float = DEFAULT_BASELINE_S
    cooldown_s: float = 0.0
    cooldown_temp_c: float | None = None
    rapl_dram: bool = False
    allow_estimated_energy: bool = False
    rounds: int = 1
    #: None: the field's default (5 s when a GPU's energy is measured, else 2 s).
    min_window_s: float | None = None
    #: Above this share of the host's CPU taken by others in a round, its result is flagged.
    host_busy_share: float = DEFAULT_HOST_BUSY_SHARE
    #: A count of processes, or "auto:N" (`values.parse_repeats`).
    repeats: int | str = 1
    save_name: str | None = None
    autosave: bool = False
    #: The project runs are saved under and a bare `--llem-compare` chooses among; None: from
    #: pytest's rootdir (`store.projects.project_key`).
    project: str | None = None
    #: "latest" (the newest earlier run of this project on this machine), a run name or id, or a
    #: report path.
    compare: str | None = None
    compare_fail: tuple[Limit, ...] = ()
    gate_flagged: bool = False
    compare_across_machines: bool = False
    markdown_path: Path | None = None
    html_path: Path | None = None
    benchmark_json_path: Path | None = None
    smoke: bool = False
    columns: tuple[str, ...] | None = None
    sort: str | None = None
    group_by: str | None = None
    #: Tests whose device power over time the HTML report draws (empty: the first few).
    power_chart: tuple[str, ...] = ()
    #: Environment variables whose values are kept out of every output, besides secret-looking names.
    redact_env: tuple[str, ...] = ()
    #: Where each experiment runs: "local" (a child of this process) or "slurm" (a Slurm job).
    launcher: str = "local"
    slurm_partition: str | None = None
    slurm_account: str | None = None
    slurm_time: str | None = None
    slurm_gpus_per_node: int | None = None
    slurm_args: tuple[str, ...] = ()
    #: How experiments' groups start: "auto" (modules preloaded once, inferred from the cases),
    #: "none" (fresh interpreters each time, the cold start) or modules to preload, comma-separated.
    preload: str = PRELOAD_DEFAULT
    #: Fields laid over every case's, above the session's, the marker's and the call's
    #: (smoke mode's `SMOKE_FIELDS`); empty: the case's own fields.
    fields_over_cases: Mapping[str, Any] = field(default_factory=dict, hash=False)
    #: The state dir is this session's alone and removed at its end: no history, no report.
    throwaway_state_dir: bool = False
    #: Whether the session's end compares with a baseline and checks budgets (a smoke
    #: session measures nothing, so nothing it ran can pass or fail a limit).
    gated: bool = True

    def summary_view(self) -> SummaryView:
        """The results table's columns, order and grouping (terminal, Markdown and HTML)."""
        from pytest_llem.output.summary import DEFAULT_COLUMNS, SummaryView

        return SummaryView(self.columns or DEFAULT_COLUMNS, self.sort, self.group_by)

    def meter_options(self, baseline_power_w: Mapping[str, float] | None = None) -> MeterOptions:
        from pytest_llem.energy.meter import MeterOptions

        return MeterOptions(
            sample_interval_s=self.sample_interval_s,
            rapl_dram=self.rapl_dram,
            allow_estimated_energy=self.allow_estimated_energy,
            baseline_power_w=dict(baseline_power_w or {}),
            host_busy_share=self.host_busy_share,
        )


#: The smallest workload every backend accepts, laid over each case's fields in smoke mode
#: (`--llem-smoke`): it checks that a suite still runs, in seconds, and measures nothing.
SMOKE_FIELDS: dict[str, Any] = {
    "n_prompts": 1,
    "max_new_tokens": 1,
    "warmup_batches": 0,
    "rounds": 1,
    "repeats": 1,
    "min_window_s": 0,
    "energy": "none",
}
#: A smoke run's results table: which cases ran and how they ended, no figures (none were measured).
SMOKE_COLUMNS = ("test", "status")


def smoke_settings(settings: LlemSettings) -> LlemSettings:
    """Settings for a smoke session: `SMOKE_FIELDS` over every case, a throwaway state dir
    (made here, removed at the session's end), nothing resumed, gated, compared or published,
    and a results table without figures."""
    import tempfile

    return dataclasses.replace(
        settings,
        state_dir=Path(tempfile.mkdtemp(prefix="pytest-llem-smoke-")),
        throwaway_state_dir=True,
        fields_over_cases=SMOKE_FIELDS,
        gated=False,
        resume=False,
        save_name=None,
        autosave=False,
        compare=None,
        compare_fail=(),
        json_path=None,
        store_url=None,
        markdown_path=None,
        html_path=None,
        benchmark_json_path=None,
        baseline_s=0.0,
        cooldown_s=0.0,
        cooldown_temp_c=None,
        columns=SMOKE_COLUMNS,
        # A figure column cannot order a table without figures.
        sort=settings.sort if settings.sort in SMOKE_COLUMNS else None,
        group_by=None,
    )


def _parser(check: Callable[[Any], Any]) -> Callable[[str, str], Any]:
    """A setting's parser from one of the checks in `values`: its sentence, after where the
    value came from, then the value."""

    def parse(raw: str, source: str) -> Any:
        try:
            return check(raw)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}, got {raw!r}") from None

    return parse


def _degrees(raw: str, source: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: expected a number of degrees Celsius, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{source}: must be a finite number of degrees, 0 or more, got {raw!r}")
    return value


def _share(raw: str, source: str) -> float:
    text = raw.strip()
    percent = text.endswith("%")
    try:
        value = float(text[:-1] if percent else text) / (100 if percent else 1)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:  # NaN fails too
        raise ConfigError(
            f"{source}: expected a share from 0 to 1 (e.g. 0.1) or a percentage (10%), got {raw!r}"
        )
    return value


def _path(raw: str, source: str) -> Path:
    return Path(raw).expanduser()


def _run_name(raw: str, source: str) -> str:
    from pytest_llem.store.names import check_run_name  # pydantic: loaded only when a name is given

    try:
        return check_run_name(raw.strip(), source)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _project(raw: str, source: str) -> str:
    from pytest_llem.store.names import check_project_name  # pydantic: loaded only when a name is given

    try:
        return check_project_name(_text(raw, source), source)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _columns(raw: str, source: str) -> tuple[str, ...]:
    from pytest_llem.output.summary import parse_columns

    return parse_columns(raw, source)


def _sort(raw: str, source: str) -> str:
    from pytest_llem.output.summary import parse_sort

    return parse_sort(raw, source)


def _group_by(raw: str, source: str) -> str:
    from pytest_llem.output.summary import parse_group_by

    return parse_group_by(raw, source)


def _test_pattern(raw: str, source: str) -> str:
    pattern = raw.strip()
    if not pattern:
        raise ConfigError(f"{source}: give a test id, a part of one, or a glob such as '*test_gpt2*'")
    return pattern


def _env_name(raw: str, source: str) -> str:
    name = raw.strip()
    if not name or "=" in name or "\0" in name or "," in name:
        raise ConfigError(f"{source}: {raw!r} is not an environment variable name (no '=', ',' or NUL)")
    return name


LAUNCHERS = ("local", "slurm")
# Slurm's --time formats: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.
_SLURM_TIME = re.compile(r"\d+(:\d{1,2}){0,2}|\d+-\d{1,2}(:\d{1,2}){0,2}")


def _launcher(raw: str, source: str) -> str:
    if raw not in LAUNCHERS:
        raise ConfigError(f"{source}: unknown launcher {raw!r}; choose one of {', '.join(LAUNCHERS)}")
    return raw


def _slurm_time(raw: str, source: str) -> str:
    if not _SLURM_TIME.fullmatch(raw.strip()):
        raise ConfigError(
            f"{source}: {raw!r} is not a Slurm time limit; write minutes (30), HH:MM:SS or D-HH:MM:SS"
        )
    return raw.strip()


def _text(raw: str, source: str) -> str:
    if not raw.strip():
        raise ConfigError(f"{source}: empty; give a value or leave the option out")
    return raw.strip()


def _preload(raw: str, source: str) -> str:
    value = raw.strip()
    if value in ("auto", "none"):
        return value
    modules = [m.strip() for m in value.split(",")]
    bad = [m for m in modules if not _MODULE_NAME.fullmatch(m)]
    if not value or bad:
        raise ConfigError(
            f"{source}: {bad[0] if bad else raw!r} is not a module name; give auto, none or "
            "modules to preload separated by commas (e.g. torch,transformers,mypkg.workloads)"
        )
    return ",".join(modules)


def _limit(raw: str, source: str) -> Limit:
    from pytest_llem.gating.limits import parse_limit

    return parse_limit(raw, source)


@dataclass(frozen=True)
class Setting:
    """One user-facing setting: `--llem-<flag>` on the command line, `llem_<flag>` in ini."""

    name: str
    flag: str
    help: str
    parse: Callable[[str, str], Any] | None = None  # None: an on/off switch
    metavar: str | None = None
    #: The option may be given several times (ini: one value per line); values form a tuple.
    repeatable: bool = False
    #: The option's value is optional; given bare, it takes this one.
    bare_value: str | None = None
    #: An environment variable that sets it, between the command line and the ini file.
    env: str | None = None

    @property
    def option(self) -> str:
        return f"--llem-{self.flag}"

    @property
    def ini_name(self) -> str:
        return "llem_" + self.flag.replace("-", "_")


SETTINGS = (
    Setting(
        "state_dir",
        "state-dir",
        f"where states and reports go (env {STATE_DIR_ENV}; default: the platform's user state dir)",
        _path,
        "PATH",
        env=STATE_DIR_ENV,
    ),
    Setting(
        "store_url",
        "store",
        f"the results store: sqlite:///PATH or postgresql://USER@HOST:PORT/DB (env {STORE_ENV}; "
        "default: SQLite in the state dir); the password is best left to PGPASSWORD or ~/.pgpass",
        checked_store_url,
        "URL",
        env=STORE_ENV,
    ),
    Setting(
        "timeout_s",
        "timeout",
        "kill an experiment after this long (marker field timeout= wins)",
        _parser(seconds_above_zero),
        "SECONDS",
    ),
    Setting("resume", "resume", "reuse results of experiments already done with the same config hash"),
    Setting("json_path", "json", "also write the session report to PATH", _path, "PATH"),
    Setting(
        "energy",
        "energy",
        f"energy meter: {', '.join(METER_NAMES)} (marker field energy= wins; default {DEFAULT_METER})",
        _parser(meter_name),
        "METER",
    ),
    Setting(
        "sample_interval_s",
        "sample-interval",
        f"seconds between power/temperature samples (default {DEFAULT_SAMPLE_INTERVAL_S})",
        _parser(partial(number_of_seconds, minimum=0.01)),
        "SECONDS",
    ),
    Setting(
        "baseline_s",
        "baseline",
        f"measure each device's idle power for this long before its first "
        f"experiment; 0 skips it (default {DEFAULT_BASELINE_S:g})",
        _parser(seconds_from_zero),
        "SECONDS",
    ),
    Setting(
        "cooldown_s",
        "cooldown",
        "pause between experiments; with --llem-cooldown-temp, the longest wait (default 0)",
        _parser(seconds_from_zero),
        "SECONDS",
    ),
    Setting(
        "cooldown_temp_c",
        "cooldown-temp",
        "before each experiment, wait until every GPU is within this many degrees C of its idle temperature",
        _degrees,
        "DEGREES",
    ),
    Setting("rapl_dram", "rapl-dram", "also measure DRAM energy through RAPL"),
    Setting(
        "allow_estimated_energy",
        "allow-estimated-energy",
        "where a meter only estimates (codecarbon without RAPL: its TDP and CPU-load model), report "
        "its figure as estimated_energy_j, flagged and never gated (energy_j stays empty either way)",
    ),
    Setting(
        "rounds",
        "rounds",
        "measured rounds per experiment after one load and warm-up (marker field rounds= wins; default 1)",
        _parser(round_count),
        "N",
    ),
    Setting(
        "min_window_s",
        "min-window-s",
        "built-in backends repeat their batches until each round is measured at least this long "
        f"(marker field min_window_s= wins; default {GPU_MIN_WINDOW_S:g} when a GPU's energy is measured, "
        f"else {CPU_MIN_WINDOW_S:g}; 0: off); a shorter round is flagged short_window",
        _parser(seconds_from_zero),
        "SECONDS",
    ),
    Setting(
        "host_busy_share",
        "host-busy-share",
        "flag a result host_busy (kept out of the gate) when other processes took more than this share "
        "of the host's CPU time during a measured round: a number from 0 to 1, or a percentage with "
        f"a percent sign (default {DEFAULT_HOST_BUSY_SHARE:g}; 1 turns it off)",
        _share,
        "SHARE",
    ),
    Setting(
        "repeats",
        "repeats",
        "run each experiment N times, each in a fresh process, and pool their rounds, so statistics and "
        "the regression test include process-to-process variation; auto or auto:N: 3, then one more "
        "while the comparison with the baseline is undecided, N at most (default 8) (the repeats field "
        "wins; default 1)",
        _parser(parse_repeats),
        "N|auto[:N]",
    ),
    Setting("save_name", "save", "name this run in the history", _run_name, "NAME"),
    Setting("autosave", "autosave", "name this run from the git commit, the time and a dirty flag"),
    Setting(
        "project",
        "project",
        "the project this suite's runs are saved under, which a bare --llem-compare chooses among "
        "(default: from the rootdir: its git remote and path inside the repository, else its path)",
        _project,
        "NAME",
    ),
    Setting(
        "compare",
        "compare",
        "compare with a saved run: its name (this project's first), id or report path; bare: the "
        "latest run of this project on this machine",
        lambda raw, _: raw,
        "RUN",
        bare_value="latest",
    ),
    Setting(
        "compare_fail",
        "compare-fail",
        "fail the session when METRIC gets worse than LIMIT against the compared run; LIMIT carries "
        "its unit: a percentage (tokens_per_s:10%) or an amount in the metric's unit "
        "(tokens_per_s:50tokens/s) (repeatable)",
        _limit,
        "METRIC:LIMIT",
        repeatable=True,
    ),
    Setting("gate_flagged", "gate-flagged", "also gate results that carry measurement-quality flags"),
    Setting(
        "compare_across_machines",
        "compare-across-machines",
        "gate against a baseline that ran on different hardware (GPU models, count, power limits)",
    ),
    Setting("markdown_path", "markdown", "write a Markdown summary to PATH", _path, "PATH"),
    Setting("html_path", "html", "write a self-contained HTML report to PATH", _path, "PATH"),
    Setting(
        "benchmark_json_path",
        "benchmark-json",
        "write results for the GitHub benchmark-tracking action (customSmallerIsBetter to PATH, "
        "customBiggerIsBetter beside it as *-bigger.json)",
        _path,
        "PATH",
    ),
    Setting(
        "columns",
        "columns",
        "the results table's columns, comma-separated: test, model, backend, precision, batch_size, n, "
        "a metric (tokens_per_s, energy_per_token_j, ...) or status (default "
        "test,n,duration_s,tokens_per_s,energy_j,energy_per_token_j,status)",
        _columns,
        "COLUMNS",
    ),
    Setting(
        "sort",
        "sort",
        "sort the results table by a column, ascending; -COLUMN for descending (default: the order run)",
        _sort,
        "COLUMN",
    ),
    Setting(
        "group_by",
        "group-by",
        "one results table per model, backend, precision, batch_size or test (function)",
        _group_by,
        "FIELD",
    ),
    Setting(
        "power_chart",
        "power-chart",
        "in the HTML report, draw device power over time for the tests whose id contains PATTERN or "
        "matches it as a glob (repeatable; default: the first "
        f"{DEFAULT_POWER_CHARTS} experiments with a power timeline)",
        _test_pattern,
        "PATTERN",
        repeatable=True,
    ),
    Setting(
        "smoke",
        "smoke",
        "check that the suite works: run each case once with the smallest workload (one prompt, one new "
        "token, no warm-up, idle baseline or cool-down); measure no energy, save and publish nothing",
    ),
    Setting(
        "redact_env",
        "redact-env",
        "also keep the value of environment variable NAME out of every file and terminal line "
        "(*_KEY, *TOKEN*, *SECRET*, *PASSWORD*, *CREDENTIAL* always are; repeatable)",
        _env_name,
        "NAME",
        repeatable=True,
    ),
    Setting(
        "launcher",
        "launcher",
        "where each experiment runs: local (a child process group of pytest) or slurm (one Slurm job "
        "each, through srun; the state dir must be shared with the compute nodes) (default local)",
        _launcher,
        "LAUNCHER",
    ),
    Setting("slurm_partition", "slurm-partition", "Slurm partition of the experiments' jobs", _text, "NAME"),
    Setting(
        "slurm_account", "slurm-account", "Slurm account the experiments' jobs are charged to", _text, "NAME"
    ),
    Setting(
        "slurm_time",
        "slurm-time",
        "time limit of each experiment's Slurm job (minutes, HH:MM:SS or D-HH:MM:SS); it also bounds a job "
        "whose pytest was killed",
        _slurm_time,
        "TIME",
    ),
    Setting(
        "slurm_gpus_per_node",
        "slurm-gpus-per-node",
        "GPUs on each compute node: jobs then ask for GPUs (gpus=, tensor_parallel_size or num_processes; "
        "1 by default) as generic resources; 0 or unset: only experiments that name GPUs ask for them",
        _parser(whole_number),
        "N",
    ),
    Setting(
        "slurm_args",
        "slurm-arg",
        "extra srun arguments for every experiment's job, e.g. --llem-slurm-arg=--qos=high (repeatable; "
        "ini: one per line)",
        _text,
        "ARGS",
        repeatable=True,
    ),
    Setting(
        "preload",
        "preload",
        "how each experiment's process group starts: auto (forked from an interpreter that imported "
        "the cases' libraries once, e.g. torch and transformers), none (fresh interpreters each time), "
        "or MODULES to preload, comma-separated",
        _preload,
        "auto|none|MODULES",
    ),
)


#: The settings that choose the results table, shared with `pytest-llem show` and `export`.
VIEW_SETTINGS = ("columns", "sort", "group_by")


def setting_named(name: str) -> Setting:
    return next(setting for setting in SETTINGS if setting.name == name)


def parse_setting(name: str, raw: str, source: str) -> Any:
    """One value of the setting `name`, read as its row reads it (for tools outside pytest)."""
    row = setting_named(name)
    assert row.parse is not None, f"{name} is a switch"
    return row.parse(raw, source)


def summary_view_from(raw: Mapping[str, str | None], source: Callable[[Setting], str]) -> SummaryView:
    """The results table chosen by raw texts of the `VIEW_SETTINGS` (None: not given), each
    parsed by its row's parser; `source` names where a value came from in error messages."""
    values = {
        name: parse_setting(name, str(text), source(setting_named(name)))
        for name in VIEW_SETTINGS
        if (text := raw.get(name)) not in (None, "")
    }
    return LlemSettings(**values).summary_view()


def resolve_settings(
    cli: Mapping[str, object],
    ini: Mapping[str, object],
    environ: Mapping[str, str] | None = None,
    enabled: bool = False,
) -> LlemSettings:
    """Combine raw values by setting name (`None` or "" when not given), validating each."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {"enabled": enabled}
    for setting in SETTINGS:
        sources = [(cli.get(setting.name), setting.option)]
        if setting.env is not None:
            sources.append((environ.get(setting.env), setting.env))
        sources.append((ini.get(setting.name), f"ini {setting.ini_name}"))
        for raw, source in sources:
            if raw in (None, "", []):
                continue
            if setting.parse is None:
                if raw:  # a switch is on if any layer turns it on
                    values[setting.name] = True
                    break
                continue
            if "\0" in str(raw):
                raise ConfigError(f"{source}: a NUL character cannot be part of a value; remove it")
            if setting.repeatable:
                items = raw if isinstance(raw, (list, tuple)) else str(raw).split()
                values[setting.name] = tuple(setting.parse(str(item), source) for item in items)
            else:
                values[setting.name] = setting.parse(str(raw), source)
            break
    if enabled and "state_dir" not in values:  # platformdirs only when a session will use it
        values["state_dir"] = default_state_dir()
    return LlemSettings(**values)
