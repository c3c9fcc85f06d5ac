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
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

import attrs
import click
import httpx


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
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = response.text.strip() or response.reason_phrase
    if isinstance(detail, list):
        click.echo(f"error: {response.status_code}: the change was refused:", err=True)
        for issue in detail:
            where = issue.get("loc") if isinstance(issue, dict) else None
            msg = issue.get("msg") if isinstance(issue, dict) else issue
            click.echo(f"  {where}: {msg}" if where else f"  {msg}", err=True)
        sys.exit(1)
    # hypercorn sends no reason phrase: the status code's own then
    phrase = response.reason_phrase or httpx.codes.get_reason_phrase(response.status_code)
    _fail(f"{response.status_code} {phrase}: {detail}")


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
