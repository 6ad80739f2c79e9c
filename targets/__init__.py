"""Target presets, cross toolchains and runners (installed as tvmcompress.targets)."""
