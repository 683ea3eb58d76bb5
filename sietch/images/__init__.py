"""Guest kernel, initramfs, tools disk and root filesystems, built and cached by content hash."""
