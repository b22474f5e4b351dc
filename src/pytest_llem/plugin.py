"""pytest hooks for pytest-llem: options, the `llem` marker and fixture, the session report.

Deliberately thin: each hook hands over to `BenchmarkSession` and turns its errors into
pytest outcomes (one line, no traceback from inside pytest-llem).

pytest imports this module in every run of an environment where pytest-llem is installed,
`--llem` or not. So at import it loads only what registering options, the marker and the
fixture needs (the `SETTINGS` table); the session, its pydantic models, statistics and
meters load when a session actually uses them.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any

import pytest

from pytest_llem.errors import INTERRUPTED_EXIT_CODE, ConfigError, ExperimentInterrupted, LlemError
from pytest_llem.settings import SETTINGS, LlemSettings, resolve_settings, smoke_settings

if TYPE_CHECKING:
    from pytest_llem.config import ExperimentConfig
    from pytest_llem.isolation.workload import Workload
    from pytest_llem.results import ExperimentResult
    from pytest_llem.roles import XdistControllerRole
    from pytest_llem.session import BenchmarkSession

RUN_ID_WORKERINPUT = "llem_run_id"
BASELINE_WORKERINPUT = "llem_baseline_run_id"
PRELOADED_WORKERINPUT = "llem_preloaded_interpreter"
REPORT_WORKEROUTPUT = "llem_report"
MARKER = "llem"
FIXTURE = "llem"

settings_key = pytest.StashKey[LlemSettings]()
session_key = pytest.StashKey["BenchmarkSession"]()
#: An item's experiment config as its markers give it (the test's own arguments come later).
marker_config_key = pytest.StashKey["ExperimentConfig"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llem", "LLM energy benchmarks (pytest-llem)")
    group.addoption(
        "--llem",
        action="store_true",
        default=None,
        dest="llem_enabled",
        help="run LLM energy benchmarks (tests using the llem fixture or marker). ini: llem",
    )
    parser.addini("llem", "enable pytest-llem (like --llem)", type="bool", default=False)
    for setting in SETTINGS:
        switch = setting.parse is None
        kwargs: dict[str, Any] = {"action": "store_true"} if switch else {"metavar": setting.metavar}
        if setting.repeatable:
            kwargs["action"] = "append"
        if setting.bare_value is not None:
            kwargs.update(nargs="?", const=setting.bare_value)
        group.addoption(
            setting.option,
            default=None,
            dest=f"llem_{setting.name}",
            # argparse formats help with %: a literal one (a limit's "10%") must be doubled.
            help=f"{setting.help}. ini: {setting.ini_name}".replace("%", "%%"),
            **kwargs,
        )
        ini_type = "bool" if switch else "linelist" if setting.repeatable else "string"
        parser.addini(setting.ini_name, f"{setting.help} (like {setting.option})", type=ini_type)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**fields): an LLM energy benchmark; fields configure the experiment "
        "(model, backend, batch_size, max_new_tokens, gpus, energy, timeout, env, params, ...)",
    )
    try:
        settings = resolve_settings(
            cli={s.name: config.getoption(f"llem_{s.name}") for s in SETTINGS},
            ini={s.name: config.getini(s.ini_name) for s in SETTINGS},
            enabled=bool(config.getoption("llem_enabled") or config.getini("llem")),
        )
    except ConfigError as exc:
        raise pytest.UsageError(f"pytest-llem: {exc}") from None
    config.stash[settings_key] = settings
    if not settings.enabled:
        return
    from pytest_llem.roles import SingleProcessRole, XdistControllerRole, XdistWorkerRole
    from pytest_llem.session import BenchmarkSession
    from pytest_llem.store.projects import project_folder

    if settings.smoke:  # a throwaway session: settings say what it measures, keeps and compares
        settings = smoke_settings(settings)
        config.stash[settings_key] = settings
    # The suite's folder names the run's project; not the rootdir, which an option's path
    # value given after a space moves.
    project_dir = project_folder(config.inipath, config.invocation_params.dir)
    # This process's part in the run, chosen once; only xdist's roles have xdist hooks.
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:  # an xdist worker: report to the controller's run
        worker = XdistWorkerRole(
            workerinput["workerid"],
            run_id=workerinput.get(RUN_ID_WORKERINPUT),
            baseline_run_id=workerinput.get(BASELINE_WORKERINPUT),
        )
        bench = BenchmarkSession(settings, role=worker, root=config.rootpath, project_dir=project_dir)
        bench.launcher.attach_preloaded(workerinput.get(PRELOADED_WORKERINPUT))
        config.pluginmanager.register(XdistWorker(bench), "llem-xdist-worker")
    elif config.pluginmanager.hasplugin("xdist"):
        controller = XdistControllerRole()
        bench = BenchmarkSession(settings, role=controller, root=config.rootpath, project_dir=project_dir)
        config.pluginmanager.register(XdistController(bench, controller), "llem-xdist-controller")
    else:
        bench = BenchmarkSession(
            settings, role=SingleProcessRole(), root=config.rootpath, project_dir=project_dir
        )
    config.stash[session_key] = bench
    # From here on SIGINT and SIGTERM both stop the run once; more signals never raise.
    bench.interrupts.install()


class XdistController:
    """Controller-side xdist hooks (pytest-cov's pattern), registered only for the controller's
    role: hand out the run id and the baseline's (nodes are configured after
    `pytest_sessionstart` found it) and the preloaded interpreter the workers share (started
    with the first node), take in each worker's report as it goes down."""

    def __init__(self, bench: BenchmarkSession, role: XdistControllerRole) -> None:
        self.bench = bench
        self.role = role

    def pytest_configure_node(self, node: Any) -> None:
        record = self.bench.record
        node.workerinput[RUN_ID_WORKERINPUT] = record.report.run_id
        baseline = record.baseline
        node.workerinput[BASELINE_WORKERINPUT] = baseline.run_id if baseline is not None else None
        node.workerinput[PRELOADED_WORKERINPUT] = self.bench.launcher.share_preloaded()

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        payload = getattr(node, "workeroutput", {}).get(REPORT_WORKEROUTPUT)
        if payload is not None:
            from pytest_llem.store.report import SessionReport

            self.role.absorb(self.bench.record, node.gateway.id, SessionReport.model_validate_json(payload))


class XdistWorker:
    """Worker-side xdist hooks, registered only for a worker's role: its report goes to the
    controller through `workeroutput` once the session has finished it."""

    def __init__(self, bench: BenchmarkSession) -> None:
        self.bench = bench

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        record = self.bench.record
        if record.finished:  # not after collection only or a usage error: nothing was measured
            session.config.workeroutput[REPORT_WORKEROUTPUT] = record.report.model_dump_json()


def pytest_sessionstart(session: pytest.Session) -> None:
    bench = session.config.stash.get(session_key, None)
    if bench is None:
        return
    try:
        bench.start()
    except LlemError as exc:
        full_disk = bench.record.full_disk_at_start(exc)
        if full_disk is None:
            raise pytest.UsageError(f"pytest-llem: {exc}") from None
        # Not a usage error: nothing in the command line is wrong. One line and exit 1, as when
        # the disk fills later in the session (pytest ends a session whose start raised
        # `Session.Failed` with exit 1 and prints nothing more).
        import sys

        line = _redacted(f"pytest-llem: {full_disk}")
        sys.stderr.write(f"{line}\n")
        raise session.Failed(line) from None
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for line in bench.start_notes if reporter is not None else ():
        reporter.write_line(_redacted(f"pytest-llem: {line}"))
    bench.progress = _live_progress(session.config)
    # Through the live view where there is one: it clears its status line for the notice.
    bench.notify = bench.progress.notice if bench.progress is not None else _notice_writer(session.config)


def _notice_writer(config: pytest.Config) -> Any:
    """Lines to be seen while a test waits (for GPUs), past the output capture; an xdist
    worker's go to its stderr, which xdist leaves on the terminal."""
    import contextlib
    import sys

    capture = config.pluginmanager.get_plugin("capturemanager")
    worker = getattr(config, "workerinput", {}).get("workerid")
    prefix = f"pytest-llem [{worker}]: " if worker else "pytest-llem: "

    def write(line: str) -> None:
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            sys.stderr.write(_redacted(prefix + line) + "\n")
            sys.stderr.flush()

    return write


def _live_progress(config: pytest.Config) -> Any:
    """The terminal's live view of running experiments; None with -q or in an xdist worker."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    verbosity = int(config.option.verbose)
    if reporter is None or verbosity < 0 or hasattr(config, "workerinput"):
        return None
    import contextlib
    import sys

    from pytest_llem.output.live import LiveProgress

    capture = config.pluginmanager.get_plugin("capturemanager")

    def uncaptured() -> Any:  # the test's output capture is on while llem.run() waits
        return capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext()

    def line(text: str) -> None:
        with uncaptured():
            reporter.write_line(text)
            reporter.flush()  # a CI log is a pipe: show the line now, not when the buffer fills

    def status(text: str) -> None:
        # Drawn after pytest's text on the current line and erased again, the cursor saved and
        # restored around it, line wrapping off: pytest's own output is left as it was.
        with uncaptured():
            sys.stdout.write(f"\x1b7\x1b[?7l {text}\x1b[K\x1b[?7h\x1b8" if text else "\x1b[K")
            sys.stdout.flush()

    isatty = getattr(reporter, "isatty", False)  # a method in newer pytest, a bool in older
    is_tty = bool(isatty() if callable(isatty) else isatty)
    return LiveProgress(line, status if is_tty else None, verbosity)


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, object, object]:
    bench = session.config.stash.get(session_key, None)
    try:
        return (yield)
    finally:
        if bench is not None:  # teardown and report writing: signals are only recorded now
            bench.interrupts.stop_raising()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """A test that fails after its experiments ran (an assertion on the result) fails in the
    summary's status column too."""
    report = yield
    if report.failed:
        bench = item.config.stash.get(session_key, None)
        if bench is not None:
            bench.record.test_failed(item.nodeid)
    return report


def _marker_layers(item: pytest.Item) -> list[dict[str, Any]]:
    """Marker fields, outermost (module) first so the closest (function) marker wins."""
    layers = []
    for mark in reversed(list(item.iter_markers(MARKER))):
        if mark.args:
            raise ConfigError(f"@pytest.mark.{MARKER} takes keyword fields only, got {mark.args!r}")
        layers.append(dict(mark.kwargs))
    return layers


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without `--llem`, benchmarks are skipped; with it, each one's markers are validated now,
    so a broken one stops the session before anything runs. Skipped benchmarks' fields are not
    validated: that would load the config model (pydantic) into every run of the suite."""
    enabled = config.stash[settings_key].enabled
    skip = pytest.mark.skip(reason="LLM energy benchmark: run with --llem (or set llem = true in ini)")
    problems = []
    build_config = None
    for item in items:
        uses_llem = FIXTURE in getattr(item, "fixturenames", ()) or item.get_closest_marker(MARKER)
        if not uses_llem:
            continue
        if not enabled:
            item.add_marker(skip)
            continue
        if build_config is None:  # pydantic loads only for a session that runs benchmarks
            from pytest_llem.config import build_config
        try:
            item.stash[marker_config_key] = build_config(*_marker_layers(item))
        except ConfigError as exc:
            problems.append(f"pytest-llem: {item.nodeid}: @pytest.mark.{MARKER}: {exc}")
    if problems:
        raise pytest.UsageError("\n".join(problems))


def pytest_collection_finish(session: pytest.Session) -> None:
    """The cases left after deselection say what a preloaded interpreter imports
    (`--llem-preload=auto`); its imports start now, beside the session's fixtures."""
    bench = session.config.stash.get(session_key, None)
    if bench is None:
        return
    stashes = (item.stash for item in session.items)
    key = marker_config_key
    cases: list[ExperimentConfig] = [stash[key] for stash in stashes if key in stash]
    bench.cases_collected(cases, will_run=not session.config.option.collectonly)


class LlemRunner:
    """The `llem` fixture: runs experiments for one test with its marker's config."""

    def __init__(self, bench: BenchmarkSession, item: pytest.Item) -> None:
        self._bench = bench
        self._item = item

    def _case_key(self) -> str:
        from pytest_llem.store.cases import case_key

        item = self._item
        return case_key(item.nodeid, item.path, item.config.invocation_params.dir)

    def run(self, workload: Workload | str | None = None, **fields: Any) -> ExperimentResult:
        """Run `workload` in an isolated child; `fields` override the marker's."""
        layers: list[Mapping[str, Any]] = [*_marker_layers(self._item), fields]
        try:
            result = self._bench.run_experiment(self._item.nodeid, workload, layers, self._case_key())
        except ExperimentInterrupted as exc:
            # INTERRUPTED rather than 130 here so pytest still prints its summaries;
            # pytest_sessionfinish turns it into 130. `from None`: one message, no chain.
            raise pytest.exit.Exception(
                _redacted(f"pytest-llem: {self._item.nodeid}: {exc}"), returncode=pytest.ExitCode.INTERRUPTED
            ) from None
        except LlemError as exc:  # a workload's message can carry a token: never shown as it is
            self._stop_if_the_disk_is_full()
            raise pytest.fail.Exception(_redacted(f"pytest-llem: {exc}"), pytrace=False) from None
        self._stop_if_the_disk_is_full()
        from pytest_llem.gating.metrics import METRICS
        from pytest_llem.gating.stats import gated_figure

        # Every metric with a value, so CI systems that read JUnit XML can show them: the same
        # figure the tables print and the gate compares.
        for metric in METRICS.values():
            value = gated_figure(result, metric)
            if value is not None:
                self._item.user_properties.append((f"llem_{metric.name}", value))
        return result

    def _stop_if_the_disk_is_full(self) -> None:
        record = self._bench.record
        if record.storage_problem is not None:
            record.storage_problem_shown = True
            line = _redacted(f"pytest-llem: {record.storage_problem}")
            raise pytest.exit.Exception(line, returncode=pytest.ExitCode.TESTS_FAILED)


def _redacted(text: str) -> str:
    from pytest_llem.base.redaction import redact_secrets

    return redact_secrets(text)


@pytest.fixture
def llem(request: pytest.FixtureRequest) -> LlemRunner:
    """Runs LLM energy experiments in isolated children; see `LlemRunner.run`."""
    bench = request.config.stash.get(session_key, None)
    if bench is None:
        pytest.skip("LLM energy benchmark: run with --llem")
    return LlemRunner(bench, request.node)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    bench = session.config.stash.get(session_key, None)
    if bench is None:
        return
    bench.interrupts.stop_raising()
    if session.config.option.collectonly or exitstatus == pytest.ExitCode.USAGE_ERROR:
        return  # nothing was measured: no run is written, so none can become a baseline
    record = bench.record
    try:
        regressed = record.gate()
    except LlemError as exc:  # a bad per-test limit, say: reported, never a traceback
        record.problems.append(str(exc))
        regressed = False
    if bench.interrupts.received is not None or exitstatus in (
        pytest.ExitCode.INTERRUPTED,
        INTERRUPTED_EXIT_CODE,
    ):
        session.exitstatus = INTERRUPTED_EXIT_CODE
        outcome = "interrupted"
    else:
        if regressed and exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        outcome = "passed" if session.exitstatus == pytest.ExitCode.OK else "failed"
    bench.finish(outcome, int(session.exitstatus))
    if record.storage_problem is not None:  # one line, exit 1 (130 stays 130)
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if not record.storage_problem_shown:
            record.problems.append(record.storage_problem)


def pytest_unconfigure(config: pytest.Config) -> None:
    """The last word on a session that a signal reached after its report was written, or
    before there was a session to finish (pytest returns `exitstatus` after this hook); and
    the last line printed when the gate failed the session."""
    bench = config.stash.get(session_key, None)
    if bench is None:
        return
    try:
        bench.complete_at_exit()
    except (LlemError, OSError) as exc:
        config.get_terminal_writer().line(_redacted(f"pytest-llem: {exc}"))
    verdict = bench.record.verdict()
    if verdict is not None:  # after pytest's own "N passed" line, so a failed gate has the last word
        config.get_terminal_writer().line(f"pytest-llem: {verdict}", red=True, bold=True)
    if bench.interrupts.received is not None:
        session = config.pluginmanager.get_plugin("session")
        if session is not None:
            session.exitstatus = INTERRUPTED_EXIT_CODE
    bench.interrupts.uninstall()
    # The interpreter's last collection at exit visits every object the session's imports made
    # (a third of a second of CPU in each pytest process, xdist's workers included, which the
    # controller waits for): left out, as Python never promised `__del__` at exit. Refcounting
    # still frees what it frees, and atexit handlers registered before this one still run.
    import atexit
    import gc

    atexit.register(gc.freeze)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    bench = config.stash.get(session_key, None)
    if bench is None or not bench.record.finished:  # nothing ran (collect-only, usage error): no run written
        return
    record = bench.record
    from pytest_llem.output.terminal import format_comparison, format_summary

    def write(line: str, **markup: bool) -> None:
        terminalreporter.write_line(_redacted(line), **markup)

    if record.entries:
        terminalreporter.section("pytest-llem")
        for line in format_summary(record.entries, bench.settings.summary_view()):
            write(line)
    if record.comparison is not None:
        for line in format_comparison(record.comparison):
            write(line)
    for problem in [*record.problems, *record.skipped_files()]:
        write(f"pytest-llem: {problem}")
    for line in record.gate_outcome.failure_lines():
        write(line, red=True, bold=True)
    workers = {entry.worker_id for entry in record.entries}
    if len(workers) > 1 and bench.launcher.shares_host:
        write(
            f"pytest-llem: experiments ran on {len(workers)} xdist workers at once; "
            "they shared this machine, so their time and energy figures affect each other "
            "(each held its own GPUs; host energy measured meanwhile is withheld: shared_host_energy)"
        )
    if record.report.stale_experiments:
        write(
            f"pytest-llem: marked {len(record.report.stale_experiments)} stale experiment(s) from "
            "an earlier session as failed"
        )
    for line in record.closing_lines():
        write(f"pytest-llem: {line}")
