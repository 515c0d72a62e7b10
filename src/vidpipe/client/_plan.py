"""A builder of multi-step plans (the body of ``POST /v1/jobs``).

A plan is a DAG of named steps; a step's params may use another step's output. In
Python that is a :class:`Ref`, returned by :meth:`Plan.step`, which becomes
``{"$ref": "<step>[.<key>...]"}`` when the plan is serialized::

    plan = Plan(title="a lighthouse at dusk")
    img = plan.step("img", "image", prompt="a lighthouse at dusk")
    voice = plan.step("voice", "speech", text="Every night, the light comes on.")
    plan.step("final", "compose", scenes=[{"visual": img, "narration": voice}])
    body = plan.to_dict()

Only obvious mistakes are caught here (two steps of one name, a :class:`Ref` of another
plan, an empty plan, a malformed path); the server checks everything else (kinds,
params, cycles, the output) and answers a 422 with a specific ``code``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from vidpipe.client._errors import PlanError

REF = "$ref"

PathPart = str | int


def _check_part(part: object) -> PathPart:
    # bool is an int, and "." would split a key in two on the server: both refused.
    if isinstance(part, bool) or not isinstance(part, str | int):
        raise PlanError(f"a reference path takes str keys and int indexes, not {part!r}")
    if isinstance(part, int) and part < 0:
        raise PlanError(f"a reference index must be 0 or more, not {part}")
    if isinstance(part, str) and (not part or "." in part):
        raise PlanError(f"a reference key must be non-empty and without '.', not {part!r}")
    return part


@dataclass(frozen=True)
class Ref:
    """The output of a step of a :class:`Plan`, or a value inside it.

    ``ref["scenes"][0]["text"]`` and ``ref.ref("scenes.0.text")`` point inside the output.
    Made by :meth:`Plan.step`; usable only in the plan that made it.
    """

    plan: Plan = field(repr=False)
    step: str
    path: tuple[PathPart, ...] = ()

    def __getitem__(self, key: PathPart) -> Ref:
        return Ref(self.plan, self.step, (*self.path, _check_part(key)))

    def __iter__(self) -> NoReturn:
        # With __getitem__ alone, Python would iterate ref[0], ref[1], ... forever.
        raise TypeError("a Ref is not iterable; index it with ref[key] or ref.ref('a.0.b')")

    def ref(self, path: str) -> Ref:
        """A value inside this output by dotted path: ``"scenes.0.text"`` (digits are
        list indexes)."""
        parts = path.split(".")
        if not path or any(not part for part in parts):
            raise PlanError(f"a reference path needs non-empty parts, not {path!r}")
        return Ref(
            self.plan,
            self.step,
            (*self.path, *(int(p) if p.isascii() and p.isdigit() else p for p in parts)),
        )

    @property
    def target(self) -> str:
        """What ``$ref`` holds: ``"img"`` or ``"script.scenes.0.text"``."""
        return ".".join([self.step, *(str(part) for part in self.path)])

    def to_dict(self) -> dict[str, str]:
        return {REF: self.target}


@dataclass(frozen=True)
class _Step:
    name: str
    kind: str
    params: dict[str, Any]
    after: tuple[str, ...]
    weight: float | None


class Plan:
    """A plan under construction; :meth:`to_dict` is the body of ``POST /v1/jobs``.

    ``output`` names the step whose video is the result (a :class:`Ref` or a name); when
    it is not set, the server takes the one step that no other step depends on.
    """

    def __init__(
        self,
        *,
        title: str | None = None,
        output: Ref | str | None = None,
        metadata: Mapping[str, str] | None = None,
        max_cost_usd: float | None = None,
        derivatives: Sequence[str] = (),
    ) -> None:
        self.title = title
        self.output = output
        self.metadata: dict[str, str] = dict(metadata or {})
        self.max_cost_usd = max_cost_usd
        self.derivatives: list[str] = list(derivatives)
        self._steps: dict[str, _Step] = {}

    def step(
        self,
        name: str,
        kind: str,
        params: Mapping[str, Any] | None = None,
        /,
        *,
        after: Sequence[Ref | str] = (),
        weight: float | None = None,
        **more: Any,
    ) -> Ref:
        """Add a step and return a :class:`Ref` to its output.

        Params are keywords (``prompt="..."``) or a mapping given third (for a param whose
        name is ``after`` or ``weight``), not both for one key. Any value may be or contain
        a :class:`Ref` of this plan. ``after`` adds dependencies no param expresses.
        """
        if name in self._steps:
            raise PlanError(f"this plan already has a step named {name!r}")
        given = dict(params or {})
        both = sorted(set(given) & set(more))
        if both:
            raise PlanError(f"step {name!r}: {', '.join(both)} given twice")
        where = f"step {name!r}"
        # Encoded now: later changes to the caller's lists and dicts do not leak in.
        encoded = _to_json({**given, **more}, lambda ref: self._own(ref, where))
        waits = tuple(self._name_of(item, f"{where} after") for item in after)
        self._steps[name] = _Step(name, kind, encoded, waits, weight)
        return Ref(self, name)

    def to_dict(self) -> dict[str, Any]:
        """The JSON body of ``POST /v1/jobs`` (a fresh copy each call)."""
        if not self._steps:
            raise PlanError("a plan needs at least one step")
        steps: list[dict[str, Any]] = []
        for step in self._steps.values():
            item: dict[str, Any] = {
                "name": step.name,
                "kind": step.kind,
                "params": copy.deepcopy(step.params),
            }
            if step.after:
                item["after"] = list(step.after)
            if step.weight is not None:
                item["weight"] = step.weight
            steps.append(item)
        body: dict[str, Any] = {"steps": steps}
        if self.output is not None:
            body["output"] = self._name_of(self.output, "output")
        if self.title is not None:
            body["title"] = self.title
        if self.metadata:
            body["metadata"] = dict(self.metadata)
        if self.max_cost_usd is not None:
            body["max_cost_usd"] = self.max_cost_usd
        if self.derivatives:
            body["derivatives"] = list(self.derivatives)
        return body

    def _own(self, ref: Ref, where: str) -> Ref:
        if ref.plan is not self:
            raise PlanError(
                f"{where}: {ref.target!r} is a Ref of another Plan; "
                "use the Ref returned by this plan's step()"
            )
        return ref

    def _name_of(self, item: Ref | str, where: str) -> str:
        """A whole step, named by a :class:`Ref` of this plan or a string."""
        if isinstance(item, str):
            return item
        if self._own(item, where).path:
            raise PlanError(f"{where} takes a whole step, not {item.target!r}")
        return item.step


def job_body(plan: Plan | Mapping[str, Any]) -> dict[str, Any]:
    """The body of ``POST /v1/jobs`` from a :class:`Plan` or a ready mapping (in which a
    bare :class:`Ref` also becomes ``{"$ref": ...}``)."""
    if isinstance(plan, Plan):
        return plan.to_dict()
    body: dict[str, Any] = _to_json(plan, lambda ref: ref)
    return body


def _to_json(value: Any, check: Callable[[Ref], Ref]) -> Any:
    """``value`` as plain JSON data (a deep copy), each :class:`Ref` (passed through
    ``check``) as ``{"$ref": ...}``."""
    if isinstance(value, Ref):
        return check(value).to_dict()
    if isinstance(value, Mapping):
        return {str(key): _to_json(item, check) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(item, check) for item in value]
    return value
