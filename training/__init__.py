"""Lightning training for the playground's models. Each task module (generation, translation,
vision, audio) exposes `Config`, `build(config, data_dir) -> (LightningModule, DataModule)`,
`export(module, folder, meta)` and `evaluate(checkpoint, data_dir, limit, device) -> dict`."""
