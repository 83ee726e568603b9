"""The tool registry: which callables the executor may run, under which names.

A tool is a plain function or coroutine function taking keyword arguments (the
JSON object a model put in ``function.arguments``). It may declare:

- ``idempotent=True``: running it twice with the same idempotency key has the
  effect of running it once. Only such tools are re-run after a worker crash.
- ``schema``: a pydantic model or a JSON-schema dict the arguments must match.
  Arguments that do not parse or do not match are recorded as a failed call; the
  model sees the error as the tool result, so it can correct itself.

Tools are registered on a :class:`ToolRegistry`, or marked with :func:`tool`
and handed to the executor as a list or a mapping.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from chatledger.store.errors import ValidationError
from chatledger.store.writer import check_id

__all__ = ["Tool", "ToolRegistry", "as_registry", "render_result", "tool"]

F = TypeVar("F", bound=Callable[..., Any])
Schema = type[BaseModel] | Mapping[str, Any]
_OPTIONS = "__chatledger_tool__"


@dataclass(frozen=True)
class Tool:
    """One registered tool: its name, callable and options."""

    name: str
    fn: Callable[..., Any]
    idempotent: bool = False
    schema: Schema | None = None

    @property
    def is_async(self) -> bool:
        """Whether calling the tool returns an awaitable that must be awaited."""
        return inspect.iscoroutinefunction(self.fn)

    def parse_arguments(self, arguments: str) -> dict[str, Any]:
        """The keyword arguments for one call, checked against the schema.

        Raises:
            ValidationError: the arguments are not a JSON object or do not match the schema.
        """
        try:
            value = json.loads(arguments) if arguments.strip() else {}
        except ValueError as exc:
            raise ValidationError("arguments", f"are not valid JSON: {exc}") from None
        except RecursionError:
            raise ValidationError("arguments", "are nested too deeply to parse") from None
        if not isinstance(value, dict):
            raise ValidationError("arguments", f"must be a JSON object, got {type(value).__name__}")
        schema = self.schema
        if schema is None:
            return value
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            try:
                model = schema.model_validate(value)
            except PydanticValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
                )
                raise ValidationError("arguments", problems) from None
            return {name: getattr(model, name) for name in type(model).model_fields}
        _check_json_schema(value, schema, "arguments")
        return value


def _check_json_schema(value: Any, schema: Mapping[str, Any], where: str) -> None:
    """A small subset of JSON Schema: type, enum, required, properties, additionalProperties, items."""
    kinds: dict[str, Any] = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
        "null": type(None),
    }
    expected = schema.get("type")
    if expected is not None:
        names = [expected] if isinstance(expected, str) else list(expected)
        ok = any(
            isinstance(value, kinds.get(n, object)) and not (n in {"integer", "number"} and isinstance(value, bool))
            for n in names
        )
        if not ok:
            raise ValidationError(where, f"must be of type {expected}, got {type(value).__name__}")
    if "enum" in schema and value not in schema["enum"]:
        raise ValidationError(where, f"must be one of {schema['enum']}, got {value!r}")
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                raise ValidationError(f"{where}.{name}", "is required")
        props: Mapping[str, Any] = schema.get("properties", {})
        for name, item in value.items():
            if name in props:
                _check_json_schema(item, props[name], f"{where}.{name}")
            elif schema.get("additionalProperties") is False:
                raise ValidationError(f"{where}.{name}", "is not an accepted argument")
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            _check_json_schema(item, schema["items"], f"{where}[{i}]")


class ToolRegistry:
    """Tools by name. The executor runs nothing that is not registered here."""

    def __init__(self, tools: Iterable[Callable[..., Any]] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for fn in tools:
            self.register(fn)

    @overload
    def register(
        self,
        fn: F,
        *,
        name: str | None = None,
        idempotent: bool | None = None,
        schema: Schema | None = None,
    ) -> F: ...

    @overload
    def register(
        self,
        fn: None = None,
        *,
        name: str | None = None,
        idempotent: bool | None = None,
        schema: Schema | None = None,
    ) -> Callable[[F], F]: ...

    def register(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        idempotent: bool | None = None,
        schema: Schema | None = None,
    ) -> Any:
        """Register a callable (also usable as ``@registry.register`` or ``@registry.register(...)``).

        Options not given here come from a :func:`tool` mark on the function.

        Raises:
            ValidationError: the name is empty, or taken by a different callable.
        """
        if fn is None:

            def decorate(f: F) -> F:
                self.register(f, name=name, idempotent=idempotent, schema=schema)
                return f

            return decorate
        marked: dict[str, Any] = getattr(fn, _OPTIONS, {})
        tool_name = check_id(name or marked.get("name") or getattr(fn, "__name__", ""), "tool name")
        entry = Tool(
            tool_name,
            fn,
            bool(marked.get("idempotent", False) if idempotent is None else idempotent),
            schema if schema is not None else marked.get("schema"),
        )
        existing = self._tools.get(tool_name)
        if existing is not None and existing.fn is not fn:
            raise ValidationError("tool name", f"{tool_name!r} is already registered to another callable")
        self._tools[tool_name] = entry
        return fn

    def get(self, name: str) -> Tool | None:
        """The tool registered under ``name``, or None."""
        return self._tools.get(name)

    def names(self) -> list[str]:
        """The registered tool names, sorted."""
        return sorted(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)


@overload
def tool(fn: F, *, name: str | None = None, idempotent: bool = False, schema: Schema | None = None) -> F: ...


@overload
def tool(
    fn: None = None, *, name: str | None = None, idempotent: bool = False, schema: Schema | None = None
) -> Callable[[F], F]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    idempotent: bool = False,
    schema: Schema | None = None,
) -> Any:
    """Mark a plain function with its tool options (``@tool`` or ``@tool(idempotent=True)``)."""

    def mark(f: F) -> F:
        setattr(f, _OPTIONS, {"name": name, "idempotent": idempotent, "schema": schema})
        return f

    return mark if fn is None else mark(fn)


def as_registry(
    tools: ToolRegistry | Sequence[Callable[..., Any]] | Mapping[str, Callable[..., Any]],
) -> ToolRegistry:
    """A registry from a registry, a list of callables or a ``{name: callable}`` mapping."""
    if isinstance(tools, ToolRegistry):
        return tools
    registry = ToolRegistry()
    if isinstance(tools, Mapping):
        for tool_name, fn in tools.items():
            registry.register(fn, name=tool_name)
    else:
        for fn in tools:
            registry.register(fn)
    return registry


def render_result(value: Any) -> str:
    """A tool's return value as the text a model sees: strings verbatim, anything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)
