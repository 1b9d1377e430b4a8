"""Age & gender engine: photo in, faces with age and gender out.

Public entry point::

    from ml import Predictor, ImageError
    predictor = Predictor.load()            # default model shipped in ml/models/default
    faces = predictor.predict(source)       # path, bytes, file object, PIL image or HxWx3 uint8 array
    batch = predictor.predict_many([a, b])  # one model batch for all faces of all images

Nothing heavy (TensorFlow, the detector) is imported until `Predictor.load()` is called.
"""

from ml.errors import ImageError
from ml.faces import Face

__all__ = ["Face", "ImageError", "Predictor"]


def __getattr__(name: str):
    if name == "Predictor":
        from ml.predictor import Predictor

        return Predictor
    raise AttributeError(name)
