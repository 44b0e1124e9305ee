"""Transparent huge pages for XLA's CPU temporaries: one glibc setting, applied by re-executing the process.

XLA's CPU runtime allocates each call's temporary buffer afresh (90 MB for the bench's small PaliGemma train
step). glibc serves an allocation that large with a new mmap, so every call page-faults it in again, 4 KB at a
time: 22,000 faults per step, a third of the step's time on the 2-core machine. glibc's `hugetlb` tunable makes
it back such mappings with transparent huge pages (2 MB), about 100x fewer faults: the small PaliGemma step
went from about 80 to 50 ms and the small CLIP step from 8.6 to 12.6 steps/s (bench/, this machine). glibc
reads tunables only when a process starts, so the setting is applied by re-executing the same command line
once, before anything is imported. glibc 2.35 or newer on Linux with THP in "madvise" or "always" mode;
elsewhere, or with RLS3_HUGE_PAGES=0, nothing changes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb=1"
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def supported() -> bool:
    """Linux with glibc >= 2.35 and transparent huge pages not disabled."""
    if not sys.platform.startswith("linux") or os.environ.get("RLS3_HUGE_PAGES", "1") == "0":
        return False
    try:
        libc, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # "glibc 2.36"
        if libc != "glibc" or tuple(int(v) for v in version.split(".")[:2]) < (2, 35):
            return False
        return "[never]" not in THP.read_text()
    except (ValueError, OSError):
        return False


def environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of `env` (default os.environ) with the tunable added to GLIBC_TUNABLES where supported."""
    env = dict(os.environ if env is None else env)
    tunables = env.get("GLIBC_TUNABLES", "")
    if supported() and "glibc.malloc.hugetlb" not in tunables:
        env["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}" if tunables else TUNABLE
    return env


def active(env: dict[str, str] | None = None) -> bool:
    """Whether `env` (default os.environ) sets the tunable."""
    return TUNABLE in (os.environ if env is None else env).get("GLIBC_TUNABLES", "")


def reexec(argv: list[str]) -> None:
    """Replace this process (same pid) by `argv` run with the tunable set, unless it is set or unsupported.

    argv: the command line to run again, e.g. [sys.executable, "-m", "rls3_jax.main", *sys.argv[1:]]."""
    env = environment()
    if env.get("GLIBC_TUNABLES") != os.environ.get("GLIBC_TUNABLES"):
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(argv[0], argv, env)
