"""The management server: users, bots (desired state), strategies, models, analytics, audit."""
