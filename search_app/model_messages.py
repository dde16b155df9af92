"""The bytes that workers and the model process exchange: a tag byte, then numpy arrays as they lie in
memory, or a pickle for the rare messages.

A search goes out as its prepared pixels and comes back as three small arrays (vector, distances, rows).
Pickling them was most of a round trip's cost: numpy's reduce runs Python code for each array. Between two
processes on the 2-core AMD EPYC, 400 round trips 10 ms apart (as a lone shopper's queries are): 83-86 µs
a round trip with the arrays as raw bytes against 206-286 with them pickled (26-33 against 87-108 back to
back). The model process also unpickles nothing a worker sends.
"""
from __future__ import annotations

import math
import pickle
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

# Requests (worker -> model process).
HELLO = b"h"  # -> what a worker needs to prepare queries: preprocessing, runtime, dimension
INCOMING = b"i"  # one-way: a request that will probably search has arrived (batches wait for it)
LEFT = b"l"  # one-way: that request is answered
SEARCH = b"s"  # pixels, depth -> vector (1×D), distances and rows (1×depth each)
EMBED = b"e"  # pixels -> vector (1-d), outside the batches
STATS = b"t"  # -> the batches' counts and times, for /healthz
# Answers (model process -> worker).
ARRAYS = b"a"  # the answer is these arrays
PICKLED = b"p"  # the answer is this pickled object
FAILED = b"f"  # the request failed: the exception's class name and message, pickled

# After the tag: an integer (a search's depth) and how many arrays follow; each array is then its dtype's
# length, its number of dimensions, its dtype (numpy's string, such as "|u1"), its shape and its bytes.
_HEAD = struct.Struct("<qB")
_ARRAY_HEAD = struct.Struct("<BB")
_DIMENSION = struct.Struct("<q")


def pack_arrays(tag: bytes, arrays: Sequence[np.ndarray], number: int = 0) -> bytes:
    """A message of numpy arrays (kept as they are: dtype, shape and C-order bytes) and one integer."""
    parts = [tag, _HEAD.pack(number, len(arrays))]
    for array in arrays:
        array = np.asarray(array)  # tobytes() writes C order whatever the layout
        dtype = array.dtype.str.encode("ascii")
        parts += [_ARRAY_HEAD.pack(len(dtype), array.ndim), dtype,
                  struct.pack(f"<{array.ndim}q", *array.shape), array.tobytes()]
    return b"".join(parts)


def unpack_arrays(message: bytes) -> tuple[int, list[np.ndarray]]:
    """(integer, arrays) of a pack_arrays message; the arrays are writable copies. ValueError when malformed."""
    try:
        number, count = _HEAD.unpack_from(message, 1)
        offset, arrays = 1 + _HEAD.size, []
        for _ in range(count):
            dtype_length, ndim = _ARRAY_HEAD.unpack_from(message, offset)
            offset += _ARRAY_HEAD.size
            dtype = np.dtype(message[offset:offset + dtype_length].decode("ascii"))
            offset += dtype_length
            shape = struct.unpack_from(f"<{ndim}q", message, offset)
            offset += ndim * _DIMENSION.size
            size = math.prod(shape)
            end = offset + size * dtype.itemsize
            if dtype.hasobject or end > len(message):
                raise ValueError(f"an array of {dtype} {shape} does not fit the message's {len(message)} bytes")
            arrays.append(np.frombuffer(message, dtype, count=size, offset=offset).reshape(shape).copy())
            offset = end
    except (struct.error, TypeError, UnicodeDecodeError) as error:
        raise ValueError(f"a malformed model-process message ({error})") from error
    if offset != len(message):
        raise ValueError(f"a model-process message has {len(message) - offset} bytes after its arrays")
    return number, arrays


def pack_object(tag: bytes, value: Any = None) -> bytes:
    """A message of one picklable object (for the rare requests and answers: hello, stats, failures)."""
    return tag + pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def unpack_object(message: bytes) -> Any:
    """The object of a pack_object message (only ever read from the authenticated model-process socket)."""
    return pickle.loads(message[1:])
