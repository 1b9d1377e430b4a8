"""The one error type that `ml` raises for input it cannot use."""


class ImageError(ValueError):
    """The input is not a usable image (not an image, empty, truncated, too large, ...).

    The message is written for the person who uploaded the file.
    """
