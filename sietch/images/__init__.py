"""Guest kernel, initramfs, tools disk and root filesystems, built and cached by content hash."""

from sietch.images.store import ImageInfo, ImageStore

__all__ = ["ImageInfo", "ImageStore"]
