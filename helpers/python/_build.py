"""A PEP 517 build backend for the handoff package, standard library only:
it writes the wheel (a zip of handoff/ and its .dist-info) itself, so that
pip installs the package from this directory with no index reachable.
Editable installs and sdists are not offered."""
import base64
import hashlib
import os
import zipfile

NAME, VERSION = "handoff", "0.1.0"
DIST = f"{NAME}-{VERSION}"
HERE = os.path.dirname(os.path.abspath(__file__))

METADATA = f"""Metadata-Version: 2.1
Name: {NAME}
Version: {VERSION}
Summary: Lossless drains for Python servers under handoff run, systemd socket activation, or on their own
Requires-Python: >=3.9
"""
WHEEL = """Wheel-Version: 1.0
Generator: handoff _build
Root-Is-Purelib: true
Tag: py3-none-any
"""


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    """Write the wheel into wheel_directory and return its file name."""
    files = {}
    pkg = os.path.join(HERE, NAME)
    for fn in sorted(os.listdir(pkg)):
        if fn.endswith(".py"):
            with open(os.path.join(pkg, fn), "rb") as f:
                files[f"{NAME}/{fn}"] = f.read()
    files[f"{DIST}.dist-info/METADATA"] = METADATA.encode()
    files[f"{DIST}.dist-info/WHEEL"] = WHEEL.encode()
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{DIST}.dist-info/RECORD,,")
    files[f"{DIST}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    name = f"{DIST}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in files.items():
            z.writestr(path, data)
    return name
