"""rnnlab: recurrent-network language models trained by BPTT on a graph of gates, in numpy."""
from .model import LanguageModel, LossAndGrads, ModelConfig, loss_and_grads

__version__ = "0.1.0"
__all__ = ["LanguageModel", "LossAndGrads", "ModelConfig", "loss_and_grads", "__version__"]
