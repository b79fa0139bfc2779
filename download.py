"""Download one file safely: resumable, verified, and never half-written.

Big downloads fail in boring ways: the connection drops, a proxy returns an
HTML error page with status 200, the server closes early, the disk fills up.
A training run that starts from such a file fails much later and much more
confusingly, so this module checks everything it can up front:

- the HTTP status (404, 403, 5xx each get a message that says what to do);
- the Content-Length the server announced against the bytes that arrived
  (a truncated body is an error, not a short file);
- an optional expected size and sha256 given by the caller.

Design choices:
- Bytes stream into `dest + ".part"` and only a complete, verified file is
  moved to `dest` with `os.replace`, which is atomic on one filesystem. So a
  file at `dest` is always a good file, and "the file exists" can mean "cached".
- If the process is interrupted (Ctrl-C, a crash) the `.part` stays and the
  next call resumes it with an HTTP `Range` request. If the server ignores the
  Range header (answers 200 instead of 206) we restart from byte 0.
- Any error we detect raises `DownloadError(url, why, what_to_do)` and deletes
  the `.part`: after a failure there is no file at `dest` and no bad `.part`.
- Several processes asking for the same file at once (the ranks torchrun starts, all loading
  GPT-2's weights) take turns through a lock on its folder: the first downloads, the others
  wait and then find it cached, instead of writing one `.part` together.

`hf_url` builds Hugging Face Hub URLs and honours `HF_ENDPOINT`, the same
variable the official `huggingface_hub` client reads, so a mirror works here too.
"""

import contextlib
import hashlib
import os
from pathlib import Path

try:
    import fcntl  # POSIX file locks
except ImportError:  # Windows: no lock; start one process per file there
    fcntl = None

import requests

from common import UserError, fsync_directory, fsync_file

HF_DEFAULT_ENDPOINT = "https://huggingface.co"
CHUNK_SIZE = 1 << 20  # 1 MiB: large enough to be fast, small enough to show progress

# Most download problems are the network or a blocked host; say so in every message.
NETWORK_FIX = (
    "check your connection (or proxy settings) and try again; "
    "if huggingface.co is blocked where you are, set HF_ENDPOINT to a mirror"
)


class DownloadError(UserError):
    """A download failed. Carries the URL, what went wrong, and what to do about it."""

    def __init__(self, url: str, why: str, fix: str):
        self.url = url
        self.why = why
        self.fix = fix
        super().__init__(f"could not download {url}: {why}. What to do: {fix}")


def cache_dir() -> Path:
    """Where downloaded files (e.g. pretrained weights) live: $GPT_CACHE_DIR or ~/.cache/gpt-from-scratch."""
    env_dir = os.environ.get("GPT_CACHE_DIR")
    return Path(env_dir) if env_dir else Path.home() / ".cache" / "gpt-from-scratch"


def hf_url(repo_id: str, filename: str, repo_type: str = "model", revision: str = "main") -> str:
    """URL of one file in a Hugging Face Hub repo, e.g. hf_url("gpt2", "model.safetensors").

    Models live at {endpoint}/{repo}/resolve/{rev}/{file}; datasets have an
    extra "datasets/" prefix. HF_ENDPOINT overrides https://huggingface.co.
    """
    endpoint = os.environ.get("HF_ENDPOINT", HF_DEFAULT_ENDPOINT).rstrip("/")
    if repo_type == "model":
        return f"{endpoint}/{repo_id}/resolve/{revision}/{filename}"
    if repo_type == "dataset":
        return f"{endpoint}/datasets/{repo_id}/resolve/{revision}/{filename}"
    raise ValueError(f"repo_type must be 'model' or 'dataset', got {repo_type!r}")


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so multi-GB files do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def is_cached(dest: Path, expected_size: int | None = None, sha256: str | None = None) -> bool:
    """True when dest exists and matches every check we were given."""
    if not dest.is_file():
        return False
    if expected_size is not None and dest.stat().st_size != expected_size:
        return False
    if sha256 is not None and file_sha256(dest) != sha256.lower():
        return False
    return True


def _http_status_error(url: str, status: int, reason: str) -> DownloadError:
    """Turn a bad HTTP status into an error whose fix fits the status."""
    why = f"the server answered HTTP {status} {reason}".rstrip()
    if status == 404:
        fix = "check the URL (repo id, file name, revision); the file may have moved or been renamed"
    elif status in (401, 403):
        fix = "the file is private or gated on this server; check the URL or set HF_ENDPOINT to a mirror that serves it"
    elif status == 429 or status >= 500:
        fix = "the server is busy or failing; wait a minute and try again, or set HF_ENDPOINT to a mirror"
    else:
        fix = NETWORK_FIX
    return DownloadError(url, why, fix)


def _start_request(url: str, resume_from: int, timeout: float) -> requests.Response | None:
    """Send the GET (with a Range header when resuming) and check the status.

    Returns None when a resume was refused with 416, so the caller can start over.
    """
    # identity: we want the file's own bytes, so Content-Length counts exactly what we write.
    headers = {"Accept-Encoding": "identity"}
    if resume_from > 0:
        headers["Range"] = f"bytes={resume_from}-"
    try:
        response = requests.get(url, headers=headers, stream=True, timeout=timeout, allow_redirects=True)
    except requests.exceptions.Timeout:
        raise DownloadError(url, f"no answer within {timeout} s", NETWORK_FIX) from None
    except requests.exceptions.RequestException as e:
        raise DownloadError(url, f"could not connect ({type(e).__name__}: {e})", NETWORK_FIX) from None
    if response.status_code == 416 and resume_from > 0:
        response.close()
        return None
    if response.status_code not in (200, 206):
        response.close()
        raise _http_status_error(url, response.status_code, response.reason or "")
    return response


def _resume_offset(url: str, response: requests.Response, resume_from: int) -> int:
    """Byte offset the body starts at: resume_from for a 206 that matches, 0 for a 200."""
    if response.status_code == 200:
        return 0  # the server ignored our Range header and sends the whole file: restart
    # A 206 must say which bytes it sends: "Content-Range: bytes START-END/TOTAL".
    content_range = response.headers.get("Content-Range", "")
    try:
        start = int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        start = -1
    if start != resume_from:
        response.close()
        raise DownloadError(
            url,
            f"asked to resume at byte {resume_from} but the server sent Content-Range {content_range!r}",
            "try again: the partial file was deleted, so the next try starts from scratch",
        )
    return resume_from


def _stream_to_part(url: str, response: requests.Response, part: Path, offset: int) -> int:
    """Write the response body to part (appending when offset > 0); return the file's final size."""
    mode = "ab" if offset > 0 else "wb"
    try:
        with open(part, mode) as f:
            for chunk in response.iter_content(chunk_size=CHUNK_SIZE):
                f.write(chunk)
    except requests.exceptions.RequestException as e:
        # e.g. ChunkedEncodingError("IncompleteRead"): the server closed early.
        raise DownloadError(url, f"truncated transfer: the connection broke ({type(e).__name__}: {e})", NETWORK_FIX) from None
    except OSError as e:
        raise DownloadError(url, f"could not write {part} ({e})", "check free disk space and write permissions") from None
    finally:
        response.close()
    return part.stat().st_size


def _verify_part(url: str, part: Path, size: int, announced_size: int | None,
                 expected_size: int | None, sha256: str | None) -> None:
    """Check the finished .part against everything we know about the file."""
    if announced_size is not None and size != announced_size:
        raise DownloadError(
            url, f"truncated transfer: the server announced {announced_size} bytes but sent {size}", NETWORK_FIX
        )
    if expected_size is not None and size != expected_size:
        raise DownloadError(
            url, f"got {size} bytes but expected {expected_size}",
            "the file on the server differs from the one this code expects; check the URL and revision",
        )
    if sha256 is not None:
        actual = file_sha256(part)
        if actual != sha256.lower():
            raise DownloadError(
                url, f"sha256 mismatch: got {actual}, expected {sha256.lower()}",
                "the file is corrupt or changed upstream; try again, and check the URL and revision if it persists",
            )


def _fetch(url: str, part: Path, resume_from: int, timeout: float) -> tuple[int, int | None]:
    """Fetch url into part, resuming from resume_from if possible; return (size, announced size)."""
    response = _start_request(url, resume_from, timeout)
    if response is None:
        # 416 Range Not Satisfiable: our .part is not a prefix the server can continue. Start over.
        part.unlink(missing_ok=True)
        resume_from = 0
        response = _start_request(url, resume_from, timeout)
    offset = _resume_offset(url, response, resume_from)
    content_length = response.headers.get("Content-Length")
    announced_size = offset + int(content_length) if content_length is not None else None
    if offset > 0:
        print(f"resuming {url} at byte {offset:,}")
    else:
        shown = f" ({announced_size:,} bytes)" if announced_size is not None else ""
        print(f"downloading {url}{shown}")
    size = _stream_to_part(url, response, part, offset)
    return size, announced_size


def download(url: str, dest, expected_size: int | None = None, sha256: str | None = None,
             timeout: float = 30) -> Path:
    """Download url to dest and return dest as a Path.

    Cached: if dest already exists and matches expected_size/sha256 (when given),
    no request is made. `timeout` is seconds to wait for the server to connect or
    to send the next bytes (not a limit on the whole transfer).
    Raises DownloadError (and leaves no file at dest, no .part) on any failure.
    """
    dest = Path(dest)
    if is_cached(dest, expected_size, sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _one_process_at_a_time(dest):
        if is_cached(dest, expected_size, sha256):  # another process downloaded it while we waited
            return dest
        return _download(url, dest, expected_size, sha256, timeout)


@contextlib.contextmanager
def _one_process_at_a_time(dest: Path):
    """Hold an exclusive lock on dest's folder (no lock file to leave behind; the lock goes when
    the process does, however it ends)."""
    if fcntl is None:
        yield
        return
    fd = os.open(dest.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits while another process holds it
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _download(url: str, dest: Path, expected_size: int | None, sha256: str | None, timeout: float) -> Path:
    dest.unlink(missing_ok=True)  # a file that fails the checks is stale: never leave it looking valid
    part = dest.with_name(dest.name + ".part")

    resume_from = part.stat().st_size if part.is_file() else 0
    if expected_size is not None and resume_from > expected_size:
        part.unlink(missing_ok=True)  # longer than the real file: it cannot be a prefix of it
        resume_from = 0

    try:
        if expected_size is not None and resume_from == expected_size and resume_from > 0:
            size, announced_size = resume_from, None  # already complete: only verify
        else:
            size, announced_size = _fetch(url, part, resume_from, timeout)
        _verify_part(url, part, size, announced_size, expected_size, sha256)
        fsync_file(part)  # on disk before the rename makes it the cached file
        os.replace(part, dest)
        fsync_directory(dest.parent)
    except DownloadError:
        part.unlink(missing_ok=True)
        raise
    return dest
