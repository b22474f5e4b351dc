"""The child's output, relayed to pytest's own streams with secrets blanked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pytest_llem.isolation.relay import DRAIN_LIMIT_S, OutputRelay

SCRIPT = """
import os, sys
print("first line with", os.environ["RELAY_TOKEN"])
sys.stderr.write("to stderr " + os.environ["RELAY_TOKEN"] + "\\n")
sys.stdout.write("a last line without its newline " + os.environ["RELAY_TOKEN"])
"""


def test_both_streams_arrive_whole_with_the_secret_blanked(capsys: pytest.CaptureFixture[str]):
    env = {"RELAY_TOKEN": "tok-relay-1234", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    relay = OutputRelay(proc.stdout, proc.stderr, env)
    proc.wait(timeout=30)
    relay.close()
    out, err = capsys.readouterr()
    assert out == "first line with ***\na last line without its newline ***"
    assert err == "to stderr ***\n"


def test_a_writer_that_outlives_the_group_cannot_hold_the_relay(capsys: pytest.CaptureFixture[str]):
    # A grandchild keeps the pipe open and quiet: closing returns after the drain limit anyway.
    script = "import subprocess, sys; subprocess.Popen(['sleep', '30']); print('parent done')"
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout is not None and proc.stderr is not None
    relay = OutputRelay(proc.stdout, proc.stderr, {})
    try:
        proc.wait(timeout=30)
        started = time.monotonic()
        relay.close()
        assert time.monotonic() - started < DRAIN_LIMIT_S + 1
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sleeping grandchild
    assert capsys.readouterr().out == "parent done\n"


def test_reprs_url_passwords_and_a_private_key_written_in_pieces_are_blanked(
    capsys: pytest.CaptureFixture[str],
):
    # The key's lines come in separate writes, far enough apart to be read one by one.
    script = r"""
import os, sys, time
print("key", repr(os.environ["RELAY_TOKEN"]), "cache redis://:inline9pw@cache:6379/0", flush=True)
key = ("-----BEGIN EC PRIVATE KEY-----", "MIIBkeybody1", "MIIBkeybody2", "-----END EC PRIVATE KEY-----")
for line in key:
    print(line, flush=True)
    time.sleep(0.05)
print("after the key", flush=True)
"""
    env = {"RELAY_TOKEN": 'tok\\re"lay9', "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    relay = OutputRelay(proc.stdout, proc.stderr, env)
    proc.wait(timeout=30)
    relay.close()
    out, err = capsys.readouterr()
    assert err == ""
    assert out == (
        "key '***' cache redis://:***@cache:6379/0\n-----BEGIN EC PRIVATE KEY-----***\nafter the key\n"
    )
