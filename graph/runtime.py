"""The long-lived parts a request runs with: data, device store, encoders, language models, the boundary.

Built once per process (`TandemRuntime.create`) and handed to the graph through
`config["configurable"]["runtime"]`; heavy parts (encoders, language models, calibrator) load on first
use and are kept. Nothing here reads the environment: settings arrive as a `Settings` object.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np
from rich.console import Console

from agents.device import Abstract
from graph.boundary import Boundary, CloudUnavailableError, HttpTransport, InProcessTransport
from graph.cloud_service import CloudService, semantic_user_embedding
from tandem.settings import Settings
from tandem.workspace import Workspace
from tools.calibration import (
    ReliabilityPolicy,
    SemanticCalibrator,
    load_calibrator,
    save_calibrator,
    staleness_samples,
    train_calibrator,
)
from tools.chord import Chord
from tools.device_store import DeviceStore
from tools.encoders import SequentialEncoder
from tools.fusion import rank_candidates, threshold_for_load
from tools.plan import Plan, PlanResult

PlannerKind = Literal["llm", "rule"]
ENCODER_FILES = {"SASRec": "sasrec", "SURGE": "surge", "Caser": "caser"}
RECENT_WINDOW = 20  # interactions behind the fresh abstract of an LSC4Rec re-request


@dataclass
class TandemRuntime:
    """Everything one device (and, in process, its cloud) needs to serve requests."""

    settings: Settings
    workspace: Workspace
    store: DeviceStore
    planner: PlannerKind = "llm"
    cloud_url: str | None = None
    cloud_load: float = 0.1
    policy: ReliabilityPolicy = field(default_factory=ReliabilityPolicy)
    console: Console = field(default_factory=lambda: Console(stderr=True))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _encoders: dict[str, SequentialEncoder] = field(default_factory=dict, repr=False)
    _chords: dict[str, Chord | None] = field(default_factory=dict, repr=False)
    _quantized: dict[str, tuple[SequentialEncoder, float]] = field(default_factory=dict, repr=False)

    @classmethod
    def create(
        cls,
        settings: Settings,
        data: str | None = None,
        *,
        planner: PlannerKind = "llm",
        cloud_url: str | None = None,
        store_path: str | None = None,
        progress: bool = True,
    ) -> TandemRuntime:
        ws = Workspace(settings, data or settings.dataset, progress=progress)
        path = store_path or str(settings.home / "device" / f"{ws.dataset.name}.sqlite")
        return cls(settings, ws, DeviceStore(path), planner=planner, cloud_url=cloud_url)

    # -- the cloud, seen through the boundary ---------------------------------------------------------
    @cached_property
    def cloud(self) -> CloudService:
        """The in-process cloud (also what `tandem cloud serve` runs)."""
        return CloudService(self.workspace, self.plan_for_abstract, self.cloud_chord)

    @cached_property
    def boundary(self) -> Boundary:
        if self.cloud_url:
            return Boundary(HttpTransport(self.cloud_url))
        return Boundary(InProcessTransport(self.cloud.handlers()))

    # -- language-model steps (CDA4Rec III-B, III-C, III-H) -------------------------------------------
    @cached_property
    def device_llm(self):
        from agents.llm import chat_model

        return chat_model(self.settings, role="device")

    @cached_property
    def cloud_llm(self):
        from agents.llm import chat_model

        return chat_model(self.settings, role="cloud")

    def make_abstract(self, query: str, history: list[int], history_ts: list[int], recent_only: bool) -> Abstract:
        """Device step 1; `recent_only` builds the fresh abstract of a re-request from the newest items."""
        if recent_only:
            history, history_ts = history[-RECENT_WINDOW:], history_ts[-RECENT_WINDOW:]
        llm = self.device_llm if self.planner == "llm" else None
        return self.abstract_for(query, history, history_ts, llm)

    def abstract_for(self, query: str, history: list[int], history_ts: list[int], llm=None) -> Abstract:
        """CDA4Rec III-B for item ids: the scrubbed abstract (rules only when `llm` is None)."""
        from agents.device import generate_abstract, history_from_ids

        catalog = self.workspace.dataset.catalog
        entries, unknown = history_from_ids(history, history_ts, catalog)
        result = generate_abstract(query, entries, llm, known_tags=catalog.tags(), unknown_ids=unknown)
        return result.abstract

    def plan_for_abstract(self, abstract: Abstract, known_tags: list[str]) -> PlanResult:
        """Cloud step: the LLM planner (or the rule planner when configured so)."""
        from agents.cloud import plan_strategy

        llm = self.cloud_llm if self.planner == "llm" else None
        return plan_strategy(abstract, known_tags, llm)

    def explain(self, plan: dict, ranked: list[int]) -> str:
        """CDA4Rec III-H: the device SLM explains the final list (a template when the SLM output is unusable)."""
        from agents.device import generate_explanation

        items = [self.workspace.dataset.catalog[i] for i in ranked]
        catalog = self.workspace.dataset.catalog
        return generate_explanation(Plan.model_validate(plan), items, self.device_llm, known_tags=catalog.tags()).text

    # -- device models ------------------------------------------------------------------------------
    def encoder(self, name: str) -> SequentialEncoder:
        """The trained device encoder `name` (SASRec or SURGE); trained once if no checkpoint exists."""
        with self._lock:
            if name not in self._encoders:
                self._encoders[name] = self._load_or_train(ENCODER_FILES[name])
            return self._encoders[name]

    def _load_or_train(self, encoder: str) -> SequentialEncoder:
        from tools.training import TrainConfig, default_checkpoint, load_encoder, train_encoder

        dataset = self.workspace.dataset
        path = default_checkpoint(self.settings.models_dir, encoder, dataset, "ce")
        if path.is_file():
            return load_encoder(path, dataset)
        self.console.print(f"[yellow]no {encoder} checkpoint for {dataset.name}: training one now[/]")
        config = TrainConfig(encoder=encoder, loss="ce", epochs=40, patience=3, time_budget_s=240)
        result = train_encoder(
            dataset, self.workspace.splits, config, self.workspace.semantics.table, checkpoint=path
        )
        return result.model

    # -- CHORD: per-user mixed precision (device profile -> cloud strategy -> device quantization) ------
    def cloud_chord(self, encoder: str) -> Chord | None:
        """The CHORD profiler + hypernetworks for `encoder` (sasrec, caser), None when none were trained."""
        from tools.chord import default_chord_checkpoint, load_chord

        if encoder not in self._chords:
            name = {v: k for k, v in ENCODER_FILES.items()}.get(encoder)
            path = default_chord_checkpoint(self.settings.models_dir, encoder, self.workspace.dataset)
            self._chords[encoder] = load_chord(path, self.encoder(name)) if name and path.is_file() else None
        return self._chords[encoder]

    def device_encoder(self, name: str, history: list[int]) -> tuple[SequentialEncoder, dict[str, Any]]:
        """The encoder the device runs for this user: full precision, or CHORD's per-user mixed precision.

        CHORD (settings.device_precision = "chord"): the device profiles the user (Eq. 6), sends only the
        profile across the boundary, receives the 2-bit-per-channel strategy (Eq. 7-13), fits it to its
        budget with T (Eq. 4) and quantizes its frozen encoder (Eq. 2-3). Quantized encoders are kept per
        strategy. Any failure falls back to full precision, with the reason in `info["warning"]`.
        """
        from graph.cloud_service import StrategyRequest
        from tools.chord import ChordStrategy, UserProfile, apply_strategy, strategy_average_bits
        from tools.quant import DeviceResources, average_bits, resource_transform

        base = self.encoder(name)
        full = {"mode": "full", "avg_bits": 32.0}
        if self.settings.device_precision != "chord":
            return base, full
        chord = self.cloud_chord(ENCODER_FILES[name])  # the device half (profiler) comes from the same checkpoint
        if chord is None:
            return base, {**full, "warning": f"no CHORD trained for {name}: full precision (tandem train --chord)"}
        profile = UserProfile(z=chord.profile([np.asarray(history, dtype=np.int64)])[0].tolist())
        try:
            strategy, crossing = self.boundary.call(
                "strategy", StrategyRequest(encoder=ENCODER_FILES[name], profile=profile), ChordStrategy
            )
        except CloudUnavailableError as exc:
            return base, {**full, "warning": f"no precision strategy ({exc}): full precision"}
        resources = DeviceResources(max_avg_bits=self.settings.chord_max_avg_bits)
        key = f"{name}:{strategy.codes}:{resources.max_avg_bits}"
        with self._lock:
            if key not in self._quantized:  # decode, transform (Eq. 4) and quantize once per strategy
                if len(self._quantized) >= 64:
                    self._quantized.pop(next(iter(self._quantized)))
                fan_in = [spec.fan_in for spec in chord.specs]
                on_device = average_bits(resource_transform(strategy.bits(), resources, fan_in), fan_in)
                self._quantized[key] = (apply_strategy(base, strategy, resources), on_device)
            quantized, on_device = self._quantized[key]
        return quantized, {
            "mode": "chord", "avg_bits": on_device, "strategy_avg_bits": strategy_average_bits(strategy, chord.specs),
            "strategy_bits": strategy.payload_bits, "crossing": crossing.model_dump(),
        }  # fmt: skip

    def summary_embedding(self, histories: list[np.ndarray]) -> np.ndarray:
        """e_sem as the cloud computes it from a behaviour-only abstract (no query, no language model)."""
        texts = [self.abstract_for("", h.tolist(), list(range(len(h)))).behavior_summary for h in histories]
        return self.workspace.semantics.project_texts(texts)

    @cached_property
    def calibrator(self) -> SemanticCalibrator:
        """SCaLRec's on-device calibration module, trained once on simulated staleness and cached."""
        semantics = self.workspace.semantics
        path = self.settings.models_dir / f"calibrator-{semantics.key}.pt"
        model = load_calibrator(path, semantics.key)
        if model is None:
            self.console.print("[yellow]training the semantic calibrator (simulated staleness)[/]")
            train = list(self.workspace.splits.train.values())
            samples = staleness_samples(train, self.summary_embedding, max_new=self.policy.max_new)
            model = train_calibrator(samples, semantics.table)
            save_calibrator(model, path, semantics.key)
        return model

    @cached_property
    def request_threshold(self) -> float:
        """LSC4Rec Eq. 12 threshold for the target cloud load, from a sample of training users (cached)."""
        path = self.settings.models_dir / f"threshold-{self.workspace.semantics.key}-{self.cloud_load}.json"
        if path.is_file():
            return float(json.loads(path.read_text())["threshold"])
        scores = self._sample_inconsistencies()
        threshold = threshold_for_load(scores, self.cloud_load)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"threshold": threshold, "load": self.cloud_load, "sample": len(scores)}))
        return threshold

    def _sample_inconsistencies(self, users: int = 64) -> list[float]:
        """Eq. 11 between the cloud's and the device's order of the cloud candidates, for sampled users."""
        from agents.cloud import plan_strategy

        rng = np.random.default_rng(self.settings.seed)
        instances = self.workspace.splits.valid
        picked = rng.choice(len(instances), size=min(users, len(instances)), replace=False)
        encoder = self.encoder("SASRec")
        scores = []
        for n in picked.tolist():
            inst = instances[n]
            abstract = self.abstract_for(inst.query, inst.history.tolist(), inst.history_ts.tolist())
            plan = plan_strategy(abstract, self.workspace.index.tags(), None).plan
            e_sem = semantic_user_embedding(abstract, plan.alpha, self.workspace.semantics)
            found = self.workspace.index.retrieve(e_sem, plan.tags)
            ids = np.array([c.item_id for c in found])
            semantic = np.array([c.score for c in found])
            structured = self.structured_scores(encoder, inst.history.tolist(), ids) if plan.encoder != "none" else None
            scores.append(rank_candidates(ids, semantic, structured, plan.beta)[2])
        return scores

    @staticmethod
    def structured_scores(encoder: SequentialEncoder, history: list[int], candidates: np.ndarray) -> np.ndarray:
        """e_str . e_i for each candidate (CDA4Rec Eq. 4 then Eq. 6 with the encoder's item table)."""
        import torch

        with torch.no_grad():
            e_str = encoder.encode([np.asarray(history, dtype=np.int64)])
            return encoder.candidate_scores(e_str, torch.from_numpy(candidates))[0].numpy()
