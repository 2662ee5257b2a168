"""Pulumi mocks for component and program tests.

`pulumi_mocks` installs Pulumi's official mocks (through `infra.render.mocked_runtime`, the
same recorder the render uses) in a fresh context that is dropped afterwards, so no runtime
state leaks between tests. Mocked outputs use the engine's camelCase keys.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra.render import RecordingMocks, RenderedResource, RenderResult, mocked_runtime, resolve, run_program

REPO = Path(__file__).resolve().parents[2]
_counter = itertools.count()


@dataclass
class Mocked:
    mocks: RecordingMocks
    run: Callable[[Callable[[], Any]], Any]

    def build(self, fn: Callable[[], Any]) -> Any:
        """Construct resources inside the mocked runtime and wait for their registrations."""
        return self.run(fn)

    def value(self, output: Any) -> Any:
        """The resolved value of an Output (or a structure of Outputs)."""
        return resolve(self.run, output)

    def children_of(self, type_: str, name: str) -> list[RenderedResource]:
        ref = f"{type_}::{name}"
        return sorted((r for r in self.mocks.resources if r.parent == ref), key=lambda r: (r.type, r.name))

    def one(self, type_: str, name: str) -> RenderedResource:
        found = [r for r in self.mocks.resources if r.type == type_ and r.name == name]
        assert len(found) == 1, f"expected one {type_} {name}, found {len(found)}"
        return found[0]


@pytest.fixture
def pulumi_mocks() -> Iterator[Mocked]:
    with mocked_runtime("test", {}, []) as (mocks, run):
        yield Mocked(mocks, run)


@pytest.fixture
def custom_timeouts(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[str, str], tuple[str, str]]:
    """(create, update) customTimeouts of each resource registered from now on, by (type, name):
    the recorder does not keep resource options."""
    from pulumi.runtime.mocks import MockMonitor

    seen: dict[tuple[str, str], tuple[str, str]] = {}
    register = MockMonitor.RegisterResource

    def spy(self: MockMonitor, request: Any) -> Any:
        seen[(request.type, request.name)] = (request.customTimeouts.create, request.customTimeouts.update)
        return register(self, request)

    monkeypatch.setattr(MockMonitor, "RegisterResource", spy)
    return seen


@pytest.fixture
def unique() -> Callable[[str], str]:
    """A component name no other test uses."""
    return lambda prefix: f"{prefix}{next(_counter)}"


@pytest.fixture(scope="session")
def dev_render() -> RenderResult:
    return run_program("dev", REPO)


@pytest.fixture(scope="session")
def prod_render() -> RenderResult:
    return run_program("prod", REPO)
