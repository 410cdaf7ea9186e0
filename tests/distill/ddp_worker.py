"""Run by ``torchrun --nproc_per_node 2`` in test_trainer.py: a few DDP steps, then each rank saves its weights."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
from tiny import synthetic_set, tiny_config  # noqa: E402

from aird.distill.trainer import Trainer, init_distributed  # noqa: E402
from aird.models.heads import fit_cosine_head  # noqa: E402
from aird.models.registry import get_model  # noqa: E402

out = Path(sys.argv[1])
device = init_distributed()
torch.manual_seed(0)
torch.set_num_threads(1)
data = synthetic_set()
cfg = tiny_config(out / "run", max_steps=3)
head = fit_cosine_head(data.teacher, data.labels, steps=5)
trainer = Trainer(cfg, data, get_model("dlib_resnet_bn"), head, out / "run", device, progress=False)
trainer.fit()
torch.save(trainer.model.student.state_dict(), out / f"rank{dist.get_rank()}.pt")
dist.destroy_process_group()
