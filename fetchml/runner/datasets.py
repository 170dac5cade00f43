"""Datasets on a worker: fetched once, checked against their SHA-256, cached by source and digest.

A dataset's `source` is one file (a tarball, an archive, a single data file), named by a local
path, a `file://` URL or an http(s) URL. Folders are not sources: pack one into a tarball first,
so that its SHA-256 is well defined. The task gets the file as it is at its mount path; it is
not unpacked.

The worker is a trust boundary, so a source is vetted before anything is read, and before the
cache is even looked at (a cache hit must never grant what the source itself would not):

- local paths and `file://` URLs only inside the roots the operator listed (`--dataset-root`),
  after resolving links and `..`; only regular files (no devices, fifos, /proc files);
- http(s) only to public addresses, checked after DNS resolution, on every redirect hop, and
  again at connect time on the very address the socket connects to (so DNS rebinding between
  check and connect cannot reach an internal service), unless the operator allows private
  addresses (`--allow-private-datasets`);
- at most `max_bytes` per dataset (Content-Length checked up front, the stream cut past it);
- every read has a timeout, and a cancel stops a fetch between chunks (a watcher also shuts the
  socket down, so a stalled read ends at once).

A checksum mismatch says only that the file does not match: telling the real digest would let a
submitter learn, then mount, files they cannot name the hash of.

The cache is cache_dir/<sha256 of the vetted source>/<sha256>, written through a temporary file
and renamed only after the digest matched, so it never holds a wrong or partial file, and two
sources never share an entry (naming someone else's digest with a made-up source misses). Cached
files are read-only, in folders only the worker can enter; a stamp beside each (device, inode,
size, mtime and ctime; a task can reset mtime but never ctime) lets a hit skip hashing, and a
file that changed since it was verified is hashed again, and fetched again if it no longer
matches. Tasks never get the cache entry itself where they could write it: see
fetchml.runner.workspace for how it is placed.

The parts, one module each: the policy and the errors (dataset_policy), the address guard
(dataset_guard), the vetting of a source (dataset_sources), reading one (dataset_reading) and
the cache (dataset_cache). This module names them all.
"""

from __future__ import annotations

from fetchml.runner.dataset_cache import DatasetCache, copy_verified, write_stamp
from fetchml.runner.dataset_guard import IPAddress, address_refusal, vet_host
from fetchml.runner.dataset_policy import (
    DEFAULT_MAX_DATASET_BYTES,
    AddressRefused,
    DatasetCancelled,
    DatasetError,
    DatasetPolicy,
    display_source,
)

__all__ = [
    "DEFAULT_MAX_DATASET_BYTES",
    "AddressRefused",
    "DatasetCache",
    "DatasetCancelled",
    "DatasetError",
    "DatasetPolicy",
    "IPAddress",
    "address_refusal",
    "copy_verified",
    "display_source",
    "vet_host",
    "write_stamp",
]
