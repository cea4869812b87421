"""The plan adapter (CDA4Rec Eq. 8): compact answer round trip, answer-only loss, GGUF LoRA export, serving on the
embedded llama.cpp model, and the runtime choosing the adapter when one is trained."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agents.cloud.planner import needs_adapter, plan_strategy
from agents.llm import gguf_path
from agents.prompt_roles import choose_prompts
from prompts import get_prompt
from tools.lora_gguf import write_lora_gguf
from tools.plan_adapter import (
    ADAPTER_PROMPT,
    IGNORE,
    AdapterConfig,
    Example,
    answer_loss,
    batch_order,
    collate,
    encode,
    lora_state,
    split_users,
    with_lora,
)
from tools.plan_point_answer import PointAnswer, parse_point_answer, point_answer_schema, resolve_point_answer
from tools.plan_space import DEFAULT_SPACE
from tools.protocol import Abstract
from tools.rule_planner import usable_tag_counts

TAGS = ["Action", "Animation", "Children's", "Comedy", "Drama", "Romance", "Thriller", "1990s", "1980s"]
SUMMARY = ("Facts: 40 interactions over 30 days; 10 in the last 30 days; last one 2 days before the request; "
           "top tags: Comedy, Drama, 1990s; recent tags: Comedy.")
ABSTRACT = Abstract(sanitized_query="something funny and animated", behavior_summary=SUMMARY)


def test_every_point_round_trips_through_the_compact_answer() -> None:
    schema = point_answer_schema()
    for point in DEFAULT_SPACE.points():
        text = PointAnswer.of_point(point).text()
        assert parse_point_answer(text).point() == point
        assert json.loads(text)["a"] in schema["properties"]["a"]["enum"]
        result = resolve_point_answer(text, ABSTRACT, TAGS, prompt=ADAPTER_PROMPT)
        assert result.status == "parsed" and result.plan.candidate_size == point.candidate_size
        assert result.plan.alpha == point.alpha and result.plan.encoder == point.encoder
        assert len(result.plan.tags) == min(point.tag_count, usable_tag_counts(TAGS)[-1])
        assert set(result.plan.tags) <= set(TAGS)
    with pytest.raises(ValueError):
        parse_point_answer('{"a":0.7,"k":5,"n":1000,"e":"SASRec","b":0.0}')  # alpha off the grid
    spaced = resolve_point_answer('{ "a" : 1.0, "k":20, "n":1000, "e":"SASRec", "b" :1.0} ', ABSTRACT, TAGS)
    assert spaced.status == "parsed" and spaced.plan.beta == 1.0  # a pair the space does not list is a plan
    repaired = resolve_point_answer('{"a":0.7,"k":5,"n":1000,"e":"SASRec","b":0.0}', ABSTRACT, TAGS)
    assert repaired.status in ("repaired", "fallback")
    assert resolve_point_answer("no plan here", ABSTRACT, TAGS).status == "fallback"


def test_the_adapter_prompt_is_zero_shot_and_asks_for_the_adapter() -> None:
    template = get_prompt(ADAPTER_PROMPT)
    assert template.placeholders == {"abstract"} and needs_adapter(template)
    assert not needs_adapter(get_prompt("plan_json@1"))
    result = plan_strategy(ABSTRACT, TAGS, None, prompt=ADAPTER_PROMPT)  # no model: the rules
    assert result.status == "rule"


class CharTokenizer:
    """Characters as token ids (enough to check which positions the loss reads)."""

    bos_token_id = 2

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [10 + ord(c) % 100 for c in text]}


def tiny_gemma():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=256,
                              sliding_window=64, layer_types=["sliding_attention", "full_attention"])  # fmt: skip
    return Gemma3ForCausalLM(config).eval()


def test_loss_reads_the_answer_tokens_only() -> None:
    ids, labels = encode(CharTokenizer(), "User abstract: x\nPlan:", '{"a":0.0}')
    assert len(ids) == len(labels) == 1 + len("User abstract: x\nPlan:") + len('{"a":0.0}')
    assert labels[: 1 + len("User abstract: x\nPlan:")] == [IGNORE] * (1 + len("User abstract: x\nPlan:"))
    assert labels[-len('{"a":0.0}'):] == ids[-len('{"a":0.0}'):]
    model = tiny_gemma()
    rows = [encode(CharTokenizer(), "abc", "{xy}"), encode(CharTokenizer(), "a much longer prompt", "{z}")]
    input_ids, mask, targets = collate(rows, pad_id=0)
    loss, exact, right, total = answer_loss(model, input_ids, mask, targets)
    reference = model(input_ids=input_ids, attention_mask=mask, labels=targets).loss  # transformers' own shift
    assert torch.allclose(loss, reference, atol=1e-5) and total == len("{xy}") + len("{z}")
    assert exact.shape == (2,) and 0 <= right <= total
    # the prompt's tokens carry no loss: changing what the answer follows changes the loss, not what it counts
    other = encode(CharTokenizer(), "zzz", "{xy}")
    assert sum(t != IGNORE for t in other[1]) == len("{xy}")


def test_lora_starts_as_the_base_model_and_exports_llama_cpp_names(tmp_path) -> None:
    import gguf

    model = tiny_gemma()
    input_ids, mask, targets = collate([encode(CharTokenizer(), "abc", "{xy}")], pad_id=0)
    before = answer_loss(model, input_ids, mask, targets)[0]
    adapted = with_lora(model, AdapterConfig(rank=4, alpha=8.0))
    assert torch.allclose(answer_loss(adapted, input_ids, mask, targets)[0], before)  # B = 0
    state = lora_state(adapted)
    assert len(state) == 2 * 7 * 2  # A and B of seven projections in two layers
    path = write_lora_gguf(state, 8.0, 2, tmp_path / "a.gguf")
    reader = gguf.GGUFReader(path)
    names = {t.name: t for t in reader.tensors}
    assert "blk.0.attn_q.weight.lora_a" in names and "blk.1.ffn_down.weight.lora_b" in names
    assert len(names) == len(state)
    q_a = state[next(n for n in state if "layers.0.self_attn.q_proj.lora_A" in n)]
    assert np.allclose(np.asarray(names["blk.0.attn_q.weight.lora_a"].data).reshape(q_a.shape), q_a.numpy())
    fields = {f.name: f for f in reader.fields.values()}
    assert "adapter.lora.alpha" in fields and "general.type" in fields


def test_validation_users_are_held_out_whole_and_the_order_resumes() -> None:
    examples = [Example(f"{f}:{u}", str(u), "p", "a") for u in range(50) for f in ("none", "exact")]
    train, val = split_users(examples, 0.2, seed=0)
    assert {e.user for e in train}.isdisjoint({e.user for e in val}) and len({e.user for e in val}) == 10
    assert split_users(examples, 0.2, seed=0) == (train, val)
    assert batch_order(80, 8, 13, seed=0) == batch_order(80, 8, 13, seed=0)
    assert sorted(sum((batch_order(80, 8, s, 0) for s in range(10)), [])) == list(range(80))


def real_shape_adapter(path, scale: float, seed: int = 0):
    """A LoRA adapter with the packaged Gemma's real projection shapes (read from its GGUF), A random, B
    `scale` x random (0: exactly the base model), written by the converter."""
    import gguf

    from tools.plan_adapter import TARGET_MODULES

    reader = gguf.GGUFReader(gguf_path_settings())
    shapes = {t.name: [int(x) for x in t.shape] for t in reader.tensors}
    table = {"q_proj": ("self_attn", "attn_q"), "k_proj": ("self_attn", "attn_k"), "v_proj": ("self_attn", "attn_v"),
             "o_proj": ("self_attn", "attn_output"), "gate_proj": ("mlp", "ffn_gate"),
             "up_proj": ("mlp", "ffn_up"), "down_proj": ("mlp", "ffn_down")}  # fmt: skip
    blocks = 1 + max(int(n.split(".")[1]) for n in shapes if n.startswith("blk."))
    rng = np.random.default_rng(seed)
    state = {}
    for layer in range(blocks):
        for module in TARGET_MODULES:
            parent, gguf_name = table[module]
            inputs, outputs = shapes[f"blk.{layer}.{gguf_name}.weight"][:2]  # ggml order: [in, out]
            prefix = f"base_model.model.model.layers.{layer}.{parent}.{module}"
            state[f"{prefix}.lora_A.weight"] = rng.normal(0, 0.02, (4, inputs)).astype(np.float32)
            state[f"{prefix}.lora_B.weight"] = (scale * rng.normal(0, 1.0, (outputs, 4))).astype(np.float32)
    return write_lora_gguf(state, 8.0, blocks, path)


def gguf_path_settings():
    from ground.settings import Settings

    return gguf_path(Settings())


@pytest.mark.slow
def test_embedded_gemma_serves_a_gguf_lora_and_answers_a_parseable_plan(tmp_path) -> None:
    from agents.llm import LlamaCppChat

    zero = real_shape_adapter(tmp_path / "zero.gguf", 0.0)
    loud = real_shape_adapter(tmp_path / "loud.gguf", 0.5)
    base_path = str(gguf_path_settings())
    texts = {}
    for name, lora in (("base", None), ("zero", zero), ("loud", loud)):
        # n_ctx of this test only: three fresh llama.cpp instances that see the same calls in the same order (the
        # suite's shared base instance carries other tests' prompt states, which can flip a greedy near-tie)
        model = LlamaCppChat(model_path=base_path, lora_path=str(lora) if lora else None, max_tokens=32,
                             timeout_s=300, n_ctx=1536)  # fmt: skip
        result = plan_strategy(ABSTRACT, TAGS, model, prompt=ADAPTER_PROMPT)
        assert result.status == "parsed", (name, result.raw_text, result.violations)  # the grammar holds
        point = parse_point_answer(result.raw_text).point()  # the grammar's values, spaces allowed
        assert point.alpha in DEFAULT_SPACE.alphas and point.candidate_size in DEFAULT_SPACE.sizes
        free = model.invoke("User abstract: a long-time viewer of comedies.\nPlan:", max_tokens=12)
        texts[name] = (result.raw_text, str(free.content))
    assert texts["zero"] == texts["base"]  # B = 0: llama.cpp applied an adapter that changes nothing
    assert texts["loud"] != texts["base"]  # a nonzero adapter changes what the model writes


def test_runtime_uses_the_adapter_when_trained_and_the_base_model_otherwise(settings, ready, tmp_path,
                                                                           monkeypatch) -> None:  # fmt: skip
    import graph.runtime as runtime_module
    from graph.runtime import TandemRuntime

    missing = tmp_path / "none" / "plan-adapter.gguf"
    monkeypatch.setattr(runtime_module, "adapter_gguf", lambda *_: missing)
    base = TandemRuntime.create(settings, "ml-100k", planner="llm", store_path=str(tmp_path / "a.sqlite"),
                                progress=False)  # fmt: skip
    assert base.cloud.adapter_model is None and base.plan_model == "base model"
    assert base.cloud.plan_prompt == "plan_json@1"
    assert any("no hindsight labels for ml-100k" in n and "tandem plans label" in n for n in base.notes)  # says why

    trained = real_shape_adapter(tmp_path / "plan-adapter.gguf", 0.0)
    monkeypatch.setattr(runtime_module, "adapter_gguf", lambda *_: trained)
    rt = TandemRuntime.create(settings, "ml-100k", planner="llm", store_path=str(tmp_path / "b.sqlite"),
                              progress=False)  # fmt: skip
    assert rt.cloud.plan_prompt == ADAPTER_PROMPT and rt.cloud.adapter_model.lora_path == str(trained)
    assert rt.plan_model.startswith("plan adapter ") and rt.plan_model in rt.cache_scope
    assert rt.cloud.planner_model.lora_path is None  # other prompts keep the base model
    assert not any("no hindsight labels" in n for n in rt.notes)
    chosen = TandemRuntime.create(settings, "ml-100k", planner="llm", store_path=str(tmp_path / "c.sqlite"),
                                  progress=False, prompts=choose_prompts(["plan_exemplars@1"]))
    assert chosen.cloud.plan_prompt == "plan_exemplars@1" and chosen.plan_model == "base model"
    rules = TandemRuntime.create(settings, "ml-100k", planner="rule", store_path=str(tmp_path / "d.sqlite"),
                                 progress=False)  # fmt: skip
    assert rules.cloud.adapter_model is None and rules.plan_model == "rules"
    assert not any("no hindsight labels" in n for n in rules.notes + chosen.notes)  # nothing was left to the default


def test_point_choice_grammars_compile_and_the_grammar_cache_stays_bounded() -> None:
    import agents.llm as llm_module
    from tools.plan_point_answer import point_choice_schema

    points = [PointAnswer.of_point(p) for p in DEFAULT_SPACE.points()]
    schema = point_choice_schema([points[0], points[5], points[0]])
    assert [alt["properties"]["a"]["const"] for alt in schema["oneOf"]] == [points[0].a, points[5].a]  # no duplicate
    with pytest.raises(ValueError):
        point_choice_schema([])
    first = llm_module.grammar_for(schema)
    assert llm_module.grammar_for(schema) is first  # cached
    for i in range(llm_module.GRAMMAR_CACHE + 5):  # one choice per request: the cache keeps only the newest
        llm_module.grammar_for(point_choice_schema(points[i : i + 3]))
    assert len(llm_module._grammars) <= llm_module.GRAMMAR_CACHE
