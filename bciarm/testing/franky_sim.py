"""Start and stop franky-sim: a MuJoCo Franka that serves the real libfranka protocol.

`franky-sim <https://pypi.org/project/franky-sim/>`_ binds the libfranka
ports (TCP 1337 for the robot, 1338 for the gripper; libfranka cannot be told
other ports) on a loopback address and simulates an FR3 at 1 kHz in real time.
:class:`FrankySim` runs it in a child process, so a driver connects to it
exactly as to a robot::

    with FrankySim() as sim:                 # 127.0.0.1 if free, else another 127.x.y.z
        drv = FrankaDriver(host=sim.host)

The child runs :func:`main` (``python -m bciarm.testing.franky_sim``), which
builds the server through franky-sim's public embedding API
(``MujocoSimulator.add_robot`` + ``SimulationServer``, as its ``franky-sim``
command does) with two settings of our own:

* the arm starts at the scene's home posture (``arm_table``: the simulated
  arm's), as a real arm would after the operator homed it;
* the wrist joints' (5–7) simulated servo gains are 1/5 of franky-sim's
  defaults.  Measured with the defaults: after any motion, the position
  hold of joint 7 breaks into a ±12 N·m bang-bang limit cycle (the joint
  buzzes at ±0.09 rad/s around a fixed angle, forever); at 1/5 it settles
  (< 0.006 rad/s).  These gains are the simulator's stand-in for the
  robot's own joint controllers; nothing in bciarm sees them.

* optionally (``grasp_object=WIDTH``) a free box ``WIDTH`` wide between the
  open fingers of the Hand at home, resting on a fixed post, so a grasp has
  something to close on and a lift shows whether it holds (franky-sim's
  embedding API allows extra MuJoCo bodies; its own command adds none).

franky-sim's own command would also do, but not as it ships: its
``--simulator auto`` default tries the Genesis back end first and fails when
Genesis is not installed.  The readiness signal is the line ``Connect to the
server using '<host>' ...`` (waited on with a deadline).

The child dies with the parent (``PR_SET_PDEATHSIG``), runs in its own
session (a Ctrl-C in a terminal reaches only the parent) and is stopped with
SIGINT (its own clean shutdown), then SIGKILL after a grace period.
"""

from __future__ import annotations

import collections
import ctypes
import importlib.util
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from types import TracebackType
from typing import Callable

#: libfranka's fixed robot command port.
ROBOT_PORT = 1337
#: libfranka's fixed gripper command port.
GRIPPER_PORT = 1338
_READY = "Connect to the server using '"


class FrankySimError(RuntimeError):
    """franky-sim is not installed, or did not come up."""


def franky_sim_missing() -> str | None:
    """Why franky-sim cannot run here (a sentence naming the fix), or None if it can."""
    for module, dist in (("franky_sim", "franky-sim"), ("mujoco", "mujoco"),
                         ("pinocchio", "pin")):
        if importlib.util.find_spec(module) is None:
            return (f"the Python module {module!r} is not installed "
                    f"(pip install 'bciarm[franka]', which brings {dist})")
    return None


def franky_missing() -> str | None:
    """Why franky-sim or the franky client cannot be used here, or None if both can."""
    missing = franky_sim_missing()
    if missing is None:
        try:
            import franky  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the install
            missing = f"franky (franky-control) cannot be imported: {exc}"
    return missing


def loopback_free(host: str) -> bool:
    """True if both libfranka ports can be bound on ``host`` right now."""
    for port in (ROBOT_PORT, GRIPPER_PORT):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_loopback_host(prefer: str = "127.0.0.1", tries: int = 50) -> str:
    """``prefer`` if its libfranka ports are free, else a random free 127.x.y.z."""
    if loopback_free(prefer):
        return prefer
    rng = random.Random()
    for _ in range(tries):
        host = f"127.{rng.randint(1, 254)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        if loopback_free(host):
            return host
    raise FrankySimError(f"no loopback address with ports {ROBOT_PORT}/{GRIPPER_PORT} free "
                         f"after {tries} tries")


def _death_signal_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when we die (Linux), or None.

    libc is loaded here, in the parent: between fork and exec the child must
    not import anything.
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:  # pragma: no cover - not Linux
        return None

    def hook() -> None:  # pragma: no cover - runs in the child
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    return hook


class FrankySim:
    """franky-sim (MuJoCo back end) in a child process.

    Parameters
    ----------
    host : str
        Loopback address to serve on; ``"auto"``: 127.0.0.1 if its ports are
        free, else a random free 127.x.y.z.
    start_timeout_s : float
        Deadline for the server to come up (imports of MuJoCo and pinocchio
        take a few seconds on a loaded machine).
    scene : str
        Scene whose robot home posture the simulated arm starts at.
    grasp_object : float, optional
        Width (m) of a box placed between the open fingers at home (see the
        module docstring); the Hand then starts fully open.
    object_mass : float
        Its mass, kg.

    Attributes
    ----------
    host : str
        The address the server listens on (once started).
    process : subprocess.Popen or None
    """

    def __init__(self, host: str = "auto", start_timeout_s: float = 60.0,
                 scene: str = "arm_table", grasp_object: float | None = None,
                 object_mass: float = 0.2) -> None:
        self.requested_host = host
        self.scene = scene
        self.grasp_object = grasp_object
        self.object_mass = float(object_mass)
        self.host = host
        self.start_timeout_s = float(start_timeout_s)
        self.process: subprocess.Popen[str] | None = None
        self._lines: collections.deque[str] = collections.deque(maxlen=200)
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FrankySim:
        """Start the server and wait until it listens.

        Raises
        ------
        FrankySimError
            franky-sim is missing, the address is taken, or it did not come up
            in time (the message quotes its last output).
        """
        if self.process is not None:
            return self
        missing = franky_sim_missing()
        if missing:
            raise FrankySimError(f"franky-sim cannot run: {missing}")
        host = free_loopback_host() if self.requested_host == "auto" else self.requested_host
        if not loopback_free(host):
            raise FrankySimError(f"{host}:{ROBOT_PORT} is in use (another franky-sim or a "
                                 "libfranka server?); use host='auto' for a free address")
        self.host = host
        cmd = [sys.executable, "-m", "bciarm.testing.franky_sim", "--hostname", host,
               "--scene", str(self.scene)]
        if self.grasp_object is not None:
            cmd += ["--grasp-object", repr(float(self.grasp_object)),
                    "--object-mass", repr(self.object_mass)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, text=True, env=env,
                                        start_new_session=True,
                                        preexec_fn=_death_signal_hook())
        self._reader = threading.Thread(target=self._read_output, name="franky-sim-output",
                                        daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self._ready.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                what = ("exited with code %s" % self.process.returncode
                        if self.process.poll() is not None
                        else f"did not come up within {self.start_timeout_s:.0f} s")
                self.stop()
                raise FrankySimError(f"franky-sim on {host} {what}; its last output:\n"
                                     + self.output(20))
        return self

    def _read_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            line = line.rstrip()
            self._lines.append(line)
            if line.startswith(_READY):
                self._ready.set()

    def output(self, last: int = 50) -> str:
        """The server's last ``last`` lines of output."""
        return "\n".join(list(self._lines)[-last:])

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGINT (clean shutdown), then SIGKILL after ``grace_s``.  Safe to call twice."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            self.resume()  # a paused server cannot shut down
            try:
                proc.send_signal(signal.SIGINT)
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(grace_s)
        if self._reader is not None:
            self._reader.join(timeout=1.0)
        self.process = None

    # ------------------------------------------------------------------ fault injection

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): the robot goes silent, as on a lost network link."""
        if self.running:
            os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Undo :meth:`pause` (SIGCONT)."""
        if self.running:
            os.kill(self.process.pid, signal.SIGCONT)

    # ------------------------------------------------------------------ context manager

    def __enter__(self) -> FrankySim:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# --------------------------------------------------------------------------- the child

#: Half height of the grasp object, m (the finger pads are 17 mm tall).
OBJECT_HALF_HEIGHT = 0.02
#: Distance from a finger body's origin to the middle of its pad, m (fr3.xml).
PAD_OFFSET = 0.0445


def add_grasp_object(sim: object, robot: object, width: float, mass: float) -> None:
    """A free box ``width`` wide between the Hand's open fingers, on a fixed post.

    The fingers' pose at the robot's initial posture comes from a throwaway
    MuJoCo model of the scene built so far (before the simulator starts);
    the box is aligned with the hand (its width across the fingers) and its
    post sits below the finger tips, so only the box touches the fingers.
    """
    import xml.etree.ElementTree as ET

    import mujoco
    import numpy as np

    model = mujoco.MjModel.from_xml_string(ET.tostring(sim.scene, encoding="unicode"))
    data = mujoco.MjData(model)
    for addr, q in zip(_joint_qpos(model, "robot0_fr3_joint", 7), robot.initial_q):
        data.qpos[addr] = q
    mujoco.mj_forward(model, data)
    hand = model.body("robot0_hand").id
    rot = data.xmat[hand].reshape(3, 3)
    fingers = [data.xpos[model.body(f"robot0_{n}_finger").id] for n in ("left", "right")]
    centre = np.mean(fingers, axis=0) + rot[:, 2] * PAD_OFFSET
    quat = data.xquat[hand]
    body = ET.SubElement(sim.worldbody, "body", name="grasp_object",
                         pos=" ".join(f"{c:.6f}" for c in centre),
                         quat=" ".join(f"{c:.6f}" for c in quat))
    ET.SubElement(body, "freejoint", name="grasp_object_joint")
    # x: along the hand's x (finger depth), y: across the fingers, z: along the tool axis.
    ET.SubElement(body, "geom", type="box", size=f"0.012 {width / 2:.6f} {OBJECT_HALF_HEIGHT}",
                  mass=f"{mass}", friction="1.0 0.005 0.0001", rgba="0.8 0.3 0.2 1")
    below = centre - np.array([0.0, 0.0, OBJECT_HALF_HEIGHT + 0.05])
    ET.SubElement(sim.worldbody, "geom", name="grasp_post", type="box", size="0.01 0.01 0.05",
                  pos=" ".join(f"{c:.6f}" for c in below), rgba="0.5 0.5 0.5 1")


def _joint_qpos(model: object, prefix: str, n: int) -> list[int]:
    import mujoco

    return [int(model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT,
                                                       f"{prefix}{i}")]) for i in range(1, n + 1)]


#: Scale of franky-sim's default servo gains for the wrist joints 5-7 (see the module docstring).
WRIST_GAIN_SCALE = 0.2


def main(argv: list[str] | None = None) -> None:
    """Serve one simulated Franka on ``--hostname`` until SIGINT / SIGTERM."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--hostname", default="127.0.0.1")
    parser.add_argument("--scene", default="arm_table",
                        help="scene whose robot home posture the arm starts at")
    parser.add_argument("--grasp-object", type=float, default=None, metavar="WIDTH",
                        help="place a box this wide (m) between the open fingers at home")
    parser.add_argument("--object-mass", type=float, default=0.2)
    args = parser.parse_args(argv)

    import franky_sim
    from franky_sim.mujoco_simulator import MUJOCO_DEFAULT_KP, MUJOCO_DEFAULT_KV, MujocoSimulator

    from bciarm.sim.scene import load_scene

    home = tuple(float(v) for v in load_scene(args.scene).robot_model().home_vector())
    kp = tuple(k * (WRIST_GAIN_SCALE if i >= 4 else 1.0) for i, k in enumerate(MUJOCO_DEFAULT_KP))
    kv = tuple(k * (WRIST_GAIN_SCALE if i >= 4 else 1.0) for i, k in enumerate(MUJOCO_DEFAULT_KV))
    # SIGTERM ends the loop the way Ctrl-C does, so the sockets are closed cleanly.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with MujocoSimulator(enable_visualization=False) as sim:
        if args.grasp_object is None:
            robot = sim.add_robot(initial_q=home, kp=kp, kv=kv)
        else:
            robot = sim.add_robot(initial_q=home, kp=kp, kv=kv, initial_hand_width=0.08)
            add_grasp_object(sim, robot, args.grasp_object, args.object_mass)
        with franky_sim.SimulationServer(sim, hostname_candidates=[args.hostname]) as server:
            print(f"{_READY}{robot.hostname}' as the robot IP address", flush=True)
            try:
                server.run_forever()
            except KeyboardInterrupt:
                print("franky-sim: shutting down", flush=True)


if __name__ == "__main__":
    main()
