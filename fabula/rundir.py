"""A run directory: ``checkpoint.safetensors`` (:mod:`fabula.checkpoint`), ``metrics.jsonl`` (one
line per epoch), ``curves.png``, and whatever the story's per-epoch callbacks draw.

The checkpoint is the record of the run: its metadata carries the metrics of every epoch it
holds, so the one rename that puts it in place commits an epoch's weights and metrics together.
``metrics.jsonl`` is a copy for people and tools, appended after that rename: a kill before or
during the append leaves it a line short or with a cut last line, and ``--resume`` rewrites it
from the checkpoint. (Appending keeps each epoch's write small and the file followable with
``tail -f``; the copy in the checkpoint makes it safe.)

One writer at a time: training holds an exclusive lock, ``fcntl.flock`` on ``.lock``, a file
naming its holder (pid, host, start time). The kernel drops a flock when its holder dies,
however it dies, so a lock file left by a killed run is stale and taken over; the temporary
files of writes it never finished are removed then. Failed writes (a full disk, a read-only
file system, a path below a file) end in one :class:`~fabula.errors.RunError` saying what
failed, where, and where the run stands.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from fabula.checkpoint import (
    TEMPORARY,
    Checkpoint,
    atomic_write,
    field_error,
    load_checkpoint,
    save_checkpoint,
)
from fabula.errors import RunError
from fabula.plots import plot_curves


class RunDirectory:
    """The files of one training run under ``path``."""

    CHECKPOINT, METRICS, CURVES, LOCK = "checkpoint.safetensors", "metrics.jsonl", "curves.png", ".lock"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoint_path = self.path / self.CHECKPOINT
        self.metrics_path = self.path / self.METRICS
        self.lock_path = self.path / self.LOCK
        self._history: list[dict] = []

    @contextmanager
    def training(self, resume: bool) -> Iterator[Checkpoint | None]:
        """Hold the directory's lock for the block (released however it ends) and start a new
        run, refusing a directory that holds one, or with ``resume`` load the last checkpoint
        (yielded) and rewrite ``metrics.jsonl`` from the metrics it carries. A run refused or
        failed before its first checkpoint leaves no directory it created behind."""
        if resume and not self.checkpoint_path.is_file():
            raise RunError(f"{self.checkpoint_path}: nothing to resume")
        created = [p for p in (self.path, *self.path.parents) if not p.exists()]  # deepest first
        with self.writing("the run directory", self.path):
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock()
        try:
            yield self._start(resume)
        except BaseException:
            self._unlock()
            for folder in created:  # only folders left empty: nothing written is lost
                try:
                    folder.rmdir()
                except OSError:
                    break
            raise
        else:
            self._unlock()

    def _start(self, resume: bool) -> Checkpoint | None:
        with self.writing("the run directory", self.path):
            for leftover in self.path.iterdir():  # no other writer holds the lock: they are stale
                if TEMPORARY.fullmatch(leftover.name):
                    leftover.unlink()
        if not resume:
            if self.checkpoint_path.exists():
                raise RunError(
                    f"{self.path} already holds a run; pass --resume to continue it or choose another --out"
                )
            with self.writing("the metrics", self.metrics_path):
                self.metrics_path.unlink(missing_ok=True)
            return None
        checkpoint = self.load()
        self._history = checkpoint.metadata["history"]
        text = "".join(json.dumps(m) + "\n" for m in self._history)
        with self.writing("the metrics", self.metrics_path):
            atomic_write(self.metrics_path, lambda tmp: tmp.write_text(text))
        return checkpoint

    def _lock(self) -> None:
        """Take the lock on ``.lock`` and write the holder's name in it, or refuse, naming the
        holder."""
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0)
                os.close(fd)
                raise RunError(
                    f"{self.path} is being written by {_holder(holder)}; wait for it to end or choose another --out"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            if _same_file(fd, self.lock_path):
                break
            os.close(fd)  # its last holder removed the file we locked: lock the one there now
        try:
            os.ftruncate(fd, 0)
            started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            os.write(
                fd,
                json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}).encode(),
            )
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd

    def _unlock(self) -> None:
        with suppress(OSError):  # left behind (a read-only directory, say), it is stale at once
            self.lock_path.unlink()
        os.close(self._lock_fd)

    @contextmanager
    def writing(self, what: str, where: Path) -> Iterator[None]:
        """Turn a failed write of ``what`` at ``where`` into one line saying what failed,
        where, and where the run stands."""
        try:
            yield
        except RunError:
            raise
        except OSError as e:
            at = f" ({e.filename})" if e.filename and Path(e.filename) != where else ""
            raise RunError(
                f"cannot write {what} at {where}: {e.strerror or e}{at}; {self.last_checkpoint()}"
            ) from None

    def last_checkpoint(self) -> str:
        """Where the run stands, for error messages: the epoch of its last checkpoint, verified,
        or why there is none to trust."""
        if not self.checkpoint_path.exists():
            return "no checkpoint has been written yet"
        try:
            epoch = self.load().metadata["epoch"]
        except OSError as e:  # RunError included
            return f"the last checkpoint does not verify ({e})"
        return f"{self.checkpoint_path} holds epoch {epoch} (the last checkpoint is intact)"

    def load(self) -> Checkpoint:
        """The last checkpoint, refused unless its metadata carry the metrics of each of its epochs."""
        checkpoint = load_checkpoint(self.checkpoint_path)
        epoch, history = checkpoint.metadata.get("epoch"), checkpoint.metadata.get("history")
        if type(epoch) is not int or epoch < 1:
            raise field_error(self.checkpoint_path, "metadata/epoch", f"is {epoch!r}, not an epoch number")
        if not (
            isinstance(history, list)
            and len(history) == epoch
            and all(isinstance(m, dict) and m.get("epoch") == i + 1 for i, m in enumerate(history))
        ):
            raise field_error(
                self.checkpoint_path, "metadata/history", f"is not the metrics of epochs 1 to {epoch}"
            )
        return checkpoint

    def commit(self, modules: dict, state: dict, metadata: dict, metrics: dict) -> list[dict]:
        """Commit an epoch: its checkpoint, carrying the metrics of every epoch so far, renamed
        into place; then its line appended to ``metrics.jsonl`` and the curves redrawn. Returns
        the history."""
        history = [*self._history, metrics]
        with self.writing(f"the checkpoint of epoch {metrics['epoch']}", self.checkpoint_path):
            save_checkpoint(self.checkpoint_path, modules, state, {**metadata, "history": history})
        self._history = history
        with self.writing("the metrics", self.metrics_path), self.metrics_path.open("a") as f:
            f.write(json.dumps(metrics) + "\n")
        with self.writing("the training curves", self.path / self.CURVES):
            plot_curves(history, self.path / self.CURVES)
        return history

    def history(self) -> list[dict]:
        """Every epoch's metrics as ``metrics.jsonl`` has them; a damaged line is refused,
        naming the file and the line."""
        if not self.metrics_path.exists():
            return []
        history = []
        for number, line in enumerate(self.metrics_path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                metrics = json.loads(line)
            except json.JSONDecodeError as e:
                raise self._damaged(number, e.msg) from None
            if not isinstance(metrics, dict) or "epoch" not in metrics:
                raise self._damaged(number, "not an epoch's metrics")
            history.append(metrics)
        return history

    def _damaged(self, line: int, problem: str) -> RunError:
        return RunError(
            f"{self.metrics_path}, line {line}: damaged ({problem}); "
            "--resume rewrites the file from the checkpoint, which holds every epoch's metrics"
        )


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``fd`` is open on the file now at ``path``."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (now.st_dev, now.st_ino)


def _holder(text: bytes) -> str:
    """The lock holder's name as its lock file gives it."""
    try:
        holder = json.loads(text)
        return f"pid {holder['pid']} on {holder['host']} (since {holder['started']})"
    except (ValueError, TypeError, KeyError):
        return "another process (it has not written its name yet)"
