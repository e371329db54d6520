"""The FreqAI engine both services share: offline training, model bundles, signing, live hot-swap.

Modules (none of them imports Freqtrade; only the bots' own processes do, through ``hotswap``):

- :mod:`.catalog`: the FreqAI model classes Freqfleet trains and runs (an allowlist) and the names of
  their Freqfleet variants that bots load with ``--freqaimodel``.
- :mod:`.training`: :func:`~shared.freqai.training.train_model` runs Freqtrade's FreqAI training offline
  against an exchange (the simulator here) in a subprocess and returns the trained model folder.
- :mod:`.bundle`: the files a live bot needs, packed into a deterministic, zstd-compressed tar with a
  manifest; Ed25519 signing of (model id, version, sha256, size); verified, bounded unpacking.
- :mod:`.transfer`: inline Base64 or chunks in Redis (keys with a TTL) for the bus message ``ModelBundle``.
- :mod:`.live`: the files a gateway and a running bot exchange (install marker, acknowledgement) and the
  ``freqai`` section of a bot that receives models.
- :mod:`.hotswap`: the ``IFreqaiModel`` mixin a receiving bot runs (imports Freqtrade: bots only).
"""
