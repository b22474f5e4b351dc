"""The `pytest-llem` command: saved runs outside pytest (list, show, compare, export, clean,
import, publish), and the bisection of a regression to its first bad commit (bisect).

Every user error (an unknown run, a bad limit or date, an unwritable file) ends as one
`pytest-llem: <message>` line on stderr and exit code 2; a comparison with a regression or an
exceeded budget exits 1, so the command can gate a CI job on its own.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import date, datetime, timezone
from pathlib import Path

from pytest_llem.bisection.bisect import DEFAULT_LIMIT, BisectRequest, run_bisection
from pytest_llem.bisection.runner import checked_pytest_args
from pytest_llem.errors import LlemError
from pytest_llem.formatting import aligned, change_or_missing, figure_or_missing
from pytest_llem.gating.gate import run_gate
from pytest_llem.gating.limits import parse_limit
from pytest_llem.gating.metrics import METRICS
from pytest_llem.gating.stats import MIN_ROUNDS_FOR_SIGNIFICANCE, SIGNIFICANCE_LEVEL
from pytest_llem.output.exports import csv_text, markdown_summary
from pytest_llem.output.summary import SummaryView
from pytest_llem.output.terminal import format_comparison, format_summary
from pytest_llem.settings import (
    STATE_DIR_ENV,
    VIEW_SETTINGS,
    default_state_dir,
    parse_setting,
    setting_named,
    summary_view_from,
)
from pytest_llem.store.database import Store, display_url
from pytest_llem.store.history import RunHistory
from pytest_llem.store.legacy import import_state_dir
from pytest_llem.store.names import printable, skipped_line
from pytest_llem.store.opening import open_results_store
from pytest_llem.store.projects import shown_project
from pytest_llem.store.report import SessionReport
from pytest_llem.store.state import StateManager
from pytest_llem.store.urls import STORE_ENV, store_url_from
from pytest_llem.values import DEFAULT_AUTO_REPEATS

PROG = "pytest-llem"
EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2
#: What a shell reports for a process ended by SIGPIPE.
EXIT_BROKEN_PIPE = 128 + 13
EXPORT_FORMATS = ("json", "csv", "markdown", "html")
#: The metric `bisect` follows without --metric or --fail.
DEFAULT_BISECT_METRIC = "energy_per_token_j"


def main(argv: list[str] | None = None) -> int:
    argv, pytest_args = split_pytest_args(sys.argv[1:] if argv is None else list(argv))
    args = build_parser().parse_args(argv)
    args.pytest_args = pytest_args
    try:
        return args.handler(args)
    except BrokenPipeError:
        # The reader of the output (`| head`) has gone; stop without a second error at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (LlemError, OSError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE


def split_pytest_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """`bisect ... -- PYTEST ARGS`: what comes after the first `--` is pytest's, untouched
    (argparse would read its options as the command's); other commands keep their `--`."""
    if "--" not in argv or "bisect" not in argv[: argv.index("--")]:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="List, show, compare, export, clean and publish the runs pytest --llem saved; "
        "bisect a regression to its first bad commit.",
        epilog="RUN is a run's name (the newest run of that name), its run id, or a path to a report.json.",
    )
    # Accepted before and after the subcommand; SUPPRESS keeps the subcommand's copy from
    # overwriting a value given before it.
    _add_state_dir(parser, default=None)
    common = argparse.ArgumentParser(add_help=False)
    _add_state_dir(common, default=argparse.SUPPRESS)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], summary: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=summary, description=summary)
        sub.set_defaults(handler=handler)
        return sub

    listing = command("list", cmd_list, "list saved runs of every project, oldest first")
    listing.add_argument("--machine", metavar="ID", help="only runs made on the machine with this id")
    listing.add_argument(
        "--project",
        metavar="NAME",
        help="only runs of this project (the project column's value; pytest --llem-project sets it)",
    )
    listing.add_argument("--limit", metavar="N", type=int, help="only the newest N runs (1 or more)")

    show = command("show", cmd_show, "print a run's summary table")
    show.add_argument("run", metavar="RUN")
    _add_view_options(show)

    compare = command("compare", cmd_compare, "compare run B with baseline run A; exit 1 on a regression")
    compare.add_argument("baseline", metavar="A", help="the baseline run")
    compare.add_argument(
        "current", metavar="B", help="the run judged against A (its budgets are checked too)"
    )
    compare.add_argument(
        "--fail",
        metavar="METRIC:LIMIT",
        action="append",
        default=[],
        help="fail when METRIC got worse by more than LIMIT, which carries its unit: a percentage "
        "(energy_per_token_j:5%%) or an amount in the metric's unit (tokens_per_s:50tokens/s); repeatable",
    )
    compare.add_argument(
        "--gate-flagged",
        action="store_true",
        help="also fail on results that carry a measurement-quality flag (shown, not gated, by default)",
    )
    compare.add_argument(
        "--across-machines",
        action="store_true",
        help="gate even when A ran on different hardware (GPU models, count, power limits)",
    )

    export = command("export", cmd_export, "write a run as JSON, CSV, Markdown or HTML")
    export.add_argument("run", metavar="RUN")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="json", help="default: json")
    export.add_argument("-o", "--output", metavar="PATH", type=Path, help="write here instead of stdout")
    _add_view_options(export, "; csv: the rows in that order, json: everything as saved")
    power = setting_named("power_chart")
    export.add_argument(
        f"--{power.flag}",
        dest=power.name,
        metavar=power.metavar,
        action="append",
        default=[],
        help=power.help,
    )

    clean = command("clean", cmd_clean, "delete old runs and mark abandoned experiments failed")
    clean.add_argument(
        "--older-than",
        metavar="YYYY-MM-DD",
        help="delete runs started before this date (midnight UTC); named runs are kept",
    )
    clean.add_argument(
        "--keep",
        metavar="N",
        type=int,
        help="delete all but the newest N runs of each project on each machine; named runs are kept",
    )
    clean.add_argument(
        "--include-named", action="store_true", help="with --older-than or --keep: delete named runs too"
    )
    clean.add_argument(
        "--stale",
        action="store_true",
        help="mark failed the unfinished experiments of this host whose processes are gone",
    )

    bisect = command(
        "bisect",
        cmd_bisect,
        "find the first commit after GOOD whose benchmark is worse than GOOD's, up to BAD; "
        "pytest's arguments follow `--`",
    )
    bisect.add_argument("good", metavar="GOOD", help="a commit whose benchmark is good (an ancestor of BAD)")
    bisect.add_argument("bad", metavar="BAD", help="a later commit whose benchmark is worse")
    bisect.add_argument(
        "--metric",
        metavar="METRIC",
        help=f"the metric bisected (default {DEFAULT_BISECT_METRIC}; with --fail, its metric)",
    )
    bisect.add_argument(
        "--fail",
        metavar="METRIC:LIMIT",
        help="a commit is bad when METRIC is worse than GOOD's by more than LIMIT (with its unit, as in "
        f"compare --fail) and the rank test says so (default: METRIC:{DEFAULT_LIMIT})",
    )
    bisect.add_argument(
        "--alpha",
        metavar="P",
        type=float,
        default=SIGNIFICANCE_LEVEL,
        help=f"worse by more than the limit counts as bad only with p at most this (default and most "
        f"{SIGNIFICANCE_LEVEL:g}, the gate's)",
    )
    bisect.add_argument(
        "--max-runs-per-commit",
        metavar="N",
        type=int,
        default=DEFAULT_AUTO_REPEATS,
        help="each commit's benchmark runs in 3 processes, then one more while its verdict is undecided, "
        f"N at most (default {DEFAULT_AUTO_REPEATS}; pytest --llem-repeats=auto:N)",
    )
    bisect.add_argument(
        "--show-output",
        action="store_true",
        help="show each run's pytest output (default: a failed run's end)",
    )

    publish = command(
        "publish",
        cmd_publish,
        "write a static site of the saved runs: a chart per case and metric, steps marked by commit",
    )
    publish.add_argument("dir", metavar="DIR", type=Path, help="the site's folder (made if missing)")
    publish.add_argument("--project", metavar="NAME", help="only runs of this project (as list shows it)")
    publish.add_argument("--machine", metavar="ID", help="only runs made on the machine with this id")
    publish.add_argument(
        "--metric",
        metavar="M",
        action="append",
        default=[],
        help="chart only this metric (repeatable; default: every metric that has figures)",
    )

    importing = command(
        "import", cmd_import, "import the JSON states and reports of a state dir into the store"
    )
    importing.add_argument("path", metavar="PATH", type=Path, help="a state dir written before the store")
    return parser


def _add_state_dir(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--state-dir",
        metavar="PATH",
        type=Path,
        default=default,
        help=f"where pytest --llem keeps its runs (default: ${STATE_DIR_ENV}, else the user state dir)",
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        default=default,
        help=f"the results store (default: ${STORE_ENV}, else SQLite in the state dir)",
    )


def store_of(args: argparse.Namespace, skipped: dict[str, str] | None = None) -> Store:
    """The store the command reads, with the state dir's JSON files imported on first use; the
    files skipped go to `skipped`, or are named on stderr at once when it is None."""
    found: dict[str, str] = {}
    url = store_url_from(getattr(args, "store", None), "--store")
    store = open_results_store(state_dir_of(args), url, found)
    if skipped is None:
        _say_skipped(found)
    else:
        skipped.update(found)
    return store


def history_of(args: argparse.Namespace) -> RunHistory:
    """The runs, with any that a killed xdist controller left half-merged completed first."""
    skipped: dict[str, str] = {}
    history = RunHistory(state_dir_of(args), store=store_of(args, skipped))
    history.skipped.update(skipped)
    history.repair()
    return history


def _add_view_options(parser: argparse.ArgumentParser, note: str = "") -> None:
    """`--columns`, `--sort`, `--group-by`: the rows of `SETTINGS` that `pytest --llem-columns`
    and its kin use, so the table reads as it did at the end of the session."""
    for name in VIEW_SETTINGS:
        row = setting_named(name)
        parser.add_argument(f"--{row.flag}", dest=name, metavar=row.metavar, help=row.help + note)


def view_of(args: argparse.Namespace) -> SummaryView:
    return summary_view_from(vars(args), lambda row: f"--{row.flag}")


def state_dir_of(args: argparse.Namespace) -> Path:
    if args.state_dir is not None:
        return args.state_dir.expanduser()
    from_env = os.environ.get(STATE_DIR_ENV)
    return Path(from_env).expanduser() if from_env else default_state_dir()


def cmd_list(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise LlemError(f"--limit: {args.limit} is not a number of runs to show; give 1 or more")
    state_dir = state_dir_of(args)
    history = history_of(args)
    runs = history.summaries(limit=args.limit, machine_id=args.machine, project=args.project)
    say_skipped(history)
    if not runs:
        print(f"no saved runs in {_where_runs(history, state_dir, args.project, args.machine)}")
        return EXIT_OK
    header = ("run", "project", "commit", "started", "outcome", "experiments", "machine")
    # Whatever a row holds (a shared store's rows come from other machines) is shown escaped.
    rows = [
        tuple(
            printable(cell)
            for cell in (
                run.label,
                shown_project(run.project),
                run.commit or "-",
                _when(run.started_at),
                run.outcome,
                str(run.experiment_count),
                f"{run.machine_id} {run.machine or ''}".rstrip() if run.machine_id else "-",
            )
        )
        for run in runs
    ]
    print("\n".join(aligned(header, rows, right_aligned={5})))
    return EXIT_OK


def _where_runs(history: RunHistory, state_dir: Path, project: str | None, machine: str | None) -> str:
    """Where runs were looked for, as a line about finding none names it: the state dir (or the
    store's URL), the project (with the projects that have runs) and the machine asked for."""
    local = history.store_url is None and history.store.is_sqlite
    where = str(state_dir if local else history.store.shown_url)
    if project is not None:
        known = ", ".join(printable(name) for name in history.projects()) or "none"
        where += f" of project {printable(project)!r} (projects with runs: {known})"
    return where + (f" on machine {printable(machine)}" if machine else "")


def say_skipped(history: RunHistory) -> None:
    """One line on stderr per file of the state dir that could not be read, as a session ends with."""
    _say_skipped(history.skipped)


def _say_skipped(skipped: dict[str, str]) -> None:
    for what, why in sorted(skipped.items()):
        print(f"{PROG}: {skipped_line(what, why)}", file=sys.stderr)


def cmd_show(args: argparse.Namespace) -> int:
    view = view_of(args)
    history = history_of(args)
    try:
        run = history.find(args.run)
    finally:
        say_skipped(history)
    machine = f"machine {run.machine.id}: {run.machine.describe()}" if run.machine else "unknown machine"
    print(printable(f"{_run_label(run)}: {run.outcome}, started {_when(run.started_at)}, {machine}"))
    print("\n".join(format_summary(run.experiments, view)))
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    limits = [parse_limit(spec, "--fail") for spec in args.fail]
    history = history_of(args)
    try:
        baseline, current = history.find(args.baseline), history.find(args.current)
    finally:
        say_skipped(history)
    outcome = run_gate(
        current, baseline, limits, gate_flagged=args.gate_flagged, across_machines=args.across_machines
    )
    assert outcome.comparison is not None
    print(f"run {printable(_run_label(current))}")
    # The same lines and failure lines as `pytest --llem-compare` prints at the end of a session.
    print("\n".join(format_comparison(outcome.comparison)))
    for note in outcome.notes:
        print(f"{PROG}: {note}")
    for line in outcome.failure_lines():
        print(line)
    verdict = outcome.verdict()
    if verdict is not None:
        print(f"{PROG}: {verdict}")
    return EXIT_FAILURES if outcome.failed else EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    view = view_of(args)
    power_tests = tuple(parse_setting("power_chart", raw, "--power-chart") for raw in args.power_chart)
    history = history_of(args)
    try:
        run = history.find(args.run)
    finally:
        say_skipped(history)
    text = export_text(run, args.format, view, power_tests)
    if args.output is None:
        sys.stdout.write(text)
    else:
        try:
            args.output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise LlemError(f"cannot write {args.output}: {exc.strerror or exc}") from None
        print(f"{PROG}: wrote {args.output}", file=sys.stderr)
    return EXIT_OK


def export_text(
    run: SessionReport, form: str, view: SummaryView | None = None, power_tests: tuple[str, ...] = ()
) -> str:
    view = view or SummaryView()
    if form == "json":
        return run.model_dump_json(indent=2) + "\n"
    if form == "csv":
        return csv_text(run, view)
    if form == "markdown":
        return markdown_summary(run, view=view)
    try:
        # Imported here: the HTML renderer is optional to every other format.
        from pytest_llem.output.html import render_html
    except ModuleNotFoundError as exc:
        if exc.name != "pytest_llem.output.html":
            raise
        raise LlemError("HTML export is not available in this version of pytest-llem") from None
    return render_html(run, view=view, power_tests=power_tests)


def cmd_clean(args: argparse.Namespace) -> int:
    if not (args.older_than or args.stale or args.keep is not None):
        raise LlemError("clean needs --older-than YYYY-MM-DD, --keep N, --stale, or some of them")
    if args.keep is not None and args.keep < 0:
        raise LlemError(f"--keep: {args.keep} is not a number of runs; give 0 or more")
    state_dir = state_dir_of(args)
    store = store_of(args)
    if args.stale:
        marked = StateManager(state_dir, store=store).cleanup_stale()
        print(f"marked {len(marked)} stale experiment(s) failed")
        for state in marked:
            print(f"  {state.experiment_id} (left in phase {state.phase.value})")
    if args.older_than or args.keep is not None:
        cutoff = parse_date(args.older_than) if args.older_than else None
        _clean_runs(RunHistory(state_dir, store=store), cutoff, args.keep, args.include_named)
    return EXIT_OK


def _clean_runs(history: RunHistory, cutoff: datetime | None, keep: int | None, include_named: bool) -> None:
    removed = history.clean(cutoff, keep_named=not include_named, keep_newest=keep)
    say_skipped(history)
    for run in removed:
        print(f"removed {printable(run.label)} (started {_when(run.started_at)})")
    rule = " and ".join(
        ([f"started before {cutoff:%Y-%m-%d}"] if cutoff else [])
        + ([f"beyond the newest {keep} per project and machine"] if keep is not None else [])
    )
    print(f"removed {len(removed)} run(s) {rule}")
    if not include_named:
        kept = [
            run for run in history.summaries() if run.name and (cutoff is None or run.started_at < cutoff)
        ]
        if kept and cutoff is not None:
            before = f"started before {cutoff:%Y-%m-%d}"
            print(f"kept {len(kept)} named run(s) {before}; --include-named deletes them")


def cmd_bisect(args: argparse.Namespace) -> int:
    if args.fail is not None:
        limit_spec = args.fail
        limit = parse_limit(limit_spec, "--fail")
        if args.metric is not None and args.metric != limit.metric.name:
            raise LlemError(
                f"--metric {args.metric} and --fail {args.fail} name two metrics; bisect one "
                "(--fail's alone will do)"
            )
    else:
        limit_spec = f"{args.metric or DEFAULT_BISECT_METRIC}:{DEFAULT_LIMIT}"
        limit = parse_limit(limit_spec, "--metric")
    if not 0 < args.alpha <= SIGNIFICANCE_LEVEL:
        raise LlemError(
            f"--alpha: {args.alpha:g} is not a significance level bisect can use; give one above 0 and at "
            f"most {SIGNIFICANCE_LEVEL:g} (the level at which each run adds processes while undecided)"
        )
    if args.max_runs_per_commit < MIN_ROUNDS_FOR_SIGNIFICANCE:
        raise LlemError(
            f"--max-runs-per-commit: {args.max_runs_per_commit} is too few processes for the rank test, "
            f"which needs {MIN_ROUNDS_FOR_SIGNIFICANCE}; give {MIN_ROUNDS_FOR_SIGNIFICANCE} or more"
        )
    request = BisectRequest(
        good=args.good,
        bad=args.bad,
        pytest_args=tuple(checked_pytest_args(args.pytest_args)),
        limit=limit,
        limit_spec=limit_spec,
        alpha=args.alpha,
        max_runs=args.max_runs_per_commit,
        cwd=Path.cwd(),
        state_dir=state_dir_of(args),
        store_url=store_url_from(getattr(args, "store", None), "--store"),
        show_output=args.show_output,
    )

    def open_history() -> RunHistory:
        history = history_of(args)
        say_skipped(history)
        return history

    return run_bisection(request, open_history)


def cmd_publish(args: argparse.Namespace) -> int:
    unknown = [name for name in args.metric if name not in METRICS]
    if unknown:
        raise LlemError(
            f"--metric: unknown metric {printable(unknown[0])!r}; choose among {', '.join(METRICS)}"
        )
    state_dir = state_dir_of(args)
    history = history_of(args)
    reports = [
        run
        for run in history.runs()
        if run.outcome != "running"
        and (args.project is None or run.project == args.project)
        and (args.machine is None or (run.machine is not None and run.machine.id == args.machine))
    ]
    say_skipped(history)
    if not any(run.measured for run in reports):
        where = _where_runs(history, state_dir, args.project, args.machine)
        raise LlemError(f"publish: no measured runs to publish in {where}; run pytest --llem first")
    # Imported here: the site needs matplotlib, the optional 'html' extra; no other command does.
    from pytest_llem.output.history_site import publish_site

    site = publish_site(reports, args.dir, args.metric)
    for case, metric, marked in site.regressions:
        step = marked.step
        change = "" if step.change_pct is None else f" ({change_or_missing(step.change_pct)})"
        print(
            printable(
                f"{PROG}: worse since {case.runs[step.index].label}: {case.key} {metric} "
                f"{figure_or_missing(step.before)} -> {figure_or_missing(step.after)}{change}, "
                f"p = {step.p_value:.2g} (machine {marked.machine_id})"
            )
        )
    print(
        f"published {len(site.cases)} case(s) from {len(reports)} run(s) to {site.index} "
        f"({len(site.regressions)} regression(s) found)"
    )
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    source = args.path.expanduser()
    if not source.is_dir():
        raise LlemError(
            f"import: {source} is not a folder; give a state dir (it holds experiments/ and runs/)"
        )
    skipped: dict[str, str] = {}
    store = store_of(args, skipped)
    summary = import_state_dir(source, store)
    skipped.update(summary.skipped)
    _say_skipped(skipped)
    counts = f"{summary.runs} run(s) and {summary.experiments} experiment state(s)"
    print(f"imported {counts} into {display_url(store.url)}")
    return EXIT_OK


def parse_date(text: str) -> datetime:
    """A `YYYY-MM-DD` as midnight UTC, the zone reports record their times in."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise LlemError(f"--older-than: {text!r} is not a date; write YYYY-MM-DD") from None
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def _run_label(run: SessionReport) -> str:
    return run.name or run.run_id


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S %Z}".rstrip()


if __name__ == "__main__":
    sys.exit(main())
