"""Phase checkpoints on the Hub, model cards, push recovery and the leaderboard.

Everything talks to the local Hub server of ``tests/hub_server.py`` through the real clients
(``HfApi``, ``from_pretrained``, ``datasets``); the tests marked ``real_hub`` run unchanged against a
real account with ``WARMSTART_REAL_HUB=1`` (tests/README.md).
"""

from __future__ import annotations

import json
import runpy
import socket
import sys

import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from safetensors.torch import load_file

from tests.conftest import REPO, TINY
from warmstart_hf.config import ConfigError, parse_config
from warmstart_hf.hub import RetryPolicy, arm_repo_id, is_transient, push_arm
from warmstart_hf.io import read_jsonl
from warmstart_hf.loop import prepare_data, run_experiment
from warmstart_hf.report.leaderboard import collect_rows, leaderboard, load_rows, render_markdown
from warmstart_hf.strategies import STRATEGIES

# 3 phases of 30 digits each at 8 px, one epoch: seconds per phase on 2 CPU cores.
RECIPE = {**TINY, "max_train_examples": 90, "max_test_examples": 45, "num_train_epochs": 1, "diagnostics": False}
PHASES = ["phase-00", "phase-01", "phase-02"]
# the model in transformers' TimmWrapper format; resnet18_cifar's code ships with it (trust_remote_code)
REPO_FILES = [".gitattributes", "README.md", "config.json", "fig1.png", "model.safetensors", "resnet_cifar.py"]
REPO_FILES += ["timm_remote.py"]


def _recipe(tmp_path, **extra) -> dict:
    return {**RECIPE, "output_dir": str(tmp_path / "runs"), "run_name": "tiny", **extra}


def _run_script(monkeypatch, name: str, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", [name, *args])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "scripts" / name), run_name="__main__")
    return exit_info.value.code


def _as_pushed(local: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A phase's weights as pushed: timm's plain keys (the normalisation is the image processor's)."""
    return {k.removeprefix("timm_model."): v for k, v in local.items() if k.startswith("timm_model.")}


def _assert_same_weights(local: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    remote = model.state_dict()
    assert set(local) == set(remote)
    assert all(torch.equal(local[name], remote[name]) for name in local)


def _front_matter(card: ModelCard) -> dict:
    return yaml.safe_load(card.content.split("---")[1])


# --- bad input fails fast ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("init_from", "hub://no-namespace@phase-01"),
        ("init_from", "hub://me/repo@"),
        ("init_from", "hub://me/a/b@phase-01"),
        ("init_from", "s3://bucket/phase-01"),
        ("init_from", "runs/missing/warm-seed0/phase-03"),
        ("hub_model_id", "no-namespace"),
        ("hub_model_id", "me/has space"),
        ("hub_model_id", "me/" + "x" * 90),  # fine alone, too long once -warm-seed0 is appended
    ],
)
def test_bad_hub_fields_fail_naming_field_value_and_fix(tmp_path, field, value):
    with pytest.raises(ConfigError) as err:
        parse_config(recipe=_recipe(tmp_path, **{field: value}))
    message = str(err.value)
    assert f"`{field}`" in message and repr(value) in message and "Fix:" in message


def test_push_to_hub_needs_an_id_a_token_and_the_network(tmp_path, monkeypatch):
    from huggingface_hub import constants

    with pytest.raises(ConfigError, match="`push_to_hub` is true but `hub_model_id` is unset"):
        parse_config(recipe=_recipe(tmp_path, push_to_hub=True))
    recipe = _recipe(tmp_path, push_to_hub=True, hub_model_id="me/tiny")
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE"):  # the test session runs offline
        parse_config(recipe=recipe)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    with pytest.raises(ConfigError, match="no Hugging Face token"):
        parse_config(recipe=recipe)
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    config = parse_config(recipe=recipe)
    assert config.training.push_to_hub is True and config.training.hub_model_id == "me/tiny"
    assert arm_repo_id("me/tiny", "warm-seed0") == "me/tiny-warm-seed0"


def test_only_network_errors_timeouts_and_5xx_are_retried(tmp_path, monkeypatch):
    from huggingface_hub import constants

    arm = tmp_path / "run" / "warm-seed0"
    arm.mkdir(parents=True)
    (arm / "results.jsonl").write_text('{"phase": 0}\n{"phase": 1}\n')
    with socket.socket() as sock:  # a port nobody listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sleeps: list[float] = []
    retry = RetryPolicy(attempts=4, base_delay=0.5, sleep=sleeps.append)

    state = push_arm(arm, "me/x", retry=retry, endpoint=closed)  # offline mode: not retried
    assert sleeps == [] and state["pending"] == [0, 1] and "OfflineModeIsEnabled" in state["last_error"]

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    state = push_arm(arm, "me/x", token="hf_secret_abc", retry=retry, endpoint=closed)
    assert sleeps == [0.5, 1.0, 2.0]  # exponential backoff, then give up
    assert state["pending"] == [0, 1] and state["branches"] == {} and "ConnectError" in state["last_error"]
    assert json.loads((arm / "hub.json").read_text()) == state
    assert "hf_secret_abc" not in (arm / "hub.json").read_text()


# --- a run that pushes while it trains ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.real_hub
def test_run_pushes_every_phase_and_each_loads_back_by_revision(hub, tmp_path, caplog):
    if hub.server is not None:
        hub.server.fail_next("commit", 2)  # the first push fails twice, then goes through
    base = hub.repo("tiny")
    recipe = _recipe(tmp_path, push_to_hub=True, hub_model_id=base, diagnostics=True, diagnostics_samples=20)
    run_dir = run_experiment(parse_config(recipe=recipe))

    if hub.server is not None:
        assert hub.sleeps == [0.01, 0.02]
        # per arm and phase one commit to its branch and one to main; the Trainer itself pushed nothing
        assert hub.server.count("POST", r"/commit/") == 2 + 2 * 3 * 2
        assert set(hub.server.repos) == {("model", f"{base}-warm-seed0"), ("model", f"{base}-cold-seed0")}
    api = HfApi()
    from transformers import AutoModelForImageClassification

    import warmstart_hf.models  # noqa: F401 - registers resnet18_cifar with timm (elsewhere: trust_remote_code)

    for arm_name in ("warm-seed0", "cold-seed0"):
        repo, arm = f"{base}-{arm_name}", run_dir / arm_name
        state = json.loads((arm / "hub.json").read_text())
        assert state["repo_id"] == repo and state["pending"] == [] and state["last_error"] is None
        assert sorted(state["branches"]) == PHASES and state["main"]["phase"] == 2
        assert {ref.name for ref in api.list_repo_refs(repo).branches} == {"main", *PHASES}
        for branch in [*PHASES, "main"]:
            assert sorted(api.list_repo_files(repo, revision=branch)) == REPO_FILES
            model = AutoModelForImageClassification.from_pretrained(repo, revision=branch)
            local_dir = arm / (branch if branch != "main" else "phase-02")
            local = load_file(local_dir / "model.safetensors")
            _assert_same_weights({k: v for k, v in local.items() if k.startswith("timm_model.")}, model)
    first, last = (load_file(run_dir / "warm-seed0" / p / "model.safetensors") for p in ("phase-00", "phase-02"))
    assert any(not torch.equal(first[k], last[k]) for k in first)  # phases really differ

    # the card: content and model-index metadata, per branch
    warm = read_jsonl(run_dir / "warm-seed0" / "results.jsonl")
    repo = f"{base}-warm-seed0"
    for branch, phase in (("phase-01", 1), ("main", 2)):
        card = ModelCard.load(hf_hub_download(repo, "README.md", revision=branch))
        result = card.data.eval_results[0]
        assert (result.metric_type, result.metric_value) == ("accuracy", warm[phase]["test_accuracy"])
        index = _front_matter(card)["model-index"][0]["results"][0]
        assert index["metrics"][0]["value"] == warm[phase]["test_accuracy"]
        meta = card.data.to_dict()["warmstart_hf"]
        assert [p["phase"] for p in meta["phases"]] == list(range(phase + 1))
        assert [p["test_accuracy"] for p in meta["phases"]] == [r["test_accuracy"] for r in warm[: phase + 1]]
        assert (meta["strategy"], meta["seed"], meta["scenario"], meta["num_phases"]) == ("warm", 0, "data", 3)
        text = card.text
        assert f"Reference variant: {STRATEGIES['warm'].reference}" in text
        assert "Optimizer state between phases: reset" in text
        assert "Gradient clipping: none (`max_grad_norm: 0`)" in text
        assert f'from_pretrained("{repo}", revision="phase-{phase:02d}")' in text
        assert f"init_from: hub://{repo}@phase-{phase:02d}" in text
        assert "Split seed (the run's master seed" in text and "dataset: sklearn:digits" in text
        for r in warm[: phase + 1]:  # one table row per phase so far, diagnostics included
            row = f"| {r['phase']} | `phase-{r['phase']:02d}` | {r['num_train_examples']} |"
            assert row in text and f"{100 * r['test_accuracy']:.2f}" in text
            assert f"{100 * r['diagnostics']['dormant_fraction']:.2f}" in text
        assert f"| {phase + 1} | `phase-{phase + 1:02d}`" not in text
        assert "![Train and test accuracy after each phase](fig1.png)" in text
        assert ModelCard(card.content).data.to_dict() == card.data.to_dict()  # parses back the same
    assert hf_hub_download(repo, "fig1.png", revision="phase-01").endswith("fig1.png")

    # the token was used but is written nowhere
    if hub.server is not None:
        assert hub.token in hub.server.tokens_seen
        for repo_state in hub.server.repos.values():
            for commit in repo_state.commits.values():
                assert all(hub.token.encode() not in content for content in commit.files.values())
    assert all(hub.token.encode() not in p.read_bytes() for p in run_dir.rglob("*") if p.is_file())
    assert hub.token not in caplog.text

    # a new run starts from a Hub phase: its theta0 is that phase's weights
    phase_01 = load_file(run_dir / "warm-seed0" / "phase-01" / "model.safetensors")
    config = parse_config(recipe=_recipe(tmp_path, run_name="from-hub", init_from=f"hub://{repo}@phase-01"))
    _assert_same_weights(phase_01, prepare_data(config).init_model)
    bad = parse_config(recipe=_recipe(tmp_path, run_name="bad", init_from=f"hub://{repo}@phase-07"))
    with pytest.raises(ConfigError, match=r"`init_from` has value .*phase-07.*could not be loaded"):
        run_experiment(bad)
    assert not (tmp_path / "runs" / "bad").exists()  # failed before writing anything


@pytest.mark.slow
def test_init_from_hub_phase_is_the_first_phase_start(hub, tmp_path):
    """The loop really starts from init_from: the new run's theta0 (init/) is the Hub phase."""
    from warmstart_hf.hub import push_run

    source = run_experiment(parse_config(recipe=_recipe(tmp_path, strategies=["warm"], num_phases=2)))
    push_run(source, hub.repo("src"))
    repo = arm_repo_id(hub.repo("src"), "warm-seed0")
    recipe = _recipe(tmp_path, run_name="cont", strategies=["warm"], num_phases=1, init_from=f"hub://{repo}@phase-01")
    run_dir = run_experiment(parse_config(recipe=recipe))
    init = load_file(run_dir / "warm-seed0" / "init" / "model.safetensors")
    phase_01 = load_file(source / "warm-seed0" / "phase-01" / "model.safetensors")
    assert set(init) == set(phase_01) and all(torch.equal(init[k], phase_01[k]) for k in init)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["init_from"] == f"hub://{repo}@phase-01"


@pytest.mark.slow
def test_failed_pushes_do_not_stop_training_and_the_script_pushes_exactly_the_rest(hub, tmp_path, monkeypatch):
    # phase 0 reaches its branch and main; from then on every commit fails
    hub.server.fail_next("commit", None, after=2)
    base = hub.repo("down")
    run_dir = run_experiment(
        parse_config(recipe=_recipe(tmp_path, strategies=["warm"], push_to_hub=True, hub_model_id=base))
    )
    arm, repo = run_dir / "warm-seed0", f"{base}-warm-seed0"
    assert [r["phase"] for r in read_jsonl(arm / "results.jsonl")] == [0, 1, 2]  # training went on
    assert all((arm / p / "model.safetensors").is_file() for p in PHASES)  # local checkpoints intact
    state = json.loads((arm / "hub.json").read_text())
    assert sorted(state["branches"]) == ["phase-00"] and state["main"]["phase"] == 0
    assert state["pending"] == [1, 2] and "503" in state["last_error"]
    # phase 1's end tried phase-01 3 times; phase 2's end tried phase-01 again (3), then stopped
    assert hub.server.count("POST", r"/commit/") == 2 + 3 + 3
    assert hub.sleeps == [0.01, 0.02] * 2
    pushed_phase_00 = hub.server.repo(repo).branches["phase-00"]

    hub.server.fail_next("commit", 0)  # the Hub is back
    commits_before = hub.server.count("POST", r"/commit/")
    assert _run_script(monkeypatch, "push_to_hub.py", str(run_dir)) == 0
    assert hub.server.count("POST", r"/commit/") - commits_before == 3  # phase-01, phase-02, main
    state = json.loads((arm / "hub.json").read_text())
    assert state["pending"] == [] and sorted(state["branches"]) == PHASES and state["main"]["phase"] == 2
    assert state["last_error"] is None
    assert hub.server.repo(repo).branches["phase-00"] == pushed_phase_00  # not pushed again
    api = HfApi()
    for branch in ("phase-02", "main"):
        local = _as_pushed(load_file(arm / "phase-02" / "model.safetensors"))
        remote = load_file(hf_hub_download(repo, "model.safetensors", revision=branch))
        assert set(local) == set(remote) and all(torch.equal(local[k], remote[k]) for k in local)
    assert sorted(api.list_repo_files(repo, revision="phase-01")) == REPO_FILES
    # nothing left: a second call sends no request at all
    requests_before = len(hub.server.log)
    assert _run_script(monkeypatch, "push_to_hub.py", str(run_dir)) == 0
    assert len(hub.server.log) == requests_before


def test_push_script_refuses_a_run_without_repo_id(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"training": {"hub_model_id": None}}))
    assert _run_script(monkeypatch, "push_to_hub.py", str(run_dir)) == 2
    assert "--repo-id" in capsys.readouterr().err
    assert _run_script(monkeypatch, "push_to_hub.py", str(run_dir), "--repo-id", "bad id") == 2
    assert "'bad id'" in capsys.readouterr().err


# --- leaderboard --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.real_hub
def test_leaderboard_round_trip_through_a_results_dataset(hub, tmp_path, monkeypatch):
    run_dir = run_experiment(parse_config(recipe=_recipe(tmp_path)))  # warm and cold, not pushed
    base = hub.repo("lb")
    assert _run_script(monkeypatch, "push_to_hub.py", str(run_dir), "--repo-id", base) == 0
    sources = [f"hub://{base}-warm-seed0", f"hub://{base}-cold-seed0"]
    local_rows, hub_rows = collect_rows([str(run_dir)]), collect_rows(sources)
    strip = lambda rows: sorted(tuple(sorted((k, v) for k, v in r.items() if k != "source")) for r in rows)  # noqa: E731
    assert len(local_rows) == 6 and strip(local_rows) == strip(hub_rows)  # one row per arm x phase

    dataset, out = hub.repo("warmstart-results"), tmp_path / "board"
    args = [*sources, "--push-to", dataset, "--sort", "gap_vs_cold_final", "--output-dir", str(out)]
    assert _run_script(monkeypatch, "leaderboard.py", *args) == 0
    loaded = load_rows(dataset)
    assert sorted(loaded, key=lambda r: r["source"] + str(r["phase"])) == sorted(
        hub_rows, key=lambda r: r["source"] + str(r["phase"])
    )
    board = leaderboard(local_rows, "gap_vs_cold_final")
    assert [line["strategy"] for line in board] == ["warm", "cold"]  # cold has no gap: last
    warm = read_jsonl(run_dir / "warm-seed0" / "results.jsonl")
    cold = read_jsonl(run_dir / "cold-seed0" / "results.jsonl")
    assert board[0]["final_test_accuracy"] == pytest.approx(100 * warm[-1]["test_accuracy"])  # in %
    assert board[0]["gap_vs_cold_final"] == pytest.approx(100 * (warm[-1]["test_accuracy"] - cold[-1]["test_accuracy"]))
    assert board[0]["avg_incremental_test_accuracy"] == pytest.approx(100 * sum(r["test_accuracy"] for r in warm) / 3)
    markdown = render_markdown(leaderboard(hub_rows, "gap_vs_cold_final"), "gap_vs_cold_final")
    assert (out / "leaderboard.md").read_text().endswith(markdown)
    assert render_markdown(leaderboard(loaded, "gap_vs_cold_final"), "gap_vs_cold_final") == markdown  # round trip
    page = (out / "leaderboard.html").read_text()
    assert page.count("<tr>") == 3 and "gap vs cold, final (pts)" in page and page.count("<img") == 1

    # a board from the dataset alone, plus the run dir again (counted once), sorted by another metric
    assert (
        _run_script(monkeypatch, "leaderboard.py", str(run_dir), "--from-dataset", dataset, "--output-dir", str(out))
        == 0
    )
    assert (out / "leaderboard.md").read_text().endswith(render_markdown(leaderboard(local_rows)))


def test_transient_classification():
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    def http_error(status: int) -> HfHubHTTPError:
        return HfHubHTTPError("x", response=httpx2.Response(status, request=httpx2.Request("POST", "http://h/")))

    assert [is_transient(http_error(s)) for s in (500, 503, 429, 408, 400, 401, 404)] == [True] * 4 + [False] * 3
    assert is_transient(TimeoutError()) and is_transient(httpx2.ReadTimeout("slow"))
    assert not is_transient(OfflineModeIsEnabled("offline")) and not is_transient(ValueError())
