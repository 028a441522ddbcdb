"""Train and evaluate from Python instead of the CLI."""

from nnpot.bundled import bundled_dataset
from nnpot.potentials.evaluator import predict
from nnpot.training.metrics import error_metrics
from nnpot.training.trainer import Trainer
from nnpot.training.config import load_train_config

config = load_train_config(None, ["max_time=2m", "valid_freq=200"], {"data": str(bundled_dataset("water"))})
trainer = Trainer(config, "runs/water_py")
model_path = trainer.run()
frames = [trainer.valid_ds[int(i)] for i in trainer.valid_idx]
print(error_metrics(predict(trainer._eval_model(), frames)))
