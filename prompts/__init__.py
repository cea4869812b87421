"""Prompt templates as plain files, loaded into named, versioned templates identified by name@version + digest.

Each task has a file `<name>@<version>.txt`: a header of `key: value` lines (name, version, source,
description, optional `examples: <name>@<version>`, optional `output: json-line|lines|plan-point` for planning
prompts, optional `exemplars: plan-exemplars`, `exemplar_k: K`, `exemplar_order: nearest-last` and
`answer: one-of-exemplars` for a planning prompt whose few-shot examples are retrieved per request from the plan
exemplars, `tools.exemplar_index` (the last: the answer's grammar admits only the retrieved plans' points);
optional `adapter: plan-adapter` for a prompt the cloud answers with its LoRA plan adapter, `tools.plan_adapter`),
a line `---`, then the body. Placeholders are `${name}` (string.Template), so the braces of the papers' output
formats ("{query: α, ...}") stay literal. Few-shot examples live in their own JSON files `<name>@<version>.json`
({"name", "version", "examples": [...]}).

Every template is identified by its `ref` ("plan_json@1") AND its `digest`: a hash of what the model is shown
(the body and the few-shot examples; the header's prose is not part of it). Results and caches are keyed by
the digest, so editing a file after a run can never reuse the results of the old text.

Where prompts live: the package's own folder (this one), and before it the user's prompts folder
(`Settings.prompts_dir`, i.e. `TANDEM_PROMPTS_DIR`; default `./prompts` when that folder exists), so a prompt
engineer can add versions to an installed Tandem (`tandem prompts new plan_json --from plan_json@1`). A
name@version found in two folders must have the same text there. Folders are re-read when a file changes.

Templates shipped:
- abstract@1, abstract@2 - CDA4Rec Fig. 3 (device abstract generation)
- plan@1      - CDA4Rec Fig. 4 (cloud strategy planning, the paper's line format)
- plan_json@1 - CDA4Rec Fig. 4, compact JSON variant (examples in plan_json_examples@1.json)
- plan_exemplars@1 - plan_json@1 with its examples the 3 labelled abstracts nearest the request's (retrieved exemplars)
- plan_exemplars@2 - retrieved exemplars (k=3, nearest last), the answer one plan-space point (`output: plan-point`)
- plan_exemplars@3 - plan_exemplars@2 whose answer must be one of the retrieved points (`answer: one-of-exemplars`)
- plan_exemplars@4 - the 3 best plan points of the 100 nearest labelled abstracts (the kNN planner's ranking, best
  last, with their mean rewards), the answer one of them (`exemplars: neighbour-ranking`)
- plan_adapter@1 - zero-shot, one plan-space point; written for the LoRA plan adapter (CDA4Rec Eq. 8, header
                 `adapter: plan-adapter`, `output: plan-point`)
- explain@1   - CDA4Rec Fig. 5 (device explanation generation)
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from string import Template
from typing import Any

from ground.errors import TandemError
from ground.settings import Settings, get_settings

PROMPTS_DIR = Path(__file__).resolve().parent
_FILE_RE = re.compile(r"^(?P<name>[a-z][a-z0-9_]*)@(?P<version>\d+)\.(?P<ext>txt|json)$")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
DIGEST_CHARS = 12


class PromptError(TandemError):
    """A prompt that does not exist, or a prompt file that is malformed."""


class UnknownPromptError(PromptError):
    """A prompt name or version that is not in any prompts folder."""


def content_digest(body: str, examples: Sequence[dict[str, Any]] = ()) -> str:
    """The digest of what a model is shown: body + few-shot examples (sha256, first 12 hex digits)."""
    payload = json.dumps({"body": body, "examples": list(examples)}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:DIGEST_CHARS]


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
    header: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def ref(self) -> str:
        """name@version, recorded with every output made from this template."""
        return f"{self.name}@{self.version}"

    @property
    def digest(self) -> str:
        """Hash of the body and the few-shot examples: changes whenever what the model reads changes."""
        return content_digest(self.body, self.examples)

    @property
    def ident(self) -> str:
        """name@version#digest: the identity results and caches are keyed by."""
        return f"{self.ref}#{self.digest}"

    @property
    def key(self) -> str:
        """`ident` safe for a file name: name-vVERSION-digest."""
        return f"{self.name}-v{self.version}-{self.digest}"

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
    """All prompt templates of one or more folders, by name and version."""

    templates: dict[tuple[str, int], PromptTemplate]
    example_sets: dict[tuple[str, int], tuple[dict[str, Any], ...]]
    example_paths: dict[tuple[str, int], Path] = field(default_factory=dict)
    folders: tuple[Path, ...] = ()

    def names(self) -> list[str]:
        return sorted({name for name, _ in self.templates})

    def versions(self, name: str) -> list[int]:
        return sorted(v for n, v in self.templates if n == name)

    def example_versions(self, name: str) -> list[int]:
        return sorted(v for n, v in self.example_sets if n == name)

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
        raise PromptError(
            f"{path}: header says {header.get('name')}@{header.get('version')} but the file name says "
            f"{name}@{version} (a copied file? set its header's name and version, or make new versions with "
            f"`tandem prompts new {name} --from {header.get('name')}@{header.get('version')}`)"
        )


def _read_folder(folder: Path) -> tuple[dict, dict]:
    """({(name, version): (path, examples)}, {(name, version): (path, header, body)}) of one folder."""
    example_sets: dict[tuple[str, int], tuple[Path, tuple[dict[str, Any], ...]]] = {}
    headers: dict[tuple[str, int], tuple[Path, dict[str, str], str]] = {}
    for path in sorted(folder.iterdir()):
        match = _FILE_RE.match(path.name)
        if not match:
            continue
        name, version = match.group("name"), int(match.group("version"))
        if match.group("ext") == "json":
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as error:
                raise PromptError(f"{path}: not valid JSON ({error})") from None
            _check_identity(path, name, version, data)
            example_sets[(name, version)] = (path, tuple(data.get("examples", ())))
        else:
            header, body = _parse_template(path)
            _check_identity(path, name, version, header)
            headers[(name, version)] = (path, header, body)
    return example_sets, headers


def _merge(into: dict, found: dict, same: Any, what: str) -> None:
    """Add `found` to `into`; a key already there must carry the same content (`same(a, b)`)."""
    for key, value in found.items():
        if key in into and not same(into[key], value):
            raise PromptError(f"{key[0]}@{key[1]} {what} differs between {into[key][0]} and {value[0]}; "
                              f"keep one, or make a new version with `tandem prompts new {key[0]}`")  # fmt: skip
        into.setdefault(key, value)


def _signature(folders: Sequence[Path]) -> tuple:
    """What the folders hold now: (path, size, mtime) of every prompt file, so an edit invalidates the cache."""
    out = []
    for folder in folders:
        for path in sorted(folder.iterdir()):
            if _FILE_RE.match(path.name):
                stat = path.stat()
                out.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(out)


def prompt_folders(settings: Settings | None = None) -> tuple[Path, ...]:
    """The folders searched, first wins: the user's prompts folder (when it exists), then the package's."""
    user = user_prompts_dir(settings)
    folders = [user.resolve()] if user.is_dir() else []
    if PROMPTS_DIR not in folders:
        folders.append(PROMPTS_DIR)
    return tuple(folders)


def user_prompts_dir(settings: Settings | None = None) -> Path:
    """Where `tandem prompts new` writes: `Settings.prompts_dir` (TANDEM_PROMPTS_DIR), else ./prompts."""
    settings = settings or get_settings()
    return Path(settings.prompts_dir) if settings.prompts_dir else Path.cwd() / "prompts"


def load_prompts(directory: Path | Sequence[Path] | None = None) -> PromptRegistry:
    """Every prompt and example file of `directory` (one folder or several, first wins; default:
    `prompt_folders()`), read again only when a file was added, removed or edited."""
    if directory is None:
        folders = prompt_folders()
    elif isinstance(directory, str | Path):
        folders = (Path(directory),)
    else:
        folders = tuple(Path(d) for d in directory)
    return _load(folders, _signature(folders))


@lru_cache(maxsize=16)
def _load(folders: tuple[Path, ...], signature: tuple) -> PromptRegistry:
    example_files: dict[tuple[str, int], tuple[Path, tuple[dict[str, Any], ...]]] = {}
    headers: dict[tuple[str, int], tuple[Path, dict[str, str], str]] = {}
    for folder in folders:
        found_examples, found_headers = _read_folder(folder)
        _merge(example_files, found_examples, lambda a, b: a[1] == b[1], "examples")
        _merge(headers, found_headers, lambda a, b: a[2] == b[2], "text")
    example_sets = {key: examples for key, (_, examples) in example_files.items()}
    templates = {}
    for (name, version), (path, header, body) in headers.items():
        ref = header.get("examples")
        examples: tuple[dict[str, Any], ...] = ()
        if ref:
            ex_name, _, ex_version = ref.partition("@")
            if not ex_version.isdigit() or (ex_name, int(ex_version)) not in example_sets:
                raise PromptError(f"{path.name}: examples {ref!r} not found")
            examples = example_sets[(ex_name, int(ex_version))]
        templates[(name, version)] = PromptTemplate(
            name=name, version=version, body=body, source=header.get("source", ""),
            description=header.get("description", ""), path=path, examples_ref=ref, examples=examples,
            header=header,
        )  # fmt: skip
    paths = {key: path for key, (path, _) in example_files.items()}
    return PromptRegistry(templates=templates, example_sets=example_sets, example_paths=paths, folders=folders)


def get_prompt(spec: str) -> PromptTemplate:
    """The template `name` (newest) or `name@version` from the prompts folders."""
    return load_prompts().get(spec)


@dataclass(frozen=True)
class NewPrompt:
    """What `new_version` wrote."""

    template: PromptTemplate
    source: PromptTemplate
    written: list[Path]


def new_version(name: str, source_spec: str, folder: Path | None = None) -> NewPrompt:
    """Copy `source_spec` to `name@<next version>` in the user's prompts folder, with the header bumped.

    The new version's few-shot examples (if the source has any) are copied to a new examples version too,
    so editing them never changes an older version. Nothing is opened; nothing existing is overwritten.
    """
    if not NAME_RE.match(name):
        raise PromptError(f"prompt name {name!r} must be lower-case letters, digits and _ (e.g. plan_json)")
    target_dir = (folder or user_prompts_dir()).resolve()
    target_dir.mkdir(parents=True, exist_ok=True)
    folders = tuple(dict.fromkeys([target_dir, *prompt_folders()]))
    registry = load_prompts(folders)
    source = registry.get(source_spec)
    version = max(registry.versions(name), default=0) + 1
    header = {**source.header, "name": name, "version": str(version)}
    header["description"] = f"Copy of {source.ident}. {source.description}".strip()
    written = []
    if source.examples_ref:
        ex_name = source.examples_ref.partition("@")[0]
        ex_version = max(registry.example_versions(ex_name), default=0) + 1
        ex_path = target_dir / f"{ex_name}@{ex_version}.json"
        if ex_path.exists():
            raise PromptError(f"{ex_path} already exists")
        original = json.loads(registry.example_paths[_split(source.examples_ref)].read_text(encoding="utf-8"))
        original.update({"name": ex_name, "version": ex_version,
                         "description": f"Copy of {source.examples_ref} for {name}@{version}."})  # fmt: skip
        ex_path.write_text(json.dumps(original, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(ex_path)
        header["examples"] = f"{ex_name}@{ex_version}"
    path = target_dir / f"{name}@{version}.txt"
    if path.exists():
        raise PromptError(f"{path} already exists")
    head = "\n".join(f"{key}: {value}" for key, value in header.items())
    path.write_text(f"{head}\n---\n{source.body}\n", encoding="utf-8")
    written.insert(0, path)
    return NewPrompt(template=load_prompts(folders).get(f"{name}@{version}"), source=source, written=written)


def _split(ref: str) -> tuple[str, int]:
    name, _, version = ref.partition("@")
    return name, int(version)
