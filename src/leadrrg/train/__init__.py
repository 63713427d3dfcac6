"""Training: `leadrrg.train.loop.train(config, out_dir, resume=False) -> summary` writes a run directory
(`leadrrg.runs.files` reads it back). Nothing is imported here, so `import leadrrg.train` stays cheap."""
