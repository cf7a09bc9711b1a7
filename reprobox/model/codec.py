"""The one codec between records (frozen dataclasses) and their JSON form.

Raw dicts live at the edges (JSON files, the probe's output); everything inside the tool passes
immutable records. A record class derives from :class:`Record` and describes its JSON form with
class attributes and per-field metadata (:func:`spec`); :func:`encode` and :func:`decode` do the
rest, driven by the field types:

- ``str``, ``int``, ``float``, ``bool``: checked on read (a wrong type is refused naming the key);
  a field with a default reads a missing, null or empty value as that default.
- ``Optional[X]``: null or missing reads as None; written as null unless the record (or the field)
  leaves None out (``_omit_none`` / ``spec(omit=...)``).
- ``tuple[X, ...]`` (a JSON list), ``Mapping[str, X]`` (a JSON object) and nested records, to
  any depth.
- ``spec(key=...)`` renames the key, ``omit=`` leaves it out when a predicate holds, ``sort=``
  writes a list sorted, ``choices=`` refuses a value outside a set, ``required=`` refuses a
  missing key, ``encode=`` computes the value written, ``convert=`` normalises a value read,
  ``fallback=`` is what a field with no default reads when its key is missing or empty.
- A top-level document carries a schema tag (``_schema``); reading a newer or unknown one is
  refused with a message saying what can read it (:func:`check_schema`).

The environment digest and the experiment id are hashes over a *canonical* form of these dicts
(sorted keys, no whitespace, UTF-8). Changing what goes into them is a breaking change: golden
records (``tests/golden/records``) pin the bytes.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import hashlib
import json
import re
import typing
from dataclasses import MISSING, dataclass
from itertools import accumulate
from typing import Any, Callable, ClassVar, Mapping, Optional, TypeVar, Union

from ..errors import RecordRefused, SchemaError

Json = dict[str, Any]
SCHEMA_VERSION = 1
_MAPS = (collections.abc.Mapping, dict)

R = TypeVar("R", bound="Record")


# --------------------------------------------------------------------------- JSON forms


def canonical_json(obj: Any) -> bytes:
    """The byte form hashed for digests and ids: sorted keys, compact, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )


def pretty_json(obj: Any) -> str:
    """The form written to disk: sorted keys, two-space indent, trailing newline."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


#: Deepest nesting of arrays/objects reprobox parses from a file (its own records reach about 8).
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_too_deep(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when ``text`` nests arrays/objects deeper than ``limit``: checked before parsing, in
    one linear pass (no recursion), so a crafted file never reaches a RecursionError."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    if len(brackets) <= limit:
        return False
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets))) > limit


def check_schema(
    data: Mapping[str, Any],
    name: str,
    where: str,
    version: int = SCHEMA_VERSION,
    oldest: int = 1,
    older_hint: Optional[str] = None,
) -> None:
    """Refuse a document whose schema is not ``name/<a version from oldest to version>``."""
    schema = data.get("schema")
    if not isinstance(schema, str) or "/" not in schema:
        raise SchemaError(
            f"{where} has no schema field (expected {name}/{version})",
            "the file is not a reprobox record or was edited by hand; re-capture the experiment",
        )
    got_name, _, got_version = schema.rpartition("/")
    if got_name != name:
        raise SchemaError(f"{where} is a {got_name!r} document, expected {name!r}")
    try:
        got = int(got_version)
    except ValueError:
        raise SchemaError(f"{where} has an unreadable schema version {got_version!r}") from None
    if got > version:
        raise SchemaError(
            f"{where} uses schema {schema}, newer than this reprobox reads ({name}/{version})",
            f"upgrade reprobox to a release that reads {name}/{got}: `pip install -U reprobox`",
        )
    if 1 <= got < oldest:
        raise SchemaError(
            f"{where} uses schema {schema}, an older record this reprobox no longer acts on "
            f"(it reads {name}/{version})",
            older_hint or "re-capture the experiment with this reprobox",
        )
    if got < 1:
        raise SchemaError(f"{where} has an unknown schema version {got}")


# --------------------------------------------------------------------------- description


@dataclass(frozen=True)
class Schema:
    """The schema tag of a top-level document: ``name/version``; ``oldest`` the first version
    still read, ``older_hint`` what to do with an older one."""

    name: str
    version: int = SCHEMA_VERSION
    oldest: int = 1
    older_hint: Optional[str] = None

    @property
    def tag(self) -> str:
        return f"{self.name}/{self.version}"


Omit = Callable[[Any, Any], bool]  # (record, value) -> leave the key out


@dataclass(frozen=True)
class Spec:
    """How one field is written and read (see the module doc)."""

    key: Optional[str] = None
    omit: Optional[Omit] = None
    sort: bool = False
    choices: tuple[str, ...] = ()
    what: str = ""  # the value's name in a refusal of ``choices`` ("source kind")
    required: Optional[bool] = None
    encode: Optional[Callable[[Any], Any]] = None
    no_bool: bool = False  # an int field that refuses true/false
    empty_is_none: bool = False  # an optional record read from ``{}`` is None
    label: Optional[str] = None  # how a nested value is named in messages (default: the key)
    convert: Optional[Callable[[Any], Any]] = None  # applied to a scalar read (``int``: true -> 1)
    fallback: Any = None  # read for a missing, null or empty value (of a field with no default)


def omit_none(_record: Any, value: Any) -> bool:
    return value is None


def omit_empty(_record: Any, value: Any) -> bool:
    return not value


def meta(**how: Any) -> dict[str, Spec]:
    """Codec metadata (:class:`Spec`) for ``dataclasses.field(metadata=...)``: a field without a
    default is declared so, which type checkers read as such."""
    return {"codec": Spec(**how)}


def spec(default: Any = MISSING, *, default_factory: Any = MISSING, **how: Any) -> Any:
    """A dataclass field with a default and codec metadata (:class:`Spec`)."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta(**how))


class Record:
    """Base of every record: ``to_dict`` / ``from_dict`` through the codec.

    Class attributes (plain, not dataclass fields): ``_schema`` (a top-level document's tag),
    ``_omit_none`` (leave None-valued optional fields out, or write them as null), ``_where`` (how
    a record is named in refusals), ``_label_key`` (a key whose value is added to that name),
    ``_computed`` (extra keys written: name -> function of the record).
    """

    _schema: ClassVar[Optional[Schema]] = None
    _omit_none: ClassVar[bool] = True
    _where: ClassVar[str] = "record"
    _label_key: ClassVar[Optional[str]] = None
    _computed: ClassVar[tuple[tuple[str, Callable[[Any], Any]], ...]] = ()

    def to_dict(self) -> Json:
        return encode(self)

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any], where: Optional[str] = None) -> R:
        return decode(cls, data, where or cls._where)

    def _check_decoded(self, data: Mapping[str, Any], where: str) -> None:
        """A check of the whole record once read (a digest); nothing by default."""


@dataclass(frozen=True)
class _Field:
    name: str
    key: str
    kind: Any  # the resolved type
    spec: Spec
    default: Any  # MISSING when required
    required: bool
    factory: Optional[Callable[[], Any]] = None  # a fresh default (a dict) for each record read
    # the type resolved once per class, not once per value read (a record of 118 packages
    # reads ~2,000 fields): without Optional, its origin, a tuple's item type, whether a record
    bare: Any = None
    origin: Any = None
    item: Any = None
    is_record: bool = False
    item_is_record: bool = False

    def fresh_default(self) -> Any:
        return self.factory() if self.factory is not None else self.default


_FIELDS: dict[type, tuple[_Field, ...]] = {}


def _is_optional(tp: Any) -> bool:
    return typing.get_origin(tp) is Union and type(None) in typing.get_args(tp)


def _strip_optional(tp: Any) -> Any:
    if _is_optional(tp):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else Union[tuple(args)]
    return tp


def fields_of(cls: type) -> tuple[_Field, ...]:
    """The codec's view of a record class's fields (cached)."""
    cached = _FIELDS.get(cls)
    if cached is not None:
        return cached
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        sp: Spec = f.metadata.get("codec", Spec())
        kind = hints[f.name]
        if sp.fallback is not None:
            default = sp.fallback
        elif f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()  # its value, for comparisons; read: a new one each time
        else:
            default = MISSING
        origin = typing.get_origin(_strip_optional(kind))
        if sp.required is not None:
            required = sp.required
        elif sp.fallback is not None:
            required = False
        else:
            required = (
                default is MISSING and not _is_optional(kind) and origin not in (tuple, *_MAPS)
            )
        if default is MISSING and not required:
            default = None if _is_optional(kind) else _empty(kind)
        factory = f.default_factory if f.default_factory is not MISSING else None
        bare = _strip_optional(kind)
        item = typing.get_args(bare)[0] if origin is tuple else None
        out.append(
            _Field(
                f.name,
                sp.key or f.name,
                kind,
                sp,
                default,
                required,
                factory,
                bare=bare,
                origin=origin,
                item=item,
                is_record=_is_record(bare),
                item_is_record=_is_record(item),
            )
        )
    _FIELDS[cls] = result = tuple(out)
    return result


def _empty(kind: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin is tuple:
        return ()
    if origin in _MAPS:
        return {}
    return None


def _is_record(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Record)


# --------------------------------------------------------------------------- writing


def encode(
    record: Record, *, only: Optional[frozenset[str]] = None, skip: frozenset[str] = frozenset()
) -> Json:
    """The JSON object of a record (``only``/``skip``: a subset of its keys)."""
    cls = type(record)
    out: Json = {}
    if cls._schema is not None and (only is None or "schema" in only) and "schema" not in skip:
        out["schema"] = cls._schema.tag
    for name, compute in cls._computed:
        if (only is None or name in only) and name not in skip:
            out[name] = compute(record)
    for f in fields_of(cls):
        if (only is not None and f.key not in only) or f.key in skip:
            continue
        value = getattr(record, f.name)
        omit = f.spec.omit
        if omit is None and cls._omit_none and _is_optional(f.kind):
            omit = omit_none
        if omit is not None and omit(record, value):
            continue
        if f.spec.encode is not None:
            out[f.key] = f.spec.encode(record)
            continue
        out[f.key] = sorted(_encode_value(value)) if f.spec.sort else _encode_value(value)
    return out


def _encode_value(value: Any) -> Any:
    if isinstance(value, Record):
        return encode(value)
    if isinstance(value, (tuple, list)):
        return [_encode_value(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _encode_value(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- reading


def _refuse(where: str, what: str) -> RecordRefused:
    return RecordRefused(f"{where}: {what}")


def _type_name(value: Any) -> str:
    return type(value).__name__


def decode(cls: type[R], data: Any, where: str) -> R:
    """A record from its JSON object, every value checked against the field's type."""
    if not isinstance(data, Mapping):
        raise _refuse(where, f"expected an object, got {_type_name(data)}")
    if cls._schema is not None:
        s = cls._schema
        check_schema(
            data, s.name, where, version=s.version, oldest=s.oldest, older_hint=s.older_hint
        )
    if cls._label_key is not None:
        label = data.get(cls._label_key)
        if isinstance(label, str):
            where = f"{where} {label!r}"
    values: dict[str, Any] = {}
    for f in fields_of(cls):
        values[f.name] = _decode_field(f, data, where)
    record = cls(**values)
    record._check_decoded(data, where)
    return record


def _decode_field(f: _Field, data: Mapping[str, Any], where: str) -> Any:
    if f.key not in data and f.required:
        raise _refuse(where, f"missing field {f.key!r}")
    raw = data.get(f.key)
    kind = f.bare
    if raw is None:
        if f.required:
            raise _refuse(where, f"field {f.key!r} has the wrong type (NoneType)")
        return f.fresh_default()
    if f.is_record:
        if not isinstance(raw, Mapping):
            raise _refuse(where, f"field {f.key!r} has the wrong type ({_type_name(raw)})")
        if f.spec.empty_is_none and not raw:
            return None
        return decode(kind, raw, f"{where} {f.spec.label or f.key}")
    origin = f.origin
    if origin is tuple:
        item = f.item
        if not isinstance(raw, list):
            if item is str:
                raise _refuse(f"{where} {f.spec.label or f.key}", "expected a list of strings")
            raise _refuse(where, f"field {f.key!r} has the wrong type ({_type_name(raw)})")
        if item is str:
            if all(type(v) is str for v in raw):  # the common case, checked at once
                return tuple(raw)
            return _decode_value(kind, raw, f"{where} {f.spec.label or f.key}")
        item_where = f"{where} {f.spec.label or _singular(f.key)}"
        if f.item_is_record:
            return tuple(decode(item, v, item_where) for v in raw)
        return tuple(_decode_value(item, v, item_where) for v in raw)
    if origin in _MAPS:
        if not isinstance(raw, Mapping):
            raise _refuse(where, f"field {f.key!r} has the wrong type ({_type_name(raw)})")
        return _decode_value(kind, raw, f"{where} {f.spec.label or f.key}")
    value = _scalar(kind, raw, where, f.key, f.spec.no_bool)
    if f.spec.convert is not None:
        value = f.spec.convert(value)
    if f.spec.choices and value not in f.spec.choices:
        raise _refuse(where, f"unknown {f.spec.what or f.key} {value!r}")
    if not value and f.default is not MISSING and f.default is not None:
        return f.fresh_default()  # "", 0 or false read as the default, as they always were
    return value


_SCALARS: dict[Any, tuple[type, ...]] = {
    str: (str,),
    int: (int,),
    bool: (bool,),
    float: (int, float),
}


def _scalar(kind: Any, raw: Any, where: str, key: str, no_bool: bool = False) -> Any:
    accepted = _SCALARS.get(kind)
    if accepted is None:  # Any
        return raw
    if not isinstance(raw, accepted) or (no_bool and isinstance(raw, bool)):
        raise _refuse(where, f"field {key!r} has the wrong type ({_type_name(raw)})")
    return raw


def _decode_value(kind: Any, raw: Any, where: str) -> Any:
    """A nested value of type ``kind`` (list, object, record or scalar) at ``where``."""
    kind = _strip_optional(kind)
    if kind is Any:
        return raw
    if _is_record(kind):
        return decode(kind, raw, where)
    origin = typing.get_origin(kind)
    if origin is tuple:
        item = typing.get_args(kind)[0]
        if not isinstance(raw, list) or (item is str and not all(isinstance(v, str) for v in raw)):
            raise _refuse(
                where,
                "expected a list of strings"
                if item is str
                else f"expected a list, got {_type_name(raw)}",
            )
        return tuple(raw) if item is str else tuple(_decode_value(item, v, where) for v in raw)
    if origin in _MAPS:
        value_kind = typing.get_args(kind)[1]
        if not isinstance(raw, Mapping):
            raise _refuse(where, f"expected an object, got {_type_name(raw)}")
        out = {}
        for k, v in raw.items():
            if not isinstance(k, str):
                raise _refuse(where, f"has a key that is not a string ({k!r})")
            if typing.get_origin(value_kind) in _MAPS and not isinstance(v, Mapping):
                raise _refuse(where, f"the value for {k!r} is not a mapping")
            out[k] = _decode_value(value_kind, v, f"{where}[{k!r}]")
        return out
    accepted = _SCALARS.get(kind)
    if accepted is not None and not isinstance(raw, accepted):
        raise _refuse(where, f"expected {kind.__name__}, got {_type_name(raw)}")
    return raw


def _singular(key: str) -> str:
    """``packages`` -> ``package``: how one item of a list is named in a refusal."""
    return key[:-1] if key.endswith("s") else key
