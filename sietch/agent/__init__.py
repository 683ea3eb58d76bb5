"""Guest agent (runs inside the VM) and the host side of its protocol."""
