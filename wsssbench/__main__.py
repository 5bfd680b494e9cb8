"""``python -m wsssbench``: the ``wsssbench`` command, in the form ``torchrun -m wsssbench run ...`` starts it."""
from .cli import app

if __name__ == "__main__":
    app(prog_name="wsssbench")
