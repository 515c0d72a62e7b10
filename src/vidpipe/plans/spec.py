"""A plan is a DAG of named steps whose params may reference earlier steps' outputs.

Pure: validation and reference resolution only; nothing here touches the database.

A reference is a JSON object ``{"$ref": "<step>"}`` (the step's whole output) or
``{"$ref": "<step>.<key>.<index>..."}`` (a value inside it). A step depends on every
step it references, plus those it names in ``after``; steps with no path between them
may run in parallel. Every problem is found before anything runs, and reported with a
specific code: ``duplicate_step_name``, ``unknown_step_kind``, ``dangling_reference``,
``plan_cycle``, ``invalid_step_params``, ``invalid_plan_output``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vidpipe.errors import InvalidRequest

REF = "$ref"
MAX_STEPS = 200
# Step names appear in storage keys and references: keep them plain.
STEP_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")


class PlanError(InvalidRequest):
    """A plan that cannot run; ``code`` says why, ``param`` points at the place."""


@dataclass(frozen=True)
class PlanStep:
    name: str
    kind: str
    params: dict[str, Any]
    after: tuple[str, ...] = ()
    weight: float | None = None

    def references(self) -> list[tuple[str, tuple[str | int, ...]]]:
        return list(iter_refs(self.params))

    def depends_on(self) -> tuple[str, ...]:
        """The steps this one waits for, in first-mention order, without repeats."""
        seen: dict[str, None] = {}
        for name, _ in self.references():
            seen.setdefault(name, None)
        for name in self.after:
            seen.setdefault(name, None)
        return tuple(seen)


def parse_ref(text: str) -> tuple[str, tuple[str | int, ...]]:
    """``"scene_1.words.0"`` -> ``("scene_1", ("words", 0))``."""
    if not isinstance(text, str) or not text:
        raise PlanError("a $ref must be a non-empty string", code="invalid_reference")
    head, *rest = text.split(".")
    path: list[str | int] = []
    for part in rest:
        if not part:
            raise PlanError(f"empty part in reference {text!r}", code="invalid_reference")
        path.append(int(part) if part.isdigit() else part)
    return head, tuple(path)


def is_ref(value: Any) -> bool:
    return isinstance(value, Mapping) and set(value) == {REF}


def iter_refs(value: Any) -> Iterator[tuple[str, tuple[str | int, ...]]]:
    """Every reference inside a params value, depth first."""
    if is_ref(value):
        yield parse_ref(value[REF])
    elif isinstance(value, Mapping):
        if REF in value:
            raise PlanError("an object with $ref must have no other keys", code="invalid_reference")
        for item in value.values():
            yield from iter_refs(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from iter_refs(item)


def contains_ref(value: Any) -> bool:
    return next(iter_refs(value), None) is not None


def resolve(value: Any, outputs: Mapping[str, Any]) -> Any:
    """``value`` with every reference replaced by what it points at in ``outputs``."""
    if is_ref(value):
        name, path = parse_ref(value[REF])
        if name not in outputs:
            raise PlanError(f"{name!r} has no output", code="dangling_reference")
        return lookup(outputs[name], path, value[REF])
    if isinstance(value, Mapping):
        return {key: resolve(item, outputs) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [resolve(item, outputs) for item in value]
    return value


def lookup(output: Any, path: Sequence[str | int], text: str = "") -> Any:
    current = output
    for part in path:
        try:
            if isinstance(part, int) and isinstance(current, list):
                current = current[part]
            elif isinstance(current, Mapping):
                current = current[str(part)]
            else:
                raise KeyError(part)
        except (KeyError, IndexError):
            raise PlanError(
                f"reference {text!r}: the output has no {part!r}", code="dangling_reference"
            ) from None
    return current


def topological_order(plan: Sequence[PlanStep]) -> list[str]:
    """Step names so that every step comes after what it depends on (stable: ties keep
    the order given). Raises ``plan_cycle`` naming the steps on a cycle."""
    deps = {step.name: step.depends_on() for step in plan}
    order: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*path[path.index(name) :], name]
            raise PlanError(
                "the plan has a cycle: " + " -> ".join(cycle), code="plan_cycle", param="steps"
            )
        state[name] = 1
        for dep in deps[name]:
            visit(dep, [*path, name])
        state[name] = 2
        order.append(name)

    for step in plan:
        visit(step.name, [])
    return order


def check_structure(plan: Sequence[PlanStep], known_kinds: Mapping[str, object]) -> list[str]:
    """Names, kinds, references and cycles; returns a topological order."""
    if not plan:
        raise PlanError("a plan needs at least one step", code="empty_plan", param="steps")
    if len(plan) > MAX_STEPS:
        raise PlanError(
            f"a plan may have at most {MAX_STEPS} steps", code="plan_too_large", param="steps"
        )
    names: set[str] = set()
    for index, step in enumerate(plan):
        where = f"steps[{index}]"
        if not STEP_NAME.match(step.name):
            raise PlanError(
                f"step name {step.name!r} must match {STEP_NAME.pattern}",
                code="invalid_step_name",
                param=f"{where}.name",
            )
        if step.name in names:
            raise PlanError(
                f"two steps are named {step.name!r}", code="duplicate_step_name", param=where
            )
        names.add(step.name)
        if step.kind not in known_kinds:
            raise PlanError(
                f"unknown step kind {step.kind!r}; known: {', '.join(sorted(known_kinds))}",
                code="unknown_step_kind",
                param=f"{where}.kind",
            )
    for index, step in enumerate(plan):
        for dep in step.depends_on():
            if dep not in names:
                raise PlanError(
                    f"step {step.name!r} refers to {dep!r}, which is not in the plan",
                    code="dangling_reference",
                    param=f"steps[{index}].params",
                )
            if dep == step.name:
                raise PlanError(
                    f"step {step.name!r} refers to itself", code="plan_cycle", param="steps"
                )
    return topological_order(plan)
