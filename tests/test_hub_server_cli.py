"""The local Hub server started on its own (``python tests/hub_server.py``), as the README tells a user
to try pushes offline: the environment it prints is all a client needs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# What a user runs in the second terminal, with only the printed environment: the real client.
CLIENT = """
from huggingface_hub import HfApi, hf_hub_download
api = HfApi()
repo = api.create_repo("tester/tried-offline").repo_id
api.upload_file(path_or_fileobj=b"hello", path_in_repo="note.txt", repo_id=repo)
api.create_branch(repo, branch="phase-00")
print(sorted(b.name for b in api.list_repo_refs(repo).branches))
print(open(hf_hub_download(repo, "note.txt", revision="phase-00")).read())
"""


def test_the_standalone_server_prints_the_environment_a_real_client_pushes_with(tmp_path):
    server = subprocess.Popen(
        [sys.executable, str(HERE / "hub_server.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,  # runs without the repository on its path, as a plain script
        # as a terminal would start it: a job started in the background by a shell without job control
        # (CI: `make test &`) inherits SIGINT ignored, and Ctrl-C below would then never arrive
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        printed = server.stdout.readline() + server.stdout.readline()
        exports = re.search(r"export (.+)", printed)
        assert exports, printed
        env = dict(pair.split("=", 1) for pair in exports.group(1).split())
        client_env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
        client_env.update(env, HF_HOME=str(tmp_path / "hf"))
        done = subprocess.run(
            [sys.executable, "-c", CLIENT], env=client_env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.split("\n")[:2] == ["['main', 'phase-00']", "hello"]
    finally:
        server.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop
        assert server.wait(timeout=30) == 0
