"""How the inline session paces real devices (Session._pace)."""

from types import SimpleNamespace

from bciarm.config import load_config
from bciarm.drivers.canopen402 import CanOpen402Driver
from bciarm.drivers.franka import FrankaDriver
from bciarm.drivers.pybullet_arm import PyBulletArmDriver
from bciarm.session import Session


def pace_with(driver_cls, gui=False):
    cfg, _ = load_config("arm_center_out")
    session = Session(cfg, gui=gui)
    driver = driver_cls.__new__(driver_cls)  # class attributes are all _pace reads
    session.runtime = SimpleNamespace(nodes=[SimpleNamespace(),
                                             SimpleNamespace(controller=SimpleNamespace(
                                                 driver=driver))])
    return session._pace()


def test_simulations_run_as_fast_as_they_go_and_real_devices_in_real_time():
    assert pace_with(PyBulletArmDriver) is None
    assert pace_with(PyBulletArmDriver, gui=True) == 1.0
    # A real device that does not wait for its own clock: the runtime keeps wall-clock pace.
    assert pace_with(CanOpen402Driver) == 1.0
    # A paced driver waits on the robot's clock in advance(); the runtime follows it.
    assert pace_with(FrankaDriver) is None
