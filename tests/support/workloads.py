"""Workloads the tests run in real isolated children (importable by name, as users' are)."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pytest_llem import ExperimentContext

# A grandchild that ignores SIGTERM, as a stuck inference worker would.
STUBBORN_CHILD = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"


def count_tokens(ctx: ExperimentContext) -> None:
    with ctx.window():
        total = sum(i * i for i in range(20_000 * ctx.config.batch_size))
    ctx.record(output_tokens=8 * ctx.config.batch_size, input_tokens=4, checksum=total)


def two_windows(ctx: ExperimentContext) -> None:
    for _ in range(2):
        with ctx.window():
            time.sleep(0.1)
        time.sleep(0.3)  # outside the windows: not measured
        ctx.record(output_tokens=5)


def no_window(ctx: ExperimentContext) -> None:
    time.sleep(0.2)
    ctx.record(output_tokens=3)


def report_identity(ctx: ExperimentContext) -> None:
    ctx.record(
        output_tokens=1,
        pid=os.getpid(),
        pgid=os.getpgrp(),
        sid=os.getsid(0),
        env={
            k: v
            for k, v in os.environ.items()
            if k.startswith(("PYTEST_LLEM", "CUDA", "HF_", "HUGGING", "VLLM", "TORCH"))
        },
        torch_imported="torch" in sys.modules,
    )


def big_payload(ctx: ExperimentContext) -> None:
    ctx.record(output_tokens=1, blob="x" * (10 * 1024 * 1024))


def raise_error(ctx: ExperimentContext) -> None:
    raise ValueError("the workload broke on purpose")


def exit_three(ctx: ExperimentContext) -> None:
    os._exit(3)


def segfault(ctx: ExperimentContext) -> None:
    ctypes.string_at(0)


def oom_killed(ctx: ExperimentContext) -> None:
    # What the out-of-memory killer does: SIGKILL, no chance to clean up.
    os.kill(os.getpid(), signal.SIGKILL)


def write_pids(path: str, extra_pids: list[int]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump([os.getppid(), os.getpid(), *extra_pids], fh)
    os.replace(tmp, path)


def hang_with_stubborn_children(ctx: ExperimentContext) -> None:
    """Ignore SIGTERM, spawn grandchildren that ignore it too, report every PID, then block."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    kids = [subprocess.Popen([sys.executable, "-c", STUBBORN_CHILD]) for _ in range(2)]
    write_pids(ctx.params["pid_file"], [k.pid for k in kids])
    with ctx.window():
        time.sleep(600)


def hang_in_native_code(ctx: ExperimentContext) -> None:
    """Block in C with signals masked: no Python handler can run, only SIGKILL ends it."""
    kids = [subprocess.Popen([sys.executable, "-c", STUBBORN_CHILD])]
    write_pids(ctx.params["pid_file"], [k.pid for k in kids])
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    libc = ctypes.CDLL(None)
    libc.sleep(600)


def leak_secret(ctx: ExperimentContext) -> None:
    raise RuntimeError(f"could not log in with token {os.environ['HF_TOKEN']}")


def gpu_matmul(ctx: ExperimentContext) -> None:
    """Fixed-size fp16 matmuls on the first visible GPU: warm-up, then `seconds` measured."""
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)

    def spin(seconds: float) -> int:
        done = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            for _ in range(8):
                a @ a
            torch.cuda.synchronize()  # keeps the queue short, so the deadline is the work's end
            done += 8
        return done

    spin(ctx.params.get("warmup_s", 3.0))  # power reaches its steady state outside the window
    with ctx.window():
        iterations = spin(ctx.params["seconds"])
    ctx.record(output_tokens=iterations)


def measured_rounds(ctx: ExperimentContext) -> None:
    """Loads once, then one window and 10 tokens per round."""
    for _ in ctx.rounds():
        with ctx.window():
            time.sleep(0.02)
        ctx.record(output_tokens=10)


def slow_phases(ctx: ExperimentContext) -> None:
    """Phases long enough to be seen from the parent; `params["phase_s"]` seconds each."""
    pause_s = float(ctx.params.get("phase_s", 0.3))
    ctx.phase("loading model")
    time.sleep(pause_s)
    ctx.phase("warm-up")
    time.sleep(pause_s)
    for _ in ctx.rounds():
        with ctx.window():
            time.sleep(pause_s)
        ctx.record(output_tokens=1)


def dies_while_loading(ctx: ExperimentContext) -> None:
    ctx.phase("loading model")
    os.kill(os.getpid(), signal.SIGKILL)


def fill_disk(ctx: ExperimentContext) -> None:
    """Measures, then fills the disk that `params["path"]` is on and leaves it full."""
    with ctx.window():
        total = sum(i * i for i in range(20_000))
    fd = os.open(ctx.config.params["path"], os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    finally:
        os.close(fd)
    ctx.record(output_tokens=8, input_tokens=4, checksum=total)


# Leaves both the session and its parent: setsid, then a double fork; the survivor reports its
# PID and ignores SIGTERM.
DOUBLE_FORK_DAEMON = """
import os, signal, sys, time
os.setsid()
if os.fork() == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(sys.argv[1] + ".tmp", "w") as fh:
        fh.write(str(os.getpid()))
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(600)
os._exit(0)
"""


def escape_the_group(ctx: ExperimentContext) -> None:
    """Start one process in a group of its own (setpgid) and one setsid double-forked daemon,
    report every PID, then return normally (or block, with params hang=True)."""
    pid_file = ctx.params["pid_file"]
    own_group = subprocess.Popen([sys.executable, "-c", STUBBORN_CHILD], process_group=0)
    daemon_file = f"{pid_file}.daemon"
    subprocess.run([sys.executable, "-c", DOUBLE_FORK_DAEMON, daemon_file], check=True)
    while not os.path.exists(daemon_file):
        time.sleep(0.01)
    with open(daemon_file) as fh:
        daemon_pid = int(fh.read())
    write_pids(pid_file, [own_group.pid, daemon_pid])
    with ctx.window():
        time.sleep(0.05)
    ctx.record(
        output_tokens=1,
        group=os.getpgrp(),
        session=os.getsid(0),
        own_group_pgid=os.getpgid(own_group.pid),
        daemon_sid=os.getsid(daemon_pid),
    )
    if ctx.params.get("hang"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(600)


def sleeping_passes(ctx: ExperimentContext) -> None:
    """One round per configured round; each pass sleeps `pass_s` and yields 3 tokens."""
    pass_s = float(ctx.params.get("pass_s", 0.05))
    for _ in ctx.rounds():
        with ctx.window():
            for _ in ctx.passes():
                time.sleep(pass_s)
                ctx.record(output_tokens=3)


def scheduled_throughput(ctx: ExperimentContext) -> None:
    """Throughput set by the test, process by process: the experiment's i-th process reports
    `params["rates"][i]` tokens/s (the last one for later processes), whatever the machine's
    load. Processes run one after another, so a counter file numbers them."""
    counter = ctx.params["counter"]
    index = int(open(counter).read()) if os.path.exists(counter) else 0
    with open(counter, "w") as fh:
        fh.write(str(index + 1))
    rates = ctx.params["rates"]
    rate = float(rates[min(index, len(rates) - 1)])
    with ctx.window():
        started = time.perf_counter()
        time.sleep(0.05)
        elapsed = time.perf_counter() - started
    ctx.record(output_tokens=max(1, round(rate * elapsed)))


def report_start(ctx: ExperimentContext) -> None:
    """Record how this experiment's group was started: its supervisor's parent (pytest on a
    cold start, the preloaded interpreter on a preloaded one), a random draw, cwd and argv."""
    import gc
    import random

    import psutil

    supervisor = psutil.Process(int(os.environ["PYTEST_LLEM_SUPERVISOR_PID"]))
    starter = supervisor.parent()
    ctx.record(
        output_tokens=1,
        starter_pid=starter.pid,
        starter_cmdline=starter.cmdline(),
        starter_parent_pid=starter.ppid(),
        supervisor_sid=os.getsid(supervisor.pid),
        random_draw=random.random(),
        cwd=os.getcwd(),
        argv=sys.argv,
        preloaded_modules=sorted(m for m in ("workloads", "thread_at_import") if m in sys.modules),
        gc_frozen_objects=gc.get_freeze_count(),
        gc_enabled=gc.isenabled(),
    )


def report_env(ctx: ExperimentContext) -> None:
    """Record the variables `ctx.params["names"]` names as this experiment's worker sees them,
    the process that forked its group (its supervisor's parent), and its own pid; then, with
    `ctx.params["pid_file"]`, write the group's pids there and sleep `ctx.params["sleep_s"]`."""
    import psutil

    supervisor = psutil.Process(int(os.environ["PYTEST_LLEM_SUPERVISOR_PID"]))
    pid_file = ctx.params.get("pid_file")
    if pid_file is not None:
        with open(pid_file, "w") as fh:
            json.dump([supervisor.pid, os.getpid()], fh)
    time.sleep(float(ctx.params.get("sleep_s", 0)))
    ctx.record(
        output_tokens=1,
        starter_pid=supervisor.parent().pid,
        env={name: os.environ.get(name) for name in ctx.params["names"]},
    )


def import_inside(ctx: ExperimentContext) -> None:
    """Import the modules `ctx.params["modules"]` names inside the function, as workloads that
    keep pytest's own process light do; record which of them were imported before it began."""
    import contextlib
    import importlib
    import io

    names = ctx.params["modules"]
    seen_before = sorted(name for name in names if name in sys.modules)
    with contextlib.redirect_stdout(io.StringIO()):  # `this` prints as it is imported
        for name in names:
            importlib.import_module(name)
    with ctx.window():
        time.sleep(0.01)
    ctx.record(output_tokens=len(names), seen_before=seen_before)


# A process that keeps one CPU busy for a number of wall-clock seconds (argv[1]), then exits.
SPIN_FOR = (
    "import sys, time\nend = time.perf_counter() + float(sys.argv[1])\nwhile time.perf_counter() < end: pass"
)
# A process that says it is ready (a file of its own beside the flag file argv[1]), waits for
# the flag file, keeps one CPU busy while it is there, and exits once it is gone.
SPIN_WHILE_FLAGGED = """
import os, sys, time
flag = sys.argv[1]
open(f"{flag}.ready-{os.getpid()}", "w").close()
while not os.path.exists(flag):
    time.sleep(0.005)
spun = 0
while spun % 4096 or os.path.exists(flag):
    spun += 1
"""


def spinning_children(ctx: ExperimentContext) -> None:
    """Inside the window, `processes` children (in the experiment's group) each keep a CPU busy
    for `spin_s`, then exit and are reaped before the window closes: all of it is the
    experiment's own CPU time. With `flag`, that file exists while the window is open: the
    planted load outside the experiment (`SPIN_WHILE_FLAGGED`) spins then and only then."""
    flag = ctx.params.get("flag")
    with ctx.window():
        if flag:
            Path(flag).touch()
        children = [
            subprocess.Popen([sys.executable, "-c", SPIN_FOR, str(ctx.params["spin_s"])])
            for _ in range(int(ctx.params["processes"]))
        ]
        for child in children:
            child.wait()
        if flag:
            os.unlink(flag)
    ctx.record(output_tokens=1)


def seeded_rate(rate: float, noise: float, seed: str, index: int) -> float:
    """The throughput `seeded_throughput`'s `index`-th process reports: `rate` times a factor
    drawn uniformly within ±`noise` from a generator seeded by `seed` and `index`."""
    import random

    return rate * (1 + noise * random.Random(f"{seed}:{index}").uniform(-1, 1))


def seeded_throughput(ctx: ExperimentContext) -> None:
    """Throughput with seeded noise, process by process (`seeded_rate`; a counter file numbers
    the processes, as in `scheduled_throughput`). The tokens are counted from the measured
    window's own duration, so the figure is the drawn rate whatever this machine's load."""
    counter = ctx.params["counter"]
    index = int(open(counter).read()) if os.path.exists(counter) else 0
    with open(counter, "w") as fh:
        fh.write(str(index + 1))
    rate = seeded_rate(ctx.params["rate"], ctx.params["noise"], ctx.params["seed"], index)
    with ctx.window():
        time.sleep(0.05)
    ctx.record(output_tokens=max(1, round(rate * ctx.windows[-1].duration_s)))


def paced_rounds(ctx: ExperimentContext) -> None:
    """Rounds at the throughput the test sets: each round's short window yields
    `params["rate"]` tokens per second of its sleep, whatever the machine's load."""
    rate = float(ctx.params["rate"])
    for _ in ctx.rounds():
        with ctx.window():
            started = time.perf_counter()
            time.sleep(0.03)
            ctx.record(output_tokens=max(1, round(rate * (time.perf_counter() - started))))
