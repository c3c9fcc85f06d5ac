"""``triogate ctl``: the common admin operations from a shell, over the admin REST API.

Every command is one or two HTTP calls; what the API answers is printed as a table (or
as JSON with ``--json``), and what it refuses is printed with its reason: each issue of
a 422 by its path in the config, so ``ctl`` and the API never disagree about what is
valid. The API key comes from ``--api-key-file`` or ``$TRIOGATE_API_KEY``, never from a
default.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

import attrs
import click
import httpx
import yaml


@attrs.frozen
class Admin:
    """Where the admin API is and how to authenticate to it."""

    url: str
    api_key: str | None
    as_json: bool

    def call(
        self, method: str, path: str, body: Any = None, *, if_match: int | None = None
    ) -> httpx.Response:
        headers = {"Accept": "application/json"}
        if self.api_key is not None:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if if_match is not None:
            headers["If-Match"] = f'"{if_match}"'
        try:
            with httpx.Client(base_url=self.url, timeout=10.0) as client:
                response = client.request(method, path, json=body, headers=headers)
        except httpx.HTTPError as e:
            _fail(f"cannot reach the admin API at {self.url}: {e}")
        if response.is_error:
            _fail_response(response)
        return response

    def show(self, data: Any) -> bool:
        """Print ``data`` as JSON if asked to; True if it was printed."""
        if self.as_json:
            click.echo(json.dumps(data, indent=2))
        return self.as_json


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _fail_response(response: httpx.Response) -> NoReturn:
    """The admin API's refusal: its ``detail`` (each issue of a refused change on a line)
    and, when it gives one, its ``hint`` (what to do next)."""
    hint = None
    try:
        body = response.json()
        detail = body.get("detail")
        hint = body.get("hint")
    except (ValueError, AttributeError):
        detail = response.text.strip() or response.reason_phrase
    if isinstance(detail, list):
        click.echo(f"error: {response.status_code}: the change was refused:", err=True)
        for issue in detail:
            where = issue.get("loc") if isinstance(issue, dict) else None
            msg = issue.get("msg") if isinstance(issue, dict) else issue
            click.echo(f"  {where}: {msg}" if where else f"  {msg}", err=True)
    else:
        # hypercorn sends no reason phrase: the status code's own then
        phrase = response.reason_phrase or httpx.codes.get_reason_phrase(response.status_code)
        click.echo(f"error: {response.status_code} {phrase}: {detail}", err=True)
    if isinstance(hint, str) and hint:
        click.echo(f"hint: {hint}", err=True)
    sys.exit(1)


def _version(response: httpx.Response) -> str:
    etag: str = response.headers.get("etag", "?")
    return etag.strip('"')


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows aligned under their headers, two spaces apart."""
    cells = [[str(c) for c in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _read_key(api_key_file: Path | None) -> str | None:
    if api_key_file is None:
        return None
    try:
        key = api_key_file.read_text().strip()
    except OSError as e:
        raise click.ClickException(f"--api-key-file: {e.strerror}") from None
    if not key:
        raise click.ClickException(f"--api-key-file: {api_key_file} is empty")
    return key


@click.group()
@click.option(
    "--admin",
    "url",
    envvar="TRIOGATE_ADMIN",
    default="http://127.0.0.1:9901",
    show_default=True,
    help="URL of the admin API ($TRIOGATE_ADMIN).",
)
@click.option(
    "--api-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the API key (else $TRIOGATE_API_KEY).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answers.")
@click.pass_context
def ctl(ctx: click.Context, url: str, api_key_file: Path | None, as_json: bool) -> None:
    """Talk to a running gateway's admin API."""
    key = _read_key(api_key_file) or os.environ.get("TRIOGATE_API_KEY") or None
    ctx.obj = Admin(url.rstrip("/"), key, as_json)


pass_admin = click.make_pass_decorator(Admin)


@ctl.command("config")
@pass_admin
def show_config(admin: Admin) -> None:
    """Print the running config (JSON) and its version."""
    response = admin.call("GET", "/config")
    click.echo(json.dumps(response.json(), indent=2))


@ctl.command("clusters")
@pass_admin
def list_clusters(admin: Admin) -> None:
    """List clusters with each endpoint's state and health."""
    status = admin.call("GET", "/status").json()
    if admin.show(status["clusters"]):
        return
    rows = []
    for name, cluster in status["clusters"].items():
        if not cluster["endpoints"]:
            rows.append((name, "-", "", "", "", "", ""))
        for ep in cluster["endpoints"]:
            rows.append(
                (
                    name,
                    ep["address"],
                    ep["state"],
                    ep["weight"],
                    "yes" if ep["serving"] else "no",
                    ep["active_requests"],
                    f"{ep['open_connections']}/{ep['idle_connections']}",
                )
            )
    headers = ("CLUSTER", "ENDPOINT", "STATE", "WEIGHT", "SERVING", "ACTIVE", "CONNS/IDLE")
    click.echo(table(headers, rows))
    click.echo(f"config version {status['version']}")


@ctl.command("listeners")
@pass_admin
def list_listeners(admin: Admin) -> None:
    """List listeners, their routes and where each route sends."""
    response = admin.call("GET", "/listeners")
    if admin.show(response.json()):
        return
    rows = []
    for lst in response.json():
        hosts = lst["virtual_hosts"] or [{"name": "", "routes": lst["routes"]}]
        for vh in hosts:
            for i, route in enumerate(vh["routes"]):
                match = route["match"]
                target = route["cluster"] or ", ".join(
                    f"{wc['cluster']}={wc['weight']}" for wc in route["split"]
                )
                rows.append(
                    (
                        lst["name"],
                        lst["address"],
                        vh["name"],
                        route["name"] or i,
                        _match_text(match),
                        target,
                    )
                )
    click.echo(table(("LISTENER", "ADDRESS", "VHOST", "ROUTE", "MATCH", "CLUSTERS"), rows))
    click.echo(f"config version {_version(response)}")


def _match_text(match: dict[str, Any]) -> str:
    """A route's match in a table cell: ``/exact``, ``/prefix*`` or ``~regex``, then any
    conditions in brackets."""
    if match.get("path") is not None:
        text = str(match["path"])
    elif match.get("prefix") is not None:
        text = f"{match['prefix']}*"
    else:
        text = f"~{match.get('regex')}"
    extra = [*match.get("methods", ())]
    extra += [f"{h['name']}:" for h in match.get("headers", ())]
    extra += [f"?{q['name']}" for q in match.get("query", ())]
    return f"{text} [{' '.join(extra)}]" if extra else text


def _weights(pairs: Sequence[str]) -> dict[str, int]:
    weights: dict[str, int] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            weights[name] = int(value)
        except ValueError:
            raise click.BadParameter(f"{pair!r} is not CLUSTER=WEIGHT") from None
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not CLUSTER=WEIGHT")
    return weights


@ctl.command("split")
@click.argument("listener")
@click.argument("route")
@click.argument("weights", nargs=-1, required=True, metavar="CLUSTER=WEIGHT...")
@click.option("--virtual-host", help="The route is in this virtual host of the listener.")
@click.option("--if-match", type=int, help="Refuse unless the config is at this version.")
@pass_admin
def set_split(
    admin: Admin,
    listener: str,
    route: str,
    weights: tuple[str, ...],
    virtual_host: str | None,
    if_match: int | None,
) -> None:
    """Set the weights of a route's split, e.g. 'split web main v1=90 v2=10'."""
    path = f"/listeners/{quote(listener, safe='')}/routes/{quote(route, safe='')}/split"
    if virtual_host is not None:
        path += f"?virtual_host={quote(virtual_host, safe='')}"
    response = admin.call("PUT", path, _weights(weights), if_match=if_match)
    if admin.show(response.json()):
        return
    total = sum(response.json().values()) or 1
    rows = [(c, w, f"{100 * w / total:.1f}%") for c, w in response.json().items()]
    click.echo(table(("CLUSTER", "WEIGHT", "SHARE"), rows))
    click.echo(f"config version {_version(response)}")


def _endpoint_path(cluster: str, address: str) -> str:
    return f"/clusters/{quote(cluster, safe='')}/endpoints/{quote(address, safe=':[]')}"


@ctl.command("add-endpoint")
@click.argument("cluster")
@click.argument("address")
@click.option("--weight", type=int, default=1, show_default=True)
@pass_admin
def add_endpoint(admin: Admin, cluster: str, address: str, weight: int) -> None:
    """Add an endpoint (host:port) to a cluster."""
    body = {"address": address, "weight": weight}
    response = admin.call("POST", f"/clusters/{quote(cluster, safe='')}/endpoints", body)
    if not admin.show(response.json()):
        click.echo(
            f"added {response.json()['address']} to {cluster} (version {_version(response)})"
        )


@ctl.command("remove-endpoint")
@click.argument("cluster")
@click.argument("address")
@pass_admin
def remove_endpoint(admin: Admin, cluster: str, address: str) -> None:
    """Remove an endpoint; requests in flight to it finish, no new ones go to it."""
    response = admin.call("DELETE", _endpoint_path(cluster, address))
    click.echo(f"removed {address} from {cluster} (version {_version(response)})")


@ctl.command("set-endpoint")
@click.argument("cluster")
@click.argument("address")
@click.option("--weight", type=int)
@click.option("--state", type=click.Choice(["active", "draining", "disabled"]))
@pass_admin
def set_endpoint(
    admin: Admin, cluster: str, address: str, weight: int | None, state: str | None
) -> None:
    """Set an endpoint's weight and/or administrative state."""
    patch: dict[str, Any] = {}
    if weight is not None:
        patch["weight"] = weight
    if state is not None:
        patch["state"] = state
    if not patch:
        raise click.UsageError("give --weight and/or --state")
    response = admin.call("PATCH", _endpoint_path(cluster, address), patch)
    ep = response.json()
    if not admin.show(ep):
        click.echo(
            f"{cluster} {ep['address']}: state {ep['state']}, weight {ep['weight']} "
            f"(version {_version(response)})"
        )


@ctl.command("drain")
@click.option("--grace", type=float, default=30.0, show_default=True, help="Seconds.")
@pass_admin
def drain(admin: Admin, grace: float) -> None:
    """Start a graceful drain: stop accepting, let requests in flight finish."""
    admin.call("POST", "/drain", {"grace": grace})
    click.echo(f"draining (grace {grace:g} s)")


# -- staged rollouts ---------------------------------------------------------------------


@ctl.group("rollout")
def rollout() -> None:
    """Staged rollouts: list, inspect, start, move and delete them."""


def _rollout_path(name: str, action: str | None = None) -> str:
    path = f"/rollouts/{quote(name, safe='')}"
    return f"{path}/{action}" if action else path


def _utc(at: float | None) -> str:
    """A Unix time as UTC ISO 8601 to the second (``-`` for none)."""
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _step_text(view: dict[str, Any]) -> str:
    return f"{view['step'] + 1}/{len(view['steps'])}"


def _breach_text(breach: dict[str, Any] | None) -> str:
    """The gate a rollout last breached: ``max_error_rate 0.05 > 0.01``, or ``-``."""
    if breach is None:
        return "-"
    return f"{breach['gate']} {_number(breach['value'])} > {_number(breach['limit'])}"


def _gates_text(gates: dict[str, Any]) -> str:
    p99 = gates["max_p99_ms"]
    return (
        f"error rate <= {_number(gates['max_error_rate'])}, "
        + ("no p99 gate, " if p99 is None else f"p99 <= {_number(p99)} ms, ")
        + f"judged from {gates['min_requests']} requests"
    )


def _current_text(current: dict[str, Any] | None) -> str:
    if current is None:
        return "-"
    judged = current["judged_at"]
    figures = (
        f"{current['requests']} requests, {current['errors']} errors, "
        f"error rate {_number(current['error_rate'])}, p99 "
        + ("-" if current["p99_ms"] is None else f"{_number(current['p99_ms'])} ms")
    )
    when = f"step since {_utc(current['step_started'])}, "
    return when + ("not judged yet" if judged is None else f"judged {_utc(judged)}: {figures}")


def _moved(view: dict[str, Any], response: httpx.Response) -> str:
    """One line saying where a rollout is after a command."""
    return (
        f"rollout {view['name']}: {view['state']} at step {_step_text(view)}, "
        f"canary {view['canary']} at {view['weight']}% (version {_version(response)})"
    )


@rollout.command("list")
@pass_admin
def list_rollouts(admin: Admin) -> None:
    """List rollouts: route, clusters, state, step, weight, last breach."""
    response = admin.call("GET", "/rollouts")
    if admin.show(response.json()):
        return
    rows = [
        (
            view["name"],
            f"{view['listener']}/{view['route']}",
            f"{view['stable']} -> {view['canary']}",
            view["state"],
            _step_text(view),
            f"{view['weight']}%",
            _breach_text(view["breach"]),
        )
        for view in response.json()
    ]
    headers = ("NAME", "ROUTE", "STABLE -> CANARY", "STATE", "STEP", "WEIGHT", "LAST BREACH")
    click.echo(table(headers, rows))
    click.echo(f"config version {_version(response)}")


@rollout.command("get")
@click.argument("name")
@pass_admin
def get_rollout(admin: Admin, name: str) -> None:
    """Show a rollout: state, gates, current step's figures, history.

    Times are UTC."""
    response = admin.call("GET", _rollout_path(name))
    view = response.json()
    if admin.show(view):
        return
    steps = ", ".join(f"{s}%" for s in view["steps"])
    fields = (
        ("rollout", view["name"]),
        ("route", f"{view['listener']}/{view['route']}"),
        ("clusters", f"{view['stable']} -> {view['canary']}"),
        ("state", view["state"]),
        ("step", f"{_step_text(view)} of {steps}"),
        ("weight", f"{view['weight']}% to {view['canary']}"),
        ("timing", f"each step {view['dwell']:g} s at least, judged every {view['interval']:g} s"),
        ("gates", _gates_text(view["gates"])),
        ("current", _current_text(view["current"])),
        ("breach", _breach_text(view["breach"])),
    )
    for key, value in fields:
        click.echo(f"{key + ':':<10}{value}")
    click.echo("")
    rows = [
        (
            _utc(event["at"]),
            event["event"],
            event["state"],
            event["step"] + 1,
            f"{event['weight']}%",
            event["gate"] or "-",
            _number(event["value"]),
            _number(event["limit"]),
        )
        for event in view["history"]
    ]
    headers = ("AT (UTC)", "EVENT", "STATE", "STEP", "WEIGHT", "GATE", "VALUE", "LIMIT")
    click.echo(table(headers, rows))
    click.echo(f"config version {_version(response)}")


def _steps(ctx: click.Context, param: click.Parameter, text: str | None) -> list[int] | None:
    """``--steps 5,25,50,100`` as a list of percents (checked by the API)."""
    if text is None:
        return None
    try:
        return [int(step) for step in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not percents such as 5,25,50,100") from None


def _spec_file(path: Path) -> Any:
    """A rollout spec from a JSON or YAML file (JSON by a ``.json`` suffix, else YAML)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise click.BadParameter(e.strerror or str(e), param_hint="--file") from None
    try:
        spec = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise click.BadParameter(f"{path} is not valid: {e}", param_hint="--file") from None
    if not isinstance(spec, dict):
        raise click.BadParameter(
            f"{path} does not hold one rollout (a mapping)", param_hint="--file"
        )
    return spec


#: ``start``'s options that go into the spec as they are, and the gates among them
_SPEC_OPTIONS = ("listener", "route", "stable", "canary", "dwell", "interval")
_GATE_OPTIONS = ("max_error_rate", "max_p99_ms", "min_requests")


@rollout.command("start")
@click.argument("name", required=False)
@click.option("--listener", help="The listener of the route.")
@click.option("--route", help="The route (by name) whose traffic moves.")
@click.option("--stable", help="The cluster the route sends to now.")
@click.option("--canary", help="The cluster the route moves to.")
@click.option(
    "--steps",
    callback=_steps,
    help="The canary's percent at each step.  [API default: 5,25,50,100]",
)
@click.option("--dwell", type=float, help="Seconds each step holds at least.  [API default: 60]")
@click.option("--interval", type=float, help="Seconds between judgements.  [API default: 5]")
@click.option("--max-error-rate", type=float, help="Gate, 0-1.  [API default: 0.01]")
@click.option("--max-p99-ms", type=float, help="Gate on the canary's p99.  [API default: none]")
@click.option("--min-requests", type=int, help="Judged from this many.  [API default: 100]")
@click.option(
    "--file",
    "spec_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The whole spec from a JSON or YAML file, instead of NAME and the options.",
)
@pass_admin
def start_rollout(
    admin: Admin,
    /,
    name: str | None,
    steps: list[int] | None,
    spec_file: Path | None,
    **options: Any,
) -> None:
    """Start a rollout: NAME and options, or --file.

    The gateway moves it from then on. Options left out take the API's defaults."""
    given = {key: value for key, value in options.items() if value is not None}
    if spec_file is not None:
        if name is not None or steps is not None or given:
            raise click.UsageError("give either --file or NAME and options, not both")
        spec = _spec_file(spec_file)
    else:
        missing = ["NAME"] if name is None else []
        missing += [f"--{key}" for key in _SPEC_OPTIONS[:4] if key not in given]
        if missing:
            raise click.UsageError(f"missing {', '.join(missing)} (or give --file)")
        spec = {"name": name, **{key: given[key] for key in _SPEC_OPTIONS if key in given}}
        if steps is not None:
            spec["steps"] = steps
        gates = {key: given[key] for key in _GATE_OPTIONS if key in given}
        if gates:
            spec["gates"] = gates
    response = admin.call("POST", "/rollouts", spec)
    view = response.json()
    if not admin.show(view):
        click.echo(f"started {_moved(view, response).removeprefix('rollout ')}")


def _add_rollout_action(action: str, doc: str) -> None:
    @pass_admin
    def command(admin: Admin, name: str) -> None:
        response = admin.call("POST", _rollout_path(name, action), {})
        view = response.json()
        if not admin.show(view):
            click.echo(_moved(view, response))

    command.__doc__ = doc
    rollout.command(action)(click.argument("name")(command))


for _action, _doc in (
    ("pause", "Hold a running rollout at its step (the split stays)."),
    ("resume", "Let a paused rollout go on from its step."),
    ("abort", "Stop a rollout and send all the route's traffic back to stable."),
    ("promote", "Finish a rollout now: all the route's traffic to the canary."),
):
    _add_rollout_action(_action, _doc)


@rollout.command("delete")
@click.argument("name")
@pass_admin
def delete_rollout(admin: Admin, name: str) -> None:
    """Forget a rollout; its route's split stays as it is."""
    response = admin.call("DELETE", _rollout_path(name))
    click.echo(f"deleted rollout {name}; the route's split stays (version {_version(response)})")
