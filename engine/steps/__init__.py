"""Built-in step kinds: each module registers its kinds with ``engine.registry.step_kind``."""
