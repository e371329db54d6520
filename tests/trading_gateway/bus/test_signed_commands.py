"""Only commands the management server signed make a gateway act: forged ones written straight into Valkey
start nothing and are dead-lettered with a reason a person can read; a genuine one published again (no answer
reached the management server) is applied once and answered again."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.bus.messages import BotStarted, CommandAccepted
from shared.bus.publisher import ENVELOPE_FIELD, entry_fields
from shared.bus.signing import CommandSigner
from shared.bus.streams import commands_stream
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.helpers import async_wait_for
from tests.trading_gateway.conftest import (
    COMMAND_KEYS,
    COMMAND_SIGNER,
    Bus,
    Tokens,
    bearer,
    new_keys,
    running_gateway,
    settings_for,
    spec_for,
    start,
    stop,
)
from trading_gateway.config import GatewaySettings

pytestmark = pytest.mark.slow


async def test_forged_commands_start_nothing_and_are_dead_lettered(
    simulator: SimulatorProcess,
    tokens: Tokens,
    redis_url: str,
    tmp_path: Path,
    cleanup: list[GatewaySettings],
    bus_factory: Callable[[str], Bus],
) -> None:
    settings = settings_for(tmp_path, redis_url, simulator, tokens)
    cleanup.append(settings)
    bus = bus_factory(settings.gateway_id)
    stream = commands_stream(settings.gateway_id)
    stranger = new_keys().active
    forger = CommandSigner(stranger.private, stranger.kid)
    same_kid = CommandSigner(stranger.private, COMMAND_KEYS.active.kid)  # another key claiming the real kid

    def forged(signer: CommandSigner | None, *, for_stream: str = stream, at_ms: int | None = None) -> dict[str, str]:
        fields = entry_fields(start(uuid.uuid4(), 1, spec_for()))
        if signer is not None:
            fields |= signer.fields(for_stream, fields[ENVELOPE_FIELD], now_ms=at_ms)
        return fields

    async with running_gateway(settings) as gw:
        # A genuine command goes through (and the gateway has fetched the command keys).
        genuine = await bus.send(stop(uuid.uuid4(), 1))
        first = await bus.answer(genuine)
        assert isinstance(first, CommandAccepted)
        [(genuine_id, genuine_fields)] = await bus.redis.xrange(stream)

        # Published again by the management server (no answer had reached it: the answer may be what Redis lost),
        # signed anew: applied once, answered again with the same answer.
        await bus.send(genuine)

        async def answered_twice() -> list[CommandAccepted] | None:
            answers = [a for a in await bus.of(CommandAccepted) if a.data.command_id == genuine.event_id]
            return answers if len(answers) == 2 else None

        again = await async_wait_for(answered_twice, timeout=10, what="the command answered again")
        assert [a.event_id for a in again] == [first.event_id] * 2
        assert gw.app.state.command_consumer.stats.duplicates == 1  # not applied twice
        entries = await bus.redis.xrange(stream)
        genuine_fields = entries[0][1]

        valid_for_other_bot = forged(COMMAND_SIGNER)
        envelope = json.loads(valid_for_other_bot[ENVELOPE_FIELD])
        envelope["data"]["bot_id"] = str(uuid.uuid4())
        valid_for_other_bot[ENVELOPE_FIELD] = json.dumps(envelope)
        attempts = {
            "no signature": (forged(None), "not signed by the management server"),
            "an unknown key": (forged(forger), "which the management server does not publish"),
            "another key under the real kid": (forged(same_kid), "does not match"),
            "signed for another gateway": (
                forged(COMMAND_SIGNER, for_stream=commands_stream("gw-other")),
                "does not match",
            ),
            "signed for another bot": (valid_for_other_bot, "does not match"),
            "expired": (forged(COMMAND_SIGNER, at_ms=int(time.time() * 1000) - 2 * 3600 * 1000), "too old to act on"),
            "a replay": ({k.decode(): v.decode() for k, v in genuine_fields.items()}, "a replay"),
        }
        for fields, _ in attempts.values():
            await bus.redis.xadd(stream, fields)  # type: ignore[arg-type]

        async def all_dead() -> list[dict[bytes, bytes]] | None:
            letters = [f for _, f in await bus.redis.xrange(stream + ":dead")]
            return letters if len(letters) == len(attempts) else None

        letters = await async_wait_for(all_dead, timeout=30, what="every forged command dead-lettered")
        reasons = [letter[b"reason"].decode() for letter in letters]
        for what, (_, expected) in attempts.items():
            assert sum(expected in r for r in reasons) >= 1, (what, expected, reasons)
        assert not await bus.of(BotStarted)
        listed = await gw.http.get("/api/v1/bots", headers=bearer(tokens.mint("admin")))
        assert listed.json()["bots"] == []
        metrics = (await gw.http.get("/metrics")).text
        assert 'freqfleet_commands_refused_total{reason="replayed"}' in metrics
        assert genuine_id not in [letter[b"entry_id"].decode() for letter in letters]
