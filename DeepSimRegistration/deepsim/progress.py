"""One progress bar for the commands: tqdm when installed, a plain stderr line otherwise."""

from __future__ import annotations

import sys

__all__ = ["ProgressBar"]


class ProgressBar:
    """A bar over ``total`` units starting at ``initial``; ``show(done, text)`` moves it to
    ``done`` with a short status text, ``close()`` ends it. Use as a context manager."""

    def __init__(self, total: int, initial: int = 0, name: str = ""):
        self.total, self.name = total, name
        try:
            from tqdm import tqdm
        except ImportError:
            self._tqdm = None
        else:
            self._tqdm = tqdm(
                total=total,
                initial=initial,
                desc=name or None,
                file=sys.stderr,
                leave=False,
                dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} {elapsed}",
            )

    def show(self, done: int, text: str = "") -> None:
        if self._tqdm is not None:
            self._tqdm.set_postfix_str(text[:50], refresh=False)
            self._tqdm.update(max(0, done - self._tqdm.n))
            return
        line = f"{self.name} {100 * done / max(self.total, 1):5.1f}% {text}".strip()
        print(f"\r{line:<70}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
        else:
            print(file=sys.stderr)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
