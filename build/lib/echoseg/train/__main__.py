"""``python -m echoseg.train`` is echo-train; under torchrun it trains data-parallel:

    torchrun --standalone --nproc-per-node N -m echoseg.train --data DIR --model matae-unet ...
"""

from .cli import train_main

if __name__ == "__main__":
    train_main()
