"""Tally of the hostile-input cases (Testing/Python/hostile_cases.py) against any deepsim code:
each case runs as ``python -m deepsim ...`` in its own process, with a time limit, and is
classified as a user would see it.

    python scripts/hostile_tally.py                       # this checkout
    python scripts/hostile_tally.py --deepsim /tmp/old/DeepSimRegistration --verbose

Outcomes: ``clear error`` (refused, one line naming the problem, files intact), ``works`` (a
valid input that must succeed did, with the right outputs), ``unhelpful message``, ``crash``
(a traceback), ``hang`` (past the time limit), ``silent wrong`` (exit 0 where the input had to be
refused, or a success with wrong outputs), ``data lost`` (a file that was there before changed or vanished).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "Testing" / "Python"), str(ROOT / "DeepSimRegistration")]

import hostile_cases as hc  # noqa: E402


def run(argv, code: Path, timeout: float) -> tuple[int | None, str]:
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "deepsim", *map(str, argv)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return None, ""
    return proc.returncode, proc.stderr


def classify(case: hc.Case, env: hc.Env, work: Path, code: Path, timeout: float) -> tuple[str, str]:
    hc.prepare(env, work)
    argv = case.build(env, work)
    before = hc.snapshot(work)
    rc, err = run(argv, code, timeout)
    last = (err.strip().splitlines() or [""])[-1][:160]
    if rc is None:
        return "hang", f"no answer within {timeout:.0f} s"
    if "Traceback" in err:
        return "crash", last
    if case.expect is None:
        if rc != 0:
            return "unhelpful message", f"refused a valid input: {last}"
        try:
            case.check(work)
        except AssertionError as failure:
            return "silent wrong", str(failure).splitlines()[0]
        return "works", ""
    if rc == 0:  # a success replaces the earlier run: the question is whether it had to refuse
        return ("works", "accepted safely") if case.policy else ("silent wrong", "exit 0")
    after = hc.snapshot(work)
    if any(after.get(name) != data for name, data in before.items()):
        return "data lost", last
    return ("clear error" if case.expect in err else "unhelpful message"), last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deepsim", type=Path, default=ROOT / "DeepSimRegistration")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds per case")
    parser.add_argument("--verbose", action="store_true", help="one line per case")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def register(argv):
            rc, err = run(argv, args.deepsim, 300)
            if rc != 0:
                raise SystemExit(f"the earlier run failed: {err}")

        env = hc.make_env(tmp / "env", register)
        counts = Counter()
        for i, case in enumerate(hc.CASES):
            outcome, detail = classify(case, env, tmp / f"case{i}", args.deepsim, args.timeout)
            counts[outcome] += 1
            if args.verbose:
                print(f"{case.principle} {case.id:<40} {outcome:<18} {detail}", flush=True)
    print(f"\n{'outcome':<20} cases  (deepsim from {args.deepsim})")
    for outcome in (
        "clear error",
        "works",
        "unhelpful message",
        "crash",
        "hang",
        "silent wrong",
        "data lost",
    ):
        print(f"{outcome:<20} {counts[outcome]:>5}")
    print(f"{'tried':<20} {sum(counts.values()):>5}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
