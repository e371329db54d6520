"""Commands that can't be applied are answered COMMAND_REJECTED with a reason a person can act on,
nothing is spawned, and the consumer goes on with the next command."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from pathlib import Path

from shared.bus.messages import (
    BotStarted,
    CommandAccepted,
    CommandRejected,
    ExchangeCredentials,
    UpdateModel,
    UpdateModelData,
)
from shared.sealing import seal_credentials
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.trading_gateway.bots.conftest import make_spec
from tests.trading_gateway.conftest import (
    Bus,
    Tokens,
    bots_root,
    force_exit,
    pause,
    running_gateway,
    settings_for,
    start,
    stop,
)
from trading_gateway.bots.adoption import find_orphans
from trading_gateway.config import GatewaySettings
from trading_gateway.identity import load_or_create


async def test_bad_commands_are_rejected_with_reasons_and_spawn_nothing(
    simulator: SimulatorProcess,
    tokens: Tokens,
    redis_url: str,
    tmp_path: Path,
    cleanup: list[GatewaySettings],
    bus_factory: Callable[[str], Bus],
) -> None:
    # A one-port pool whose port a foreign program holds.
    foreign = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    foreign.bind(("127.0.0.1", 0))
    foreign.listen()
    port = foreign.getsockname()[1]
    settings = settings_for(tmp_path, redis_url, simulator, tokens, bot_port_range_start=port, bot_port_range_end=port)
    cleanup.append(settings)
    bus = bus_factory(settings.gateway_id)
    try:
        async with running_gateway(settings):
            no_class = await bus.send(start(uuid.uuid4(), 1, make_spec(strategy_class="NotInTheSource")))
            other_quote = await bus.send(start(uuid.uuid4(), 1, make_spec(("BTC/USDT", "ETH/BTC"))))
            no_port = await bus.send(start(uuid.uuid4(), 1, make_spec()))
            exchange_key = "key-" + uuid.uuid4().hex
            live_id = uuid.uuid4()
            keys = ExchangeCredentials(key=exchange_key, secret="secret-" + uuid.uuid4().hex)
            identity = load_or_create(settings.gateway_data_dir, settings.gateway_id)  # the gateway's own
            sealed = seal_credentials(identity.sealing_public, settings.gateway_id, live_id, "cred:1", keys)
            live = make_spec(dry_run=False, credentials=sealed)
            live_on_simulator = await bus.send(start(live_id, 1, live))
            ghost = uuid.uuid4()
            pause_unknown = await bus.send(pause(ghost, 1))
            exit_unknown = await bus.send(force_exit(ghost, 1))
            model = await bus.send(
                UpdateModel(
                    source="management",
                    data=UpdateModelData(
                        bot_id=ghost,
                        generation=1,
                        model={
                            "model_id": uuid.uuid4(),
                            "version": 1,
                            "filename": "m.zst",
                            "sha256": "0" * 64,
                            "size": 1,
                            "signature": "c2ln",
                            "content_b64": "AA==",
                        },
                    ),
                )
            )
            last = await bus.send(stop(uuid.uuid4(), 1))  # after all of them: the consumer kept going

            reasons = {}
            for command in (no_class, other_quote, no_port, live_on_simulator, pause_unknown, exit_unknown, model):
                answer = await bus.answer(command)
                assert isinstance(answer, CommandRejected), answer
                assert answer.data.command_id == command.event_id
                reasons[command.event_id] = answer.data.reason
            assert isinstance(await bus.answer(last), CommandAccepted)

            no_class_reason = reasons[no_class.event_id]
            assert "does not define class NotInTheSource at its top level (classes: AlwaysEnter)" in no_class_reason
            assert "pairs not quoted in the stake currency USDT: ETH/BTC" in reasons[other_quote.event_id]
            assert f"no free port for bot {no_port.data.bot_id} in {port}-{port}" in reasons[no_port.event_id]
            assert "1 in use by other programs" in reasons[no_port.event_id]
            assert "FREQFLEET_BOT_PORT_RANGE_START" in reasons[no_port.event_id]
            assert "a live bot can't trade on the exchange simulator" in reasons[live_on_simulator.event_id]
            assert exchange_key not in " ".join(e.model_dump_json() for e in await bus.events())
            assert reasons[pause_unknown.event_id] == f"this gateway has no bot {ghost}: send START_BOT first"
            assert reasons[exit_unknown.event_id] == f"this gateway has no bot {ghost}"
            assert reasons[model.event_id] == f"this gateway has no bot {ghost}: send START_BOT with the model first"

            assert await bus.of(BotStarted) == []
            assert find_orphans(bots_root(settings)) == []
            assert not bots_root(settings).exists() or list(bots_root(settings).iterdir()) == []
    finally:
        foreign.close()
