"""FreqAI models on the gateway: the store of verified bundles, installs, hot-swaps, predictions.

- :mod:`.keys`: the management server's model-signing public keys (fetched, cached, kept on disk).
- :mod:`.store`: ``ModelStore``, verified bundles unpacked once per sha256 and shared by the bots.
- :mod:`.installs`: a bot's installed model (the files its Freqtrade reads) and its history.
- :mod:`.service`: ``ModelService``, the commands (START_BOT with a model, UPDATE_MODEL, ROLLBACK_MODEL),
  acknowledgements (MODEL_LOADED, MODEL_REJECTED) and predictions.
- :mod:`.router`: ``GET /api/v1/bots/{bot_id}/predictions`` and ``GET /api/v1/bots/{bot_id}/models``.
"""
