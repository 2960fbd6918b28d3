"""Debian sources: packages fetched with apt, the package lists, and the catalogs dpkg
installed on the build machine."""

from __future__ import annotations

import re
import shutil
from functools import cache
from pathlib import Path

from tqdm import tqdm

from .common import run


def fetch_packages(work: Path, names: list[str]) -> dict[str, tuple[Path, str]]:
    """apt-get download + dpkg-deb -x each package; returns name -> (root, version)."""
    debs, roots = work / "debs", work / "x"
    debs.mkdir(parents=True, exist_ok=True)
    out = {}
    missing = [n for n in names if not list(debs.glob(f"{n}_*.deb"))]
    if missing:
        run(["apt-get", "download", *missing], cwd=debs)
    for name in tqdm(names, desc="extract debs"):
        deb = sorted(debs.glob(f"{name}_*.deb"))[-1]
        version = run(["dpkg-deb", "-f", str(deb), "Version"]).strip()
        root = roots / name
        if not root.exists():
            tmp = roots / f".{name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            run(["dpkg-deb", "-x", str(deb), str(tmp)])
            tmp.rename(root)
        out[name] = (root, version)
    return out


def fetch_description_lists(work: Path) -> Path:
    """Bookworm package lists with English long descriptions, in a private lists dir.

    The system's apt is configured without Translation files; a private
    ``Dir::State::Lists`` fetches them without touching the system state.
    """
    lists = work / "lists"
    if not list(lists.glob("*bookworm_main_i18n_Translation-en*")):
        (lists / "partial").mkdir(parents=True, exist_ok=True)
        run(
            [
                "apt-get",
                "update",
                "-o",
                "Acquire::Languages=en",
                "-o",
                f"Dir::State::Lists={lists}",
            ]
        )
    return lists


def dpkg_owners() -> dict[str, str]:
    """Installed file path -> owning package (from dpkg's file lists)."""
    owners = {}
    for lst in sorted(Path("/var/lib/dpkg/info").glob("*.list")):
        pkg = lst.stem.split(":")[0]
        for line in lst.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.endswith(".mo") and "/locale/" in line:
                owners[line] = pkg
    return owners


SPDX_LIKE = re.compile(r"^[A-Za-z][\w.+-]*(?:,?\s+(?:or|and|with)\s+[\w.+-]+)*$", re.I)


def package_license(pkg: str) -> str:
    """Licence of a package's main files, from its machine-readable copyright file."""
    fallback = f"see /usr/share/doc/{pkg}/copyright in Debian"
    try:
        text = (Path("/usr/share/doc") / pkg / "copyright").read_text("utf-8", "replace")
    except OSError:
        return fallback
    for para in re.split(r"\n\s*\n", text):
        files = re.search(r"^Files:\s*(.*)$", para, flags=re.M)
        lic = re.search(r"^License:\s*(\S.*)$", para, flags=re.M)
        if files and lic and "*" in files.group(1).split() and SPDX_LIKE.match(lic.group(1)):
            return lic.group(1).strip()
    return fallback


def installed_versions() -> dict[str, str]:
    out = run(["dpkg-query", "-W", "-f", "${Package} ${Version}\n"])
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


@cache
def system_info() -> tuple[dict[str, str], dict[str, str]]:
    """(installed catalog -> owning package, package -> installed version), read once."""
    return dpkg_owners(), installed_versions()


def read_deb822(path: Path) -> list[dict[str, str]]:
    text = run(["/usr/lib/apt/apt-helper", "cat-file", str(path)])
    records = []
    for block in text.split("\n\n"):
        rec, last = {}, None
        for line in block.splitlines():
            if line.startswith((" ", "\t")) and last:
                rec[last] += "\n" + line
            elif ":" in line:
                last, value = line.split(":", 1)
                rec[last] = value.strip()
        if rec:
            records.append(rec)
    return records
