"""Data layer of DeepACC: image reading, COCO datasets, the dataset catalog and the synthetic generator.

* :func:`deepacc.data.images.read_image` - the one image reader of both engines.
* :func:`deepacc.data.polarity.apply_polarity` - ``INPUT.POLARITY``: bright-on-dark (fluorescence)
  images recognised (:func:`~deepacc.data.polarity.detect_polarity`) and inverted for the model.
* :mod:`deepacc.data.coco` - validate / load / write COCO json (dataset dicts of the contract).
* :mod:`deepacc.data.catalog` - ``register_coco_dataset``, ``get_dataset_dicts``, ``get_metadata``,
  builtin splits (registered on import).
* :mod:`deepacc.data.synthetic` - ideogram-based synthetic metaphases with batch effects.
"""
from .images import ImageError, read_image  # noqa: F401
from .polarity import apply_polarity, detect_polarity, measure_polarity  # noqa: F401
from .coco import (  # noqa: F401
    DatasetError,
    Problem,
    load_coco_json,
    validate_coco_json,
    write_coco_json,
)
from .catalog import (  # noqa: F401
    DatasetNotPreparedError,
    datasets_root,
    get_dataset_dicts,
    get_metadata,
    list_datasets,
    register,
    register_coco_dataset,
)
