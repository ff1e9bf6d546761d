"""The key hash of SG-trie spans, shared by the host builder and the device matcher.

A span's key is a rolling hash (FNV-1a over 32-bit token ids) mixed with the
span length by murmur3's fmix32; a hash-and-displace table turns the key into
one slot. `build.py` computes it on host (numpy) and `masks.py` on device
(jax) for every window: every function here works on either kind of uint32
array.
"""

from __future__ import annotations

import numpy as np

HASH_PRIME = 0x01000193
HASH_OFFSET = 0x811C9DC5
LEN_MIX = 0x9E3779B9
BUCKET_MIX = 0x7F4A7C15


def hash_step(h, token):
  """h' = (h ^ token) * prime mod 2^32; numpy or jax uint32 arrays."""
  return (h ^ token) * np.uint32(HASH_PRIME)


def fmix32(x):
  """murmur3's 32-bit finalizer (a bijection on uint32; numpy or jax)."""
  x = x ^ (x >> 16)
  x = x * np.uint32(0x85EBCA6B)
  x = x ^ (x >> 13)
  x = x * np.uint32(0xC2B2AE35)
  return x ^ (x >> 16)


def key_hashes(h, length):
  """(slot hash, bucket hash) of the key (rolling hash h, window length); uint32 arrays."""
  x = h ^ (length.astype(np.uint32) * np.uint32(LEN_MIX))  # numpy or jax integer arrays
  a = fmix32(x)
  return a, fmix32(a ^ np.uint32(BUCKET_MIX))


def slot_index(a, b, disp, num_slots: int):
  """Slot of a key: fmix32(a ^ disp[b mod num_buckets]) mod num_slots (both powers of two)."""
  d = disp[(b & np.uint32(disp.shape[0] - 1)).astype(np.int32)]
  return (fmix32(a ^ d) & np.uint32(num_slots - 1)).astype(np.int32)
