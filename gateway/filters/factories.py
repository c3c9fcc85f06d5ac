"""From a listener's filter config to the factories its chains hold.

``build_http_factory`` and ``build_network_factory`` are the one place a filter config
becomes code: the config's validation calls them (so a Python factory that does not
import, or refuses its config, is a config error naming the field, and the running
config stays), and so does the control plane when it publishes a config (each
publication makes new factories: a changed ``config`` takes effect for new requests).

A ``wasm:`` entry is a proxy-wasm module (``gateway.filters.wasm_adapter``): loaded once
per process and config version, so that the validation of a config and its publication
share one host; a module that does not load is a config error naming ``...wasm`` with the
host's ``WasmLoadError``. ``build_chains`` puts the modules' metrics in the registry it is
given; ``close_unused`` (the control plane, once a data plane is published) closes the
hosts no chain uses any more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.errors import WasmLoadError
from gateway.filters.chain import HttpFilterChain
from gateway.filters.network import NetworkFilterChain, PythonNetworkFilterFactory
from gateway.filters.python import PythonHttpFilterFactory, import_factory
from gateway.filters.wasm_adapter import (
    WasmHttpFilterFactory,
    WasmNetworkFilterFactory,
    bind_metrics,
    live_host,
)

if TYPE_CHECKING:
    from gateway.config.model import Config, FilterConfig, WasmFilter
    from gateway.filters.chain import HttpFilterFactory
    from gateway.filters.network import NetworkFilterFactory
    from gateway.observe.stats import StatsRegistry

__all__ = [
    "FilterConfigProblem",
    "build_chains",
    "build_http_factory",
    "build_network_factory",
]


class FilterConfigProblem(ValueError):
    """A filter config that cannot be built; ``field`` is where, under the filter's path
    (``python.factory``, ``wasm``)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _python_target(config: FilterConfig) -> Any:
    assert config.python is not None
    try:
        factory = import_factory(config.python.factory)
    except ValueError as e:
        raise FilterConfigProblem("python.factory", str(e)) from e
    try:
        return factory(config.python.config)
    except Exception as e:  # the user's factory refusing its config
        raise FilterConfigProblem("python.config", f"the factory refused it: {e!r}") from e


def _wasm_factory(
    name: str, wasm: WasmFilter, kind: str
) -> WasmHttpFilterFactory | WasmNetworkFilterFactory:
    try:
        live = live_host(wasm)
    except WasmLoadError as e:
        raise FilterConfigProblem("wasm", str(e)) from e
    except OSError as e:
        raise FilterConfigProblem("wasm.path", f"{wasm.path}: {e.strerror or e}") from e
    if kind == "http":
        return WasmHttpFilterFactory(name, live, wasm.fail_open)
    return WasmNetworkFilterFactory(name, live)


def build_http_factory(config: FilterConfig) -> HttpFilterFactory:
    """The factory of one ``http_filters`` entry; ``FilterConfigProblem`` if it cannot be."""
    if config.wasm is not None:
        factory = _wasm_factory(config.name, config.wasm, "http")
        assert isinstance(factory, WasmHttpFilterFactory)
        return factory
    return PythonHttpFilterFactory(config.name, _python_target(config))


def build_network_factory(config: FilterConfig) -> NetworkFilterFactory:
    """The factory of one ``network_filters`` entry; ``FilterConfigProblem`` if it cannot be."""
    if config.wasm is not None:
        factory = _wasm_factory(config.name, config.wasm, "network")
        assert isinstance(factory, WasmNetworkFilterFactory)
        return factory
    return PythonNetworkFilterFactory(config.name, _python_target(config))


def build_chains(
    config: Config, registry: StatsRegistry
) -> tuple[dict[str, HttpFilterChain], dict[str, NetworkFilterChain]]:
    """The filter chains of a config about to be published, by listener: only those of
    listeners with something to do (``DataPlane.chains``, ``network_chains``)."""
    chains: dict[str, HttpFilterChain] = {}
    network: dict[str, NetworkFilterChain] = {}
    for lst in config.listeners:
        if lst.protocol == "http" and lst.http_filters:
            http_factories = [build_http_factory(f) for f in lst.http_filters]
            bind_metrics(http_factories, registry.custom)
            chain = HttpFilterChain.build(
                lst.name,
                http_factories,
                registry,
                lst.filter_buffer_limit_kb * 1024,
                {r.disabled_filters for r in lst.all_routes() if r.disabled_filters},
            )
            if chain is not None:
                chains[lst.name] = chain
        elif lst.protocol == "tcp" and lst.network_filters:
            factories = [build_network_factory(f) for f in lst.network_filters]
            bind_metrics(factories, registry.custom)
            network_chain = NetworkFilterChain.build(lst.name, factories, registry)
            if network_chain is not None:
                network[lst.name] = network_chain
    return chains, network
