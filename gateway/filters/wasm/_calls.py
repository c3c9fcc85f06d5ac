"""Calls between Python and a module, past wasmtime-py's generic layer.

wasmtime-py's ``Func.__call__`` asks for the function's type over FFI and converts every
argument and result through ``Val`` objects, on every call; its host-function trampoline
does the same for every hostcall. For the ABI's signatures (all ``i32``, two ``i64``)
that was most of a callback's cost (bench_wasm.py: 25 of a no-op ``on_request_headers``'
28 us). Here ``wasmtime_func_call`` is called, and linker functions defined, through
wasmtime-py's own ctypes bindings, with argument arrays built once per export.

wasmtime-py's error handling is kept: a trap raises ``wasmtime.Trap``, and an exception
raised in a hostcall comes out of the call that ran it, as wasmtime-py does it
(``wasmtime._func.LAST_EXCEPTION`` and ``enter_wasm``). Everything of wasmtime-py's that
is not public and that the host uses is in this file.
"""

from __future__ import annotations

import ctypes
import itertools
from collections.abc import Callable
from typing import Any, TypeAlias

import wasmtime
from wasmtime import _bindings as raw
from wasmtime import _ffi as ffi
from wasmtime import _func as wasmtime_func

__all__ = ["Export", "MemoryView", "StoreContext", "define", "store_context"]

#: a store's ``wasmtime_context_t *``: what calls and memory accesses run against
StoreContext: TypeAlias = Any

_I32_KIND = ffi.WASMTIME_I32.value
_I64_KIND = ffi.WASMTIME_I64.value
# the C functions themselves, not wasmtime-py's Python wrappers around them
_func_call = raw._wasmtime_func_call
_caller_context = raw._wasmtime_caller_context
_memory_data_size = raw._wasmtime_memory_data_size
# a pointer of its own for wasmtime_memory_data, answering a plain address
_memory_data = ffi.dll["wasmtime_memory_data"]
_memory_data.restype = ctypes.c_void_p
_memory_data.argtypes = raw._wasmtime_memory_data.argtypes
_TrapPointer = ctypes.POINTER(ffi.wasm_trap_t)


def store_context(store: wasmtime.Store) -> StoreContext:
    """The store's context pointer (stable for the store's life)."""
    return store._context()


def _kinds(types: list[wasmtime.ValType]) -> list[int]:
    kinds = []
    for valtype in types:
        if valtype == wasmtime.ValType.i32():
            kinds.append(_I32_KIND)
        elif valtype == wasmtime.ValType.i64():
            kinds.append(_I64_KIND)
        else:
            raise TypeError(f"only i32 and i64 are passed, not {valtype}")
    return kinds


class Export:
    """A module's function taking ``i32``s and returning at most one ``i32``."""

    __slots__ = ("_func", "_nparams", "_nresults", "_params", "_results", "_trap", "_trap_ref")

    def __init__(self, func: wasmtime.Func, store: wasmtime.Store) -> None:
        functype = func.type(store)
        kinds = _kinds(functype.params)
        result_kinds = _kinds(functype.results)
        if set(kinds + result_kinds) - {_I32_KIND} or len(result_kinds) > 1:
            raise TypeError(f"{functype} is not i32s to at most one i32")
        self._nparams = len(kinds)
        self._nresults = len(result_kinds)
        self._params = (ffi.wasmtime_val_t * max(1, self._nparams))()
        for index in range(self._nparams):
            self._params[index].kind = _I32_KIND  # type: ignore[assignment]
        self._results = (ffi.wasmtime_val_t * 1)()
        self._func = ctypes.byref(func._func)
        self._new_trap()

    def _new_trap(self) -> None:
        self._trap = _TrapPointer()
        self._trap_ref = ctypes.byref(self._trap)

    @property
    def arity(self) -> tuple[int, int]:
        return self._nparams, self._nresults

    def __call__(self, context: StoreContext, *args: int) -> int | None:
        params = self._params
        for index, value in enumerate(args):
            params[index].of.i32 = value
        error = _func_call(
            context,
            self._func,
            params,
            self._nparams,
            self._results,
            self._nresults,
            self._trap_ref,
        )
        if error or self._trap:
            self._raise(error)
        if self._nresults:
            result: int = self._results[0].of.i32
            return result
        return None

    def _raise(self, error: Any) -> None:
        # as wasmtime-py's ``enter_wasm``: a hostcall's own exception first, then the trap
        trap = self._trap
        self._new_trap()
        if trap:
            trapped = wasmtime.Trap._from_ptr(trap)
            wasmtime_func.maybe_raise_last_exn()
            raise trapped
        wasmtime_func.maybe_raise_last_exn()
        raise wasmtime.WasmtimeError._from_ptr(error)


#: the functions defined on linkers, by the id wasmtime hands back to the trampoline
_HOSTCALLS: dict[int, tuple[Callable[..., Any], tuple[bool, ...], bool]] = {}
_ids = itertools.count(1)


@ffi.wasmtime_func_callback_t  # type: ignore[untyped-decorator]
def _trampoline(
    env: int | None, caller: Any, params: Any, nparams: int, results: Any, nresults: int
) -> int | None:
    try:
        method, wide, _ = _HOSTCALLS[env or 0]
        context = _caller_context(caller)
        args = [params[i].of.i64 if wide[i] else params[i].of.i32 for i in range(nparams)]
        result = method(context, *args)
        if nresults:
            results[0].kind = _I32_KIND
            results[0].of.i32 = result
        return 0
    except BaseException as exc:  # handed to the call that ran the module, as wasmtime-py does
        wasmtime_func.LAST_EXCEPTION = exc  # type: ignore[assignment]
        trap = wasmtime.Trap("python exception")._consume()
        address: int | None = ctypes.cast(trap, ctypes.c_void_p).value
        return address


@ctypes.CFUNCTYPE(None, ctypes.c_void_p)  # type: ignore[untyped-decorator]
def _finalize(env: int | None, hostcalls: dict[int, Any] = _HOSTCALLS) -> None:
    # bound at definition: linkers are also freed at exit, after module globals are cleared
    hostcalls.pop(env or 0, None)


def define(
    linker: wasmtime.Linker,
    module: str,
    name: str,
    functype: wasmtime.FuncType,
    method: Callable[..., int | None],
) -> None:
    """``module.name`` on ``linker``: ``method(context, *args)``, its ``int`` result (if
    the type has one) handed back as an ``i32``."""
    kinds = _kinds(functype.params)
    index = next(_ids)
    _HOSTCALLS[index] = (method, tuple(kind == _I64_KIND for kind in kinds), bool(functype.results))
    module_bytes = module.encode()
    name_bytes = name.encode()
    error = ffi.wasmtime_linker_define_func(
        linker.ptr(),
        ctypes.create_string_buffer(module_bytes),
        len(module_bytes),
        ctypes.create_string_buffer(name_bytes),
        len(name_bytes),
        functype.ptr(),
        _trampoline,
        index,
        _finalize,
    )
    if error:
        _HOSTCALLS.pop(index, None)
        raise wasmtime.WasmtimeError._from_ptr(error)


class MemoryView:
    """A module's linear memory, addressed from a hostcall's context."""

    __slots__ = ("_memory",)

    def __init__(self, memory: wasmtime.Memory) -> None:
        self._memory = ctypes.byref(memory._memory)

    def size(self, context: StoreContext) -> int:
        size: int = _memory_data_size(context, self._memory)
        return size

    def address(self, context: StoreContext, offset: int, length: int) -> int | None:
        """The host address of ``length`` bytes at ``offset``; ``None`` past the end."""
        if offset + length > _memory_data_size(context, self._memory):
            return None
        base: int = _memory_data(context, self._memory)
        return base + offset
