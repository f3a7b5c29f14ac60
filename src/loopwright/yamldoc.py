"""YAML documents backed by pydantic models (gate policies, deployment specs, ...).

One place turns YAML and mappings into validated models and turns pydantic's errors into the
:class:`~loopwright.errors.InvalidInput` users see: the field is the dotted YAML path
(``thresholds.auc.mni``) and an unknown key lists the keys that section accepts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from loopwright.errors import InvalidInput


class YamlDocument:
    """Mixin for the top-level pydantic model of a document; subclasses name the document."""

    document_name: ClassVar[str] = "document"  # in messages: "gate policy", "deployment spec"
    document_field: ClassVar[str] = "document"  # the field an error names when no path applies

    @classmethod
    def from_dict(cls, data: Any) -> Self:
        """Validate a mapping; errors become :class:`InvalidInput` naming the YAML path."""
        if not isinstance(data, Mapping):
            raise InvalidInput(
                f"a {cls.document_name} must be a mapping of keys", field=cls.document_field
            )
        try:
            return cls.model_validate(dict(data))  # type: ignore[attr-defined,no-any-return]
        except ValidationError as exc:
            raise _invalid(cls, exc) from None

    @classmethod
    def from_yaml(cls, text: str) -> Self:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            message = f"{cls.document_name} is not valid YAML: {exc}"
            raise InvalidInput(message, field=cls.document_field) from None
        return cls.from_dict(data)

    @classmethod
    def from_file(cls, path: str | Path) -> Self:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            message = f"cannot read {cls.document_name} {path}: {exc}"
            raise InvalidInput(message, field="path") from None
        return cls.from_yaml(text)

    def to_yaml(self) -> str:
        body = self.model_dump(mode="json", exclude_none=True)  # type: ignore[attr-defined]
        return yaml.safe_dump(body, sort_keys=False)


def _invalid(root: type[YamlDocument], exc: ValidationError) -> InvalidInput:
    """The first validation error as InvalidInput; ``details['errors']`` lists them all."""
    errors = [_describe(root, e) for e in exc.errors()]
    first = errors[0]
    return InvalidInput(
        f"{root.document_name}: {first['field']}: {first['message']}",
        field=first["field"],
        errors=errors,
    )


def _describe(root: type[YamlDocument], error: Any) -> dict[str, str]:
    loc = [str(p) for p in error["loc"] if p != "[key]"]
    path = ".".join(loc) or root.document_field
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        known = _keys_at(root, loc[:-1])
        message = "unknown key" + (f"; expected one of {', '.join(known)}" if known else "")
    return {"field": path, "message": message}


def _keys_at(root: type[YamlDocument], loc: list[str]) -> list[str]:
    """The keys a section accepts, found by walking the models along ``loc``."""
    model: Any = root
    parts = list(loc)
    while parts and model is not None:
        info = model.model_fields.get(parts.pop(0))
        annotation = None if info is None else info.annotation
        if get_origin(annotation) is dict:  # e.g. thresholds.<metric>: skip the mapping key
            annotation, parts = get_args(annotation)[1], parts[1:]
        elif get_origin(annotation) is list:  # e.g. rules.<index>: skip the index
            annotation, parts = get_args(annotation)[0], parts[1:]
        model = _model_in(annotation)
    return [] if model is None else list(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """``X`` of ``X`` or ``X | None`` when ``X`` is a pydantic model."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None
