"""Demo: procedural faces (no download) at FER2013's class proportions, a small CNN, SMOTE and
the logit-adjusted loss.

python -m ferjax.main --config=configs/demo.py --workdir=runs/demo

A recipe chosen to learn the rare class in about half a minute on two CPU cores:
- 15,000 generated training faces (228 'disgust') seen twice, instead of 5,000 (76 'disgust')
  seen eight times: about as many steps, three times as many distinct rare faces. On these
  faces the rare class is limited by how many different disgust faces the network sees, not
  by how often it sees them (bench/README.md).
- SMOTE as index sampling up to half of the largest class, and the logit-adjusted loss for
  the prior that leaves (`ferjax study --remedies=...,smote+logit_adjusted` on this config).
- A 16/32/64 CNN without convolution dropout, AdamW 2e-3 after a 0.3-epoch warm-up,
  per-image standardisation, batch 64.
- A test split of 3,000 faces (46 'disgust'), so the rare recall rests on more than a few faces.
Measured bands: bench/README.md (`python -m bench.demo_band`).
"""

import runpy
from pathlib import Path


def get_config():
    config = runpy.run_path(str(Path(__file__).with_name("default.py")))["get_config"]()
    config.data.name = "synthetic"
    config.data.synthetic.num_train = 15000
    config.data.synthetic.num_val = 1000
    config.data.synthetic.num_test = 3000
    config.data.normalize = "per_image"
    config.sampling.method = "smote"
    config.sampling.strategy = "0.5"
    config.loss.name = "logit_adjusted"
    config.model.name = "cnn"
    config.model.cnn_widths = "16,32,64"
    config.model.cnn_convs_per_stage = 1
    config.model.cnn_hidden = 128
    config.model.conv_dropout = 0.0
    config.model.dropout = 0.1
    config.optim.name = "adamw"
    config.optim.learning_rate = 2e-3
    config.optim.weight_decay = 1e-4
    config.optim.warmup_epochs = 0.3
    config.train.batch_size = 64
    config.train.num_epochs = 2
    config.train.log_every_steps = 50
    return config
