"""The step contract: a class per step, registered under its graph node name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

REGISTRY: dict[str, type["Step"]] = {}


@dataclass(frozen=True)
class Finding:
    """One difference between AWS and the config: a missing resource or a wrong setting."""

    resource: str
    problem: str
    missing: bool = False
    # what apply does about it beyond an in-place update: "replace" (made anew beside the
    # old one, which then goes) or "upgrade" (a version walked forward in steps)
    change: str = ""

    def __str__(self) -> str:
        return f"{self.resource}: {self.problem}"


def register(cls: type["Step"]) -> type["Step"]:
    REGISTRY[cls.name] = cls
    return cls


class Step:
    """create converges AWS to the config (adopting what exists), verify only reads,
    destroy removes what the step owns, found by name and ownership tags."""

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    # What tearing the step down loses for good, for steps that hold data: apply removes
    # such a step (its config switched off) only when told it may lose data.
    data_loss: ClassVar[str] = ""

    @staticmethod
    def enabled(config) -> bool:
        return True

    def create(self, ctx) -> dict:
        raise NotImplementedError

    def verify(self, ctx) -> list[Finding]:
        raise NotImplementedError

    def destroy(self, ctx) -> None:
        raise NotImplementedError
