"""A real gateway, real Freqtrade FreqAI bots, a real simulator and Valkey; a stand-in management server.

The stand-in serves what the gateway fetches from the management server: the token keys
(``/.well-known/jwks.json``) and the model-signing keys (``/.well-known/model-keys.json``), and signs
bundles with the latter as the management server does. The fleet tests' helpers (bus, gateway, settings,
clean-up of bot processes) are reused.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from fastapi import FastAPI

from management_server.security.keys import KeyRing
from shared.bus.messages import ModelBundle
from shared.freqai.bundle import sign_bundle
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.freqai_models import TrainedModels, trained_models
from tests.helpers import serve
from tests.trading_gateway.conftest import Tokens, new_keys, serve_command_keys


@dataclass
class Authority:
    """The management server as the gateway sees it: token keys, model-signing keys."""

    tokens: Tokens
    model_keys: KeyRing

    def sign(self, model_id: uuid.UUID, version: int, sha256: str, size: int) -> str:
        return sign_bundle(self.model_keys.active.private, model_id=model_id, version=version, sha256=sha256, size=size)

    def inline(
        self,
        content: bytes,
        *,
        model_id: uuid.UUID,
        version: int,
        sha256: str,
        size: int,
        signature: str | None = None,
        content_b64: str | None = None,
    ) -> ModelBundle:
        """An inline ``ModelBundle`` (signed with the model key unless ``signature`` is given)."""
        return inline_bundle(
            content,
            model_id=model_id,
            version=version,
            sha256=sha256,
            size=size,
            signature=signature or self.sign(model_id, version, sha256, size),
            content_b64=content_b64,
        )


def inline_bundle(
    content: bytes,
    *,
    model_id: uuid.UUID,
    version: int,
    sha256: str,
    size: int,
    signature: str,
    content_b64: str | None = None,
) -> ModelBundle:
    return ModelBundle(
        model_id=model_id,
        version=version,
        filename=f"model-{model_id}-v{version}.tar.zst",
        sha256=sha256,
        size=size,
        signature=signature,
        content_b64=content_b64 if content_b64 is not None else base64.b64encode(content).decode(),
    )


def authority_app(tokens: KeyRing, models: KeyRing) -> FastAPI:
    app = FastAPI()

    @app.get("/.well-known/jwks.json")
    async def jwks() -> dict[str, Any]:
        return tokens.jwks()

    @app.get("/.well-known/model-keys.json")
    async def model_keys() -> dict[str, Any]:
        return models.jwks()

    serve_command_keys(app)
    return app


@pytest_asyncio.fixture(loop_scope="session", scope="package")
async def authority() -> AsyncIterator[Authority]:
    token_keys, model_keys = new_keys(), new_keys()
    async with serve(authority_app(token_keys, model_keys)) as url:
        yield Authority(Tokens(token_keys, url), model_keys)


@pytest.fixture(scope="package")
def models(tmp_path_factory: pytest.TempPathFactory, simulator: SimulatorProcess) -> TrainedModels:
    return trained_models(tmp_path_factory, simulator.url).both()
