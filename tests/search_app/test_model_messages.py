"""The model process's messages: arrays survive the trip exactly, and a damaged message is refused, not misread."""
from __future__ import annotations

import numpy as np
import pytest

from search_app.model_messages import (ARRAYS, FAILED, PICKLED, SEARCH, pack_arrays, pack_object, unpack_arrays,
                                       unpack_object)


def test_arrays_come_back_with_their_dtype_shape_and_values():
    rng = np.random.default_rng(0)
    sent = [rng.integers(0, 256, size=(3, 32, 32), dtype=np.uint8),
            rng.standard_normal((1, 128)).astype(np.float32),
            rng.integers(-1, 70_000, size=(1, 15)).astype(np.int64),
            np.float16(2.5) * np.ones((2, 0, 3), np.float16),  # an empty array keeps its shape
            np.array(7, dtype=">i4"),  # 0-d, big-endian
            np.asfortranarray(rng.standard_normal((4, 5)))]
    number, received = unpack_arrays(pack_arrays(SEARCH, sent, 42))
    assert number == 42 and len(received) == len(sent)
    for before, after in zip(sent, received):
        assert after.dtype == before.dtype and after.shape == before.shape
        np.testing.assert_array_equal(after, before)
        assert after.flags.writeable and after.flags.c_contiguous


def test_a_message_starts_with_its_tag():
    assert pack_arrays(ARRAYS, [np.zeros(2)])[:1] == ARRAYS
    assert pack_object(FAILED, ("ValueError", "no"))[:1] == FAILED
    assert unpack_object(pack_object(PICKLED, {"dimension": 6})) == {"dimension": 6}


@pytest.mark.parametrize("damage", ["truncated", "trailing", "object dtype"])
def test_a_damaged_message_is_a_value_error(damage):
    message = pack_arrays(SEARCH, [np.arange(12, dtype=np.float32).reshape(3, 4)], 5)
    if damage == "truncated":
        message = message[:-5]
    elif damage == "trailing":
        message += b"\0"
    else:
        message = message.replace(b"<f4", b"|O8")
    with pytest.raises(ValueError, match="message"):
        unpack_arrays(message)
