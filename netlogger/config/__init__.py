"""The agent's config file: its schema (model), where each value came from
(source), and every problem in it, located (check)."""
