"""A registration in a child process: the ``deepsim register`` command, its progress streamed back.

Qt-free (``subprocess.Popen`` plus one reader thread), so headless tests drive it exactly as the
panel does: the widget calls :meth:`RegistrationProcess.poll` from a ``qt.QTimer`` and never
blocks. Torch lives only in the child, so its memory is returned to the system when the child
ends, and :meth:`RegistrationProcess.cancel` stops the work at once by killing the child.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from deepsim.cli import PROGRESS_PREFIX

__all__ = ["PROGRESS_PREFIX", "RegistrationProcess", "pythonExecutable", "moduleEnvironment"]

ERROR_MARKER = ": error: "
"""What the ``deepsim`` command puts before a one-line error message."""


def pythonExecutable() -> str:
    """Slicer's own Python (``PythonSlicer``, which has the right paths) when there is one, else
    the interpreter running this code."""
    return shutil.which("PythonSlicer") or sys.executable


def moduleEnvironment(moduleDir: str | Path) -> dict:
    """The environment of the child: this one, with the module folder (which holds the
    ``deepsim`` package) first on ``PYTHONPATH`` and unbuffered output."""
    env = dict(os.environ)
    paths = [str(Path(moduleDir).resolve())]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class RegistrationProcess:
    """One child process. States: ``new`` -> ``running`` -> ``finished`` | ``failed`` |
    ``cancelled``. :meth:`poll` returns what arrived since the last call: ``("progress",
    (fraction, message))`` and ``("log", line)`` events; the state changes when the child has
    ended and all its output has been read."""

    def __init__(self, command: list[str], env: dict | None = None, cwd: str | None = None):
        self.command = [str(c) for c in command]
        self.env = env
        self.cwd = cwd
        self.state = "new"
        self.returncode: int | None = None
        self.fraction = 0.0
        self.lines: list[str] = []
        self._process: subprocess.Popen | None = None
        self._events: queue.Queue = queue.Queue()
        self._reader: threading.Thread | None = None

    def start(self) -> RegistrationProcess:
        if self.state != "new":
            raise RuntimeError("RegistrationProcess.start(): already started")
        self._process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
        self.state = "running"
        self._reader = threading.Thread(target=self._read, name="deepsim-output", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        for line in self._process.stdout:
            self._events.put(line.rstrip("\r\n"))
        self._process.stdout.close()
        self._events.put(None)  # end of output

    @property
    def running(self) -> bool:
        return self.state == "running"

    def poll(self) -> list[tuple[str, object]]:
        """Events since the last call; never blocks."""
        out = []
        while True:
            try:
                line = self._events.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._end()
                break
            out.append(self._event(line))
        return out

    def _event(self, line: str) -> tuple[str, object]:
        if line.startswith(PROGRESS_PREFIX + " "):
            _, value, *message = line.split(" ", 2)
            try:
                self.fraction = float(value)
                return "progress", (self.fraction, message[0] if message else "")
            except ValueError:
                pass
        self.lines.append(line)
        return "log", line

    def _end(self) -> None:
        self.returncode = self._process.wait()
        if self.state == "running":
            self.state = "finished" if self.returncode == 0 else "failed"

    def wait(self, timeout: float | None = None) -> list[tuple[str, object]]:
        """Block until the child ends (for scripts and tests); returns all pending events."""
        self._process.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        return self.poll()

    def cancel(self) -> None:
        """Kill the child now (no waiting for a stage to end); nothing of its output is used."""
        if self.state in ("new", "running"):
            self.state = "cancelled"
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def errorMessage(self) -> str:
        """The child's one-line error (``deepsim register: error: ...``), else its last line."""
        for line in reversed(self.lines):
            if ERROR_MARKER in line:
                return line.split(ERROR_MARKER, 1)[1].strip()
        tail = [ln for ln in self.lines if ln.strip()]
        if tail:
            return tail[-1].strip()
        return f"the registration process ended with exit code {self.returncode}"
