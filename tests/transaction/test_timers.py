"""RFC 3261 Table 4 timer values."""
from __future__ import annotations

import pytest

from reticulum.transaction import Timers


# -- Timers ----------------------------------------------------------------------------------


def test_timer_values_are_derived_from_t1_t2_t4():
    timers = Timers()
    assert (timers.t1, timers.t2, timers.t4) == (0.5, 4.0, 5.0)
    assert timers.a == timers.e == timers.g == 0.5
    assert timers.b == timers.f == timers.h == timers.l == timers.m == 32.0
    assert timers.d() == 32.0 and timers.d(True) == 0
    assert timers.i() == 5.0 and timers.i(True) == 0
    assert timers.j() == 32.0 and timers.j(True) == 0
    assert timers.k() == 5.0 and timers.k(True) == 0
    custom = Timers(t1=0.1, t2=2.0, t4=3.0)
    assert custom.b == pytest.approx(6.4)
    assert custom.j() == pytest.approx(6.4)
    assert custom.k() == 3.0
    assert timers.unanswered == 64.0
    assert custom == Timers(0.1, 2.0, 3.0)


@pytest.mark.parametrize("values", [(0, 4, 5), (0.5, -1, 5), (0.5, 4, 0), (5, 4, 5)])
def test_timer_values_are_validated(values):
    with pytest.raises(ValueError):
        Timers(*values)
