"""A PEP 517 build backend for the handoff package, standard library only:
it writes the wheel (a zip of handoff/ and its .dist-info) and the sdist (a
tar.gz of this directory's sources) itself, so that pip installs the package
from this directory, or from the sdist, with no index reachable.

One source for each fact: the name, summary, Python floor and license come
from pyproject.toml's [project] table, the version from handoff/__init__.py's
__version__. Editable installs are not offered."""
from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tarfile
import time
import zipfile
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "handoff"
# What the sdist holds besides the package, and PKG-INFO, which it writes.
SDIST_FILES = ["pyproject.toml", "_build.py", "README.md", "LICENSE"]

WHEEL = """Wheel-Version: 1.0
Generator: handoff _build
Root-Is-Purelib: true
Tag: py3-none-any
"""


def _project() -> Dict[str, Any]:
    """The [project] table's keys that hold a string or a list of strings.
    (tomllib is Python 3.11's; the table is kept to what this reads.)"""
    with open(os.path.join(HERE, "pyproject.toml"), encoding="utf-8") as f:
        text = f.read()
    table = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    if not table:
        raise ValueError("pyproject.toml: no [project] table")
    out: Dict[str, Any] = {}
    for key, value in re.findall(r"^([A-Za-z][\w-]*)\s*=\s*(.+?)\s*$", table.group(1), re.M):
        if value.startswith('"'):
            out[key] = value.strip('"')
        elif value.startswith("["):
            out[key] = re.findall(r'"([^"]*)"', value)
    for key in ("name", "description", "requires-python", "license", "readme"):
        if key not in out:
            raise ValueError(f"pyproject.toml: [project] has no {key} string")
    return out


def _version() -> str:
    """__version__ in the package's __init__.py, read without importing it."""
    with open(os.path.join(HERE, PACKAGE, "__init__.py"), encoding="utf-8") as f:
        m = re.search(r'^__version__\s*=\s*"([^"]+)"', f.read(), re.M)
    if not m:
        raise ValueError(f"{PACKAGE}/__init__.py: no __version__ = \"...\" line")
    return m.group(1)


def _metadata() -> Tuple[str, str]:
    """The distribution's name-version and its core metadata (METADATA in
    the wheel, PKG-INFO in the sdist): version 2.4, the license as an SPDX
    expression (PEP 639) with the file that states it."""
    p, version = _project(), _version()
    lines = [
        "Metadata-Version: 2.4",
        f"Name: {p['name']}",
        f"Version: {version}",
        f"Summary: {p['description']}",
        f"Requires-Python: {p['requires-python']}",
        f"License-Expression: {p['license']}",
    ]
    lines += [f"License-File: {fn}" for fn in p.get("license-files", [])]
    lines.append("Description-Content-Type: text/markdown")
    with open(os.path.join(HERE, p["readme"]), encoding="utf-8") as f:
        readme = f.read()
    return f"{p['name']}-{version}", "\n".join(lines) + "\n\n" + readme


def _package_files() -> List[str]:
    """The package's files, relative to this directory: its modules and the
    py.typed marker."""
    pkg = os.path.join(HERE, PACKAGE)
    return [f"{PACKAGE}/{fn}" for fn in sorted(os.listdir(pkg)) if fn.endswith(".py") or fn == "py.typed"]


def _read(rel: str) -> bytes:
    with open(os.path.join(HERE, rel), "rb") as f:
        return f.read()


def get_requires_for_build_wheel(config_settings: Optional[Dict[str, Any]] = None) -> List[str]:
    return []


def get_requires_for_build_sdist(config_settings: Optional[Dict[str, Any]] = None) -> List[str]:
    return []


def build_wheel(wheel_directory: str, config_settings: Optional[Dict[str, Any]] = None,
                metadata_directory: Optional[str] = None) -> str:
    """Write the wheel into wheel_directory and return its file name."""
    dist, metadata = _metadata()
    info = f"{dist}.dist-info"
    files = {rel: _read(rel) for rel in _package_files()}
    for fn in _project().get("license-files", []):
        files[f"{info}/licenses/{fn}"] = _read(fn)
    files[f"{info}/METADATA"] = metadata.encode()
    files[f"{info}/WHEEL"] = WHEEL.encode()
    record: List[str] = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    name = f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in files.items():
            z.writestr(path, data)
    return name


def build_sdist(sdist_directory: str, config_settings: Optional[Dict[str, Any]] = None) -> str:
    """Write the sdist into sdist_directory and return its file name: a
    tar.gz of one directory, name-version/, that holds pyproject.toml, this
    backend, the package, README.md, LICENSE and PKG-INFO, from which
    build_wheel builds the same wheel."""
    dist, metadata = _metadata()
    files = {rel: _read(rel) for rel in SDIST_FILES + _package_files()}
    files["PKG-INFO"] = metadata.encode()
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
    name = f"{dist}.tar.gz"
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for rel in sorted(files):
            data = files[rel]
            ti = tarfile.TarInfo(f"{dist}/{rel}")
            ti.size, ti.mtime, ti.mode = len(data), mtime, 0o644
            tar.addfile(ti, io.BytesIO(data))
    return name
