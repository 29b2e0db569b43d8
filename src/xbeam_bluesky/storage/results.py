"""Analysis results of record (cluster maps, refined structures, ...) written to tiled, linked to a raw run.

Results live in the top-level container ``analysis`` of the catalog, one container per result with
metadata ``{"raw_uid", "kind", "created", **metadata}``, spec ``XbeamAnalysisResult``, one array per entry of
``arrays`` and optionally the PNG bytes as a uint8 array ``png``. Raw runs are never modified.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ANALYSIS_CONTAINER = "analysis"
RESULT_SPEC = "XbeamAnalysisResult"


def _analysis_root(client: Any) -> Any:
    if ANALYSIS_CONTAINER in client:
        return client[ANALYSIS_CONTAINER]
    try:
        return client.create_container(
            key=ANALYSIS_CONTAINER, metadata={"description": "xbeam analysis results"}
        )
    except Exception:  # created concurrently by another writer
        if ANALYSIS_CONTAINER in client:
            return client[ANALYSIS_CONTAINER]
        raise


def write_analysis_result(
    client: Any,
    raw_uid: str,
    kind: str,
    arrays: dict[str, np.ndarray],
    metadata: dict,
    png: bytes | Path | None = None,
) -> str:
    """Write an analysis result linked to the raw run it was computed from.

    Parameters
    ----------
    client : tiled.client.container.Container
        The catalog root (``Storage.client``).
    raw_uid : str
        uid of the analysed run.
    kind : str
        What it is, e.g. ``"clustering"``, ``"rietveld"``.
    arrays : dict of str → numpy.ndarray
        Named arrays (maps, spectra, fitted patterns).
    metadata : dict
        JSON-serializable description (parameters, figures of merit, failures).
    png : bytes or pathlib.Path, optional
        A rendered figure, stored as the uint8 array ``png``.

    Returns
    -------
    str
        The result's uid (its key in ``client["analysis"]``).
    """
    if not raw_uid or not isinstance(raw_uid, str):
        raise ValueError(f"raw_uid = {raw_uid!r}; expected the uid of the analysed run")
    if not kind or not isinstance(kind, str):
        raise ValueError(f"kind = {kind!r}; expected a non-empty string such as 'clustering'")
    reserved = {"png"} & set(arrays)
    if reserved:
        raise ValueError("arrays may not be named 'png' (reserved for the figure)")
    uid = uuid.uuid4().hex
    md = {**metadata, "raw_uid": raw_uid, "kind": kind, "created": time.time(), "result_uid": uid}
    node = _analysis_root(client).create_container(key=uid, metadata=md, specs=[RESULT_SPEC])
    for name, array in arrays.items():
        node.write_array(np.ascontiguousarray(array), key=name)
    if png is not None:
        data = Path(png).read_bytes() if isinstance(png, str | Path) else bytes(png)
        node.write_array(np.frombuffer(data, dtype=np.uint8), key="png", metadata={"mimetype": "image/png"})
    return uid


def analysis_results(client: Any, raw_uid: str, kind: str | None = None) -> list[Any]:
    """Result containers linked to ``raw_uid`` (optionally of one ``kind``), oldest first."""
    from tiled.queries import Key

    if ANALYSIS_CONTAINER not in client:
        return []
    found = client[ANALYSIS_CONTAINER].search(Key("raw_uid") == raw_uid)
    if kind is not None:
        found = found.search(Key("kind") == kind)
    return sorted(found.values(), key=lambda node: node.metadata.get("created", 0))


def result_png(node: Any) -> bytes | None:
    """The PNG stored with a result, if any."""
    return np.asarray(node["png"].read()).tobytes() if "png" in node else None
