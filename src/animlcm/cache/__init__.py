"""The HDF5 cache written by ``animlcm extract`` and read by every later stage (see ``schema``)."""

from animlcm.cache.reader import CacheReader, VideoEntry
from animlcm.cache.schema import SCHEMA_VERSION
from animlcm.cache.writer import Manifest, ManifestEntry, VideoWriter

__all__ = ["SCHEMA_VERSION", "CacheReader", "Manifest", "ManifestEntry", "VideoEntry", "VideoWriter"]
