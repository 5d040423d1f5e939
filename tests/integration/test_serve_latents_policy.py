"""``serve --latents deny``: a seeds-only service refuses caller latents, whatever else the body says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from feature_unlearn.serve.errors import ServeError
from feature_unlearn.serve.http import create_app
from tests.helpers import JSON, Z_DIM, config, wait_ready


@pytest.mark.slow
def test_a_seeds_only_service_refuses_latents_and_serves_seeds(artifact: Path) -> None:
    with TestClient(create_app(config(artifact, latents="deny"))) as client:
        wait_ready(client)
        r = client.post("/v1/generate", content=json.dumps({"latents": [[0.0] * Z_DIM]}), headers=JSON)
        assert r.status_code == 403 and r.json()["error"]["code"] == "latents_denied"
        assert "--latents deny" in r.json()["error"]["message"]
        ok = client.post("/v1/generate", content=json.dumps({"n": 2, "seed": 3}), headers=JSON)
        assert ok.status_code == 200 and len(ok.json()["images"]) == 2
        assert client.get("/v1/model").json()["limits"]["latents"] == "deny"


@pytest.mark.slow
def test_latents_are_allowed_by_default_and_the_policy_is_checked(artifact: Path) -> None:
    with TestClient(create_app(config(artifact))) as client:
        wait_ready(client)
        r = client.post("/v1/generate", content=json.dumps({"latents": [[0.0] * Z_DIM]}), headers=JSON)
        assert r.status_code == 200
    with pytest.raises(ServeError, match="--latents 'sometimes': choose from allow, deny"):
        config(artifact, latents="sometimes")
