"""A local, in-memory stand-in for the Hugging Face Hub, for offline tests of the Hub code.

It speaks the subset of the Hub HTTP API that the real clients use for what this project does:
``huggingface_hub.HfApi`` (create/delete repo, branches and refs, preupload, NDJSON commits with
inline base64 files, tree listing, paths-info, repo info, YAML validation, whoami),
``hf_hub_download`` / ``from_pretrained`` (``HEAD``/``GET /{repo}/resolve/{revision}/{path}`` with the
``X-Repo-Commit``, ``ETag`` and ``Content-Length`` headers the client checks, and ``Range`` reads for
``HfFileSystem``), and ``datasets``' ``push_to_hub`` / ``load_dataset``.

Text files are committed "regular" (base64 inline in the commit); binary files and the patterns of
``.gitattributes`` (``*.safetensors``, ``*.parquet``, ``*.png``) go through the Git LFS batch API
(``POST /{repo}.git/info/lfs/objects/batch``, a ``PUT`` of the content, a verify call), as on the
real Hub when Xet is off: set ``HF_HUB_DISABLE_XET=1`` so the client never asks for a Xet token.
Git semantics are simplified: a commit is a full snapshot of the files, a branch is a name that
points at a commit, file ids are git blob hashes and commit ids are SHA-1s of the parent, the message
and the snapshot, so the same history gives the same ids.

Use from a test (``tests/conftest.py`` binds it before the HF libraries are imported and points
``HF_ENDPOINT`` at it; the ``hub`` fixture starts it)::

    server = HubServer()              # binds 127.0.0.1 on a free port
    server.start()                    # serves from a daemon thread
    server.fail_next("commit", 2)     # the next 2 commit requests get 503
    server.fail_next("commit", None)  # every commit request gets 503 until reset()
    server.reset()                    # forget every repo and failure

Writes need an ``Authorization: Bearer ...`` header (any token) as on the real Hub; reads do not.
``server.tokens_seen`` records the tokens sent, so a test can check a token was used but never
written anywhere.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote

import yaml

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_PATTERNS = ("*.safetensors", "*.parquet", "*.png", "*.bin", "*.pt", "*.arrow")
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS).encode()
USER = "tester"


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Commit:
    oid: str
    parent: str | None
    files: dict[str, bytes]
    title: str
    date: str
    lfs: frozenset[str] = frozenset()  # paths stored as LFS objects


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool = False
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: _now())

    def resolve(self, revision: str) -> Commit | None:
        oid = self.branches.get(revision, revision)
        return self.commits.get(oid)

    def add_commit(self, branch: str, files: dict[str, bytes], title: str, lfs: frozenset[str] = frozenset()) -> Commit:
        parent = self.branches.get(branch)
        digest = hashlib.sha1(
            json.dumps([parent, title, sorted((p, git_blob_id(c)) for p, c in files.items())]).encode()
        )
        commit = Commit(digest.hexdigest(), parent, files, title, _now(), lfs & frozenset(files))
        self.commits[commit.oid] = commit
        self.branches[branch] = commit.oid
        return commit


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, body: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.body = status, message, code, body


class HubServer(ThreadingHTTPServer):
    """The server and its state (repos, injected failures, a request log)."""

    daemon_threads = True

    def __init__(self, port: int = 0):
        super().__init__(("127.0.0.1", port), _Handler)
        self.lock = threading.RLock()
        self.thread: threading.Thread | None = None
        self.reset()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> HubServer:
        if self.thread is None:
            self.thread = threading.Thread(target=self.serve_forever, name="hub-server", daemon=True)
            self.thread.start()
        return self

    def stop(self) -> None:
        if self.thread is not None:
            self.shutdown()
            self.thread = None
        self.server_close()

    def reset(self) -> None:
        with self.lock:
            self.repos: dict[tuple[str, str], Repo] = {}
            self.failures: dict[str, list[int | None]] = {}  # endpoint -> [successes to let pass, failures left]
            self.log: list[tuple[str, str, int]] = []
            self.tokens_seen: set[str] = set()
            self.failure_status = 503
            self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content

    def fail_next(self, endpoint: str, times: int | None, status: int = 503, after: int = 0) -> None:
        """Answer ``times`` requests to ``endpoint`` (``commit``, ``preupload``, ``branch``, ``create``,
        ``lfs``, ``resolve``) with ``status``, after letting ``after`` of them succeed; ``times=None``
        fails them until ``reset`` or the next ``fail_next`` (``times=0`` clears)."""
        with self.lock:
            self.failures[endpoint] = [after, times]
            self.failure_status = status

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def count(self, method: str, pattern: str) -> int:
        """How many logged requests match ``method`` and the regex ``pattern`` (on the path)."""
        return sum(1 for m, path, _ in self.log if m == method and re.search(pattern, path))


_SHARED: HubServer | None = None


def shared_server() -> HubServer:
    """One server per process (conftest may be imported twice: as ``conftest`` and ``tests.conftest``)."""
    global _SHARED
    if _SHARED is None:
        _SHARED = HubServer()
    return _SHARED


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HubServer

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    # --- plumbing ---------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json(self) -> Any:
        body = self._body()
        return json.loads(body) if body else {}

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        headers = {"Content-Type": "application/json", **(headers or {})}
        headers.setdefault("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.server.log.append((self.command, self.path, status))

    def _send_json(self, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[len("Bearer ") :] if auth.startswith("Bearer ") else None

    def _require_token(self) -> None:
        token = self._token()
        if not token:
            raise HubError(401, "Invalid credentials in Authorization header")
        self.server.tokens_seen.add(token)

    def _dispatch(self, method: str) -> None:
        raw_path, _, query = self.path.partition("?")
        self._read = False
        self.query = parse_qs(query)
        try:
            with self.server.lock:
                self._route(method, raw_path)
        except HubError as err:
            self._body_if_unread()
            headers = {"X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._send_json(err.body or {"error": err.message}, err.status, headers)
        except Exception as err:  # a bug in the server: make it visible to the client
            self._body_if_unread()
            self._send_json({"error": f"test hub server error: {err!r}"}, 500)

    def _body_if_unread(self) -> None:
        if not getattr(self, "_read", False):
            self._body()

    def _maybe_fail(self, endpoint: str) -> None:
        plan = self.server.failures.get(endpoint)
        if plan is None:
            return
        if plan[0] > 0:  # successes still to let through
            plan[0] -= 1
            return
        if plan[1] is not None:
            if plan[1] <= 0:
                del self.server.failures[endpoint]
                return
            plan[1] -= 1
        raise HubError(self.server.failure_status, f"injected failure of {endpoint}")

    # --- routing ----------------------------------------------------------------------------
    def _route(self, method: str, raw_path: str) -> None:
        parts = raw_path.strip("/").split("/")
        if parts[:1] == ["api"]:
            self._route_api(method, parts[1:])
            return
        # /{repo_id}/resolve/{rev}/{path}, /datasets/{repo_id}/resolve/..., /spaces/...
        repo_type = "model"
        if parts and parts[0] in ("datasets", "spaces"):
            repo_type = REPO_TYPES[parts[0]]
            parts = parts[1:]
        if parts[:1] == ["lfs-upload"] and method == "PUT":
            self._lfs_store(parts[1])
            return
        if parts[:1] == ["lfs-verify"] and method == "POST":
            self._body()
            self._read = True
            if parts[1] not in self.server.lfs_objects:
                raise HubError(404, f"LFS object {parts[1]} not found")
            self._send_json({})
            return
        if len(parts) == 6 and parts[1].endswith(".git") and parts[2:] == ["info", "lfs", "objects", "batch"]:
            self._lfs_batch(repo_type, f"{parts[0]}/{parts[1][: -len('.git')]}")
            return
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            self._read = True
            self._maybe_fail("resolve")
            repo = self._repo(repo_type, "/".join(parts[:2]))
            self._resolve(repo, unquote(parts[3]), unquote("/".join(parts[4:])))
            return
        raise HubError(404, f"no route for {method} {raw_path}")

    def _route_api(self, method: str, parts: list[str]) -> None:
        if parts == ["whoami-v2"]:
            self._read = True
            self._require_token()
            self._send_json({"type": "user", "name": USER, "orgs": [], "auth": {"type": "access_token"}})
            return
        if parts == ["validate-yaml"] and method == "POST":
            self._validate_yaml()
            return
        if parts[:1] == ["repos"] and method in ("POST", "DELETE") and len(parts) == 2:
            self._repo_create_delete(parts[1])
            return
        if len(parts) >= 3 and parts[0] in REPO_TYPES:
            repo_type, repo_id, rest = REPO_TYPES[parts[0]], "/".join(parts[1:3]), parts[3:]
            self._route_repo(method, repo_type, repo_id, rest)
            return
        raise HubError(404, f"no route for {method} /api/{'/'.join(parts)}")

    def _route_repo(self, method: str, repo_type: str, repo_id: str, rest: list[str]) -> None:
        action = rest[0] if rest else ""
        if method == "POST" and action == "paths-info":
            body = parse_qs(self._body().decode())
            self._read = True
            repo = self._repo(repo_type, repo_id)
            self._paths_info(repo, unquote(rest[1]), body.get("paths", []))
            return
        if method == "POST" and action == "commit":
            self._commit(repo_type, repo_id, unquote("/".join(rest[1:])))
            return
        if method == "POST" and action == "preupload":
            self._preupload(repo_type, repo_id, unquote("/".join(rest[1:])))
            return
        if action == "branch" and method in ("POST", "DELETE"):
            self._branch(method, repo_type, repo_id, unquote("/".join(rest[1:])))
            return
        self._body()
        self._read = True
        repo = self._repo(repo_type, repo_id)
        if method == "GET" and not rest:
            self._info(repo, "main")
        elif method == "GET" and action == "revision":
            self._info(repo, unquote("/".join(rest[1:])))
        elif method == "GET" and action == "refs":
            self._refs(repo)
        elif method == "GET" and action == "tree":
            path = unquote("/".join(rest[2:])) if len(rest) > 2 else ""
            self._tree(repo, unquote(rest[1]), path)
        elif method == "GET" and action == "commits":
            self._commits(repo, unquote("/".join(rest[1:])) or "main")
        else:
            raise HubError(404, f"no route for {method} {self.path}")

    # --- helpers -------------------------------------------------------------------------------
    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.server.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _commit_of(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _url(self, repo: Repo) -> str:
        return f"{self.server.url}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    # --- endpoints --------------------------------------------------------------------------
    def _validate_yaml(self) -> None:
        payload = self._json()
        self._read = True
        content = payload.get("content", "")
        match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        try:
            data = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as err:
            self._send_json({"errors": [{"message": f"invalid YAML: {err}"}], "warnings": []}, 400)
            return
        if not isinstance(data, dict):
            self._send_json({"errors": [{"message": "metadata must be a mapping"}], "warnings": []}, 400)
            return
        self._send_json({"errors": [], "warnings": []})

    def _repo_create_delete(self, verb: str) -> None:
        payload = self._json()
        self._read = True
        self._require_token()
        repo_type = payload.get("type") or "model"
        name, organization = payload["name"], payload.get("organization") or USER
        repo_id = f"{organization}/{name}"
        key = (repo_type, repo_id)
        if verb == "create":
            self._maybe_fail("create")
            if not re.fullmatch(r"[\w.-]{1,96}", name) or name.startswith(("-", ".")):
                raise HubError(400, f"invalid repo name {name!r}")
            if key in self.server.repos:
                url = self._url(self.server.repos[key])
                raise HubError(409, "You already created this repo", body={"error": "exists", "url": url})
            repo = Repo(repo_type, repo_id, private=payload.get("visibility") == "private")
            repo.add_commit("main", {".gitattributes": GITATTRIBUTES}, "initial commit")
            self.server.repos[key] = repo
            self._send_json({"url": self._url(repo), "name": repo_id, "id": repo_id})
        elif verb == "delete":
            if key not in self.server.repos:
                raise HubError(404, "Repository not found", "RepoNotFound")
            del self.server.repos[key]
            self._send_json({})
        else:
            raise HubError(404, f"no route for repos/{verb}")

    def _branch(self, method: str, repo_type: str, repo_id: str, branch: str) -> None:
        payload = self._json() if method == "POST" else (self._body() and {})
        self._read = True
        self._require_token()
        self._maybe_fail("branch")
        repo = self._repo(repo_type, repo_id)
        if method == "DELETE":
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            del repo.branches[branch]
            self._send_json({})
            return
        if branch in repo.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        start = self._commit_of(repo, payload.get("startingPoint") or "main")
        repo.branches[branch] = start.oid
        self._send_json({})

    def _refs(self, repo: Repo) -> None:
        branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": oid} for b, oid in repo.branches.items()]
        self._send_json({"branches": branches, "tags": [], "converts": []})

    def _preupload(self, repo_type: str, repo_id: str, revision: str) -> None:
        payload = self._json()
        self._read = True
        self._require_token()
        self._maybe_fail("preupload")
        repo = self._repo(repo_type, repo_id)
        current = repo.resolve(revision)
        files = []
        for item in payload.get("files", []):
            existing = current.files.get(item["path"]) if current else None
            binary = b"\0" in base64.b64decode(item.get("sample", ""))
            lfs = binary or any(fnmatch.fnmatch(item["path"].rsplit("/", 1)[-1], p) for p in LFS_PATTERNS)
            files.append(
                {
                    "path": item["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_id(existing) if existing is not None else None,
                }
            )
        self._send_json({"files": files, "commitOid": current.oid if current else None})

    def _commit(self, repo_type: str, repo_id: str, revision: str) -> None:
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        self._read = True
        self._require_token()
        self._maybe_fail("commit")
        repo = self._repo(repo_type, repo_id)
        base = self._commit_of(repo, revision)
        if revision not in repo.branches:
            raise HubError(400, f"Can only commit to a branch, not {revision!r}")
        files, lfs = dict(base.files), set(base.lfs)
        header = {}
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "header":
                header = value
                parent = value.get("parentCommit")
                if parent and parent != base.oid:
                    raise HubError(412, "A commit has happened since. Please refresh and try again.")
            elif key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, f"unsupported encoding {value.get('encoding')!r}")
                files[value["path"]] = base64.b64decode(value["content"])
                lfs.discard(value["path"])
            elif key == "lfsFile":
                content = self.server.lfs_objects.get(value["oid"])
                if content is None:
                    raise HubError(422, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                files[value["path"]] = content
                lfs.add(value["path"])
            elif key == "deletedFile":
                if value["path"] not in files:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                del files[value["path"]]
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: c for p, c in files.items() if not p.startswith(prefix)}
            else:
                raise HubError(400, f"unsupported commit operation {key!r}")
        commit = repo.add_commit(revision, files, header.get("summary", ""), frozenset(lfs))
        url = f"{self._url(repo)}/commit/{commit.oid}"
        self._send_json({"success": True, "commitOid": commit.oid, "commitUrl": url, "pullRequestUrl": None})

    def _entry(self, path: str, content: bytes | None, commit: Commit) -> dict[str, Any]:
        if content is None:
            return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}
        last = {"id": commit.oid, "title": commit.title, "date": commit.date}
        entry = {"type": "file", "oid": git_blob_id(content), "size": len(content), "path": path, "lastCommit": last}
        if path in commit.lfs:
            entry["lfs"] = {"oid": hashlib.sha256(content).hexdigest(), "size": len(content), "pointerSize": 134}
        return entry

    def _listing(self, commit: Commit, prefix: str, recursive: bool) -> list[dict[str, Any]]:
        prefix = prefix.strip("/")
        entries: dict[str, dict[str, Any]] = {}
        for path, content in sorted(commit.files.items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rel = path[len(prefix) + 1 :] if prefix else path
            pieces = rel.split("/")
            for depth in range(1, len(pieces)):  # the directories on the way
                folder = "/".join(([prefix] if prefix else []) + pieces[:depth])
                if recursive or depth == 1:
                    entries.setdefault(folder, self._entry(folder, None, commit))
            if recursive or len(pieces) == 1:
                entries[path] = self._entry(path, content, commit)
        return list(entries.values())

    def _tree(self, repo: Repo, revision: str, path: str) -> None:
        commit = self._commit_of(repo, revision)
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        if path and path not in commit.files and not any(p.startswith(path.rstrip("/") + "/") for p in commit.files):
            raise HubError(404, f"{path} does not exist", "EntryNotFound")
        self._send_json(self._listing(commit, path, recursive))

    def _paths_info(self, repo: Repo, revision: str, paths: list[str]) -> None:
        commit = self._commit_of(repo, revision)
        out = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                out.append(self._entry(path, commit.files[path], commit))
            elif any(p.startswith(path + "/") for p in commit.files):
                out.append(self._entry(path, None, commit))
        self._send_json(out)

    def _commits(self, repo: Repo, revision: str) -> None:
        commit, out = self._commit_of(repo, revision), []
        while commit is not None:
            out.append({"id": commit.oid, "title": commit.title, "message": "", "authors": [], "date": commit.date})
            commit = repo.commits.get(commit.parent) if commit.parent else None
        self._send_json(out)

    def _info(self, repo: Repo, revision: str) -> None:
        commit = self._commit_of(repo, revision)
        card = commit.files.get("README.md", b"").decode()
        match = re.match(r"^---\n(.*?)\n---\n", card, re.S)
        card_data = yaml.safe_load(match.group(1)) if match else None
        info = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": [{"rfilename": p} for p in sorted(commit.files)],
            "cardData": card_data,
        }
        self._send_json(info)

    def _lfs_batch(self, repo_type: str, repo_id: str) -> None:
        payload = self._json()
        self._read = True
        self._require_token()
        self._maybe_fail("lfs")
        self._repo(repo_type, repo_id)
        objects = []
        for obj in payload.get("objects", []):
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.server.lfs_objects:
                entry["actions"] = {
                    "upload": {"href": f"{self.server.url}/lfs-upload/{obj['oid']}"},
                    "verify": {"href": f"{self.server.url}/lfs-verify/{obj['oid']}"},
                }
            objects.append(entry)
        self._send_json(
            {"transfer": "basic", "objects": objects}, headers={"Content-Type": "application/vnd.git-lfs+json"}
        )

    def _lfs_store(self, oid: str) -> None:
        content = self._body()
        self._read = True
        if hashlib.sha256(content).hexdigest() != oid:
            raise HubError(400, f"content does not match the LFS oid {oid}")
        self.server.lfs_objects[oid] = content
        self._send(200)

    def _resolve(self, repo: Repo, revision: str, path: str) -> None:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
        if path not in commit.files:
            self._send_json({"error": "Entry not found"}, 404, {**headers, "X-Error-Code": "EntryNotFound"})
            return
        content = commit.files[path]
        etag = hashlib.sha256(content).hexdigest() if path in commit.lfs else git_blob_id(content)
        headers.update({"ETag": f'"{etag}"', "Content-Type": "application/octet-stream"})
        if path in commit.lfs:
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(content))})
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if match and self.command == "GET":
            start = int(match.group(1) or 0)
            end = min(int(match.group(2)) if match.group(2) else len(content) - 1, len(content) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            self._send(206, content[start : end + 1], headers)
            return
        self._send(200, content, headers)


def main(argv: list[str] | None = None) -> None:
    """Serve the local Hub in the foreground, so a user can try pushing without network
    (``python tests/hub_server.py --port 8765``); the repos live in memory until Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(description="An in-memory Hugging Face Hub on 127.0.0.1, to try pushes offline.")
    parser.add_argument("--port", type=int, default=8765, help="port to listen on (0: a free one; default 8765)")
    server = HubServer(parser.parse_args(argv).port)
    print(
        f"Local Hub at {server.url} (in memory; Ctrl-C stops it). In the shell that pushes, set:\n"
        f"  export HF_ENDPOINT={server.url} HF_HUB_DISABLE_XET=1 HF_HUB_OFFLINE=0 HF_TOKEN=local",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
