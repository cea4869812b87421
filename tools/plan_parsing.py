"""Model text -> `PlanResult`: find a plan in what the language model wrote, check it, repair it, or fall back.

Three outcomes, and the `PlanResult.status` says which one produced the plan:
1. parsed   - JSON (bare, in a code fence or inside prose; compact keys a/n/t/e/b/w or long names or the
              Fig. 4 module names) or the paper's line format ("Semantic User Modeling - {query: 0.7, ...}").
2. repaired - every violation is named (`Violation(field, code, message)`); numbers are snapped to the
              allowed sets, tag counts renormalised to the candidate size, unknown tags mapped to the nearest
              known tag (alias table first, then MiniLM embeddings), missing decisions filled from the rules.
3. fallback - when nothing parseable came back or fewer than two of the four module decisions did, the
              rule planner (`tools.rule_planner`) writes the plan from the abstract alone.

In the compact JSON of the structured prompt (`tools.plan_schema`) the tag values are relative weights; in
every other form they are counts N_i and must add up to the candidate size.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError

from tools.embeddings import embed_texts
from tools.protocol import (
    CANDIDATE_SIZES,
    ENCODERS,
    MODULES,
    TAG_COUNTS,
    Plan,
    PlanError,
    PlanResult,
    Violation,
    effective_beta,
)
from tools.rule_planner import (
    TAG_ALIASES,
    PlanSignals,
    allocate,
    rule_decisions,
    rule_explanations,
    rule_plan,
    usable_tag_counts,
)

MAX_TEXT = 20_000

Embed = Callable[[list[str]], np.ndarray]


class PlanParseError(PlanError):
    """No plan could be found in the text (neither JSON nor the Fig. 4 line format)."""


class PlanValidationError(PlanError):
    """A plan was found but breaks the Fig. 4 constraints; `violations` names each one."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = violations
        super().__init__("invalid plan: " + "; ".join(f"{v.field}.{v.code}: {v.message}" for v in violations))


# ---------------------------------------------------------------------------------------------- parsing


@dataclass
class Draft:
    """A plan as found in text, before validation: any field may be missing or out of range."""

    alpha: float | None = None
    tag_count: float | None = None
    candidate_size: float | None = None
    tags: dict[str, float] | None = None
    weights_mode: bool = False
    encoder: str | None = None
    beta: float | None = None
    explanations: dict[str, str] = field(default_factory=dict)
    general: str | None = None
    notes: list[Violation] = field(default_factory=list)

    def core_present(self) -> int:
        return sum(x is not None for x in (self.alpha, self.tags or None, self.encoder, self.beta))


def _norm_key(key: object) -> str:
    return re.sub(r"[^a-z0-9]", "", str(key).lower())


def _num(value: object) -> float | None:
    """A finite number from a JSON value or a numeric string ("0.7", "70%", "1,000")."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([-+]?\d[\d,]*(?:\.\d+)?|[-+]?\.\d+)\s*(%?)\s*", value)
        if match:
            number = float(match.group(1).replace(",", ""))
            return number / 100 if match.group(2) else number
    return None


_ALPHA_KEYS = {"a", "alpha", "queryweight", "query"}
_BETA_KEYS = {"b", "beta", "semanticweight", "semantic"}
_SIZE_KEYS = {"n", "candidatesize", "candidates", "size", "numcandidates"}
_COUNT_KEYS = {"k", "tagcount", "numtags", "tagcounts"}
_TAG_KEYS = {"t", "tags", "weightedtags", "tagweights", "taggroups"}
_ENCODER_KEYS = {"e", "encoder", "model", "modelname", "structuredmodel"}
_WHY_KEYS = {"w", "why", "explanation", "explanations", "reason", "rationale"}
_MODULE_KEYS = {
    "semanticusermodeling": "semantic", "semanticusermodelling": "semantic", "semanticmodeling": "semantic",
    "candidateretrieval": "retrieval", "retrieval": "retrieval",
    "structuredusermodeling": "structured", "structuredusermodelling": "structured", "structuredmodeling": "structured",
    "finalranking": "ranking", "ranking": "ranking",
}  # fmt: skip
_EXPLANATION_MODULE = {"s": "semantic", "r": "retrieval", "m": "structured", "f": "ranking"}


def _module_of(key: str) -> str | None:
    norm = _norm_key(key)
    if norm in _EXPLANATION_MODULE:
        return _EXPLANATION_MODULE[norm]
    for prefix, module in (("semantic", "semantic"), ("candidate", "retrieval"), ("retriev", "retrieval"),
                           ("struct", "structured"), ("final", "ranking"), ("rank", "ranking")):  # fmt: skip
        if norm.startswith(prefix):
            return module
    return None


def _tag_map(value: object, draft: Draft) -> dict[str, float] | None:
    if isinstance(value, list):
        names = [str(v) for v in value if isinstance(v, str | int | float) and not isinstance(v, bool)]
        return dict.fromkeys(names, 1.0) if names else None
    if not isinstance(value, dict):
        return None
    tags: dict[str, float] = {}
    for name, weight in value.items():
        number = _num(weight)
        if number is None:
            draft.notes.append(Violation(field="tags", code="not_a_number", message=f"{name!r}: {weight!r}"))
            continue
        tags[str(name).strip()] = number
    return tags


def _encoder_name(value: object) -> str | None:
    if value is None:
        return "none"
    if isinstance(value, dict):
        for key, inner in value.items():
            if _norm_key(key) in _ENCODER_KEYS | {"name"}:
                return _encoder_name(inner)
        return None
    text = str(value).strip()
    return text or None


def _draft_from_json(obj: dict[str, Any]) -> Draft:
    draft = Draft()
    for key, value in obj.items():
        norm = _norm_key(key)
        module = _MODULE_KEYS.get(norm)
        if norm in _ALPHA_KEYS:
            draft.alpha = _num(value)
        elif norm in _BETA_KEYS:
            draft.beta = _num(value)
        elif norm in _SIZE_KEYS:
            draft.candidate_size = _num(value)
        elif norm in _COUNT_KEYS:
            draft.tag_count = _num(value)
        elif norm in _TAG_KEYS:
            draft.tags = _tag_map(value, draft)
            draft.weights_mode = norm == "t"
        elif norm in _ENCODER_KEYS:
            draft.encoder = _encoder_name(value)
        elif norm in _WHY_KEYS:
            if isinstance(value, dict):
                for sub, text in value.items():
                    if (target := _module_of(str(sub))) and str(text).strip():
                        draft.explanations[target] = str(text).strip()
            elif isinstance(value, str) and value.strip():
                draft.general = value.strip()
        elif module is not None:
            _module_from_json(module, value, draft)
    return draft


def _module_from_json(module: str, value: object, draft: Draft) -> None:
    """The Fig. 4 module names used as JSON keys ({"Final Ranking": {"semantic": 0.6, ...}, ...})."""
    if isinstance(value, dict):
        inner = {_norm_key(k): v for k, v in value.items()}
        for why in _WHY_KEYS:
            if isinstance(inner.get(why), str) and inner[why].strip():
                draft.explanations[module] = inner[why].strip()
        value = {k: v for k, v in value.items() if _norm_key(k) not in _WHY_KEYS}
        inner = {_norm_key(k): v for k, v in value.items()}
    if module == "semantic" and isinstance(value, dict):
        draft.alpha = _pair_weight(inner.get("query"), inner.get("behavior", inner.get("behaviour")), "alpha", draft)
    elif module == "ranking" and isinstance(value, dict):
        draft.beta = _pair_weight(inner.get("semantic"), inner.get("structured"), "beta", draft)
    elif module == "retrieval":
        if isinstance(value, dict) and any(k in _TAG_KEYS | _SIZE_KEYS | _COUNT_KEYS for k in inner):
            nested = _draft_from_json(value)
            draft.tags, draft.candidate_size, draft.tag_count = nested.tags, nested.candidate_size, nested.tag_count
            draft.notes += nested.notes
        else:
            draft.tags = _tag_map(value, draft)
    elif module == "structured":
        draft.encoder = _encoder_name(value)


def _pair_weight(first: object, second: object, name: str, draft: Draft) -> float | None:
    """alpha from {query, behavior} (or beta from {semantic, structured}); normalised when they do not sum to 1."""
    a, b = _num(first), _num(second)
    if a is None and b is None:
        return None
    if a is None:
        return 1.0 - b if b is not None else None
    if b is not None and abs(a + b - 1.0) > 0.011:
        if a >= 0 and b >= 0 and a + b > 0:
            draft.notes.append(
                Violation(field=name, code="sum", message=f"weights {a:g} + {b:g} != 1, normalised")
            )
            return a / (a + b)
    return a


_LINE_LABELS = {
    "semantic": r"semantic\s+user\s+modell?ing",
    "retrieval": r"candidate\s+retrieval",
    "structured": r"structured\s+user\s+modell?ing",
    "ranking": r"final\s+ranking",
    "explanation": r"explanations?",
}
_LABELS = "|".join(f"(?P<{k}>{v})" for k, v in _LINE_LABELS.items())
_LABEL_RE = re.compile(
    r"^[\s*#>\-\d.)]*(?:\*\*)?(" + _LABELS + r")(?:\*\*)?\s*[-:–—=]+\s*", re.IGNORECASE | re.MULTILINE
)
_KV_RE = re.compile(r"([^,:;{}\n=]+?)\s*[:=]\s*([^,;{}\n]+)")


def _draft_from_lines(text: str) -> Draft:
    """The Fig. 4 output format: one "Module - {...}" line per module, then "Explanation - {...}"."""
    draft = Draft()
    matches = list(_LABEL_RE.finditer(text))
    for i, match in enumerate(matches):
        module = next(k for k in _LINE_LABELS if match.group(k))
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end() : end] if module == "explanation" else text[match.end() :].split("\n", 1)[0]
        body = body.strip().strip("{}").strip()
        pairs = {_norm_key(k): v.strip() for k, v in _KV_RE.findall(body)}
        if module == "semantic":
            behavior = pairs.get("behavior", pairs.get("behaviour"))
            draft.alpha = _pair_weight(pairs.get("query"), behavior, "alpha", draft)
        elif module == "ranking":
            draft.beta = _pair_weight(pairs.get("semantic"), pairs.get("structured"), "beta", draft)
        elif module == "retrieval":
            tags = {}
            for name, count in _KV_RE.findall(body):
                number = _num(count)
                if number is None:
                    message = f"{name.strip()!r}: {count!r}"
                    draft.notes.append(Violation(field="tags", code="not_a_number", message=message))
                else:
                    tags[name.strip().strip("'\"")] = number
            draft.tags = tags or None
        elif module == "structured":
            found = re.search(r"SASRec|SURGE|\bnone\b|\bno\b|\bskip", body, re.IGNORECASE)
            draft.encoder = found.group(0) if found else (body or None)
        elif module == "explanation" and body:
            draft.general = body
    return draft


def _scan(fragment: str) -> tuple[list[str], bool, int | None]:
    """Open brackets, whether the scan ends inside a string, and where the first value closes (if it does)."""
    stack: list[str] = []
    in_string = escaped = False
    for i, ch in enumerate(fragment):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]":
            if stack and stack[-1] == ch:
                stack.pop()
            if not stack:
                return [], False, i
    return stack, in_string, None


def _lenient(text: str) -> str:
    """Near-JSON to JSON: Python literals, bare or single-quoted keys, trailing commas, smart quotes."""
    text = text.replace("“", '"').replace("”", '"').replace("‘", "'").replace("’", "'")
    text = re.sub(r"\bTrue\b", "true", re.sub(r"\bFalse\b", "false", re.sub(r"\bNone\b", '"none"', text)))
    text = re.sub(r"([{,]\s*)'([^'\"]*?)'\s*:", r'\1"\2":', text)
    text = re.sub(r":\s*'([^'\"]*?)'(\s*[,}])", r': "\1"\2', text)
    text = re.sub(r"([{,]\s*)([A-Za-z_][\w\- ]*?)\s*:", r'\1"\2":', text)
    return re.sub(r",\s*([}\]])", r"\1", text)


def _close(fragment: str) -> str:
    """Close a truncated JSON fragment: end an open string, drop a dangling key or comma, add closers."""
    stack, in_string, _ = _scan(fragment)
    text = fragment + ('"' if in_string else "")
    text = re.sub(r',\s*"[^"]*"\s*$', "", text.rstrip())
    text = re.sub(r'[,:]\s*$', "", text)
    return text + "".join(reversed(stack))


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _find_json(text: str) -> dict[str, Any] | None:
    """The first JSON object in `text` that looks like a plan, tolerating fences, prose and truncation."""
    text = re.sub(r"```[a-zA-Z]*", "\n", text)
    starts = [m.start() for m in re.finditer(r"\{", text)][:20]
    for start in starts:
        _, _, end = _scan(text[start:])
        fragment = text[start : start + end + 1] if end is not None else text[start:]
        attempts = [fragment, _lenient(fragment)]
        if end is None:
            attempts += [_close(fragment), _close(_lenient(fragment))]
            cuts = [m.start() for m in re.finditer(",", fragment)][::-1][:30]
            attempts += [_close(fragment[:cut]) for cut in cuts]
        for attempt in attempts:
            obj = _loads(attempt)
            if isinstance(obj, dict) and _plan_like(obj):
                return obj
    return None


def _plan_like(obj: dict[str, Any]) -> bool:
    keys = {_norm_key(k) for k in obj}
    known = _ALPHA_KEYS | _BETA_KEYS | _SIZE_KEYS | _TAG_KEYS | _ENCODER_KEYS | set(_MODULE_KEYS)
    return len(keys & known) >= 2 or bool(keys & set(_MODULE_KEYS))


def extract_draft(text: str) -> Draft:
    """Find a plan in model text: JSON first (fenced, in prose, truncated, near-JSON), then the Fig. 4 lines."""
    if not isinstance(text, str) or not text.strip():
        raise PlanParseError("empty model output: no plan")
    text = text[:MAX_TEXT]
    obj = _find_json(text)
    if obj is not None:
        return _draft_from_json(obj)
    draft = _draft_from_lines(text)
    if draft.core_present() == 0:
        raise PlanParseError("no plan in the output: neither a JSON object nor Fig. 4 module lines")
    return draft


# ---------------------------------------------------------------------------------------------- validation


def _encoder_alias(name: str | None) -> str | None:
    if name is None:
        return None
    norm = _norm_key(name)
    if norm == "sasrec":
        return "SASRec"
    if norm == "surge":
        return "SURGE"
    if norm in {"none", "no", "null", "skip", "nomodel", "off", ""}:
        return "none"
    return None


def check_draft(draft: Draft, known_tags: Sequence[str]) -> list[Violation]:
    """Every Fig. 4 constraint the draft breaks, by name."""
    out = list(draft.notes)

    def unit(name: str, value: float | None) -> None:
        if value is None:
            out.append(Violation(field=name, code="missing", message=f"no {name}"))
        elif not 0.0 <= value <= 1.0:
            out.append(Violation(field=name, code="range", message=f"{name}={value:g} outside [0, 1]"))

    unit("alpha", draft.alpha)
    unit("beta", draft.beta)
    encoder = _encoder_alias(draft.encoder)
    if draft.encoder is None:
        out.append(Violation(field="encoder", code="missing", message="no structured encoder decision"))
    elif encoder is None:
        out.append(Violation(field="encoder", code="unknown", message=f"{draft.encoder!r} not in {list(ENCODERS)}"))
    elif encoder == "none" and draft.beta is not None and draft.beta != 1.0:
        out.append(Violation(field="beta", code="no_encoder", message="encoder none but beta != 1"))
    tags = draft.tags or {}
    if not tags:
        out.append(Violation(field="tags", code="missing", message="no weighted tags"))
    known = set(known_tags)
    for name, n in tags.items():
        if name not in known:
            out.append(Violation(field="tags", code="unknown_tag", message=f"{name!r} is not a known tag"))
        if n <= 0 or (not draft.weights_mode and n != int(n)):
            out.append(Violation(field="tags", code="bad_count", message=f"{name!r}: {n:g} is not a positive integer"))
    if tags and len(tags) not in TAG_COUNTS:
        out.append(Violation(field="tag_count", code="not_allowed", message=f"{len(tags)} tags, allowed {TAG_COUNTS}"))
    if draft.tag_count is not None and draft.tag_count != len(tags):
        out.append(
            Violation(field="tag_count", code="mismatch", message=f"tag_count={draft.tag_count:g}, {len(tags)} tags")
        )
    size = draft.candidate_size
    if size is not None and size not in CANDIDATE_SIZES:
        out.append(
            Violation(field="candidate_size", code="not_allowed", message=f"{size:g} not in {CANDIDATE_SIZES}")
        )
    if not draft.weights_mode and tags:
        total = sum(tags.values())
        if size is None and total not in CANDIDATE_SIZES:
            out.append(Violation(field="candidate_size", code="not_allowed", message=f"N_i sum to {total:g}"))
        elif size is not None and total != size:
            out.append(Violation(field="tags", code="sum", message=f"N_i sum to {total:g}, not {size:g}"))
    elif draft.weights_mode and size is None:
        out.append(Violation(field="candidate_size", code="missing", message="no candidate size"))
    if not draft.general and not draft.explanations:
        out.append(Violation(field="explanations", code="missing", message="no explanation"))
    return out


# ---------------------------------------------------------------------------------------------- repair

_tag_embedding_cache: dict[tuple[int, tuple[str, ...]], np.ndarray] = {}


def nearest_tag(name: str, known_tags: Sequence[str], embed: Embed | None = None) -> str:
    """The known tag closest to `name`: exact up to case/punctuation, alias ("sci fi", "90s"), then embedding."""
    key = _norm_key(name)
    for tag in known_tags:
        if _norm_key(tag) == key:
            return tag
    alias = TAG_ALIASES.get(name.strip().lower())
    if alias in known_tags:
        return alias
    lowered = name.strip().lower()
    decade = re.fullmatch(r"(?:19)?(\d)0'?s", lowered)
    words = ("twenties", "thirties", "forties", "fifties", "sixties", "seventies", "eighties", "nineties")
    digit = decade.group(1) if decade else str(words.index(lowered) + 2) if lowered in words else None
    if digit and f"19{digit}0s" in known_tags:
        return f"19{digit}0s"
    embed = embed or embed_texts
    cache_key = (id(embed), tuple(known_tags))
    if cache_key not in _tag_embedding_cache:
        _tag_embedding_cache[cache_key] = np.asarray(embed(list(known_tags)), dtype=np.float32)
    table = _tag_embedding_cache[cache_key]
    query = np.asarray(embed([name]), dtype=np.float32)[0]
    scores = table @ query / (np.linalg.norm(table, axis=1) * (np.linalg.norm(query) or 1.0) + 1e-9)
    return known_tags[int(np.argmax(scores))]


def _snap(value: float, allowed: Sequence[int]) -> int:
    """Nearest allowed value on a log scale (ties go to the smaller, i.e. the more compact, choice)."""
    value = max(value, 1e-9)
    return min(allowed, key=lambda a: (abs(math.log(a) - math.log(value)), a))


def _clip(value: float) -> float:
    return float(min(1.0, max(0.0, value)))


def _repair(
    draft: Draft, known_tags: Sequence[str], signals: PlanSignals, embed: Embed | None
) -> tuple[dict[str, Any], list[Violation]]:
    """Fix what can be fixed; returns the plan fields and the violations repair itself had to add."""
    added: list[Violation] = []
    rules = rule_decisions(signals)
    alpha = _clip(draft.alpha) if draft.alpha is not None else float(rules["alpha"])
    beta = _clip(draft.beta) if draft.beta is not None else float(rules["beta"])
    encoder = _encoder_alias(draft.encoder) or str(rules["encoder"])

    tags: dict[str, float] = {}
    for name, n in (draft.tags or {}).items():
        if n <= 0:
            continue
        mapped = name if name in known_tags else nearest_tag(name, known_tags, embed)
        if mapped != name:
            added.append(Violation(field="tags", code="mapped", message=f"{name!r} -> {mapped!r}"))
        tags[mapped] = tags.get(mapped, 0.0) + n
    # A draft tag_count is trusted only when allowed; otherwise the number of tags found, snapped.
    usable = usable_tag_counts(known_tags)
    if draft.tag_count in TAG_COUNTS and draft.tag_count in usable:
        k = int(draft.tag_count)
    elif tags:
        k = _snap(len(tags), usable)
    else:
        k = min(int(rules["tag_count"]), usable[-1])
    if len(tags) > k:
        tags = dict(sorted(tags.items(), key=lambda kv: -kv[1])[:k])
    if len(tags) < k:
        floor = min(tags.values()) if tags else 1.0
        for tag in signals.preferred_tags(list(known_tags)):
            if len(tags) >= k:
                break
            tags.setdefault(tag, floor)
    if draft.candidate_size is not None:
        size = _snap(draft.candidate_size, CANDIDATE_SIZES)
    elif draft.tags and not draft.weights_mode:
        size = _snap(sum(n for n in draft.tags.values() if n > 0) or 1, CANDIDATE_SIZES)
    else:
        size = int(rules["candidate_size"])
    counts = allocate(size, tags)
    beta = effective_beta(encoder, beta)
    reasons = rule_explanations(signals, {"alpha": alpha, "tag_count": k, "candidate_size": size,
                                          "encoder": encoder, "beta": beta})  # fmt: skip
    explanations = {m: draft.explanations.get(m) or draft.general or reasons[m] for m in MODULES}
    fields = {
        "alpha": alpha, "tag_count": k, "candidate_size": size, "tags": counts, "encoder": encoder,
        "beta": beta, "explanations": explanations,
    }  # fmt: skip
    return fields, added


def _fields(draft: Draft) -> dict[str, Any]:
    """Plan fields of a draft with no violations (weights become counts; one explanation serves all modules)."""
    tags = draft.tags or {}
    size = int(draft.candidate_size if draft.candidate_size is not None else sum(tags.values()))
    counts = allocate(size, tags) if draft.weights_mode else {t: int(n) for t, n in tags.items()}
    return {
        "alpha": draft.alpha, "tag_count": len(tags), "candidate_size": size, "tags": counts,
        "encoder": _encoder_alias(draft.encoder), "beta": draft.beta,
        "explanations": {m: draft.explanations.get(m) or draft.general for m in MODULES},
    }  # fmt: skip


def parse_plan(text: str, known_tags: Sequence[str]) -> Plan:
    """Strict parse: a valid Plan, or PlanParseError / PlanValidationError naming every violation."""
    draft = extract_draft(text)
    violations = check_draft(draft, known_tags)
    if not violations and len(draft.explanations) < len(MODULES) and not draft.general:
        violations.append(Violation(field="explanations", code="missing", message="not every module explained"))
    if violations:
        raise PlanValidationError(violations)
    try:
        return Plan.model_validate(_fields(draft), context={"known_tags": list(known_tags)})
    except ValidationError as error:
        raise PlanValidationError(
            [Violation(field="plan", code="invalid", message=e["msg"]) for e in error.errors()]
        ) from None


def resolve_plan(
    text: str,
    known_tags: Sequence[str],
    signals: PlanSignals,
    *,
    embed: Embed | None = None,
    prompt: str | None = None,
    stats: dict[str, Any] | None = None,
) -> PlanResult:
    """Model text -> PlanResult: parsed, else repaired, else the rule planner's fallback. Never raises on text."""
    known = list(known_tags)
    common = {"raw_text": text if isinstance(text, str) else "", "prompt": prompt, "stats": stats}
    try:
        draft = extract_draft(text)
    except PlanParseError as error:
        violation = Violation(field="output", code="unparseable", message=str(error))
        return PlanResult(plan=rule_plan(signals, known), status="fallback", violations=[violation], **common)
    violations = check_draft(draft, known)
    if not violations:
        try:
            plan = Plan.model_validate(_fields(draft), context={"known_tags": known})
            return PlanResult(plan=plan, status="parsed", **common)
        except ValidationError as error:
            violations = [Violation(field="plan", code="invalid", message=e["msg"]) for e in error.errors()]
    if draft.core_present() < 2:
        violations.append(
            Violation(field="plan", code="incomplete", message=f"{draft.core_present()} of 4 module decisions")
        )
        return PlanResult(plan=rule_plan(signals, known), status="fallback", violations=violations, **common)
    try:
        fields, added = _repair(draft, known, signals, embed)
        plan = Plan.model_validate(fields, context={"known_tags": known})
    except ValidationError as error:
        violations += [Violation(field="plan", code="unrepairable", message=e["msg"]) for e in error.errors()]
        return PlanResult(plan=rule_plan(signals, known), status="fallback", violations=violations, **common)
    return PlanResult(plan=plan, status="repaired", violations=violations + added, **common)


def raw_decisions(text: str, known_tags: Sequence[str]) -> tuple[dict[str, Any] | None, list[Violation]]:
    """What the model itself decided, before any repair: ({alpha, tag_count, candidate_size, encoder, beta}
    with None for a decision it did not make (or made unreadably), and the violations of its raw output).

    (None, [unparseable]) when no plan is in the text. Evals score the prompt on this, not on the repaired plan
    (which repair may have completed from the rule planner).
    """
    try:
        draft = extract_draft(text)
    except PlanParseError as error:
        return None, [Violation(field="output", code="unparseable", message=str(error))]
    tags = draft.tags or {}
    decisions = {
        "alpha": draft.alpha, "beta": draft.beta, "candidate_size": draft.candidate_size,
        "tag_count": draft.tag_count if draft.tag_count is not None else (len(tags) or None),
        "encoder": _encoder_alias(draft.encoder) or draft.encoder,
    }  # fmt: skip
    return decisions, check_draft(draft, known_tags)
