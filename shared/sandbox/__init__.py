"""Sandboxing of the processes that run user code (bots, strategy checks, trainings): see ``run``."""
