"""The benchmark's counter of host-device synchronisations (see ``chimeraseg.utils.host_syncs``)."""

from chimeraseg.utils.host_syncs import SYNC_OPS, SyncCounter

__all__ = ["SYNC_OPS", "SyncCounter"]
