"""backend: array creation and the buffer pool."""
import numpy as np

from rnnlab import backend


def test_take_reuses_a_buffer_only_once_it_is_free():
    first = backend.take((3, 5), np.float32)
    second = backend.take((3, 5), np.float32)
    assert second is not first  # first is still referred to
    address = first.__array_interface__["data"][0]
    del first
    again = backend.take((3, 5), np.float32)
    assert again.__array_interface__["data"][0] == address
    view = again[1:]
    assert backend.take((3, 5), np.float32) is not again  # a view keeps it in use
    del view
    assert backend.take((3, 5), np.float64).dtype == np.float64
