"""Model files: a versioned, checksummed ``.npz`` that loads without running code.

A model file is an uncompressed NumPy ``.npz`` archive (a zip of ``.npy``
members) holding only numeric and fixed-width text arrays:

``__meta__``
    UTF-8 JSON as a uint8 array: the format name and version, the fastrec
    version that wrote it, the model class, its hyperparameters
    (``get_params()``) and the kinds of its extra fitted attributes.
``__checksum__``
    SHA-256 (32 uint8) over every other member, in sorted name order: name,
    dtype, shape and raw bytes.  It is verified before anything is built.
``user_factors``, ``item_factors``, ``item_bias`` (when the model has biases)
    The factors.
``user_items_indptr``, ``user_items_indices``, ``user_items_data``
    The users x items interactions seen at fit time (CSR).
``user_map``, ``item_map`` (when fitted from ``fastrec.Interactions``)
    Raw ids, int64 or fixed-width unicode.
``attr.<name>``
    Numeric array-valued fitted attributes.

Rules
-----
* Loading never executes code: ``np.load(..., allow_pickle=False)``, object
  arrays are rejected, the class is looked up among the ``Recommender``
  subclasses already defined in this process (fastrec's own models by class
  name, others by ``module:qualname``) and never imported from the file.
  The checksum catches accidental damage; hand-made files with a valid
  checksum are still checked (dtypes, shapes, CSR structure, id ranges,
  attribute names), so a crafted file cannot make a kernel read out of bounds.
* A truncated, corrupted, foreign, newer-version or wrong-class file raises
  ``fastrec.ModelFormatError``.  A missing file raises ``FileNotFoundError``,
  and other ``OSError`` subclasses pass through too: a wrong path is not a bad file.
* Saving is atomic: the archive is written to a temporary file in the same
  directory, flushed to disk and renamed over ``path``; a failure part-way
  leaves any previous file untouched.  ``path`` is used exactly as given: no
  ``.npz`` suffix is added.
* Hyperparameters are stored as JSON.  Dtypes are stored by name (``"float32"``)
  and come back as NumPy scalar types; tuples come back as lists.  Values JSON
  cannot hold (a ``numpy.random.Generator`` as ``random_state``, a callable)
  are stored as None, with a ``UserWarning`` naming them at save time.  On
  load, a parameter the class no longer has is an error; one it gained since
  takes its default.
* Fitted attributes are the model's public instance attributes whose names
  end in ``_`` (scikit-learn convention).  Numeric arrays are stored as
  members; values JSON can hold (numbers, strings, lists of them such as
  ALS's ``loss_history_``) go in the metadata; anything else is skipped with
  a ``UserWarning``.

Pickle also works (``pickle.dumps(model)``), which is what ``multiprocessing``
uses.  Unpickling runs arbitrary code from the data, so never unpickle a model
from a source you do not trust; use ``save``/``load`` for files.
"""
from .codec import FORMAT_NAME, FORMAT_VERSION, model_classes
from .reader import load, load_model
from .writer import save_model

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "load", "load_model", "model_classes", "save_model"]
