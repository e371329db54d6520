"""The trading gateway: runs Freqtrade processes on its host and reports what they do."""
