"""What both Freqfleet services use: settings, logging, HTTP plumbing, health checks."""
