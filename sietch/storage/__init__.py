"""Per-sandbox copy-on-write disks and state directories."""
