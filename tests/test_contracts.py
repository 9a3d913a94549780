"""One contract suite over every registered driver, effector, decoder, scene, source and task."""

from importlib.util import find_spec

import pytest

from bciarm import registry
from bciarm.testing import check_decoder, check_driver, check_effector, check_node, check_scene


@pytest.mark.parametrize("name", registry.names("driver"))
def test_every_driver_passes_check_driver(name):
    cls = registry.resolve("driver", name)
    # A rig that needs optional packages (franky-sim for the Franka) skips, saying which.
    missing = [m for m in getattr(cls, "contract_requires", ()) if find_spec(m) is None]
    if missing:
        pytest.skip(f"driver {name!r}: its simulated rig needs {', '.join(missing)} "
                    f"(pip install 'bciarm[test]')")
    # A driver for real hardware provides ``contract_instance()``: the same
    # driver class wired to simulated devices (e.g. CANopen drives on a
    # virtual bus); a simulator is checked as constructed by default.
    make = getattr(cls, "contract_instance", None) or cls
    check_driver(make)


@pytest.mark.parametrize("name", registry.names("effector"))
def test_every_effector_passes_check_effector(name):
    cls = registry.resolve("effector", name)
    check_effector(lambda: cls(name))


@pytest.mark.parametrize("name", registry.names("decoder"))
def test_every_decoder_passes_check_decoder(name):
    check_decoder(registry.resolve("decoder", name))


@pytest.mark.parametrize("name", registry.names("scene"))
def test_every_scene_passes_check_scene(name):
    check_scene(name)


@pytest.mark.parametrize("kind,name", [(k, n) for k in ("source", "task") for n in registry.names(k)])
def test_every_source_and_task_passes_check_node(kind, name):
    cls = registry.resolve(kind, name)
    # A node that needs a recording or a device provides ``contract_instance(name)``
    # (e.g. replay: a small generated recording), as drivers do.
    make = getattr(cls, "contract_instance", None)
    check_node((lambda: make(name)) if make else (lambda: cls(name)))


def test_registry_lists_the_builtins():
    assert "arm_table" in registry.names("scene")
    assert "arm_center_out" in registry.config_names()
    with pytest.raises(registry.RegistryError, match="registered drivers: .*pybullet_arm"):
        registry.resolve("driver", "nope")


def test_missing_optional_dependency_names_the_module():
    registry.register("driver", "needs_missing", "bciarm_no_such_module_xyz:Driver")
    try:
        with pytest.raises(registry.RegistryError, match="bciarm_no_such_module_xyz"):
            registry.resolve("driver", "needs_missing")
    finally:
        registry.unregister("driver", "needs_missing")
