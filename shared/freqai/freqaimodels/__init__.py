"""Freqtrade's ``freqaimodel_path`` for Freqfleet bots and training runs (see ``freqfleet_models``)."""
