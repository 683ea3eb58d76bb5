"""Choose the accelerator: KVM where the CPU really virtualises, TCG otherwise.

``/dev/kvm`` alone proves nothing: on KVM-PVM hosts it opens, yet an ordinary
kernel never boots (DESIGN.md). Hardware virtualisation shows as the ``vmx``
or ``svm`` CPU flag.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Literal

from sietch.errors import InvalidArgument

Accel = Literal["kvm", "tcg"]


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def _kvm_usable() -> bool:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


@cache
def host_tsc_khz() -> int | None:
    """The host's TSC rate, which a TCG guest's TSC runs at.

    A TCG guest must be told this (``tsc_early_khz=``): on a busy host its
    own calibration against the emulated PIT fails, the kernel marks the TSC
    unstable and the boot hangs (seen here on most boots under load).
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return round(float(line.partition(":")[2]) * 1000)
    except (OSError, ValueError):
        pass
    return None


@cache
def detect() -> Accel:
    return "kvm" if _cpu_flags() & {"vmx", "svm"} and _kvm_usable() else "tcg"


TCG_CPU = "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt,+arat"
"""x86-64-v2 (what current wheels such as numpy's expect) and no more: with
``-cpu max`` glibc picks AVX string routines, which TCG emulates slowly
(measured: `exec true` 78 ms median with max, 48 ms with qemu64).

``+arat`` (the local APIC timer keeps running in deep idle) lets the guest
stop its tick when idle: without it the kernel keeps a periodic 250 Hz tick
(see :mod:`sietch.vmm.qemu` for the rest of what makes an idle guest quiet)."""


def cpu_model(accel: Accel) -> str:
    return "host" if accel == "kvm" else TCG_CPU


def resolve(setting: str) -> Accel:
    """Turn the ``accel`` setting (auto, kvm, tcg) into the accelerator to use."""
    if setting == "auto":
        return detect()
    if setting == "kvm":
        if not _kvm_usable():
            raise InvalidArgument("accel=kvm but /dev/kvm cannot be opened; use SIETCH_ACCEL=tcg")
        return "kvm"
    if setting == "tcg":
        return "tcg"
    raise InvalidArgument(f"unknown accelerator {setting!r}; use auto, kvm or tcg")
