"""Item encoders map item indices to vectors; importing this package registers them."""

from transrec.models.item_encoders import id as _id  # noqa: F401
from transrec.models.item_encoders import image as _image  # noqa: F401
from transrec.models.item_encoders import mixture as _mixture  # noqa: F401
from transrec.models.item_encoders import text as _text  # noqa: F401
