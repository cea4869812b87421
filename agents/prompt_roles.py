"""Which prompt version each language-model step uses: the abstract (CDA4Rec Fig. 3), the plan (Fig. 4) and
the explanation (Fig. 5).

`--prompt` on `recommend`, `chat`, `eval plans` and `eval rec` takes `[ROLE=]NAME[@VERSION]`, repeatable. The
role is inferred from the placeholders the template fills (each step fills a known set of values), so a new
version or a renamed copy of a planning prompt serves as a planning prompt without further configuration;
`ROLE=` is needed only to be explicit. A version that cannot serve its role is one clear error line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from agents.cloud.planner import PLAN_FIELDS, PLAN_PROMPT
from agents.device.abstract import ABSTRACT_FIELDS, ABSTRACT_PROMPT
from agents.device.explain import EXPLAIN_FIELDS, EXPLAIN_PROMPT
from prompts import PromptError, PromptTemplate, get_prompt

Role = Literal["abstract", "plan", "explain"]
ROLES: tuple[Role, ...] = ("abstract", "plan", "explain")
ROLE_FIELDS: dict[Role, tuple[frozenset[str], ...]] = {
    "abstract": tuple(dict.fromkeys(ABSTRACT_FIELDS.values())),
    "plan": tuple(dict.fromkeys(PLAN_FIELDS.values())),
    "explain": (EXPLAIN_FIELDS,),
}


class PromptChoice(BaseModel):
    """The prompt version (name@version) of each step."""

    model_config = ConfigDict(frozen=True)

    abstract: str = ABSTRACT_PROMPT
    plan: str = PLAN_PROMPT
    explain: str = EXPLAIN_PROMPT

    def idents(self) -> dict[str, str]:
        """role -> name@version#digest of the files as they are now."""
        return {role: get_prompt(getattr(self, role)).ident for role in ROLES}


def roles_of(template: PromptTemplate) -> list[Role]:
    """The steps whose values fill exactly this template's placeholders."""
    return [role for role in ROLES if template.placeholders in ROLE_FIELDS[role]]


def role_of(template: PromptTemplate) -> Role:
    """The one step this template can serve; PromptError when none can."""
    roles = roles_of(template)
    if not roles:
        wanted = "; ".join(f"{r}: {{{', '.join(sorted(f))}}}" for r in ROLES for f in ROLE_FIELDS[r])
        raise PromptError(f"{template.ref} fills {{{', '.join(sorted(template.placeholders))}}}, which no step "
                          f"fills ({wanted})")  # fmt: skip
    return roles[0]


def choose_prompts(values: Sequence[str], base: PromptChoice | None = None) -> PromptChoice:
    """`[ROLE=]NAME[@VERSION]` options -> the prompt of each role (the others keep `base`'s, default the code's)."""
    chosen: dict[str, str] = {}
    for value in values:
        role_text, sep, spec = value.partition("=")
        if not sep:
            role_text, spec = "", value
        template = get_prompt(spec.strip())  # unknown name or version -> one clear line
        role = role_text.strip() or role_of(template)
        if role not in ROLES:
            raise PromptError(f"unknown role {role!r} in --prompt {value!r}; roles: {', '.join(ROLES)}")
        if role not in roles_of(template):
            raise PromptError(f"{template.ref} cannot be the {role} prompt: it fills "
                              f"{{{', '.join(sorted(template.placeholders))}}}")  # fmt: skip
        if role in chosen and chosen[role] != template.ref:
            raise PromptError(f"two {role} prompts given: {chosen[role]} and {template.ref}")
        chosen[role] = template.ref
    return (base or PromptChoice()).model_copy(update=chosen)
