"""FreqAI models: training, the encrypted registry, signing, deploying to bots, rollback, predictions."""
