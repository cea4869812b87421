"""The composition root: builds the two agents and the boundary between them from settings, once per process.

It loads what exists and never trains: a missing encoder checkpoint is a one-line error naming the command
that trains it (`tandem setup`), a missing calibrator or re-request threshold turns that feature off with a
visible warning. Nothing here reads the environment: settings arrive as a `Settings` object (LangGraph's own
tooling reaches this through `graph.context`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Literal

from langchain_core.language_models import BaseChatModel

from agents.backends import chat_model
from agents.cloud.agent import CloudAgent, SemanticSide
from agents.cloud.neighbours import NeighbourPlanner
from agents.cloud.planner import needs_adapter, ranks_neighbours
from agents.cloud.semantic import TextSpace
from agents.device.agent import DeviceAgent
from agents.device.encoders import ENCODER_FILES, EncoderShelf
from agents.prompt_roles import PromptChoice
from graph.boundary import Boundary, HttpTransport, InProcessTransport, Transport, cloud_handlers
from ground.errors import TandemError, UsageError
from ground.settings import Settings
from prompts import get_prompt
from tools.calibration import load_calibrator
from tools.checkpoints import calibrator_path, file_digest, load_threshold, threshold_path
from tools.chord import Chord
from tools.device_store import DeviceStore
from tools.encoder_space import EncoderSpace, TowerError, read_tower, tower_path
from tools.exemplar_index import ExemplarIndex, exemplars_path
from tools.inference_thread import dedicate_torch_threads
from tools.plan_adapter import ADAPTER_PROMPT, adapter_digest, adapter_gguf
from tools.quant import DeviceResources
from tools.semantic_head import HeadError, SummaryHead, head_path, read_head
from tools.tag_index import ExactTagIndex, chroma_call, chroma_client
from tools.text_encoders import resolve_text_precision
from tools.workspace import Workspace

PlannerKind = Literal["llm", "rule"]
PLANNERS: tuple[str, ...] = ("llm", "rule")
DEFAULT_CLOUD_LOAD = 0.1  # LSC4Rec: the share of requests the re-request may send back to the cloud
EXEMPLARS_PROMPT = "plan_exemplars@4"  # served by default where hindsight labels exist (measured on ML-1M, README)


@dataclass
class TandemRuntime:
    """One device (and, in process, its cloud): the agents, the boundary and what the graph's routers need."""

    settings: Settings
    workspace: Workspace
    device: DeviceAgent
    boundary: Boundary
    cloud: CloudAgent | None = None
    planner: PlannerKind = "llm"
    cloud_url: str | None = None
    request_threshold: float | None = None
    notes: list[str] = field(default_factory=list)
    """What this home lacks and what follows (no calibrator, no threshold, no labels): shown once by each entry
    point (`tandem.views.runtime_notes`), never per request."""
    plan_model: str = "base model"
    """What plans with the language-model planner: "plan adapter <digest>" (CDA4Rec Eq. 8) or "base model"."""
    wire_downgraded: bool = False
    """Set once the cloud refuses wire 2 (it is older than the compact wire): the semantic answer is then asked for
    on wire 1 for the rest of this runtime's life."""

    @property
    def answer_wire(self) -> int:
        """The semantic answer format this device asks for: the `cloud_wire` setting, unless the cloud refused it."""
        return 1 if self.wire_downgraded else self.settings.cloud_wire

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
        cloud_load: float = DEFAULT_CLOUD_LOAD,
        prompts: PromptChoice | None = None,
    ) -> TandemRuntime:
        """`prompts`: the prompt version of each step (default: the code's); with `cloud_url` the planning
        prompt is the cloud service's own, so choosing one here is an error."""
        if planner not in PLANNERS:
            raise UsageError(f"unknown planner {planner!r}; choose llm or rule")
        prompts = prompts or PromptChoice()
        if cloud_url and prompts.plan != PromptChoice().plan:
            raise UsageError("with --cloud-url the cloud service plans with its own prompt; drop the plan --prompt")
        dedicate_torch_threads()  # request-time torch gets one team of the cores (tools.inference_thread)
        ws = Workspace(settings, data or settings.dataset, progress=progress)
        path = store_path or str(settings.home / "device" / f"{ws.dataset.name}.sqlite")
        shelf = EncoderShelf(settings.models_dir, ws.dataset, device=settings.torch_device)
        slm = language_model(settings, "device")
        device = build_device(settings, ws, shelf, DeviceStore(path, timeout=settings.db_timeout), slm,
                              abstracts_by_slm=planner == "llm")  # fmt: skip
        device = replace(device, abstract_prompt=prompts.abstract, explain_prompt=prompts.explain)
        cloud = None
        plan_model = "base model" if planner == "llm" else "rules"
        if not cloud_url:
            cloud = build_cloud(settings, ws, shelf, planner)
            cloud = replace(cloud, plan_prompt=served_plan_prompt(cloud, prompts.plan))
            plan_model = cloud.planning_adapter() or plan_model
            if isinstance(cloud.exemplars, LazyExemplars) and cloud.exemplars.serves(cloud.plan_prompt) and \
                    (source := cloud.exemplar_source()):
                kind = "the nearest labelled users' ranked plans" if source.startswith("ranking-") else \
                    "retrieved exemplars"
                plan_model = f"{plan_model} with {kind} ({source.split('-', 1)[1]})"
        elif planner == "llm":
            plan_model = f"the cloud service's ({cloud_url})"
        boundary = Boundary(cloud_transport(settings, cloud, cloud_url))
        digests = shelf.checkpoint_digests()
        threshold, missing = load_threshold(threshold_path(settings.models_dir, semantic_key(settings, ws), cloud_load),
                                            digests)  # fmt: skip
        notes = []
        tower = installed_tower(settings, ws)
        if tower is not None and digests["SASRec"] != "none" and tower.stale_for(digests["SASRec"]):
            notes.append(f"the semantic tower holds the item table of another SASRec checkpoint "
                         f"({tower.encoder_digest[:12]}; this device's is {digests['SASRec']}): e_sem is consistent "
                         f"but stale (`tandem train --semantic --space encoder --data {ws.dataset.name}` retrains it)")
        if device.calibrator is None:
            notes.append("no SCaLRec calibrator: a stale cache is used uncalibrated when the cloud is down "
                         f"(`tandem setup --data {ws.dataset.name}` trains it)")  # fmt: skip
        if threshold is None:
            notes.append(f"no LSC4Rec re-request threshold ({missing}): re-requests are off (`tandem setup --data "
                         f"{ws.dataset.name}` samples it)")  # fmt: skip
        if cloud is not None and planner == "llm" and cloud.plan_prompt == PromptChoice().plan:
            notes.append(f"no hindsight labels for {ws.dataset.name}: the base model plans from fixed few-shot "
                         f"examples (`tandem plans label --data {ws.dataset.name}` lets it choose among the plans "
                         "that served the nearest labelled users best)")  # fmt: skip
        if cloud is not None and planner == "llm" and needs_adapter(get_prompt(cloud.plan_prompt)) and \
                cloud.adapter_model is None:
            notes.append(f"{cloud.plan_prompt} is written for the plan adapter and {ws.dataset.name} has none: the "
                         f"base model answers it (`tandem train --planner --data {ws.dataset.name}` trains one)")
        return cls(settings, ws, device, boundary, cloud, planner, cloud_url, threshold, notes, plan_model)

    @property
    def cache_scope(self) -> str:
        """What a SCaLRec cache entry must match besides the query: the planner and its prompt (a plan made by one
        planner or prompt is never served for another)."""
        if self.cloud_url:
            return f"cloud {self.cloud_url}"
        prompt = self.cloud.plan_prompt if self.cloud is not None and self.planner == "llm" else "-"
        source = self.plan_model if self.plan_model.startswith("plan adapter") else \
            self.cloud.exemplar_source() if self.cloud is not None and self.planner == "llm" else None
        return f"planner {self.planner}, prompt {prompt}" + (f", {source}" if source else "")

    def with_cloud(self, cloud: CloudAgent) -> TandemRuntime:
        """The same device talking to another in-process cloud agent (tests force a plan this way)."""
        return replace(self, cloud=cloud, boundary=Boundary(cloud_transport(self.settings, cloud, None)))


def cloud_transport(settings: Settings, cloud: CloudAgent | None, cloud_url: str | None) -> Transport:
    """HTTP to `cloud_url` (with the bearer token, if set) or the in-process cloud, both under the deadline."""
    if cloud_url:
        token = settings.cloud_token.get_secret_value() if settings.cloud_token else None
        return HttpTransport(cloud_url, token=token, deadline=settings.cloud_deadline,
                             max_reply_bytes=settings.cloud_max_reply_bytes)  # fmt: skip
    if cloud is None:
        raise TandemError("an in-process cloud transport needs the cloud agent")
    return InProcessTransport(cloud_handlers(cloud), deadline=settings.cloud_deadline)


def language_model(settings: Settings, role: Literal["device", "cloud"]) -> BaseChatModel:
    """The chat model for a role on the configured backend."""
    return chat_model(settings, role=role, timeout_s=settings.llm_timeout_s)


def plan_adapter_file(settings: Settings, ws: Workspace) -> Path | None:
    """The trained plan adapter (GGUF LoRA, CDA4Rec Eq. 8) of this data set, when the cloud model is the embedded
    one and `tandem train --planner` has written it; None otherwise (the base model plans with few-shot prompts)."""
    if settings.model_spec("cloud").backend != "llamacpp":
        return None
    path = adapter_gguf(settings.models_dir, ws.dataset.name, ws.dataset.fingerprint())
    return path if path.is_file() else None


def adapter_model(settings: Settings, ws: Workspace) -> BaseChatModel | None:
    """The cloud's language model with the plan adapter applied, or None without a trained adapter."""
    path = plan_adapter_file(settings, ws)
    if path is None:
        return None
    return chat_model(settings, role="cloud", timeout_s=settings.llm_timeout_s, lora_path=path,
                      lora_name=f"plan adapter {adapter_digest(path)}")  # fmt: skip


def installed_head(settings: Settings, ws: Workspace) -> tuple[SummaryHead, str] | None:
    """The trained semantic head of these item semantics and its digest, when one exists and the `semantic_head`
    setting is on; None otherwise. An unreadable head is skipped with a warning. Read once per file version."""
    path = head_path(settings.models_dir, ws.semantics.key)
    if not settings.semantic_head or not path.is_file():
        return None
    stat = path.stat()
    return _read_installed_head(str(path), stat.st_mtime_ns, stat.st_size, ws.semantics.key)


@lru_cache(maxsize=8)
def _read_installed_head(path: str, mtime_ns: int, size: int, semantics_key: str) -> tuple[SummaryHead, str] | None:
    try:
        head, _ = read_head(Path(path), semantics_key)
    except HeadError as error:
        logging.getLogger(__name__).warning("%s; behaviour summaries use the PCA of Eq. 1", error)
        return None
    return head, file_digest(Path(path))


def installed_tower(settings: Settings, ws: Workspace) -> EncoderSpace | None:
    """The encoder item space of `tools.encoder_space` when the `semantic_space` setting chooses it (auto: when its
    tower is installed for these item semantics); None otherwise. Read once per file version; an unreadable tower
    under auto is skipped with a warning, and a UsageError when the setting asked for it."""
    path = tower_path(settings.models_dir, ws.semantics.key)
    if settings.semantic_space == "text" or (settings.semantic_space == "auto" and not path.is_file()):
        return None
    try:
        if not path.is_file():
            raise TowerError(f"no semantic tower at {path}; train one with `tandem train --semantic --space encoder`")
        stat = path.stat()
        return _read_installed_tower(str(path), stat.st_mtime_ns, stat.st_size, ws.semantics.key,
                                     ws.dataset.catalog.num_items)  # fmt: skip
    except TowerError as error:
        if settings.semantic_space == "encoder":
            raise UsageError(f"semantic_space is encoder, but {error}") from error
        logging.getLogger(__name__).warning("%s; e_sem stays in the text space of Eq. 1", error)
        return None


@lru_cache(maxsize=8)
def _read_installed_tower(path: str, mtime_ns: int, size: int, semantics_key: str, num_items: int) -> EncoderSpace:
    return read_tower(Path(path), semantics_key, num_items, file_digest(Path(path)))[0]


def text_space(settings: Settings, ws: Workspace) -> TextSpace:
    """A cloud's text space (Eq. 2), its own memo: with the installed semantic head (`installed_head`), else the
    PCA of Eq. 1; request texts encoded at `Settings.text_precision`."""
    precision = resolve_text_precision(settings.text_precision)
    found = installed_head(settings, ws)
    if found is None:
        return TextSpace(ws.semantics, precision=precision)
    head, digest = found
    return TextSpace(ws.semantics, head=head, head_digest=digest, precision=precision)


def behaviour_space(settings: Settings, ws: Workspace) -> TextSpace | None:
    """The cloud's behaviour side (abstracts without a query) in the encoder's item space, when `installed_tower`
    gives one; None: every abstract is answered in the text space."""
    tower = installed_tower(settings, ws)
    if tower is None:
        return None
    return TextSpace(ws.semantics, precision=resolve_text_precision(settings.text_precision), encoder_space=tower)


def semantic_key(settings: Settings, ws: Workspace) -> str:
    """What the cloud's e_sem depends on (`CloudAgent.semantic_key`: each side's `TextSpace.key`, i.e. the item
    semantics, the semantic head or tower in use and the request-time text precision): the key of the models fitted
    to the whole answer, LSC4Rec's re-request threshold and the hindsight labels."""
    behaviour = behaviour_space(settings, ws)
    text = text_space(settings, ws).key
    return text if behaviour is None else f"{text}|{behaviour.key}"


def build_device(
    settings: Settings, ws: Workspace, shelf: EncoderShelf, store: DeviceStore, slm: BaseChatModel | None, *,
    abstracts_by_slm: bool = False,
) -> DeviceAgent:
    """The device agent of this workspace: its store, encoders, SLM (None: rules and templates only), cache
    policy and calibrator. The SLM writes abstracts only with `abstracts_by_slm` (the language-model planner);
    it always writes the explanations it is given. The calibrator is the one fitted to the cloud's e_sem
    (`semantic_key`)."""
    dataset = ws.dataset
    space, behaviour = text_space(settings, ws), behaviour_space(settings, ws)

    def seed(user: str):
        if user not in dataset.user_names:
            return None
        index = dataset.user_index(user)
        return dataset.sequences[index], dataset.timestamps[index]

    return DeviceAgent(
        catalog=dataset.catalog, item_table=space.table, store=store, encoders=shelf, seeds=seed,
        abstract_model=slm if abstracts_by_slm else None, explain_model=slm,
        calibrator=load_calibrator(calibrator_path(settings.models_dir, space.key), space.key),
        max_seq_len=settings.max_seq_len, precision=settings.device_precision,
        resources=DeviceResources(max_avg_bits=settings.chord_max_avg_bits),
        behaviour_table=behaviour.table if behaviour is not None else None,
        item_space=behaviour.table_key if behaviour is not None else None,
        behaviour_calibrator=load_calibrator(calibrator_path(settings.models_dir, behaviour.key), behaviour.key)
        if behaviour is not None else None,
    )  # fmt: skip


def build_cloud(
    settings: Settings, ws: Workspace, shelf: EncoderShelf, planner: PlannerKind, *, exact: bool = False
) -> CloudAgent:
    """The cloud agent over this workspace's catalogue side only (tags, text space, index), never its users.

    Retrieval uses the backend of the `index_backend` setting; `exact=True` forces exact search in memory
    (evaluations over thousands of users). The behaviour side (`behaviour_space`) always searches exactly: the tag
    index holds Eq. 1's table.
    """
    files = {file: name for name, file in ENCODER_FILES.items()}

    def chord(encoder: str) -> Chord | None:
        name = files.get(encoder)
        return shelf.chord(name) if name and shelf.available(name) else None

    index = ExactTagIndex(ws.dataset.catalog, ws.semantics.table) if exact else ws.retriever
    behaviour = behaviour_space(settings, ws)
    side = SemanticSide(behaviour, ExactTagIndex(ws.dataset.catalog, behaviour.table)) if behaviour else None
    model = language_model(settings, "cloud") if planner == "llm" else None
    return CloudAgent(space=text_space(settings, ws), index=index, behaviour=side, planner_model=model, chord=chord,
                      structured_method=settings.model_spec("cloud").structured,
                      exemplars=LazyExemplars(settings, ws.dataset.name) if planner == "llm" else None,
                      adapter_model=adapter_model(settings, ws) if planner == "llm" else None)  # fmt: skip


def served_plan_prompt(cloud: CloudAgent, asked: str) -> str:
    """The planning prompt a language-model cloud answers: the one asked for, unless it is the code's default;
    then the best this home can serve: the plan adapter's own zero-shot prompt when one is trained (CDA4Rec Eq. 8,
    `tandem train --planner`), else the choice among the nearest labelled users' best plan points when the data set
    has hindsight labels (`tandem plans label`), else the default few-shot prompt."""
    if asked != PromptChoice().plan or cloud.planner_model is None:
        return asked
    if cloud.adapter_model is not None:
        return ADAPTER_PROMPT
    exemplars = cloud.exemplars
    if isinstance(exemplars, LazyExemplars) and exemplars.serves(EXEMPLARS_PROMPT):
        return EXEMPLARS_PROMPT
    return asked


class LazyExemplars:
    """The plan exemplars of a data set, opened when first needed (a prompt that retrieves its few-shot examples,
    or `served_plan_prompt` asking whether they exist); a home without hindsight labels never opens Chroma for them."""

    def __init__(self, settings: Settings, data: str) -> None:
        self.settings, self.data = settings, data
        self._index: ExemplarIndex | None = None

    @property
    def index(self) -> ExemplarIndex:
        if self._index is None:
            self._index = ExemplarIndex(chroma_client(self.settings.chroma_url, self.settings.chroma_dir), self.data)
        return self._index

    @cached_property
    def _found(self) -> dict | None:
        """The collection's info, read once; None when there is none (a missing collection, or Chroma unreachable).
        An embedded Chroma is not even opened when the home has no hindsight labels to have built it from."""
        if not self.settings.chroma_url and not exemplars_path(self.settings.home, self.data).is_file():
            return None
        try:
            with chroma_call("opening the plan exemplars"):
                return self.index.info()
        except TandemError:
            return None

    def available(self) -> bool:
        """This data set has a readable exemplar collection."""
        return self._found is not None

    def serves(self, prompt: str) -> bool:
        """This data set has what `prompt` retrieves: the hindsight labels' reward table for a prompt shown the
        neighbours' ranking, the exemplar collection for one shown exemplars."""
        return self._has_labels if ranks_neighbours(get_prompt(prompt)) else self.available()

    @cached_property
    def _has_labels(self) -> bool:
        try:
            return self.neighbours is not None
        except (TandemError, OSError, ValueError, KeyError):  # missing, or unreadable: the default prompt serves
            return False

    @property
    def source(self) -> str:
        """The labels the collection was built from (plans and caches made with it are keyed by it); without a
        collection, the index's own one-line error naming the command that builds it."""
        return str((self._found or self.index.info())["source"])

    def __call__(self, vector, k: int) -> list[dict]:
        return self.index.nearest(vector, k)

    @cached_property
    def neighbours(self) -> NeighbourPlanner:
        """The hindsight labels' reward table (read once), for prompts shown the neighbours' ranked plan points;
        without labels, the one-line error naming `tandem plans label`."""
        return NeighbourPlanner.load(exemplars_path(self.settings.home, self.data))

    @property
    def ranking_source(self) -> str:
        return self.neighbours.source

    def ranked(self, vector, count: int) -> list:
        """`NeighbourPlanner.ranked`: the best plan points of the labelled abstracts nearest `vector`."""
        return self.neighbours.ranked(vector, count)


def evaluation_agents(settings: Settings, ws: Workspace) -> tuple[DeviceAgent, dict[str, CloudAgent]]:
    """Both agents for evaluations and training: an in-memory device store, exact retrieval, and one cloud agent
    per planner (the rules, and the configured language model)."""
    shelf = EncoderShelf(settings.models_dir, ws.dataset, device=settings.torch_device)
    device = build_device(settings, ws, shelf, DeviceStore(":memory:"), language_model(settings, "device"),
                          abstracts_by_slm=True)  # fmt: skip
    clouds = {planner: build_cloud(settings, ws, shelf, planner, exact=True) for planner in PLANNERS}  # type: ignore[arg-type]
    return device, clouds


def with_prompts(
    device: DeviceAgent, clouds: dict[str, CloudAgent], prompts: PromptChoice
) -> tuple[DeviceAgent, dict[str, CloudAgent]]:
    """The evaluation agents with the prompt version of each step (the rule planner's cloud has no prompt)."""
    device = replace(device, abstract_prompt=prompts.abstract, explain_prompt=prompts.explain)
    return device, {name: replace(cloud, plan_prompt=prompts.plan) for name, cloud in clouds.items()}
