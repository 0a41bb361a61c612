"""Where records go: each sink takes batches and owns nothing upstream."""
