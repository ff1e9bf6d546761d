"""Implementations of the `hicra-jax` subcommands (registered in `hicra_jax.cli`).

Each module defines `HELP`, `get_config()` (the embedded default config),
`validate(config)` (cheap: no jax, no model loading) and `run(config)`, which
imports the heavy modules it needs lazily.
"""
