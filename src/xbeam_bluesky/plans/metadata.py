"""User metadata for a plan's start document, never overwriting the keys the plan itself writes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from xbeam_bluesky.errors import PlanArgumentError

#: Keys a plan that wraps another (``optimal_xanes_imaging`` around ``xanes_imaging``) may set for it.
WRAPPER_KEYS = frozenset({"plan_name"})


def check_user_md(md: Mapping[str, Any] | None, owned: Iterable[str], plan: str) -> dict[str, Any]:
    """``md`` as a dict, after checking that it sets none of the ``owned`` start-document keys.

    Raises
    ------
    PlanArgumentError
        Naming the clashing keys: the start document would otherwise describe something that was not measured
        (and e.g. live clustering would skip the run).
    """
    if md is None:
        return {}
    if not isinstance(md, Mapping):
        raise PlanArgumentError(f"md = {md!r}; expected a dict of extra start-document metadata")
    clash = sorted(set(md) & set(owned))
    if clash:
        raise PlanArgumentError(
            f"md sets {clash}, which {plan} writes itself (they describe what is measured); "
            "rename them, e.g. under md={'user': {...}}"
        )
    return dict(md)
