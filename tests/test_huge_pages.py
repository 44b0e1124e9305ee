"""rls3_jax.huge_pages: the glibc tunable is added once, kept beside others, and reaches a re-executed process."""

from __future__ import annotations

import subprocess
import sys

from rls3_jax import huge_pages


def test_environment_adds_the_tunable_once_beside_others(monkeypatch):
    monkeypatch.setattr(huge_pages, "supported", lambda: True)
    env = huge_pages.environment({"PATH": "/bin"})
    assert env["GLIBC_TUNABLES"] == huge_pages.TUNABLE and env["PATH"] == "/bin"
    other = huge_pages.environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert other["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:" + huge_pages.TUNABLE
    assert huge_pages.environment(other) == other  # already there: unchanged
    assert huge_pages.active(other) and not huge_pages.active({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    chosen = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}  # a user's own choice wins
    assert huge_pages.environment(chosen) == chosen


def test_nothing_changes_where_unsupported_or_switched_off(monkeypatch):
    monkeypatch.setattr(huge_pages, "supported", lambda: False)
    assert huge_pages.environment({"A": "1"}) == {"A": "1"}
    monkeypatch.undo()
    monkeypatch.setenv("RLS3_HUGE_PAGES", "0")
    assert not huge_pages.supported()


def test_reexec_runs_the_command_again_with_the_tunable():
    show = "import os; print(os.environ.get('GLIBC_TUNABLES'))"
    script = (
        "import sys; from rls3_jax import huge_pages; "
        f"huge_pages.reexec([sys.executable, '-c', {show!r}]); print('not re-executed')"
    )
    env = {k: v for k, v in huge_pages.environment().items() if k not in ("GLIBC_TUNABLES", "RLS3_HUGE_PAGES")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    expected = huge_pages.TUNABLE if huge_pages.supported() else "not re-executed"
    assert out.strip() == expected
