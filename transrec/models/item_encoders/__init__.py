"""Item encoders map item indices to vectors; importing this package registers them."""

from transrec.models.item_encoders import id as _id  # noqa: F401
