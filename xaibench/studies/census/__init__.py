"""The cross-library agreement census: every method on every backend against the native engine.

    agreement.py  run_census (agreement.csv, agreement.md)
    zoo.py        run_zoo (zoo.csv, zoo.md): torchvision backbones, a diffusion U-Net and a
                  two-branch net on every backend, with zennit's gradient fallback named
    commands.py   xaibench census [--zoo]
"""

from xaibench.studies import lazy_exports

__all__ = ["run_census", "run_zoo"]
__getattr__ = lazy_exports(__name__, {
    "run_census": "xaibench.studies.census.agreement",
    "run_zoo": "xaibench.studies.census.zoo",
})
