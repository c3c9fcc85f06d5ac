"""From a listener's filter config to the factories its chains hold.

``build_http_factory`` and ``build_network_factory`` are the one place a filter config
becomes code: the config's validation calls them (so a Python factory that does not
import, or refuses its config, is a config error naming the field, and the running
config stays), and so does the control plane when it publishes a config (each
publication makes new factories: a changed ``config`` takes effect for new requests).

``wasm:`` entries are refused here, and only here, until the proxy-wasm host
(``gateway.filters.wasm``) lands: its factory replaces ``_wasm_factory``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.filters.chain import HttpFilterChain
from gateway.filters.network import NetworkFilterChain, PythonNetworkFilterFactory
from gateway.filters.python import PythonHttpFilterFactory, import_factory

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

WASM_NOT_SERVED = "wasm filters are served once gateway.filters.wasm lands"


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


def _wasm_factory(name: str, wasm: WasmFilter, kind: str) -> Any:
    raise FilterConfigProblem("wasm", WASM_NOT_SERVED)


def build_http_factory(config: FilterConfig) -> HttpFilterFactory:
    """The factory of one ``http_filters`` entry; ``FilterConfigProblem`` if it cannot be."""
    if config.wasm is not None:
        return _wasm_factory(config.name, config.wasm, "http")  # type: ignore[no-any-return]
    return PythonHttpFilterFactory(config.name, _python_target(config))


def build_network_factory(config: FilterConfig) -> NetworkFilterFactory:
    """The factory of one ``network_filters`` entry; ``FilterConfigProblem`` if it cannot be."""
    if config.wasm is not None:
        return _wasm_factory(config.name, config.wasm, "network")  # type: ignore[no-any-return]
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
            chain = HttpFilterChain.build(
                lst.name,
                [build_http_factory(f) for f in lst.http_filters],
                registry,
                lst.filter_buffer_limit_kb * 1024,
                {r.disabled_filters for r in lst.all_routes() if r.disabled_filters},
            )
            if chain is not None:
                chains[lst.name] = chain
        elif lst.protocol == "tcp" and lst.network_filters:
            factories = [build_network_factory(f) for f in lst.network_filters]
            network_chain = NetworkFilterChain.build(lst.name, factories, registry)
            if network_chain is not None:
                network[lst.name] = network_chain
    return chains, network
