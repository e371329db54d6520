"""FreqAI models on the gateway: receive, install, swap into running bots, acknowledge, roll back, predict.

- **Receiving** (START_BOT with ``freqai_model``, UPDATE_MODEL): :class:`~trading_gateway.freqai.store.ModelStore`
  verifies size, signature, transfer, hash and archive before anything lands where a bot loads from; then
  the model must fit the bot (same timeframe, a model for each of its pairs). A refusal publishes
  MODEL_REJECTED with the reason (and the command is answered COMMAND_REJECTED); the bot keeps its model.
- **Installing** writes the bot's ``pair_dictionary.json`` and install marker (:mod:`.installs`). When the
  model keeps the bot's FreqAI config (same class, same features), the running bot swaps it in by itself,
  in the same process (:mod:`shared.freqai.hotswap`). When it changes the config (another class, other
  features, a bot's first model), the config is rendered again and applied with ``reload_config``: the same
  process again, its worker re-initialised. A stopped bot loads it when it starts.
- **MODEL_LOADED** only once the bot's acknowledgement (written by the running process, pid checked) shows
  every pair predicting with the new install; its ``load_seconds`` run from the install to that moment. A
  bot that can't use the files (they fail to load or to predict) keeps predicting with its previous model;
  the gateway then installs that previous version again, so disk and memory agree, and sends MODEL_REJECTED.
  Acknowledgements are watched closely for ``FREQFLEET_MODEL_LOAD_TIMEOUT`` seconds after an install, and at
  every status poll after that.
- **ROLLBACK_MODEL** installs an earlier version the bot had loaded (the one before the current, or the
  named one) from the store: no transfer, within seconds. It needs the version still in the store, which
  keeps every bot's last ``FREQFLEET_MODEL_HISTORY`` versions.
- **Predictions** are read from the bot's own REST API (``pair_candles``): the newest analysed candle's
  FreqAI columns per pair, and the install that made them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from shared.bus.messages import (
    BotSpec,
    ModelBundle,
    ModelLoaded,
    ModelLoadedData,
    ModelRejected,
    ModelRejectedData,
    RollbackModelData,
    UpdateModelData,
)
from shared.freqai.bundle import BundleError
from shared.freqai.live import ModelRuntime, utcnow
from shared.freqai.transfer import ChunkStore
from shared.logging import get_logger
from trading_gateway.bus.events import EventPublisher
from trading_gateway.config import GatewaySettings
from trading_gateway.fleet.bot import ManagedBot
from trading_gateway.freqai import installs
from trading_gateway.freqai.installs import InstallRecord
from trading_gateway.freqai.keys import ModelKeySource
from trading_gateway.freqai.store import IncompatibleBundle, ModelStore, StoredBundle

log = get_logger(__name__)

MODELS_DIR = "models"
WATCH_POLL = 0.2
MODEL_EVENTS = uuid.UUID("6f1d2a8e-41c3-4c57-9a0e-3b8f7d2c1e55")  # namespace of model event ids


class ModelRefused(Exception):
    """A model command that can't be applied; the message says why (MODEL_REJECTED was sent when it was a model)."""


@dataclass(frozen=True)
class ModelDelivery:
    """A verified bundle and the version it is, ready to be installed for a bot."""

    stored: StoredBundle
    model_id: uuid.UUID
    version: int


@dataclass(frozen=True)
class Deployment:
    """A model installed for a bot by UPDATE_MODEL or ROLLBACK_MODEL, and what is left for the fleet to do.

    ``reconfigure``: the model changes the bot's FreqAI config (another class, other features, its first model),
    so its config must be rendered again and reloaded (``Fleet.update_config``); otherwise ``how`` says how the
    bot takes it (a running one swaps it in by itself). Either way the caller then watches for the bot's
    acknowledgement (:meth:`ModelService.watch`) and collects the store (:meth:`ModelService.collect`)."""

    record: InstallRecord
    reconfigure: bool
    how: str


@dataclass(frozen=True)
class Prediction:
    pair: str
    candle_time: datetime | None
    predictions: dict[str, Any]
    do_predict: int | None
    di_values: float | None
    model_id: uuid.UUID | None
    model_version: int | None
    model_sha256: str | None


def _number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class ModelService:
    def __init__(
        self,
        settings: GatewaySettings,
        events: EventPublisher,
        *,
        keys: ModelKeySource | None = None,
        redis: ChunkStore | None = None,
    ) -> None:
        self.settings = settings
        self.events = events
        self.source = f"gateway:{settings.gateway_id}"
        self.store = ModelStore(
            settings.gateway_data_dir / MODELS_DIR,
            keys=keys,
            redis=redis,
            max_size=settings.model_max_bundle_bytes,
            max_compressed=settings.model_max_compressed_bytes,
        )
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, bot: ManagedBot) -> asyncio.Lock:
        return self._locks.setdefault(bot.bot_id, asyncio.Lock())

    async def stop(self) -> None:
        tasks = list(self._watchers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ================================================================== reading

    def runtime(self, bot: ManagedBot) -> ModelRuntime | None:
        """What the bot's config needs of its installed model (None: no model installed, or gone from the store)."""
        current = installs.load(bot.files).current
        if current is None:
            return None
        stored = self.store.get(current.sha256)
        if stored is None:
            log.error("installed model is not in the store", bot_id=bot.bot_id, sha256=current.sha256)
            return None
        return ModelRuntime(freqai_model=stored.manifest.freqai_model, freqai=stored.manifest.freqai)

    def runs_freqai(self, bot: ManagedBot) -> bool:
        return (bot.spec is not None and bot.spec.freqai is not None) or bool(installs.load(bot.files).history)

    def history(self, bot: ManagedBot) -> list[InstallRecord]:
        return installs.load(bot.files).history

    # ================================================================== receiving

    async def receive(
        self, bot_id: uuid.UUID, bundle: ModelBundle, spec: BotSpec | None, *, correlation_id: str | None
    ) -> ModelDelivery:
        """Verify ``bundle`` (and that it fits ``spec``) into the store.

        :raises ModelRefused: refused; MODEL_REJECTED with the reason is published first.
        """
        try:
            stored = await self.store.receive(bundle)
            if spec is not None:
                check_fits(spec, stored)
        except BundleError as exc:
            reason = f"model {bundle.model_id} version {bundle.version} refused: {exc}"
            log.warning("model bundle refused", bot_id=str(bot_id), model_id=str(bundle.model_id), reason=str(exc))
            await self._rejected(bot_id, bundle.model_id, reason, correlation_id)
            raise ModelRefused(reason) from None
        return ModelDelivery(stored=stored, model_id=bundle.model_id, version=bundle.version)

    async def _rejected(
        self, bot_id: uuid.UUID, model_id: uuid.UUID, reason: str, correlation_id: str | None, key: str | None = None
    ) -> None:
        await self.events.publish(
            ModelRejected(
                event_id=uuid.uuid5(MODEL_EVENTS, key) if key else uuid.uuid4(),
                source=self.source,
                correlation_id=correlation_id,
                data=ModelRejectedData(bot_id=bot_id, model_id=model_id, reason=reason[:2000]),
            )
        )

    # ================================================================== installing

    def install(
        self,
        bot: ManagedBot,
        delivery: ModelDelivery,
        *,
        reason: Literal["start", "update", "rollback", "restore"],
    ) -> InstallRecord | None:
        """Install ``delivery`` for ``bot`` (None when it is installed already and not failed)."""
        state = installs.load(bot.files)
        current = state.current
        same = (delivery.stored.sha256, delivery.model_id, delivery.version)
        if (
            reason == "start"
            and current is not None
            and current.status != "failed"
            and (current.sha256, current.model_id, current.version) == same
        ):
            return None
        record = installs.new_record(
            delivery.stored, model_id=delivery.model_id, version=delivery.version, reason=reason
        )
        installs.write_install(bot.files, delivery.stored, record)
        state.history.append(record)
        installs.save(bot.files, state)
        installs.prune_copies(bot.files, state)
        log.info(
            "model installed",
            bot_id=bot.bot_id,
            model_id=str(record.model_id),
            version=record.version,
            install_id=str(record.install_id),
            reason=reason,
        )
        return record

    async def collect(self, bots: Iterable[ManagedBot]) -> None:
        """Drop stored versions that none of ``bots``' recent history names (the files are removed in a thread)."""
        keep: set[str] = set()
        for bot in list(bots):
            keep.update(installs.load(bot.files).recent_versions(self.settings.model_history))
        await asyncio.to_thread(self.store.collect, keep)

    async def update(self, bot: ManagedBot | None, data: UpdateModelData, *, correlation_id: str | None) -> Deployment:
        """UPDATE_MODEL for ``bot`` (None: this gateway has no such bot): verify, install."""
        if bot is None or bot.spec is None:
            raise ModelRefused(f"this gateway has no bot {data.bot_id}: send START_BOT with the model first")
        delivery = await self.receive(data.bot_id, data.model, bot.spec, correlation_id=correlation_id)
        return await self._deploy(bot, delivery, "update")

    async def rollback(self, bot: ManagedBot | None, data: RollbackModelData) -> Deployment:
        """ROLLBACK_MODEL: install the previous (or the named) version again, from the store."""
        if bot is None or bot.spec is None:
            raise ModelRefused(f"this gateway has no bot {data.bot_id}")
        state = installs.load(bot.files)
        current = state.current
        if current is None:
            raise ModelRefused(f"bot {data.bot_id} has no model on this gateway: there is nothing to roll back")
        loaded = [r for r in reversed(state.history[:-1]) if r.status == "loaded"]
        if data.model_id is None:
            target = next((r for r in loaded if r.sha256 != current.sha256), None)
            if target is None:
                raise ModelRefused(f"bot {data.bot_id} has no earlier model version it ran: nothing to roll back to")
        else:
            if data.model_id == current.model_id:
                raise ModelRefused(f"{current.describe()} is already bot {data.bot_id}'s model")
            target = next((r for r in loaded if r.model_id == data.model_id), None)
            if target is None:
                raise ModelRefused(
                    f"bot {data.bot_id} never ran model {data.model_id} on this gateway: deploy it instead"
                )
        stored = self.store.get(target.sha256)
        if stored is None:
            raise ModelRefused(
                f"{target.describe()} is no longer in this gateway's store (it keeps the last "
                f"{self.settings.model_history} versions of each bot): deploy it again"
            )
        delivery = ModelDelivery(stored=stored, model_id=target.model_id, version=target.version)
        return await self._deploy(bot, delivery, "rollback")

    async def _deploy(
        self, bot: ManagedBot, delivery: ModelDelivery, reason: Literal["update", "rollback"]
    ) -> Deployment:
        async with self._lock(bot):
            before = self.runtime(bot)
            record = self.install(bot, delivery, reason=reason)
            assert record is not None
            after = self.runtime(bot)
        if after != before and bot.spec is not None:
            return Deployment(
                record, reconfigure=True, how="the model changes the bot's FreqAI config (class or features)"
            )
        if bot.process is not None and bot.process.is_alive():
            return Deployment(
                record, reconfigure=False, how="installed; the running bot swaps it in without a new process"
            )
        return Deployment(record, reconfigure=False, how="installed; the bot loads it when it starts")

    # ================================================================== acknowledgements

    def watch(self, bot: ManagedBot, record: InstallRecord) -> None:
        """Watch for the bot's acknowledgement of ``record`` (a previous watcher of the bot ends)."""
        previous = self._watchers.pop(bot.bot_id, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.create_task(self._watch(bot, record), name=f"model-ack:{bot.bot_id}")
        self._watchers[bot.bot_id] = task
        task.add_done_callback(
            lambda t: self._watchers.pop(bot.bot_id, None) if self._watchers.get(bot.bot_id) is t else None
        )

    async def _watch(self, bot: ManagedBot, record: InstallRecord) -> None:
        deadline = time.monotonic() + self.settings.model_load_timeout
        while True:
            try:
                if await self.settle(bot):
                    return
            except Exception:
                log.exception("model acknowledgement check failed", bot_id=bot.bot_id)
            current = installs.load(bot.files).current
            if current is None or current.install_id != record.install_id:
                return  # superseded
            if bot.process is None:
                deadline = time.monotonic() + self.settings.model_load_timeout  # counts while the bot runs
            elif time.monotonic() > deadline:
                bot.last_error = (
                    f"{record.describe()} installed {self.settings.model_load_timeout:g} s ago is not in use yet; "
                    "MODEL_LOADED follows when the bot reports it"
                )
                log.warning("model not acknowledged in time", bot_id=bot.bot_id, install_id=str(record.install_id))
                return
            await asyncio.sleep(WATCH_POLL)

    async def settle(self, bot: ManagedBot) -> bool:
        """Act on the bot's acknowledgement of its pending install; True when nothing is pending any more."""
        async with self._lock(bot):
            state = installs.load(bot.files)
            current = state.current
            if current is None or current.status != "pending":
                return True
            process = bot.process
            if process is None:
                return False
            ack = installs.read_ack(bot.files)
            if ack is None or ack.pid != process.pid:
                return False
            if ack.loaded is not None and ack.loaded.install_id == current.install_id:
                current.status = "loaded"
                current.loaded_at = ack.loaded.loaded_at
                current.load_seconds = round(max(0.0, (ack.loaded.loaded_at - current.installed_at).total_seconds()), 3)
                installs.save(bot.files, state)
                if bot.last_error is not None and bot.last_error.startswith(current.describe()):
                    bot.last_error = None
                await self.events.publish(
                    ModelLoaded(
                        event_id=uuid.uuid5(MODEL_EVENTS, f"{bot.bot_id}:{current.install_id}:loaded"),
                        source=self.source,
                        correlation_id=bot.correlation_id,
                        data=ModelLoadedData(
                            bot_id=bot.uuid,
                            model_id=current.model_id,
                            sha256=current.sha256,
                            load_seconds=current.load_seconds,
                        ),
                    )
                )
                log.info(
                    "model loaded",
                    model_id=str(current.model_id),
                    version=current.version,
                    pid=process.pid,
                    seconds=current.load_seconds,
                )
                return True
            if ack.failed is None or ack.failed.install_id != current.install_id:
                return False
            current.status = "failed"
            current.error = ack.failed.error[:2000]
            installs.save(bot.files, state)
            previous = state.loaded_before(current)
            stored = None if previous is None else self.store.get(previous.sha256)
            if previous is not None and stored is not None:
                delivery = ModelDelivery(stored=stored, model_id=previous.model_id, version=previous.version)
                restored = self.install(bot, delivery, reason="restore")
                keeps = f"it keeps predicting with {previous.describe()}"
            else:
                installs.clear_install(bot.files)
                restored = None
                keeps = "it has no model now"
            reason = f"the bot could not use {current.describe()} ({current.error}); {keeps}"
            log.warning("model rejected by the bot", reason=reason)
            await self._rejected(
                bot.uuid, current.model_id, reason, bot.correlation_id, key=f"{bot.bot_id}:{current.install_id}:failed"
            )
        if restored is not None:
            self.watch(bot, restored)
        return True

    # ================================================================== predictions

    async def predictions(self, bot: ManagedBot, pair: str | None) -> list[Prediction]:
        """The newest FreqAI outputs of ``pair`` (every pair of the bot when None), read from the running bot.

        :raises ModelRefused: the bot is not running, or ``pair`` is not one of its pairs.
        :raises BotApiError: the bot did not answer.
        """
        spec = bot.spec
        if spec is None:
            raise ModelRefused(f"bot {bot.bot_id} has no spec on this gateway")
        pairs = list(spec.pairs) if pair is None else [pair]
        if pair is not None and pair not in spec.pairs:
            raise ModelRefused(f"bot {bot.bot_id} does not trade {pair} (its pairs: {', '.join(spec.pairs)})")
        api = bot.api
        if api is None or bot.process is None:
            raise ModelRefused(f"bot {bot.bot_id} is {bot.actual.value}: predictions come from a running bot")
        ack = installs.read_ack(bot.files)
        loaded = ack.loaded if ack is not None and ack.pid == bot.process.pid else None
        rows = await asyncio.gather(*(api.pair_candles(p, spec.timeframe, limit=1) for p in pairs))
        out = []
        for name, found in zip(pairs, rows, strict=True):
            row: Mapping[str, Any] = found[-1] if found else {}
            candle = _parse_time(row.get("date"))
            since = None if loaded is None else loaded.pairs.get(name)
            made_by_loaded = loaded is not None and since is not None and candle is not None and candle >= since
            do_predict = row.get("do_predict")
            di = row.get("DI_values")
            out.append(
                Prediction(
                    pair=name,
                    candle_time=candle,
                    predictions={k: _number(v) for k, v in row.items() if isinstance(k, str) and k.startswith("&")},
                    do_predict=None
                    if not isinstance(do_predict, int | float) or not math.isfinite(do_predict)
                    else int(do_predict),
                    di_values=_number(float(di)) if isinstance(di, int | float) else None,
                    model_id=loaded.model_id if made_by_loaded and loaded else None,
                    model_version=loaded.version if made_by_loaded and loaded else None,
                    model_sha256=loaded.sha256 if made_by_loaded and loaded else None,
                )
            )
        return out


def check_fits(spec: BotSpec, stored: StoredBundle) -> None:
    """Refuse (:class:`IncompatibleBundle`) a model that can't serve ``spec``'s pairs on its timeframe."""
    manifest = stored.manifest
    if manifest.timeframe != spec.timeframe:
        raise IncompatibleBundle(
            f"the model was trained on {manifest.timeframe} candles, the bot trades {spec.timeframe}"
        )
    missing = [p for p in spec.pairs if p not in manifest.pairs]
    if missing:
        raise IncompatibleBundle(
            f"the model has no model for {', '.join(missing)} (it covers {', '.join(sorted(manifest.pairs))})"
        )


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    with contextlib.suppress(ValueError):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=utcnow().tzinfo)
    return None
