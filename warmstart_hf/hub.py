"""Phase checkpoints on the Hugging Face Hub: one model repo per arm, one branch per phase.

An arm ``<strategy>-seed<seed>`` of a run with ``hub_model_id: <user>/<name>`` goes to the model repo
``<user>/<name>-<strategy>-seed<seed>`` (:func:`arm_repo_id`)::

    branch phase-00, phase-01, ...  that phase's final model: model.safetensors, config.json,
                                    README.md (the model card as of that phase) and fig1.png;
                                    the model in plain transformers / timm format (models/export.py)
    main                            the latest finished phase, same files

A branch per phase makes any phase loadable in one line without the run directory
(``from_pretrained(repo, revision="phase-03")``) and usable as a starting point
(``init_from: hub://<repo>@phase-03``). Phase k is pushed when it ends (:func:`push_finished_phases`,
called by the loop on the main process), so a long run is visible while it trains.

A push that fails on a network error, a timeout or a 5xx answer is retried with exponential backoff
(:data:`RETRY`). If it still fails, training goes on: the checkpoint stays in the run directory and
``hub.json`` in the arm directory records what is on the Hub and the error, so the next phase's push,
or ``warmstart-push RUN_DIR`` (``scripts/push_to_hub.py``) later, pushes exactly the phases that are
not there yet; the training command then exits with status 1 and says so (:func:`unpushed`).

Only safetensors weights, config.json, the card and its figure are uploaded (never a pickle), and
loading reads safetensors only. Tokens are resolved by huggingface_hub (``HF_TOKEN``, ``hf auth
login``) or taken from ``hub_token``; they are never logged or written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from httpx2 import TransportError  # huggingface_hub >= 2 talks through httpx2 (declared in pyproject)
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from huggingface_hub.repocard_data import EvalResult
from huggingface_hub.utils import HFValidationError, validate_repo_id

from warmstart_hf.bundled_recipes import shipped_dir
from warmstart_hf.config import ConfigError, register_recipe_check
from warmstart_hf.io import atomic_write_json, read_jsonl
from warmstart_hf.report.alignment import DIRECTIONS, chosen_phase

if TYPE_CHECKING:
    from warmstart_hf.config import RecipeConfig
    from warmstart_hf.models import TimmClassifierConfig, TimmImageClassifier
    from warmstart_hf.tasks.base import CardSpec

logger = logging.getLogger(__name__)

HUB_STATE_FILE = "hub.json"
MODEL_FILES = ("model.safetensors", "config.json")
# model_cards/ at the top of a checkout; inside the package once installed from a wheel (setup.py)
CARD_TEMPLATE = (shipped_dir("model_cards") or Path(__file__).resolve().parent / "model_cards") / "phase_model.md"
HUB_SCHEME = "hub://"
_HUB_URI = re.compile(r"hub://(?P<repo>[^@\s]+)(?:@(?P<revision>[^@\s]+))?")
# Fields a loaded init_from model must share with the model this run builds.
_ARCHITECTURE_FIELDS = ("timm_model", "model_kwargs", "num_channels", "image_size", "num_labels")

T = TypeVar("T")


def phase_branch(phase: int) -> str:
    return f"phase-{phase:02d}"


def arm_repo_id(hub_model_id: str, arm_name: str) -> str:
    """One repo per arm (``<hub_model_id>-<strategy>-seed<seed>``), so that each arm's phases are the
    branches of one repo and warm and cold arms never overwrite each other."""
    return f"{hub_model_id}-{arm_name}"


# --- validation (no network) --------------------------------------------------------------------


def check_repo_id(field_name: str, value: str, fix: str, repo_id: str | None = None) -> None:
    """``repo_id`` (default: ``value``) must be a ``<namespace>/<name>`` Hub id, else a ConfigError that
    names the field, the value and the fix."""
    repo_id = value if repo_id is None else repo_id
    try:
        validate_repo_id(repo_id)
        ok = repo_id.count("/") == 1
    except HFValidationError:
        ok = False
    if not ok:
        what = "" if repo_id == value else f" (repo id {repo_id!r})"
        raise ConfigError(
            f"Recipe field `{field_name}` has value {value!r}{what}, which is not a Hub repo id of the form "
            f"<user or org>/<name> (letters, digits, '-', '_', '.'; at most 96 characters per part). Fix: {fix}"
        )


def parse_init_from(value: str) -> tuple[str, str | None]:
    """``hub://<repo>@<revision>`` -> (repo, revision or "main"); a local directory -> (path, None)."""
    if value.startswith(HUB_SCHEME):
        match = _HUB_URI.fullmatch(value)
        fix = "write it as hub://<user>/<repo>@<revision>, e.g. hub://me/digits-warm-seed0@phase-03."
        if match is None:
            raise ConfigError(
                f"Recipe field `init_from` has value {value!r}, which is not a hub:// reference. Fix: {fix}"
            )
        check_repo_id("init_from", value, fix, repo_id=match["repo"])
        return match["repo"], match["revision"] or "main"
    if "://" in value:
        raise ConfigError(
            f"Recipe field `init_from` has value {value!r}, an unknown scheme. Fix: use hub://<user>/<repo>@<revision> "
            "or the path of a local phase directory."
        )
    path = Path(value)
    if not all((path / name).is_file() for name in MODEL_FILES):
        raise ConfigError(
            f"Recipe field `init_from` has value {value!r}, which is not a directory holding "
            f"{' and '.join(MODEL_FILES)}. Fix: point it at a phase directory (runs/<run>/<arm>/phase-XX) or use "
            "hub://<user>/<repo>@<revision>."
        )
    return str(path), None


@register_recipe_check
def validate_hub_settings(config: RecipeConfig) -> None:
    """Fail before any training on a bad ``init_from``, ``hub_model_id`` or a push without a token."""
    if config.model.init_from is not None:
        parse_init_from(config.model.init_from)
    tr = config.training
    if tr.hub_model_id is not None:
        fix = "set `hub_model_id: <user>/<name>`; each arm is pushed to <user>/<name>-<strategy>-seed<seed>."
        check_repo_id("hub_model_id", tr.hub_model_id, fix)
        for strategy in config.incremental.strategies:
            arm = f"{strategy}-seed{tr.seed}"
            repo = arm_repo_id(tr.hub_model_id, arm)
            check_repo_id("hub_model_id", tr.hub_model_id, f"shorten it ({arm!r} is appended).", repo_id=repo)
    if not tr.push_to_hub:
        return
    if tr.hub_model_id is None:
        raise ConfigError(
            "Recipe field `push_to_hub` is true but `hub_model_id` is unset. Fix: set `hub_model_id: <user>/<name>` "
            "(each arm goes to <user>/<name>-<strategy>-seed<seed>) or set `push_to_hub: false`."
        )
    from huggingface_hub import constants

    if constants.is_offline_mode():
        raise ConfigError(
            "Recipe field `push_to_hub` is true but HF_HUB_OFFLINE is set. Fix: unset HF_HUB_OFFLINE, or set "
            "`push_to_hub: false` and push later with warmstart-push RUN_DIR."
        )
    if not (tr.hub_token or get_token()):
        raise ConfigError(
            "Recipe field `push_to_hub` is true but no Hugging Face token was found. Fix: export HF_TOKEN or run "
            "`hf auth login` (or set `push_to_hub: false`)."
        )


# --- loading ------------------------------------------------------------------------------------


def load_init_from(value: str, expected: TimmClassifierConfig) -> TimmImageClassifier:
    """The model ``init_from`` names (Hub revision or local phase dir), safetensors only, checked to
    have the architecture and label count this run builds."""
    from warmstart_hf.models.export import load_classifier

    source, revision = parse_init_from(value)
    try:  # a pushed phase is in TimmWrapper format (older pushes and local phases: the package's own)
        model = load_classifier(source, revision)
    except (OSError, HfHubHTTPError, ValueError, KeyError, RuntimeError) as err:
        raise ConfigError(
            f"Recipe field `init_from` has value {value!r}, which could not be loaded ({_describe(err)}). "
            "Fix: check the repo id and revision (branches phase-00, phase-01, ...) and your access to it."
        ) from err
    differs = [
        f"{name}: {getattr(model.config, name)!r} there, {getattr(expected, name)!r} here"
        for name in _ARCHITECTURE_FIELDS
        if getattr(model.config, name) != getattr(expected, name)
    ]
    if differs:
        raise ConfigError(
            f"Recipe field `init_from` has value {value!r}, a model that does not fit this recipe "
            f"({'; '.join(differs)}). Fix: use a checkpoint of the same model, image size, channels and classes, "
            "or change the recipe to match it."
        )
    return model


# --- pushing ------------------------------------------------------------------------------------


# Why not huggingface_hub.utils.http_backoff: it retries one HTTP request, while a push is a whole
# HfApi operation (create_commit: preupload, LFS batch and uploads, then the commit request), sent by
# HfApi through its own session with no hook for a retrying request function. So the operation is
# retried as a unit here: a commit lands whole or not at all, so a retry never leaves half a phase.
# The delays are injectable (``sleep``): the tests record them instead of sleeping.
@dataclass
class RetryPolicy:
    """Exponential backoff for transient Hub errors: ``attempts`` tries, waiting base, 2 base, ... between."""

    attempts: int = 5
    base_delay: float = 2.0
    max_delay: float = 60.0
    sleep: Callable[[float], None] = time.sleep

    def delays(self) -> list[float]:
        return [min(self.base_delay * 2**i, self.max_delay) for i in range(self.attempts - 1)]


RETRY = RetryPolicy()


def is_transient(err: BaseException) -> bool:
    """Network errors, timeouts, 5xx, 408 and 429 may pass on retry; 4xx answers and offline mode will not."""
    if isinstance(err, OfflineModeIsEnabled):
        return False
    if isinstance(err, HfHubHTTPError):
        status = err.response.status_code if err.response is not None else None
        return status is None or status >= 500 or status in (408, 429)
    return isinstance(err, (TransportError, TimeoutError, ConnectionError))


def _is_hub_error(err: BaseException) -> bool:
    return isinstance(err, (HfHubHTTPError, TransportError, TimeoutError, ConnectionError))


def _describe(err: BaseException) -> str:
    """A one-line error for logs and hub.json (messages carry URLs, never the Authorization header)."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}"


def _with_retries(action: Callable[[], T], what: str, policy: RetryPolicy) -> T:
    delays = policy.delays()
    for attempt in range(policy.attempts):
        try:
            return action()
        except Exception as err:
            if attempt == len(delays) or not is_transient(err):
                raise
            logger.warning(
                "%s failed (%s); retry %d of %d in %.1f s",
                what,
                _describe(err),
                attempt + 1,
                len(delays),
                delays[attempt],
            )
            policy.sleep(delays[attempt])
    raise AssertionError("unreachable")


def read_hub_state(arm_dir: str | Path) -> dict[str, Any] | None:
    path = Path(arm_dir) / HUB_STATE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def _write_state(arm_dir: Path, state: dict[str, Any], records: list[dict[str, Any]]) -> None:
    state["pending"] = [r["phase"] for r in records if phase_branch(r["phase"]) not in state["branches"]]
    atomic_write_json(arm_dir / HUB_STATE_FILE, state)


def push_finished_phases(config: RecipeConfig, arm_dir: Path) -> None:
    """The loop's hook after a phase's results line is written (main process): when the recipe has
    ``push_to_hub: true``, push every finished phase of the arm not yet on the Hub. Never raises:
    a failed push must not stop training."""
    tr = config.training
    if not tr.push_to_hub:
        return
    try:
        push_arm(arm_dir, arm_repo_id(tr.hub_model_id, arm_dir.name), token=tr.hub_token, private=tr.hub_private_repo)
    except Exception:
        logger.exception("pushing %s to the Hub failed; training goes on (see %s)", arm_dir.name, HUB_STATE_FILE)


def push_arm(
    arm_dir: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    retry: RetryPolicy | None = None,
    endpoint: str | None = None,
) -> dict[str, Any]:
    """Push every finished phase of an arm that ``hub.json`` does not list as pushed to ``repo_id``:
    each to its branch, in order, then the latest to ``main``. Stops at the first phase that still
    fails after the retries (the Hub is likely down) and records the error; returns hub.json's record."""
    arm_dir = Path(arm_dir)
    retry = retry or RETRY
    records = read_jsonl(arm_dir / "results.jsonl")
    state = read_hub_state(arm_dir) or {}
    if state.get("repo_id") != repo_id:  # another repo: nothing of this arm is there yet
        state = {"repo_id": repo_id, "branches": {}, "main": None, "last_error": None}
    pending = [r["phase"] for r in records if phase_branch(r["phase"]) not in state["branches"]]
    last = records[-1]["phase"] if records else None
    if not pending and (state["main"] or {}).get("phase") == last:  # all there: no request at all
        _write_state(arm_dir, state, records)
        return state
    api = HfApi(endpoint=endpoint, token=token)
    try:
        _with_retries(lambda: api.create_repo(repo_id, private=private, exist_ok=True), f"create {repo_id}", retry)
        for phase in pending:
            state["branches"][phase_branch(phase)] = _push_phase(
                api, arm_dir, repo_id, records, phase, phase_branch(phase), retry
            )
            _write_state(arm_dir, state, records)
        if (state["main"] or {}).get("phase") != last:
            commit = _push_phase(api, arm_dir, repo_id, records, last, "main", retry)
            state["main"] = {"phase": last, "commit": commit}
        state["last_error"] = None
    except Exception as err:
        state["last_error"] = _describe(err)
        _write_state(arm_dir, state, records)  # whatever failed, hub.json says what is pending and why
        if not _is_hub_error(err):
            raise  # not the Hub: a bug or a broken install, with its traceback
        logger.warning(
            "Could not push %s to %s: %s. Training goes on; the phases not yet pushed are listed in %s. "
            "Push them later with: warmstart-push %s",
            arm_dir.name,
            repo_id,
            state["last_error"],
            arm_dir / HUB_STATE_FILE,
            arm_dir.parent,
        )
    _write_state(arm_dir, state, records)
    return state


def unpushed(run_dir: str | Path) -> list[str]:
    """One line per arm of the run that is not all on the Hub, from its hub.json: the phases pending,
    the last error, a failed push of the aligned checkpoints, or no record at all. Empty: all pushed."""
    problems = []
    for arm in sorted(p.parent for p in Path(run_dir).glob("*/results.jsonl")):
        state = read_hub_state(arm)
        if state is None:
            problems.append(f"{arm.name}: not pushed (no {HUB_STATE_FILE})")
            continue
        pending = ", ".join(phase_branch(p) for p in state["pending"])
        if pending or state.get("last_error"):
            error = f" (last error: {state['last_error']})" if state.get("last_error") else ""
            problems.append(f"{arm.name}: not on the Hub: {pending or 'main'}{error}; see {arm / HUB_STATE_FILE}")
        if state.get("aligned_error"):
            problems.append(f"{arm.name}: the loss-aligned checkpoints were not pushed ({state['aligned_error']})")
    return problems


def push_run(
    run_dir: str | Path, hub_model_id: str | None = None, *, private: bool | None = None, token: str | None = None
) -> dict[str, dict[str, Any]]:
    """Push every arm of a finished (or interrupted) run, and a pretraining run's loss-aligned
    checkpoints: what ``warmstart-push`` (``scripts/push_to_hub.py``) runs. ``hub_model_id`` defaults
    to the one in the run's config.yaml; returns each arm's hub.json record."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise ConfigError(f"{str(run_dir)!r} is not a run directory (no config.yaml). Fix: pass runs/<run_name>.")
    training = yaml.safe_load(config_path.read_text()).get("training", {})
    hub_model_id = hub_model_id or training.get("hub_model_id")
    if not hub_model_id:
        raise ConfigError(
            f"The run {str(run_dir)!r} has no `hub_model_id`. Fix: pass --repo-id <user>/<name> "
            "(each arm goes to <user>/<name>-<strategy>-seed<seed>)."
        )
    check_repo_id("hub_model_id", hub_model_id, "pass --repo-id <user>/<name>.")
    private = private if private is not None else training.get("hub_private_repo")
    arms = sorted(p.parent for p in run_dir.glob("*/results.jsonl"))
    for arm in arms:
        push_arm(arm, arm_repo_id(hub_model_id, arm.name), token=token, private=private)
    push_aligned_run(run_dir, hub_model_id, token)
    return {arm.name: read_hub_state(arm) for arm in arms}


def _push_phase(
    api: HfApi,
    arm_dir: Path,
    repo_id: str,
    records: list[dict[str, Any]],
    phase: int,
    revision: str,
    retry: RetryPolicy,
) -> str:
    """One commit of phase ``phase`` (model, config, card, figure) to ``revision``; returns its id."""
    phase_dir = arm_dir / phase_branch(phase)
    shown = [r for r in records if r["phase"] <= phase]
    return _push_folder(api, arm_dir, repo_id, shown, phase_dir, revision, retry)


def _push_folder(api, arm_dir: Path, repo_id: str, shown: list[dict], folder: Path, revision: str, retry, note=""):
    """One commit of a model folder (the phase's or a snapshot's) with the card of ``shown``."""
    phase = shown[-1]["phase"]
    with tempfile.TemporaryDirectory() as tmp:
        figure = Path(tmp) / "fig1.png"
        _plot_phases({arm_dir.name: shown}, figure)
        card = render_card(arm_dir, shown, repo_id, branch=None if revision == "main" else revision, note=note)
        files: dict[str, Path | bytes] = _hub_model_files(folder, Path(tmp) / "model", arm_dir / "init")
        files.update({"README.md": str(card).encode(), "fig1.png": figure.read_bytes()})

        def commit() -> str:
            if revision != "main":  # a branch must exist before a commit to it
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=c) for p, c in files.items()]
            message = f"{arm_dir.name}: phase {phase:02d}" + (" (latest)" if revision == "main" else "")
            return api.create_commit(repo_id, operations=operations, revision=revision, commit_message=message).oid

        return _with_retries(commit, f"push {arm_dir.name} {phase_branch(phase)} to {repo_id}@{revision}", retry)


def _hub_model_files(folder: Path, out_dir: Path, tokenizer_dir: Path) -> dict[str, Path]:
    """The model files to push: plain transformers / timm format (``models/export.py``), so a phase loads
    without this package; the run directory keeps the package's format. A snapshot saved without the
    run's tokenizer gets the one saved with ``init/`` (``tokenizer_dir``)."""
    from warmstart_hf.models.export import export_for_hub

    return export_for_hub(folder, out_dir, tokenizer_dir)


def _plot_phases(arms: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """The card's figure: accuracy per phase, or (pretraining) the probe loss over the phases' steps."""
    from warmstart_hf.report.pretraining import plot_probe_curves
    from warmstart_hf.report.summary import plot_accuracy_per_phase

    records = next(iter(arms.values()))
    (plot_accuracy_per_phase if "test_accuracy" in records[0] else plot_probe_curves)(arms, path)


def push_aligned_checkpoints(config: RecipeConfig, run_dir: Path) -> None:
    """With ``push_to_hub``: every loss-aligned snapshot of ``alignment.json`` to branch
    ``phase-XX-aligned`` of its arm's repo (the end-of-phase models are on ``phase-XX`` already); the
    card names the chosen phase and step (which may be an earlier phase's), and a flagged phase's card
    says it is the nearest checkpoint, not an aligned pair. Recorded in the arm's hub.json under
    ``aligned`` (commits), ``aligned_notes`` and ``aligned_phases`` (the chosen phase); never raises."""
    tr = config.training
    if tr.push_to_hub:
        push_aligned_run(run_dir, tr.hub_model_id, tr.hub_token)


def push_aligned_run(run_dir: Path, hub_model_id: str, token: str | None = None) -> None:
    """The aligned snapshots of a run with ``alignment.json`` not yet on the Hub (none: nothing to do).
    Never raises: a failure is logged and kept as ``aligned_error`` in the arm's hub.json, which
    :func:`unpushed` reports."""
    if not (run_dir / "alignment.json").exists():
        return
    alignment = json.loads((run_dir / "alignment.json").read_text())
    moving = DIRECTIONS[alignment["direction"]][0]
    for seed, aligned in alignment["seeds"].items():
        arm_dir = run_dir / f"{moving}-seed{seed}"
        repo_id, error = arm_repo_id(hub_model_id, arm_dir.name), None
        try:
            _push_aligned_arm(arm_dir, repo_id, aligned["phases"], token)
        except Exception as err:
            error = _describe(err)
            logger.exception("pushing the aligned checkpoints of %s failed (warmstart-push %s)", arm_dir, run_dir)
        state = read_hub_state(arm_dir) or {"repo_id": repo_id, "branches": {}, "main": None, "last_error": None}
        state["aligned_error"] = error
        _write_state(arm_dir, state, read_jsonl(arm_dir / "results.jsonl"))


def push_downstream_cards(run_dir: Path, rows: list[dict[str, Any]], token: str | None = None) -> None:
    """After a downstream evaluation: every pushed branch of the run's arms (phase-XX and
    phase-XX-aligned) gets its card again, with the checkpoint's downstream results. Never raises."""
    for arm_dir in sorted(p.parent for p in run_dir.glob("*/hub.json")):
        state = read_hub_state(arm_dir) or {}
        records = read_jsonl(arm_dir / "results.jsonl")
        branches = [(b, "end_of_phase") for b in state.get("branches", {})]
        branches += [(b, "aligned") for b in state.get("aligned", {})]
        for branch, kind in branches:
            phase = int(branch.split("-")[1])
            table = _downstream_table(rows, arm_dir.name, phase, kind)
            seen = state.get("aligned_phases", {}).get(branch, phase) if kind == "aligned" else phase
            shown = [r for r in records if r["phase"] <= seen]
            note = state.get("aligned_notes", {}).get(branch, "")  # an aligned card keeps its alignment note
            card = render_card(arm_dir, shown, state["repo_id"], branch=branch, note=note, downstream=table)
            _push_card(card, state["repo_id"], branch, token)


def _downstream_table(rows: list[dict[str, Any]], arm: str, phase: int, kind: str) -> str:
    mine = [r for r in rows if f"{r['arm']}-seed{r['seed']}" == arm and r["phase"] == phase and r["kind"] == kind]
    if not mine:
        return ""
    lines = [f"| {r['recipe']} | {100 * r['test_accuracy']:.2f} |\n" for r in mine]
    return "| downstream recipe | top-1 (%) |\n|---|---|\n" + "".join(lines)


def _push_card(card: ModelCard, repo_id: str, branch: str, token: str | None) -> None:
    try:
        _with_retries(
            lambda: card.push_to_hub(repo_id, revision=branch, token=token), f"card of {repo_id}@{branch}", RETRY
        )
    except Exception:
        logger.exception("updating the card of %s@%s failed", repo_id, branch)


def _aligned_note(p: dict[str, Any]) -> str:
    """The card's note: which checkpoint (phase and step) was chosen, against which target, and a
    flagged phase said plainly (it is pushed for inspection, not as an aligned pair)."""
    where = f"the checkpoint at step {p['chosen_step']} of phase {chosen_phase(p)}"
    text = (
        f"Loss-aligned checkpoint of phase {p['phase']}: {where}, probe loss {p['chosen_loss']:.5f} against the "
        f"other arm's end of phase {p['phase']} at {p['target_loss']:.5f} (gap {p['gap']:+.5f})."
    )
    if not p["within_tolerance"]:
        text += (
            " FLAGGED: no checkpoint of this arm came within the alignment tolerance, so this is the nearest one, "
            "not an aligned pair; the downstream aligned averages leave it out."
        )
    return text


def _push_aligned_arm(arm_dir: Path, repo_id: str, phases: list[dict[str, Any]], token: str | None) -> None:
    records = read_jsonl(arm_dir / "results.jsonl")
    state = read_hub_state(arm_dir) or {"repo_id": repo_id, "branches": {}, "main": None, "last_error": None}
    api = HfApi(token=token)
    for p in phases:
        branch = f"{phase_branch(p['phase'])}-aligned"
        if branch in state.get("aligned", {}):
            continue
        note = _aligned_note(p)
        shown = [r for r in records if r["phase"] <= chosen_phase(p)]  # the data the checkpoint has seen
        folder = arm_dir / p["chosen_snapshot"]
        commit = _push_folder(api, arm_dir, repo_id, shown, folder, branch, RETRY, note=note)
        state.setdefault("aligned", {})[branch] = commit
        state.setdefault("aligned_notes", {})[branch] = note
        state.setdefault("aligned_phases", {})[branch] = chosen_phase(p)
        _write_state(arm_dir, state, records)


# --- model card ---------------------------------------------------------------------------------


def recipe_hash(run_config: dict[str, Any]) -> str:
    """A short hash of the settings that define the results (the run's fingerprint): warm and cold
    arms of one experiment share it, any change of data, model, plan or optimizer changes it."""
    blob = json.dumps(run_config.get("fingerprint", run_config), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@lru_cache(maxsize=1)
def code_version() -> str:
    """The package version, plus the git commit when the package runs from a checkout."""
    from warmstart_hf import __version__

    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=10", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+g{sha}" if sha else __version__


def phase_metrics(record: dict[str, Any]) -> dict[str, Any]:
    """The per-phase numbers a card's metadata and a leaderboard row keep."""
    diagnostics = record.get("diagnostics") or {}
    return {
        "phase": record["phase"],
        "num_train_examples": record.get("num_train_examples"),
        "train_accuracy": record.get("train_accuracy"),
        "train_loss": record.get("train_loss"),
        "test_accuracy": record.get("test_accuracy"),
        "test_accuracy_masked": record.get("test_accuracy_masked"),
        "test_accuracy_full": record.get("test_accuracy_full"),
        "probe_loss": record.get("probe_loss"),
        "dormant_fraction": diagnostics.get("dormant_fraction"),
        "effective_rank": diagnostics.get("effective_rank"),
    }


def arm_summary(arm_dir: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
    """What identifies an arm's results across runs and repos (stored in the card's metadata)."""
    from warmstart_hf.report.study import standard_scheme  # lazy: the study module imports scipy

    run_config = yaml.safe_load((arm_dir.parent / "config.yaml").read_text())
    first = records[0]
    return {
        "run": arm_dir.parent.name,
        "dataset": run_config["data"]["dataset"],
        "scenario": first["scenario"],
        "strategy": first["strategy"],
        "seed": first["seed"],
        "num_phases": json.loads((arm_dir / "split.json").read_text())["num_phases"],
        "recipe_hash": recipe_hash(run_config),
        "code_version": code_version(),
        "standard": standard_scheme(arm_dir.parent),
        "phases": [phase_metrics(r) for r in records],
    }


def _strategy_description(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The strategy's reference variant, the options its docstring names (the ones it reads), and
    whether the optimizer state carries between phases."""
    from warmstart_hf.config import StrategyArguments
    from warmstart_hf.strategies import STRATEGIES

    cls = STRATEGIES[name]
    named = set(re.findall(r"``(\w+)[^`]*``", cls.__doc__ or ""))
    return {
        "reference": cls.reference,
        "strategy_options": {k: v for k, v in options.items() if k in named and v is not None},
        "optimizer_state": "carry" if cls(StrategyArguments(**options)).carries_optimizer_state() else "reset",
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _architecture(arm_dir: Path, run_config: dict) -> str:
    """The timm architecture the arm trains (a finetuned one comes from ``pretrained``, not ``model_name``)."""
    saved = arm_dir / "init" / "config.json"
    if not saved.exists():
        return run_config["model"]["model_name"]
    config = json.loads(saved.read_text())
    return config.get("timm_model") or config["model_type"]  # a timm network, or e.g. vit_mae


def _card_spec(task: str) -> CardSpec | None:
    """The task's own card content (``Task.card``); None: the image classifier / MAE card."""
    from warmstart_hf.tasks import TASKS  # lazy: the tasks import this module

    return TASKS[task].card if task in TASKS else None


def _eval_result(spec: CardSpec | None, last: dict[str, Any], dataset: str, split: str, when: str) -> EvalResult:
    """The card's model-index result: the task's headline metric, else test accuracy (a classifier) or
    the probe loss (an MAE)."""
    if spec is not None:
        key, metric_type, name = spec.headline
        task_type, task_name, value = spec.pipeline_tag, spec.task_name, last[key]
    else:
        accuracy = ("test_accuracy", "accuracy", "test accuracy")
        key, metric_type, name = accuracy if "test_accuracy" in last else ("probe_loss", "loss", "probe loss")
        task_type, task_name, value = "image-classification", "Image classification", last[key]
    return EvalResult(
        task_type=task_type,
        task_name=task_name,
        dataset_type=dataset,
        dataset_name=dataset,
        dataset_split=split,
        metric_type=metric_type,
        metric_name=f"{name} {when}",
        metric_value=value,
    )


def _spec_view(spec: CardSpec | None, records: list[dict[str, Any]], repo_id: str, branch: str) -> dict | None:
    """What the template shows of a task's card spec: headers, formatted rows, the load snippet."""
    if spec is None:
        return None
    cell = lambda value, fmt: "-" if value is None else format(value, fmt)  # noqa: E731
    return {
        "description": spec.description,
        "results_note": spec.results_note,
        "headers": [header for _, header, _ in spec.columns],
        "rows": [[cell(r.get(key), fmt) for key, _, fmt in spec.columns] for r in records],
        "load": spec.load.format(repo_id=repo_id, branch=branch).strip(),
        "continue_from": spec.continue_from.format(repo_id=repo_id, branch=branch),
    }


def render_card(
    arm_dir: str | Path,
    records: list[dict[str, Any]],
    repo_id: str,
    branch: str | None = None,
    note: str = "",
    downstream: str = "",
) -> ModelCard:
    """The model card of the arm at the end of ``records[-1]`` (template: :data:`CARD_TEMPLATE`)."""
    arm_dir = Path(arm_dir)
    run_config = yaml.safe_load((arm_dir.parent / "config.yaml").read_text())
    split = json.loads((arm_dir / "split.json").read_text())
    summary = arm_summary(arm_dir, records)
    last = records[-1]
    phase, strategy, dataset = last["phase"], last["strategy"], run_config["data"]["dataset"]
    test_split = run_config["data"].get("test_split") or "test"
    task = run_config["incremental"].get("task", "classification")
    spec = _card_spec(task)
    if spec is not None:  # the task's own metrics, in the metadata too
        keys = [key for key, _, _ in spec.columns]
        summary["phases"] = [{**p, **{k: r.get(k) for k in keys}} for p, r in zip(summary["phases"], records)]
    card_data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        library_name="transformers",
        pipeline_tag=spec.pipeline_tag if spec else "image-classification",
        tags=["warmstart-hf", "incremental-learning", f"strategy-{strategy}", f"{summary['scenario']}-incremental"],
        datasets=[dataset] if "/" in dataset and ":" not in dataset else None,
        eval_results=[_eval_result(spec, last, dataset, test_split, f"after phase {phase} of {summary['num_phases']}")],
        warmstart_hf=summary,
    )
    recipe = {k: v for k, v in run_config.items() if k != "fingerprint"}
    rows = [
        {
            "phase": r["phase"],
            "branch": phase_branch(r["phase"]),
            "num_train_examples": r.get("num_train_examples"),
            "classes_seen": r.get("classes_seen"),
            "train_accuracy": _pct(r.get("train_accuracy")),
            "test_accuracy": _pct(r.get("test_accuracy")),
            "test_accuracy_masked": _pct(r.get("test_accuracy_masked")),
            "train_loss": "-" if r.get("train_loss") is None else f"{r['train_loss']:.4f}",
            "probe_loss": "-" if r.get("probe_loss") is None else f"{r['probe_loss']:.5f}",
            "dormant_fraction": _pct((r.get("diagnostics") or {}).get("dormant_fraction")),
            "effective_rank": "-"
            if (r.get("diagnostics") or {}).get("effective_rank") is None
            else f"{r['diagnostics']['effective_rank']:.2f}",
        }
        for r in records
    ]
    return ModelCard.from_template(
        card_data,
        template_path=str(CARD_TEMPLATE),
        repo_id=repo_id,
        branch=branch or phase_branch(phase),
        note=note,
        has_probe="probe_loss" in last,
        figure_alt="Train and test accuracy after each phase"  # the figure of _plot_phases
        if "test_accuracy" in last
        else "Probe loss over each phase's training steps",
        phase=phase,
        num_phases=summary["num_phases"],
        model_name=_architecture(arm_dir, run_config),
        task=task,
        spec=_spec_view(spec, records, repo_id, branch or phase_branch(phase)),
        pretrained=run_config["model"].get("pretrained"),
        finetune_mode=run_config["model"].get("finetune_mode", "full"),
        training=run_config["training"],
        strategy=strategy,
        **_strategy_description(strategy, run_config.get("strategy", {})),
        dataset=dataset,
        scenario=summary["scenario"],
        num_classes=split["num_classes"],
        split_seed=split["seed"],
        class_order=split.get("class_order"),
        class_groups=split.get("class_groups"),
        recipe_hash=summary["recipe_hash"],
        code_version=summary["code_version"],
        rows=rows,
        has_diagnostics=any("diagnostics" in r for r in records),
        recipe_yaml=yaml.safe_dump(recipe, sort_keys=False).strip(),
        downstream=downstream,
    )
