"""Drives one hypervisor process per sandbox (QEMU over QMP)."""
