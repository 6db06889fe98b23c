"""Demo: procedural faces (no download), a small CNN, a few minutes on 2 CPU cores.

python -m ferjax.main --config=configs/demo.py --workdir=runs/demo
"""

import runpy
from pathlib import Path


def get_config():
    config = runpy.run_path(str(Path(__file__).with_name("default.py")))["get_config"]()
    config.data.name = "synthetic"
    config.data.synthetic.num_train = 5000
    config.data.synthetic.num_val = 1000
    config.data.synthetic.num_test = 1000
    config.model.name = "cnn"
    config.model.cnn_widths = "32,64,128"
    config.model.cnn_convs_per_stage = 1
    config.model.cnn_hidden = 128
    config.model.dropout = 0.3
    config.optim.learning_rate = 0.05
    config.train.batch_size = 128
    config.train.num_epochs = 5
    config.train.log_every_steps = 20
    return config
