"""What every layer stands on: errors, registries, CPU tuning, devices and meshes,
multi-process start-up, signals, console progress, TensorFlow set-up and a run's files."""
