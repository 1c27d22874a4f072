"""The ``pyfunc`` of a STEGO run: MLflow loads this file as the model's code ("models from code").

It is copied into every logged model (``python_model`` of :func:`tasks.registry.save_model`), and
``mlflow.pyfunc.load_model`` executes it, so it imports only MLflow and :mod:`stego_core` (shipped in
the model's ``code/`` folder), never ``tasks`` or ``flows``.

* input: one image, an ``(H, W, 3)`` uint8 RGB array; or a batch as a 1-d ``object`` array of such
  images (any sizes: ``np.empty(n, dtype=object)`` filled with images). A pandas DataFrame is refused by
  MLflow's schema check (a DataFrame column of tensors needs a fixed image size).
* output: the class map ``(H, W)`` uint8 at the image's own size (the run's cluster -> class matching;
  255 = no class), or for a batch a 1-d ``object`` array of maps. ``params={"output": "clusters"}``
  gives the raw cluster ids instead; a run without a matching gives cluster ids either way.
* ``model_config`` (``load_model(uri, model_config={...})``): ``device`` (``auto`` | ``cpu`` |
  ``cuda[:N]``), ``crf`` (refine with the run's dense CRF).
"""
from __future__ import annotations

import numpy as np
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

OUTPUTS = ("classes", "clusters")


class StegoSegmenter(PythonModel):
    """An MLflow ``PythonModel`` around :class:`stego_core.inference.Segmenter`."""

    # The model is logged with a signature (checked by MLflow before predict); this turns off only MLflow's
    # type-hint validation of predict and its warning, at every save and load, that predict has no type hints.
    _skip_type_hint_validation = True

    def load_context(self, context):
        from stego_core.inference import Segmenter

        config = context.model_config or {}
        self.segmenter = Segmenter.from_run(context.artifacts["run"], device=str(config.get("device", "auto")),
                                            use_crf=bool(config.get("crf", False)))

    def predict(self, context, model_input, params=None):
        output = (params or {}).get("output", "classes")
        if output not in OUTPUTS:
            raise ValueError(f"params output={output!r}: expected one of {', '.join(OUTPUTS)}")
        segment = self.segmenter.classes if output == "classes" else self.segmenter.clusters
        images = np.asarray(model_input) if not isinstance(model_input, np.ndarray) else model_input
        if images.dtype == object and images.ndim == 1:  # a batch of images, each of its own size
            maps = np.empty(len(images), dtype=object)
            for i, image in enumerate(images):
                maps[i] = segment(_image(image))
            return maps
        return segment(_image(images))


def _image(array) -> np.ndarray:
    image = np.asarray(array)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got shape {image.shape} dtype {image.dtype}")
    return image


set_model(StegoSegmenter())
