"""``python -m align_train``: what ``torchrun -m align_train`` starts in every process."""

from align_train.cli import app

app(prog_name="align-train")
