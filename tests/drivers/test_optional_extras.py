"""Real-device drivers without their optional packages: a clear error naming the extra."""

import sys

import pytest

from bciarm import registry
from bciarm.drivers.base import DriverError


def test_franka_without_franky_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "franky", None)  # import raises ImportError
    cls = registry.resolve("driver", "franka")  # resolving needs no franky
    with pytest.raises(DriverError, match=r"franky-control.*pip install 'bciarm\[franka\]'"):
        cls(host="127.0.0.1").connect()


def test_ur_without_ur_rtde_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rtde_control", None)
    cls = registry.resolve("driver", "ur")
    with pytest.raises(DriverError, match=r"pip install 'bciarm\[ur\]'"):
        cls(host="127.0.0.1").connect()


def test_ur_needs_an_address():
    with pytest.raises(DriverError, match="host=ROBOT_IP"):
        registry.resolve("driver", "ur")().connect()
