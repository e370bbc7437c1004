"""Speaker identifiers: a speaker's embedding, encrypted so that only this deployment can
read it, and only for the user and model it was made for.

An identifier is AES-256-GCM over the float32 centroid, with the model id and the job's
`user_id` bound in as associated data: sent back with another user_id or for another model,
authentication fails and nothing is decrypted. Keys come from `SM_SPEAKER_ID_SECRETS_DIR`,
files `s.<n>`: the highest n encrypts, all of them decrypt, so keys rotate.
"""

from __future__ import annotations

import base64
import os
import re
import struct
from pathlib import Path

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"CSI1"
_HEADER = struct.Struct(">4sI12s")  # magic, key number, nonce
# Cosine similarity above which a voice is the enrolled speaker. Measured with CAM++: the
# same studio voice from other prompts 0.93; the closest other voice (a LibriVox reader) 0.53.
MATCH_THRESHOLD = 0.7


class IdentifierRejected(Exception):
    pass


class SpeakerKeys:
    def __init__(self, keys: dict[int, bytes]) -> None:
        self._keys = {n: AESGCM(key) for n, key in keys.items()}

    @classmethod
    def from_dir(cls, folder: str | None) -> SpeakerKeys:
        keys: dict[int, bytes] = {}
        if folder:
            for path in Path(folder).iterdir():
                match = re.fullmatch(r"s\.(\d+)", path.name)
                secret = path.read_bytes().strip() if match and path.is_file() else b""
                if secret:
                    keys[int(match.group(1))] = HKDF(
                        algorithm=hashes.SHA256(), length=32, salt=None, info=b"chorus speaker identifiers"
                    ).derive(secret)
        return cls(keys)

    @property
    def configured(self) -> bool:
        return bool(self._keys)

    @staticmethod
    def _aad(model_id: str, user_id: str | None) -> bytes:
        return b"\0".join([MAGIC, model_id.encode(), (user_id or "").encode()])

    def encrypt(self, embedding: list[float], model_id: str, user_id: str | None) -> str:
        number = max(self._keys)
        nonce = os.urandom(12)
        sealed = self._keys[number].encrypt(
            nonce, np.asarray(embedding, dtype="<f4").tobytes(), self._aad(model_id, user_id))
        return base64.urlsafe_b64encode(_HEADER.pack(MAGIC, number, nonce) + sealed).decode().rstrip("=")

    def decrypt(self, identifier: str, model_id: str, user_id: str | None) -> np.ndarray:
        try:
            raw = base64.urlsafe_b64decode(identifier + "=" * (-len(identifier) % 4))
            magic, number, nonce = _HEADER.unpack_from(raw)
        except (ValueError, struct.error):
            raise IdentifierRejected("not a speaker identifier of this worker") from None
        if magic != MAGIC:
            raise IdentifierRejected("not a speaker identifier of this worker")
        if number not in self._keys:
            raise IdentifierRejected(f"made with secret s.{number}, which this worker does not have")
        try:
            plain = self._keys[number].decrypt(nonce, raw[_HEADER.size:], self._aad(model_id, user_id))
        except InvalidTag:
            raise IdentifierRejected(
                "not valid for this user_id and speaker model, or altered") from None
        return np.frombuffer(plain, dtype="<f4")


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def match(centroids: list[list[float]], enrolled: dict[str, list[np.ndarray]]) -> dict[int, tuple[str, float]]:
    """Diarized speaker index -> (enrolled label, similarity), one label per voice and one
    voice per label, best pairs first, above the match threshold."""
    pairs = []
    for index, centroid in enumerate(centroids):
        c = _unit(np.asarray(centroid, dtype=np.float32))
        if not np.all(np.isfinite(c)):
            continue  # a speaker the pipeline has no embedding for
        for label, embeddings in enrolled.items():
            if embeddings:
                score = max(float(c @ _unit(e)) for e in embeddings)
                pairs.append((score, index, label))
    found: dict[int, tuple[str, float]] = {}
    for score, index, label in sorted(pairs, reverse=True):
        if score >= MATCH_THRESHOLD and index not in found and label not in {v[0] for v in found.values()}:
            found[index] = (label, score)
    return found
