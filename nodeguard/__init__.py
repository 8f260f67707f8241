"""nodeguard: adversarial robustness of Neural ODE image classifiers with tolerance randomization."""

__version__ = "0.4.1"

__all__ = ["__version__"]
