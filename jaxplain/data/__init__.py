"""The embedded default: scikit-learn's digits and a small residual CNN trained on them (and a
small vision transformer, ``pretrained(architecture="vit")``, for the transformer methods).

Example:
    >>> from jaxplain import data
    >>> digits = data.load_digits()
    >>> f = data.digits_function(progress=False)   # trains once, then loads from the cache
    >>> f(digits.x_test[:4]).shape
    (4, 10)
"""

from jaxplain.data._digits import Digits as Digits
from jaxplain.data._digits import load_digits as load_digits
from jaxplain.data._function import digits_function as digits_function
from jaxplain.data._model import DigitsCNN as DigitsCNN
from jaxplain.data._model import ResidualBlock as ResidualBlock
from jaxplain.data._pretrained import CheckpointInfo as CheckpointInfo
from jaxplain.data._pretrained import checkpoint_info as checkpoint_info
from jaxplain.data._pretrained import home as home
from jaxplain.data._pretrained import params_checksum as params_checksum
from jaxplain.data._pretrained import pretrained as pretrained
from jaxplain.data._train import TrainHistory as TrainHistory
from jaxplain.data._train import accuracy as accuracy
from jaxplain.data._train import train as train
from jaxplain.data._vit import DigitsViT as DigitsViT
from jaxplain.data._vit import EncoderBlock as EncoderBlock

__all__ = [
    "CheckpointInfo", "Digits", "DigitsCNN", "DigitsViT", "EncoderBlock", "ResidualBlock",
    "TrainHistory", "accuracy", "checkpoint_info", "digits_function", "home", "load_digits",
    "params_checksum", "pretrained", "train",
]
