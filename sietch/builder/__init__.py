"""User images: Dockerfile builds, OCI imports and template builds, run in Sietch sandboxes.

Above the core (it boots sandboxes through the manager); the server mounts it
at ``/api/v1/images``. ``sietch.images`` stays the builder of the built-in
kernel, initramfs, tools disk and root filesystems.
"""

from sietch.builder.engine import BUILD_LABEL, Builder, BuildRequest

__all__ = ["BUILD_LABEL", "BuildRequest", "Builder"]
