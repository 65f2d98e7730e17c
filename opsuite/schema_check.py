"""A fast yes/no check of JSON objects against the subset of JSON Schema that opsuite's schemas use.

jsonschema walks a schema anew for every object and costs about half a millisecond per results line, most
of the time it takes to read a large results file. `compile_schema` turns a schema into nested closures
once; the readers ask it first and ask jsonschema only about the objects it does not pass, for the verdict
and the message. The closures are never more lenient than the schema: a keyword they do not know makes
`compile_schema` raise, and where they simplify (an integer-valued float is not an integer, a boolean is
never equal to a number) they are stricter (exact types as json.loads makes them), which only sends such an object down the slow path.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import jsonschema

Check = Callable[[Any], bool]

# Exact Python types of each JSON type, as json.loads makes them (bool is not an integer here).
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "integer": (int,), "number": (int, float),
    "boolean": (bool,), "null": (type(None),),
}
_ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description"}


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def compile_schema(schema: dict[str, Any], root: dict[str, Any] | None = None) -> Check:
    """A function telling whether an object is valid against `schema` (local `$ref`s resolve in `root`)."""
    root = root if root is not None else schema
    checks = [_keyword(keyword, value, schema, root) for keyword, value in schema.items()
              if keyword not in _ANNOTATIONS]
    if len(checks) == 1:
        return checks[0]

    def all_of(v: Any) -> bool:
        for check in checks:
            if not check(v):
                return False
        return True
    return all_of


def _keyword(keyword: str, value: Any, schema: dict[str, Any], root: dict[str, Any]) -> Check:
    if keyword == "type":
        types = frozenset(t for name in ([value] if isinstance(value, str) else value) for t in _TYPES[name])
        return lambda v: type(v) in types
    if keyword == "const":
        return lambda v: _same(v, value)
    if keyword == "enum":
        if all(type(option) is str for option in value):
            options = frozenset(value)
            return lambda v: type(v) is str and v in options
        return lambda v: any(_same(v, option) for option in value)
    if keyword == "pattern":
        search = re.compile(value).search
        return lambda v: type(v) is not str or search(v) is not None
    if keyword == "minLength":
        return lambda v: type(v) is not str or len(v) >= value
    if keyword == "minimum":
        return lambda v: type(v) not in (int, float) or v >= value
    if keyword == "minItems":
        return lambda v: type(v) is not list or len(v) >= value
    if keyword == "required":
        return lambda v: type(v) is not dict or all(name in v for name in value)
    if keyword == "properties":
        props = [(name, compile_schema(sub, root)) for name, sub in value.items()]

        def properties(v: Any) -> bool:
            if type(v) is not dict:
                return True
            for name, check in props:
                if name in v and not check(v[name]):
                    return False
            return True
        return properties
    if keyword in ("additionalProperties", "propertyNames", "items"):
        sub = compile_schema(value, root)
        known = frozenset(schema.get("properties", {})) if keyword == "additionalProperties" else frozenset()

        def each(v: Any) -> bool:
            if keyword == "items":
                parts = v if type(v) is list else ()
            elif type(v) is not dict:
                return True
            else:
                parts = v if keyword == "propertyNames" else [item for k, item in v.items() if k not in known]
            for part in parts:
                if not sub(part):
                    return False
            return True
        return each
    if keyword == "$ref":
        if not value.startswith("#/"):
            raise ValueError(f"schema_check: only local references are supported, not {value!r}")
        target: Any = root
        for part in value[2:].split("/"):  # a JSON pointer, not a case id
            target = target[part]
        resolved: list[Check] = []  # compiled on first use: a schema may refer to itself

        def ref(v: Any) -> bool:
            if not resolved:
                resolved.append(compile_schema(target, root))
            return resolved[0](v)
        return ref
    raise ValueError(f"schema_check: keyword {keyword!r} is not supported; extend compile_schema or "
                     f"validate with jsonschema alone")


class Validator:
    """A schema's validator: the compiled check first, jsonschema for the verdict and message of the rest."""

    def __init__(self, schema: dict[str, Any]):
        self.fast = compile_schema(schema)
        self.slow = jsonschema.validators.validator_for(schema)(schema)

    def problem(self, obj: Any) -> str | None:
        """None when `obj` is valid, else `where: why` of jsonschema's best-matching error."""
        if self.fast(obj):
            return None
        error = jsonschema.exceptions.best_match(self.slow.iter_errors(obj))
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        return f"{where}: {error.message}"
