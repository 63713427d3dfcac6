"""File io: atomic writes (a file is either complete or absent, never half-written), output paths checked
before any work, and strict reads of text and CSV files (a `LeadrrgError` naming the file and the line)."""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from leadrrg.errors import LeadrrgError


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    check_output_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the file the permissions open() would
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


@contextlib.contextmanager
def atomic_directory(path: str | Path, suffix: str = ".partial") -> Iterator[Path]:
    """Build a directory in a temporary sibling of `path`; when the block succeeds it replaces `path` as a
    whole (complete or absent, never half-written), and when it raises the sibling is removed."""
    path = Path(path)
    check_output_dir(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path, suffix)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}-", suffix=suffix, dir=path.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700 directories; give it the permissions mkdir would
    try:
        yield tmp
        replace_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_directory(source: str | Path, target: str | Path) -> None:
    """Move the finished directory `source` to `target`, replacing an old (possibly incomplete) one."""
    source, target = Path(source), Path(target)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(source, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remove_stale_partials(path: Path, suffix: str) -> None:
    """Remove the temporary siblings `.NAME.<pid>-*SUFFIX` that `atomic_directory` left when its process was
    killed (their process is gone); those of live processes are left alone."""
    for sibling in path.parent.glob(f".{path.name}.*{suffix}"):
        pid = sibling.name[len(path.name) + 2 :].partition("-")[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(sibling, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------------------------------
# Output paths, checked before the work that fills them


def _check_ancestors(path: Path, what: str) -> None:
    for ancestor in path.absolute().parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise LeadrrgError(f"{what} {path} cannot be created: {ancestor} is a file, not a directory")
            return


def check_output_file(path: str | Path, what: str = "output file") -> None:
    """A file can be written at `path`: it is not a directory, and no ancestor is a file."""
    path = Path(path)
    if path.is_dir():
        raise LeadrrgError(f"{what} {path} is a directory; expected a file path to write")
    _check_ancestors(path, what)


def check_output_dir(path: str | Path, what: str = "output directory") -> None:
    """A directory can be made at `path`: it is not a file, and no ancestor is a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LeadrrgError(f"{what} {path} is a file; expected a directory (or a path to create one)")
    _check_ancestors(path, what)


# --------------------------------------------------------------------------------------------------
# Strict reads


def path_problem(path: str | Path, kind: str = "file") -> str | None:
    """Why `path` is not a readable `kind` ("file" or "directory"): "does not exist", "is a directory", ...;
    None when it is one."""
    path = Path(path)
    if not path.exists():
        return "does not exist"
    if kind == "file" and path.is_dir():
        return "is a directory, not a file"
    if kind == "file" and not path.is_file():
        return "is not a regular file"
    if kind == "directory" and not path.is_dir():
        return "is a file, not a directory"
    return None


def read_text(path: str | Path, what: str, expected: str, gzipped: bool = False) -> str:
    """The UTF-8 text of `path` (a BOM is dropped), or a LeadrrgError: "{what} {path} <problem>; expected ...".
    `gzipped`: a gzip file (recognised by its magic bytes) is decompressed first."""
    path = Path(path)
    problem = path_problem(path)
    if problem:
        raise LeadrrgError(f"{what} {path} {problem}; expected {expected}")
    try:
        data = path.read_bytes()
        if gzipped and data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise LeadrrgError(f"{what} {path} cannot be read ({reason}); expected {expected}") from None
    return decode_utf8(data, path, what, expected)


def read_text_maybe_gzip(path: str | Path, what: str, expected: str) -> str:
    """`read_text` of a file that may be gzipped (PhysioNet ships `*.csv.gz`)."""
    return read_text(path, what, expected, gzipped=True)


def strip_gzip_suffix(path: str | Path) -> Path:
    """`labels.csv.gz` -> `labels.csv` (the name that tells the format); other names unchanged."""
    path = Path(path)
    return path.with_suffix("") if path.suffix.lower() == ".gz" else path


def decode_utf8(data: bytes, path: str | Path, what: str, expected: str) -> str:
    """UTF-8 `data` read from `path` as text (a BOM is dropped), or a LeadrrgError naming the line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise LeadrrgError(
            f"{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}); "
            f"expected {expected}, encoded as UTF-8"
        ) from None


def text_lines(text: str) -> list[str]:
    """Lines split at newlines only (str.splitlines also splits at U+2028 and friends, which reports may hold)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def read_csv_rows(path: str | Path, text: str, delimiter: str = ",") -> list[tuple[int, list[str]]]:
    """[(line, fields)] of every non-blank row of CSV `text` read from `path`, header included. An unterminated
    quote or a stray quote is a LeadrrgError naming the line."""
    csv.field_size_limit(1 << 30)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for fields in reader:
            line, start = start, reader.line_num + 1
            if fields:
                rows.append((line, fields))
    except csv.Error as exc:
        problem = (
            "a quoted field that starts here is never closed"
            if "end of data" in str(exc)
            else f"malformed CSV ({exc})"
        )
        raise LeadrrgError(f"{path}: line {start}: {problem}; expected well-formed CSV") from None
    return rows


def read_csv_table(
    path: str | Path, text: str, delimiter: str = ","
) -> tuple[list[str], list[tuple[int, dict]]]:
    """(header, [(line, row dict)]) of CSV `text` read from `path`; blank lines skipped. An unterminated quote,
    a stray quote or a row whose field count differs from the header's is a LeadrrgError naming the line,
    never rows silently merged or shifted."""
    rows = read_csv_rows(path, text, delimiter)
    if not rows:
        return [], []
    header = rows[0][1]
    table: list[tuple[int, dict]] = []
    for line, fields in rows[1:]:
        if len(fields) != len(header):
            raise LeadrrgError(
                f"{path}: line {line} has {len(fields)} fields but the header has {len(header)}; "
                "expected one field per column (quote fields that hold the delimiter)"
            )
        table.append((line, dict(zip(header, fields))))
    return header, table


def json_lines(path: str | Path, text: str, expected: str) -> Iterator[tuple[int, Any]]:
    """(line number, value) for each non-blank line of JSON-lines `text` read from `path`. A line that is not
    JSON is a LeadrrgError "{path}, line N: not valid JSON (...); expected {expected}"."""
    for number, line in enumerate(text_lines(text), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LeadrrgError(
                f"{path}, line {number}: not valid JSON ({exc.msg}); expected {expected}"
            ) from None
        yield number, value


def json_objects(path: str | Path, text: str, expected: str) -> Iterator[tuple[int, dict]]:
    """Like `json_lines`, but every line must hold a JSON object."""
    for number, value in json_lines(path, text, expected):
        if not isinstance(value, dict):
            raise LeadrrgError(f"{path}, line {number}: a JSON {type(value).__name__}; expected {expected}")
        yield number, value


def json_value(text: str, name: str, expected: str) -> Any:
    """The JSON value of `text` read from `name`, or a LeadrrgError "{name} is not valid JSON (...); expected ..."."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise LeadrrgError(f"{name} is not valid JSON ({exc}); expected {expected}") from None


def read_json_object(path: str | Path, what: str, expected: str) -> dict:
    """The JSON object in the file `path`, or a LeadrrgError "{what} {path} <problem>; expected {expected}"
    (missing, unreadable, not UTF-8, not JSON, or JSON that is not an object)."""
    value = json_value(read_text(path, what, expected), f"{what} {path}", expected)
    if not isinstance(value, dict):
        raise LeadrrgError(f"{what} {path} holds a JSON {type(value).__name__}; expected {expected}")
    return value


# --------------------------------------------------------------------------------------------------
# Outputs that would destroy the command's own inputs


def check_not_input(out: str | Path, inputs: Iterable[str | Path], what: str = "--out") -> None:
    """Refuse (LeadrrgError) an output file `out` that is one of the command's input files `inputs`: the same
    file once symlinks are followed, or under another name (a hard link): `os.path.samefile`. Writing `out`
    would replace that input. Inputs that do not exist are ignored, and so is an `out` that does not exist yet
    (it cannot be an existing input). `what` names the output in the message, e.g. "--out"."""
    out = Path(out)
    try:
        target = out.stat()
    except OSError:
        return
    for source in inputs:
        try:
            found = os.stat(source)
        except OSError:
            continue
        if (found.st_dev, found.st_ino) == (target.st_dev, target.st_ino):
            same = "" if Path(source).absolute() == out.absolute() else f" (the same file as {source})"
            raise LeadrrgError(
                f"{what} {out} is an input of this command{same}: writing it would replace that input; "
                f"expected a new output path, apart from the files the command reads"
            )


def check_apart(out: str | Path, source: str | Path, what: str, source_what: str) -> None:
    """Refuse (LeadrrgError) an output directory `out` that is the directory `source`, one of its ancestors
    (replacing `out` would delete `source`) or inside it (symlinks followed). `source_what` names `source` in
    the message, e.g. "the run directory"."""
    out_path, source_path = Path(out).resolve(), Path(source).resolve()
    if out_path == source_path:
        problem = f"is {source_what} itself"
    elif out_path in source_path.parents:
        problem = f"contains {source_what} {source} (replacing it would delete {source_what})"
    elif source_path in out_path.parents:
        problem = f"is inside {source_what} {source}"
    else:
        return
    raise LeadrrgError(f"{what} {out} {problem}; expected a directory apart from {source_what}")


# --------------------------------------------------------------------------------------------------
# Outputs the file system refuses (read-only, full, forbidden), and locks against a second writer


def output_error(exc: OSError, path: str | Path, what: str = "output") -> LeadrrgError:
    """The LeadrrgError for an OSError met while writing the output `path` (`what` names it)."""
    where = f" at {exc.filename}" if exc.filename and Path(exc.filename) != Path(path) else ""
    return LeadrrgError(
        f"cannot write {what} {path} ({exc.strerror or exc}{where}); expected a writable folder with free space"
    )


def check_writable(path: str | Path, what: str = "output") -> None:
    """Probe before the work that the output `path` (a file, or a folder written as a whole: both are made beside
    it first) can be written: one byte to a temporary file in its folder (or the nearest existing one that would
    hold it). A read-only, full or forbidden folder is `output_error`'s LeadrrgError naming `path`."""
    folder = Path(path).absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        fd, probe = tempfile.mkstemp(prefix=".leadrrg-probe-", dir=folder)
        try:
            os.write(fd, b"\0")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise output_error(exc, path, what) from None


@contextlib.contextmanager
def exclusive_lock(lock_path: str | Path, what: str) -> Iterator[None]:
    """Hold `fcntl.flock` on `lock_path` (holding this PID; removed after) for the block. Held by another process:
    a LeadrrgError naming `what` and its PID. A file system without locks runs the block unlocked."""
    import fcntl

    lock_path = Path(lock_path)
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise output_error(exc, lock_path.parent, what) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise LeadrrgError(
                f"{what} is in use by another leadrrg process{f' (PID {pid})' if pid.isdigit() else ''}, which "
                f"holds {lock_path}; expected one at a time: wait for it to finish, stop it, or choose another path"
            ) from None
        except OSError:  # no locks on this file system
            break
        with contextlib.suppress(FileNotFoundError):
            if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                break  # else its previous holder removed it between our open and our lock: again
        os.close(fd)
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                os.unlink(lock_path)
        os.close(fd)
