"""Framework integrations; each module imports its framework and is imported only by the user."""
