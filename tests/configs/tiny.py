"""A config that trains in seconds on 2 CPU cores: few procedural faces, a tiny CNN."""

import runpy
from pathlib import Path


def get_config():
    default = Path(__file__).resolve().parents[2] / "configs" / "default.py"
    config = runpy.run_path(str(default))["get_config"]()
    config.data.synthetic.num_train = 256
    config.data.synthetic.num_val = 64
    config.data.synthetic.num_test = 64
    config.model.cnn_widths = "8,16"
    config.model.cnn_convs_per_stage = 1
    config.model.cnn_hidden = 32
    config.train.batch_size = 32
    config.train.num_epochs = 2
    config.train.log_every_steps = 1
    config.train.eval_batch_size = 64
    return config
