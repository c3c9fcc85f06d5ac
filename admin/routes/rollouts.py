"""Staged rollouts: ``/rollouts``, ``/rollouts/{name}`` and its four commands.

A rollout is started with ``POST /rollouts`` (the spec: listener, route, stable and
canary clusters, steps, dwell, interval, gates); from then on the gateway's rollout
actor moves the route's split by itself and writes where it is into the rollout's
``status``, persisted with the config. ``POST /rollouts/{name}/pause``, ``/resume``,
``/abort`` (to 0%) and ``/promote`` (to 100%) are commands to that actor; a command
the rollout's state does not take (pausing a finished rollout) is a 409.
``DELETE /rollouts/{name}`` forgets a rollout and leaves its route's split as it is.

Each answer is the rollout as ``GET`` shows it: the spec, its ``state``, ``step`` and
``weight``, the ``history`` with timestamps (Unix seconds), the ``breach`` that rolled
it back, and ``current``: the canary's figures in the step in progress as last judged.
"""

from __future__ import annotations

from typing import Any

import attrs
from fastapi import APIRouter, Request, Response

from admin.errors import GUARDED, WRITE, RequestRefused, responses
from admin.http import answer, apply, body_schema, config_of, gateway_of, json_content, read_json
from gateway import (
    ROLLOUT_ACTIONS,
    ConfigError,
    ConfigIssue,
    RolloutAction,
    RolloutConflict,
    RolloutNotFound,
    RolloutsHandle,
)
from gateway.config import Config, Rollout, structure, unstructure
from policies.rollout import TRANSITIONS, RolloutInput, RolloutState

router = APIRouter(tags=["rollouts"])

_VIEW = json_content({"type": "object"}, "The rollout: spec, state, step, weight, history")


def rollout_view(rollout: Rollout, rollouts: RolloutsHandle | None) -> dict[str, Any]:
    """A rollout as the API shows it (also the CLI's and the dashboard's source)."""
    spec = unstructure(rollout)
    status = spec.pop("status")
    breaches = [e for e in status["history"] if e["event"] == "gate_breached"]
    step = None if rollouts is None else rollouts.steps.get(rollout.name)
    return {
        **spec,
        "state": status["state"],
        "step": status["step"],
        "weight": status["weight"],
        "breach": breaches[-1] if breaches else None,
        "current": None if step is None else step.as_json(),
        "history": status["history"],
    }


def _handle(request: Request) -> RolloutsHandle:
    handle = gateway_of(request).rollouts
    assert handle is not None, "the admin API runs in the process that runs rollouts"
    return handle


def _view(request: Request, config: Config, name: str, status: int = 200) -> Response:
    rollout = config.rollout(name)
    if rollout is None:
        raise RolloutNotFound(f"no rollout named {name!r}")
    return answer(rollout_view(rollout, gateway_of(request).rollouts), config, status)


@router.get(
    "/rollouts",
    name="list_rollouts",
    responses={200: json_content({"type": "array"}, "Every rollout"), **responses(*GUARDED)},
)
async def list_rollouts(request: Request) -> Response:
    """Every staged rollout (a canary moved in steps); POST starts one."""
    config = config_of(request)
    handle = gateway_of(request).rollouts
    return answer([rollout_view(r, handle) for r in config.rollouts], config)


@router.get(
    "/rollouts/{name}", name="get_rollout", responses={200: _VIEW, **responses(*GUARDED, 404)}
)
async def get_rollout(request: Request, name: str) -> Response:
    return _view(request, config_of(request), name)


@router.post(
    "/rollouts",
    name="create_rollout",
    status_code=201,
    openapi_extra=body_schema(Rollout, description="The rollout; its status is the gateway's"),
    responses={201: _VIEW, **responses(*WRITE, 409)},
)
async def create_rollout(request: Request) -> Response:
    body = await read_json(request)
    path = f"rollouts[{len(config_of(request).rollouts)}]"
    if isinstance(body, dict) and "status" in body:
        raise ConfigError(
            [ConfigIssue(f"{path}.status", "is the gateway's: a rollout starts at its first step")]
        )
    rollout = structure(Rollout, body, path)
    config = await _handle(request).start(rollout)
    response = _view(request, config, rollout.name, 201)
    response.headers["Location"] = f"/rollouts/{rollout.name}"
    return response


@router.delete(
    "/rollouts/{name}",
    name="delete_rollout",
    status_code=204,
    responses=responses(*WRITE),
)
async def delete_rollout(request: Request, name: str) -> Response:
    def forget(config: Config) -> Config:
        if config.rollout(name) is None:
            raise RolloutNotFound(f"no rollout named {name!r}")
        return attrs.evolve(config, rollouts=tuple(r for r in config.rollouts if r.name != name))

    config = await apply(request, forget)
    return answer(None, config, 204)


def commands_taken(state: str) -> list[str]:
    """The commands a rollout in ``state`` takes: its rows in the policy's table."""
    return [
        action
        for action in ROLLOUT_ACTIONS
        if (RolloutState(state), RolloutInput(action)) in TRANSITIONS
    ]


def _conflict_hint(config: Config, name: str) -> str | None:
    """What a rollout that refused a command does take."""
    rollout = config.rollout(name)
    if rollout is None:
        return None
    state = rollout.status.state
    taken = commands_taken(state)
    if taken:
        commands = ", ".join(f"POST /rollouts/{name}/{action}" for action in taken)
        return f"a {state} rollout takes {commands}"
    return (
        f"a {state} rollout is over and takes no command: DELETE /rollouts/{name} forgets "
        "it (the route's split stays as it is), then POST /rollouts starts another"
    )


def _add_command(action: RolloutAction) -> None:
    async def command(request: Request, name: str) -> Response:
        try:
            config = await _handle(request).act(name, action)
        except RolloutConflict as e:
            hint = _conflict_hint(config_of(request), name)
            raise RequestRefused(409, str(e), hint=hint) from None
        return _view(request, config, name)

    command.__name__ = f"{action}_rollout"
    router.post(
        f"/rollouts/{{name}}/{action}",
        name=f"{action}_rollout",
        openapi_extra=_EMPTY_BODY,
        responses={200: _VIEW, **responses(*WRITE, 409)},
    )(command)


#: a command carries no settings; its body is ``{}`` (the guard wants JSON on a POST)
_EMPTY_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object", "maxProperties": 0}}},
    }
}


for _action in ROLLOUT_ACTIONS:
    _add_command(_action)
