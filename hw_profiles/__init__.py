"""Hardware profiles: one TOML file per target, checked against a schema (``schema.py``).

    import hw_profiles
    p = hw_profiles.load("a100_sxm4_40gb")     # a packaged profile, a user's, or a path to a .toml
    hw_profiles.names()                        # every profile that load() can find, plus "host"
    hw_profiles.host()                         # this machine: detected, calibrated when measured

User profiles: drop ``NAME.toml`` into the folder named by ``$TILEC_PROFILES_DIR``; it shadows
a packaged profile of the same name.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from .schema import MemoryLevel, Profile, ProfileError, load_file, profile_from_dict

PACKAGE_DIR = Path(__file__).resolve().parent

__all__ = ["MemoryLevel", "Profile", "ProfileError", "load", "names", "host", "load_file", "search_dirs",
           "available"]


def search_dirs() -> list[Path]:
    """Where profiles are looked for, first match wins: ``$TILEC_PROFILES_DIR``, then the package."""
    dirs = []
    user = os.environ.get("TILEC_PROFILES_DIR")
    if user:
        dirs += [Path(d) for d in user.split(os.pathsep) if d]
    return dirs + [PACKAGE_DIR]


def names() -> list[str]:
    found = {p.stem for d in search_dirs() if d.is_dir() for p in d.glob("*.toml")}
    return sorted(found | {"host"})


_cache: dict[tuple[str, float], Profile] = {}


def load(name_or_path: str | os.PathLike | Profile) -> Profile:
    """A profile by name (``names()``) or by path to a ``.toml`` file; a Profile passes through."""
    if isinstance(name_or_path, Profile):
        return name_or_path
    text = str(name_or_path)
    if text == "host":
        return host()
    path = Path(text)
    if text.endswith(".toml") or os.sep in text:
        if not path.is_file():
            raise ProfileError(text, "-", "no such profile file")
        return load_file(path)
    for d in search_dirs():
        candidate = d / f"{text}.toml"
        if candidate.is_file():
            key = (str(candidate), candidate.stat().st_mtime)
            if key not in _cache:
                _cache[key] = load_file(candidate, expected_name=text)
            return _cache[key]
    from tilec.errors import TilecError
    raise TilecError(f"unknown hardware profile {text!r}; known: {', '.join(names())} "
                     f"(or a path to a .toml file; user profiles go in $TILEC_PROFILES_DIR)")


_reported: set[str] = set()


def available() -> list[Profile]:
    """Every profile that loads, by name; one that does not (a bad TOML in
    ``$TILEC_PROFILES_DIR``) is reported once in a warning and skipped, so the rest still serve."""
    from tilec.errors import TilecError
    out = []
    for name in names():
        try:
            out.append(load(name))
        except TilecError as e:
            if str(e) not in _reported:
                _reported.add(str(e))
                warnings.warn(f"tilec: skipping profile {name!r}: {e}", stacklevel=2)
    return out


def host() -> Profile:
    """This machine, detected; calibrated figures replace estimates when
    ``tilec profiles calibrate`` has written ``<cache dir>/host_profile.toml``."""
    from .hostdetect import host_profile
    return host_profile()
