"""The model behind the HTTP service, as LitServe-style hooks.

    api = GeneratorAPI(config)
    api.setup("auto")                       # once: load the artifact on ONNX Runtime
    req = api.decode_request(body)          # per request: JSON object -> Latents (n and seed, or z)
    z = api.batch(reqs)                     # per batch: the merged requests' latents [N, z_dim]
    out = api.predict(z)                    # per batch: the guarded model
    files = api.encode_batch(out, raw)      # per batch: pixels -> PNG files (raw rows: the arrays as they are)
    api.encode_response(files_slice, fmt)   # per request: JSON with base64 PNGs, one raw PNG, or one .npy

``batch``, ``predict`` and ``encode_batch`` run in the batcher's worker thread (``run_batch``), so
the event loop only parses requests and writes responses.

The guard is inside the graph and its mode comes from the artifact's manifest: the request
schema has no field that could touch it, and unknown fields are refused.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from feature_unlearn.serve.batching import Outputs
from feature_unlearn.serve.config import ServeConfig
from feature_unlearn.serve.errors import ApiError, ServeError
from feature_unlearn.serve.png import encode_pngs
from feature_unlearn.serve.policy import RowSource
from feature_unlearn.serve.protocol import NPY
from feature_unlearn.serve.runtime import LATENT_BOUND, ModelLoadError, SafeGenerator

SEED_MAX = 2**63 - 1
FIELDS = "n, seed and latents"
JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


class GenerateRequest(BaseModel):
    """POST /v1/generate: ``{"n": 4, "seed": 0}`` (seed optional) or ``{"latents": [[...], ...]}``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    n: Optional[int] = Field(
        None, description="Images to draw from N(0, I): 1 to the per-request limit (GET /v1/model)."
    )
    seed: Optional[int] = Field(None, ge=0, le=SEED_MAX, description="With n: the same seed gives the same images.")
    latents: Optional[list[list[float]]] = Field(None, description="Rows of z_dim finite numbers, one image each.")


class GenerateResponse(BaseModel):
    images: list[str] = Field(description="Base64-encoded PNGs, one per image.")
    flagged: list[bool] = Field(description="The latent held the removed feature (its score exceeded the threshold).")
    score: list[float] = Field(description="The guard's score p(z) per image.")
    guard_mode: str = Field(description="The artifact's guard: shift, flag or off.")
    image_check: Optional[dict[str, Any]] = Field(
        None,
        description="Artifacts with an image check: the policy, and per image its flag, score and what the "
        "policy did (pass, resampled, blanked).",
    )


def sample_latents(n: int, seed: Optional[int], z_dim: int) -> np.ndarray:
    """The runtime's seeding: ``SafeGenerator.generate(n=n, seed=seed)`` draws exactly these rows."""
    return np.random.default_rng(seed).standard_normal((n, z_dim), dtype=np.float32)


@dataclass(frozen=True)
class Latents:
    """A checked request: ``n`` rows to draw with ``seed``, or the rows ``z`` as given."""

    n: int
    seed: Optional[int] = None
    z: Optional[np.ndarray] = None
    fmt: str = "json"  # the response format (serve.protocol.response_format): "npy" skips PNG encoding

    def __len__(self) -> int:
        return self.n

    def rows(self, z_dim: int) -> np.ndarray:
        return self.z if self.z is not None else sample_latents(self.n, self.seed, z_dim)

    def sources(self) -> list[Optional[RowSource]]:
        """Per row: a seeded draw the image-check policy may redraw, or None for a caller's latent."""
        return [None] * self.n if self.z is not None else [RowSource(self.seed, i) for i in range(self.n)]


# Stored (level 0) PNGs encode ~9x faster than zlib level 1 (0.006 vs 0.050 ms per 32x32 RGB image, measured),
# and the zoo's faces shrink only 4% at level 1: compressing pays only where the images do compress.
INCOMPRESSIBLE = 0.8


def png_level(images: np.ndarray) -> int:
    """0 (stored) when zlib level 1 leaves these sample images above ``INCOMPRESSIBLE`` of their size, else 1."""
    raw = sum(len(f) for f in encode_pngs(images, 0))
    return 0 if sum(len(f) for f in encode_pngs(images, 1)) > INCOMPRESSIBLE * raw else 1


def _npy_response(
    images: np.ndarray, flagged: np.ndarray, scores: np.ndarray, mode: str, check: Optional[dict[str, Any]]
) -> Response:
    """Every image as one uint8 [N, H, W, C] .npy array (``numpy.load`` reads it, no pickle); the per-image fields
    as comma-separated headers in the same order."""
    body = io.BytesIO()
    np.lib.format.write_array(body, np.ascontiguousarray(images), allow_pickle=False)
    headers = {
        "X-Shape": ",".join(str(d) for d in images.shape),
        "X-Flagged": ",".join("1" if f else "0" for f in flagged),
        "X-Score": ",".join(repr(float(s)) for s in scores),
        "X-Guard-Mode": mode,
        **({"X-Image-Check": ",".join(check["action"])} if check else {}),
    }
    return Response(body.getvalue(), media_type=NPY, headers=headers)


def _invalid(code: str, message: str) -> ApiError:
    return ApiError(422, code, message)


def _explain(exc: ValidationError) -> ApiError:
    """The first problem pydantic found, naming the field (never echoing more than a short value)."""
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    if first["type"] == "extra_forbidden":
        return _invalid(
            "unknown_field",
            f"unknown field {where!r}: the body takes only {FIELDS} "
            "(the guard mode is fixed by the model artifact)" + more,
        )
    value = first.get("input")
    shown = f", got {value!r}" if isinstance(value, (int, float, str, bool)) and len(repr(value)) <= 40 else ""
    return _invalid(
        f"invalid_{first['loc'][0]}" if first["loc"] else "invalid_body", f"{where}: {first['msg']}{shown}{more}"
    )


class GeneratorAPI:
    """setup / decode_request / predict / encode_response over one SafeGenerator."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.gen: Optional[SafeGenerator] = None
        self.png_level = 1  # zlib level of the PNGs; warm() measures whether compressing is worth it

    def setup(self, device: str) -> None:
        """Load the artifact (ModelLoadError -> ServeError); called once per process."""
        try:
            self.gen = SafeGenerator.load(
                self.config.artifact,
                providers=device,
                threads=self.config.ort_threads,
                max_batch=max(self.config.max_batch, self.config.max_images),
                pin=self.config.pin,
                on_flagged=self.config.on_flagged,
                fp32_below=self.config.fp32_below,
                compile_program=not self.config.eager_program,
            )
        except (ModelLoadError, ValueError) as exc:
            raise ServeError(str(exc)) from None

    @property
    def model(self) -> SafeGenerator:
        if self.gen is None:
            raise ApiError(503, "not_ready", "the model is still loading; poll GET /readyz")
        return self.gen

    def warm(self) -> None:
        """Run the largest and the smallest batch once so the first requests pay no start-up cost."""
        for k in (max(self.config.max_batch, self.config.max_images), 1):
            self.run_batch([Latents(k, seed=0)])
        self.png_level = png_level(self.predict(*self.batch([Latents(16, seed=0)]))[0])

    def decode_request(self, body: Any) -> Latents:
        """A parsed JSON body -> the latents it asks for; ApiError(422) names what is wrong."""
        if not isinstance(body, dict):
            kind = JSON_KINDS.get(type(body), type(body).__name__)
            raise _invalid(
                "invalid_body", f'the body must be a JSON object such as {{"n": 4, "seed": 0}}, got a JSON {kind}'
            )
        try:
            req = GenerateRequest.model_validate(body)
        except ValidationError as exc:
            raise _explain(exc) from None
        if req.latents is not None:
            if self.config.latents == "deny":
                raise ApiError(
                    403,
                    "latents_denied",
                    'this service takes seeds only (serve --latents deny): send {"n": 4, "seed": 0}',
                )
            if req.n is not None or req.seed is not None:
                raise _invalid("invalid_body", "give latents, or n (and seed): not both")
            z = self._latents(req.latents)
            return Latents(len(z), z=z)
        if req.n is None:
            raise _invalid(
                "invalid_body",
                f'give n (and optionally seed) or latents, e.g. {{"n": 4, "seed": 0}}; the body takes only {FIELDS}',
            )
        self._check_count("n", req.n, "invalid_n")
        return Latents(req.n, req.seed)

    def _check_count(self, what: str, k: int, code: str) -> None:
        if not 1 <= k <= self.config.max_images:
            raise _invalid(code, f"{what} = {k}: must be between 1 and {self.config.max_images} images per request")

    def _latents(self, rows: list[list[float]]) -> np.ndarray:
        z_dim = self.model.z_dim
        if not rows:
            raise _invalid("invalid_latents", f"latents is empty: give at least one row of {z_dim} numbers")
        self._check_count("latents rows", len(rows), "invalid_latents")
        for i, row in enumerate(rows):
            if len(row) != z_dim:
                raise _invalid(
                    "invalid_latents", f"latents row {i} has {len(row)} numbers; this model's z_dim is {z_dim}"
                )
        with np.errstate(over="ignore"):
            z = np.asarray(rows, dtype=np.float32)
        bad = ~np.isfinite(z).all(axis=1)
        if bad.any():
            raise _invalid(
                "invalid_latents",
                f"latents hold NaN, infinity or a value beyond float32 range in {int(bad.sum())} "
                f"of {len(z)} rows (first: row {int(np.argmax(bad))})",
            )
        # Finite is not enough: ±3.4e38 overflows p(z) = z·û to inf (a 500, or X-Score: inf and a black PNG).
        big = (np.abs(z) > LATENT_BOUND).any(axis=1)
        if big.any():
            raise _invalid(
                "invalid_latents",
                f"latents exceed the bound |z_i| <= {LATENT_BOUND:g} in {int(big.sum())} of {len(z)} "
                f"rows (first: row {int(np.argmax(big))}); N(0, I) draws stay within [-7, 7]",
            )
        return z

    def batch(self, requests: list[Latents]) -> tuple[np.ndarray, list[Optional[RowSource]]]:
        """The merged requests' latents in order, and where each row came from (seeded draws happen here)."""
        rows = [r.rows(self.model.z_dim) for r in requests]
        sources = [s for r in requests for s in r.sources()]
        return (rows[0] if len(rows) == 1 else np.concatenate(rows)), sources

    def predict(self, z: np.ndarray, sources: list[Optional[RowSource]]) -> Outputs:
        """(images uint8 [N, H, W, C], flagged bool [N], scores float32 [N]); with an image check also
        (image_flagged bool [N], image_scores float32 [N], actions str [N]) after the load-time policy."""
        out = self.model.generate_rows(z, sources)
        if out.actions is None:
            return out.images, out.flagged, out.scores
        assert out.image_flagged is not None and out.image_scores is not None
        return out.images, out.flagged, out.scores, out.image_flagged, out.image_scores, out.actions

    def encode_batch(self, outputs: Outputs, raw: Optional[np.ndarray] = None) -> Outputs:
        """The images as PNG files, or for ``raw`` rows (bool [N]) the uint8 image itself; an object array, so
        the batcher can slice it per request."""
        images = outputs[0]
        raw = np.zeros(len(images), dtype=bool) if raw is None else raw
        files = np.empty(len(images), dtype=object)
        encode = np.flatnonzero(~raw)
        for i, png in zip(encode, encode_pngs(images[encode], self.png_level), strict=True):
            files[i] = png
        for i in np.flatnonzero(raw):
            files[i] = images[i]
        return (files, *outputs[1:])

    def run_batch(self, requests: list[Latents]) -> Outputs:
        raw = np.concatenate([np.full(len(r), r.fmt == "npy") for r in requests])
        return self.encode_batch(self.predict(*self.batch(requests)), raw)

    def encode_response(self, outputs: Outputs, fmt: str) -> Response:
        files, flagged, scores = outputs[:3]
        check = self._image_check(outputs)
        mode = self.guard_mode
        if fmt == "npy":
            return _npy_response(np.stack(list(files)), flagged, scores, mode, check)
        if fmt == "png":
            headers = {
                "X-Flagged": str(bool(flagged[0])).lower(),
                "X-Score": repr(float(scores[0])),
                "X-Guard-Mode": mode,
                **({"X-Image-Check": check["action"][0]} if check else {}),
            }
            return Response(files[0], media_type="image/png", headers=headers)
        body = {
            "images": [base64.b64encode(f).decode("ascii") for f in files],
            "flagged": flagged.tolist(),
            "score": scores.astype(float).tolist(),
            "guard_mode": mode,
        }
        return JSONResponse({**body, **({"image_check": check} if check else {})})

    def _check_info(self) -> Optional[dict[str, Any]]:
        if not self.model.has_image_check:
            return None
        info = self.model.manifest["info"].get("image_check", {})
        keys = ("features", "threshold", "recall", "false_positive_rate", "flag_rate_served")
        return {"policy": self.model.on_flagged, **{k: info.get(k) for k in keys}}

    def _image_check(self, outputs: Outputs) -> Optional[dict[str, Any]]:
        """What the image check saw and the policy did; a rejected request is a 422 here."""
        if len(outputs) == 3:
            return None
        image_flagged, image_scores, actions = outputs[3:]
        rejected = int((actions == "rejected").sum())
        if rejected:
            raise ApiError(
                422,
                "image_rejected",
                f"the image check flagged {rejected} of {len(actions)} images; this service rejects them "
                "(serve --on-flagged reject)",
            )
        return {
            "policy": self.model.on_flagged,
            "flagged": image_flagged.astype(bool).tolist(),
            "score": image_scores.astype(float).tolist(),
            "action": [str(a) for a in actions],
        }

    @property
    def guard_mode(self) -> str:
        return str(self.model.guard.get("mode", "off"))

    def model_info(self) -> dict[str, Any]:
        """The manifest's public part (the guard's direction and local paths stay private)."""
        gen, m = self.model, self.model.manifest
        h, w, c = gen.image_shape
        guard = gen.guard
        # One guard row per direction: a feature removed with k directions is listed k times in the manifest.
        features = list(dict.fromkeys(str(f) for f in m.get("features") or []))
        return {
            "name": m.get("name"),
            "z_dim": gen.z_dim,
            "image": {"height": h, "width": w, "channels": c, "format": "png", "png_zlib_level": self.png_level},
            "guard": {
                "mode": guard.get("mode", "off"),
                "threshold": guard.get("threshold"),
                "threshold_precision": guard.get("threshold_precision"),
                "verified": guard.get("verified", False),
            },
            "feature": ",".join(features) or m["info"].get("feature"),
            "features": features,
            "base_model": m["info"].get("base_model"),
            "sha256": gen.sha256,
            "image_check": self._check_info(),
            "precision": m.get("precision"),
            "format_version": m.get("format_version"),
            "provider": gen.provider,
            "fp32_below": gen.fp32_below,  # bf16: smaller batches run the fp32 graph (None: one backend)
            "limits": {
                "max_images": self.config.max_images,
                "max_batch": self.config.max_batch,
                "max_body_bytes": self.config.max_body_bytes,
                "timeout_s": self.config.timeout_s,
                "latents": self.config.latents,
            },
        }
