"""Each bot's trade database in PostgreSQL (``FREQFLEET_BOT_DB=postgres``): made with the bot, dropped after a
backup with it, its password sealed at rest and sealed again to the gateway that runs the bot."""
