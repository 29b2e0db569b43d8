"""A durable local spool of the document stream, so no run is lost when tiled is unreachable.

:class:`SpoolingWriter` is the callback a RunEngine subscribes (``Storage.writer``). Every document is first
appended to ``SPOOL_DIR/<run uid>.jsonl`` (one JSON object ``{"name", "doc"}`` per line, flushed and fsynced
before the document goes on), then handed to a ``TiledWriter``. When tiled fails, one warning line names the
server, the run and the spool file; the rest of the run is only spooled (the plan goes on: the frames are on
local disk and the documents that tie them to energies and tiles are in the spool). A run that reached tiled
whole has its spool file removed at its stop document.

:func:`replay_spool` writes a spooled run into tiled (replacing a partial copy there), :func:`replay_pending`
every spooled run that no process is still writing. Both run automatically: at the stop document of a run that
went to the spool (if tiled answers again) and when storage is opened (:func:`xbeam_bluesky.storage.open_storage`);
by hand with ``replay_pending(storage.spool_dir, client)``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

SUFFIX = ".jsonl"


def _jsonable(value: Any) -> Any:
    """JSON form of the numpy values found in documents (arrays → lists, scalars → numbers)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot spool a {type(value).__name__} in a document")


def _probe(client: Any, timeout_s: float = 2.0) -> bool:
    """True when the tiled server of ``client`` answers within ``timeout_s`` (no retries)."""
    try:
        response = client.context.http_client.get(client.context.api_uri, timeout=timeout_s)
    except Exception:  # any transport failure means "not reachable now"
        return False
    return response.status_code < 500


@dataclass
class _Run:
    uid: str
    path: Path
    file: IO[str]
    stored: bool = True


class SpoolingWriter:
    """RunEngine callback: spool every document durably, then write it to tiled while tiled answers.

    Parameters
    ----------
    client : tiled.client.container.Container
        The catalog root.
    spool_dir : pathlib.Path
        Directory of the spool files (created if needed).
    writer_factory : callable, optional
        ``writer_factory(client)`` → the callback that writes to tiled; default ``TiledWriter``.

    Notes
    -----
    Never raises into the RunEngine: a tiled failure is logged once per run (one line, the traceback at DEBUG
    level) and the run goes on being spooled; a failure to write the spool itself (disk full) is logged as an
    error naming the file, because then only the detector files remain.
    """

    def __init__(self, client: Any, spool_dir: str | Path, writer_factory: Callable | None = None) -> None:
        self.client = client
        self.spool_dir = Path(spool_dir)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._factory = writer_factory or _tiled_writer
        self._writer: Callable | None = self._factory(client)
        self._runs: dict[str, _Run] = {}
        self._owners: dict[str, str] = {}  # descriptor / resource uid -> run uid
        self._offline = False

    def __call__(self, name: str, doc: dict) -> None:
        run = self._run_of(name, doc)
        if run is None:
            return
        self._spool(run, name, doc)
        if run.stored:
            try:
                if self._writer is None:
                    self._writer = self._factory(self.client)
                self._writer(name, doc)
            except Exception as exc:
                run.stored = False
                self._offline = True
                self._writer = None  # its run state is unusable; a new one at the next run's start
                logger.warning(
                    "tiled at %s failed at the %s document of run %s (%s: %s); the run continues and its "
                    "documents are kept in %s, replayed into tiled when it answers again (at the end of the "
                    "run, or at the next open_storage on this data directory)",
                    self.client.context.api_uri, name, run.uid, type(exc).__name__, exc, run.path,
                )  # fmt: skip
                logger.debug("tiled write failure", exc_info=True)
        if name == "stop":
            self._finish(run)

    def _run_of(self, name: str, doc: dict) -> _Run | None:
        if name == "start":
            uid = doc["uid"]
            path = self.spool_dir / f"{uid}{SUFFIX}"
            file = open(path, "a", encoding="utf-8")
            fcntl.flock(file.fileno(), fcntl.LOCK_EX)  # replay skips files a writer holds
            stored = not (self._offline and not _probe(self.client))
            self._offline = not stored
            if not stored:
                logger.warning(
                    "tiled at %s is still unreachable; run %s goes to the spool %s",
                    self.client.context.api_uri, uid, path,
                )  # fmt: skip
            run = self._runs[uid] = _Run(uid, path, file, stored)
            return run
        uid = doc.get("run_start")
        if uid is None:  # event, datum, stream_datum: the run of their descriptor / resource
            key = doc.get("descriptor") or doc.get("resource") or doc.get("stream_resource")
            uid = self._owners.get(key)
        run = self._runs.get(uid) if uid else None
        if run is None:
            logger.error("%s document %s belongs to no open run; not stored", name, doc.get("uid"))
            return None
        if name in ("descriptor", "resource", "stream_resource"):
            self._owners[doc["uid"]] = run.uid
        return run

    def _spool(self, run: _Run, name: str, doc: dict) -> None:
        try:
            run.file.write(json.dumps({"name": name, "doc": doc}, default=_jsonable) + "\n")
            run.file.flush()
            os.fsync(run.file.fileno())
        except (OSError, TypeError) as exc:
            logger.error(
                "cannot spool the %s document of run %s to %s (%s); if tiled fails too this document is lost",
                name, run.uid, run.path, exc,
            )  # fmt: skip

    def _finish(self, run: _Run) -> None:
        del self._runs[run.uid]
        self._owners = {k: v for k, v in self._owners.items() if v != run.uid}
        fcntl.flock(run.file.fileno(), fcntl.LOCK_UN)
        run.file.close()
        if run.stored:
            run.path.unlink(missing_ok=True)
            return
        if _probe(self.client):
            try:
                replay_spool(run.path, self.client, self._factory)
            except Exception as exc:
                logger.warning(
                    "replay of %s failed (%s); it is kept; the next open_storage retries", run.path, exc
                )
            else:
                self._offline = False
                return
        logger.warning(
            "run %s ended with tiled unreachable; it is complete in %s: the next open_storage on this data "
            "directory writes it into tiled",
            run.uid, run.path,
        )  # fmt: skip


def _tiled_writer(client: Any) -> Any:
    from bluesky_tiled_plugins import TiledWriter

    return TiledWriter(client)


def read_spool(path: str | Path) -> list[tuple[str, dict]]:
    """The (name, doc) pairs of a spool file, in order.

    A last line cut short (the process died while writing it) is dropped with a warning; any other bad line
    raises.

    Raises
    ------
    XbeamInputError
        When the file is not a spool (no start document first, or a corrupt line before the last).
    """
    from xbeam_bluesky.errors import XbeamInputError

    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    docs = []
    for i, line in enumerate(lines):
        try:
            item = json.loads(line)
            docs.append((str(item["name"]), dict(item["doc"])))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            if i == len(lines) - 1:
                logger.warning("%s: last line %d is incomplete (cut by a crash); dropped", path, i + 1)
                break
            raise XbeamInputError(f"{path}: line {i + 1} is not a spooled document ({exc})") from None
    if not docs or docs[0][0] != "start":
        raise XbeamInputError(f"{path}: expected a spool file starting with a start document")
    return docs


def replay_spool(path: str | Path, client: Any, writer_factory: Callable | None = None) -> str:
    """Write a spooled run into tiled and remove the spool file.

    A partial copy of the run in tiled (written before the failure) is deleted first; the detector files it
    pointed to are not touched. A spool without a stop document (the acquiring process died) gets one with
    ``exit_status="fail"`` and a reason saying so.

    Parameters
    ----------
    path : str or pathlib.Path
        A ``<uid>.jsonl`` spool file.
    client : tiled.client.container.Container
        The catalog root.

    Returns
    -------
    str
        The run uid.
    """
    path = Path(path)
    docs = read_spool(path)
    uid = docs[0][1]["uid"]
    if docs[-1][0] != "stop":
        docs.append(
            ("stop", {
                "uid": f"{uid}-spool-stop",
                "run_start": uid,
                "time": time.time(),
                "exit_status": "fail",
                "reason": f"the acquiring process ended before the stop document; recovered from {path.name}",
                "num_events": {},
            })
        )  # fmt: skip
    if uid in client:
        client.delete_contents([uid], recursive=True, external_only=False)
    writer = (writer_factory or _tiled_writer)(client)
    for name, doc in docs:
        writer(name, doc)
    path.unlink()
    logger.info("replayed run %s (%d documents) from %s into tiled", uid, len(docs), path)
    return uid


def replay_pending(spool_dir: str | Path, client: Any) -> list[str]:
    """Replay every spool file in ``spool_dir`` that no process is writing; returns the replayed uids.

    A file that fails to replay is kept and logged (the others go on).
    """
    spool_dir = Path(spool_dir)
    replayed = []
    for path in sorted(spool_dir.glob(f"*{SUFFIX}")):
        with open(path, encoding="utf-8") as probe:
            try:
                fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a run still being acquired
            try:
                replayed.append(replay_spool(path, client))
            except Exception as exc:
                logger.warning(
                    "could not replay %s into tiled (%s: %s); it is kept", path, type(exc).__name__, exc
                )
    return replayed
