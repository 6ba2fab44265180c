"""Per-engine settings models (the engine kit moves every engine's own settings here)."""
