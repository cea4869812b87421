"""Prompt templates as plain files, loaded once into named, versioned templates.

Each task has a file `prompts/<name>@<version>.txt`: a header of `key: value` lines (name, version, source,
description, optional `examples: <name>@<version>`), a line `---`, then the body. Placeholders are
`${name}` (string.Template), so the braces of the papers' output formats ("{query: α, ...}") stay literal.
Few-shot examples live in their own JSON files `prompts/<name>@<version>.json` ({"name", "version",
"examples": [...]}). The template's `ref` ("plan_json@1") is recorded with every output made from it.

Templates:
- abstract@1  - CDA4Rec Fig. 3 (device abstract generation)
- plan@1      - CDA4Rec Fig. 4 (cloud strategy planning, the paper's line format)
- plan_json@1 - CDA4Rec Fig. 4, compact JSON variant (examples in plan_json_examples@1.json)
- explain@1   - CDA4Rec Fig. 5 (device explanation generation)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from string import Template
from typing import Any

from ground.errors import TandemError

PROMPTS_DIR = Path(__file__).resolve().parent
_FILE_RE = re.compile(r"^(?P<name>[a-z][a-z0-9_]*)@(?P<version>\d+)\.(?P<ext>txt|json)$")


class PromptError(TandemError):
    """A prompt that does not exist, or a prompt file that is malformed."""


class UnknownPromptError(PromptError):
    """A prompt name or version that is not in prompts/."""


@dataclass(frozen=True)
class PromptTemplate:
    """One versioned prompt: `render(**values)` fills exactly its placeholders."""

    name: str
    version: int
    body: str
    source: str = ""
    description: str = ""
    path: Path | None = None
    examples_ref: str | None = None
    examples: tuple[dict[str, Any], ...] = field(default=(), compare=False)

    @property
    def ref(self) -> str:
        """name@version, recorded with every output made from this template."""
        return f"{self.name}@{self.version}"

    @property
    def placeholders(self) -> frozenset[str]:
        return frozenset(Template(self.body).get_identifiers())

    def render(self, **values: object) -> str:
        """The body with every placeholder filled; missing or unexpected values raise PromptError."""
        given = set(values)
        if given != self.placeholders:
            missing, extra = sorted(self.placeholders - given), sorted(given - self.placeholders)
            raise PromptError(f"prompt {self.ref}: missing values {missing}, unexpected values {extra}")
        return Template(self.body).substitute({k: str(v) for k, v in values.items()})


@dataclass(frozen=True)
class PromptRegistry:
    """All prompt templates of a folder, by name and version."""

    templates: dict[tuple[str, int], PromptTemplate]
    example_sets: dict[tuple[str, int], tuple[dict[str, Any], ...]]

    def names(self) -> list[str]:
        return sorted({name for name, _ in self.templates})

    def versions(self, name: str) -> list[int]:
        return sorted(v for n, v in self.templates if n == name)

    def get(self, spec: str) -> PromptTemplate:
        """`name` (newest version) or `name@version`."""
        name, _, version = spec.strip().partition("@")
        versions = self.versions(name)
        if not versions:
            raise UnknownPromptError(f"unknown prompt {name!r}; known prompts: {', '.join(self.names()) or 'none'}")
        if not version:
            return self.templates[(name, versions[-1])]
        if not version.isdigit() or int(version) not in versions:
            known = ", ".join(f"{name}@{v}" for v in versions)
            raise UnknownPromptError(f"unknown version {spec!r}; known versions: {known}")
        return self.templates[(name, int(version))]

    def all(self) -> list[PromptTemplate]:
        return [self.templates[key] for key in sorted(self.templates)]


def _parse_template(path: Path) -> tuple[dict[str, str], str]:
    text = path.read_text(encoding="utf-8")
    head, sep, body = text.partition("\n---\n")
    if not sep:
        raise PromptError(f"{path.name}: no '---' line between header and body")
    header = {}
    for line in head.splitlines():
        key, colon, value = line.partition(":")
        if not colon:
            raise PromptError(f"{path.name}: header line {line!r} is not 'key: value'")
        header[key.strip()] = value.strip()
    return header, body.rstrip("\n")  # a completion prompt ends on its cue ("Plan:"), not on a new line


def _check_identity(path: Path, name: str, version: int, header: dict[str, Any]) -> None:
    if str(header.get("name")) != name or str(header.get("version")) != str(version):
        raise PromptError(f"{path.name}: header says {header.get('name')}@{header.get('version')}")


@lru_cache(maxsize=8)
def load_prompts(directory: Path | None = None) -> PromptRegistry:
    """Read every prompt and example file of `directory` (default: this package) once."""
    folder = Path(directory) if directory is not None else PROMPTS_DIR
    example_sets: dict[tuple[str, int], tuple[dict[str, Any], ...]] = {}
    headers: dict[tuple[str, int], tuple[Path, dict[str, str], str]] = {}
    for path in sorted(folder.iterdir()):
        match = _FILE_RE.match(path.name)
        if not match:
            continue
        name, version = match.group("name"), int(match.group("version"))
        if match.group("ext") == "json":
            data = json.loads(path.read_text(encoding="utf-8"))
            _check_identity(path, name, version, data)
            example_sets[(name, version)] = tuple(data["examples"])
        else:
            header, body = _parse_template(path)
            _check_identity(path, name, version, header)
            headers[(name, version)] = (path, header, body)
    templates = {}
    for (name, version), (path, header, body) in headers.items():
        ref = header.get("examples")
        examples: tuple[dict[str, Any], ...] = ()
        if ref:
            ex_name, _, ex_version = ref.partition("@")
            if (ex_name, int(ex_version or 0)) not in example_sets:
                raise PromptError(f"{path.name}: examples {ref!r} not found")
            examples = example_sets[(ex_name, int(ex_version))]
        templates[(name, version)] = PromptTemplate(
            name=name, version=version, body=body, source=header.get("source", ""),
            description=header.get("description", ""), path=path, examples_ref=ref, examples=examples,
        )  # fmt: skip
    return PromptRegistry(templates=templates, example_sets=example_sets)


def get_prompt(spec: str) -> PromptTemplate:
    """The template `name` (newest) or `name@version` from prompts/."""
    return load_prompts().get(spec)
