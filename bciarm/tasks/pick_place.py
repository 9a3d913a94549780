"""Pick-and-place: a simulated Box and Blocks test (registry name ``"pick_place"``).

The Box and Blocks test (Mathiowetz et al. 1985) counts the blocks a person
moves, one at a time, from one compartment of a box over a partition into
the other in a minute.  Here (scene ``arm_box_blocks``) the blocks start in
the -y compartment; each trial moves one block: reach above it, descend,
grasp, lift it up and toward the partition (steeply enough to clear the other
row), carry it over the partition and down to the mirror-image spot on the
other side in one straight line, release it there (it drops about 9 cm, as
blocks do in the real test) and wait for it to land.  The trial succeeds when
the block lands in the far compartment.  The next block is picked up from
where the hand is (no return home); a hand on the far side first goes back
over the partition at ``return_z`` (aiming straight at the block, a hand that
sags on the way catches on the partition).  Blocks nearer the partition than
``min_pick_y`` are out of reach (the hand would hit the partition) and left
where they are, as are blocks that bounced or were pushed beyond the arm's
workspace (``max_pick_y``, ``reach_x``).  Up to the grasp the goal follows the
block (the participant aims at it where it is now, also after a finger nudged
it); a block lost on the way over ends the trial (``"slip"``), and a released
block is put in a free slot of the far compartment.  When one side is empty the direction reverses, so the test
runs as long as the block lasts without resetting the physics.

Each trial's ``step_s`` (trials.csv) says where its time went, step by step.

Score: ``blocks_per_min`` = blocks moved over the partition per minute of
trial time (see :mod:`bciarm.tasks.reach_grasp` for the other metrics).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from bciarm.tasks.reach_grasp import ReachGraspTask, Step


class PickPlaceTask(ReachGraspTask):
    """Box and Blocks, one block per trial (module docstring)."""

    class Params(ReachGraspTask.Params):
        """Parameters of the Box and Blocks task."""

        timeout_s: float = Field(12.0, gt=0, description="Time allowed per block, s (the test "
                                                         "is timed: a stuck block is given up).")
        objects: list[str] = Field([f"block{i}" for i in range(6)],
                                   description="The blocks (tracked by the effector, in order).")
        partition_y: float = Field(0.0, description="World y of the partition, m.")
        partition_half: float = Field(0.005, ge=0, description="Half thickness, m.")
        table_z: float = Field(0.625, description="Table top height, m.")
        block_size: float = Field(0.05, gt=0, description="Block edge, m.")
        approach_dz: float = Field(0.10, gt=0, description="Approach height above a block, m "
                                                               "(clears the partition on the way).")
        grasp_dz: float = Field(0.0, description="Grasp point above the block centre, m (the fingertips reach 1.1 cm below it).")
        carry_z: float = Field(0.80, description="Height of the hand where it crosses the "
                                                 "partition with a block, m.")
        drop_z: float = Field(0.76, description="Height of the release point, m (the block "
                                                "falls about 9 cm, as in the real test).")
        return_z: float = Field(0.77, description="Height at which the empty hand goes back "
                                                  "over the partition, m (fingertips 5 cm "
                                                  "clear of its top).")
        lift_slope: float = Field(2.0, gt=0, description="The lift rises at least this much "
                                                         "per unit of sideways travel toward "
                                                         "the partition (clears the other "
                                                         "row of blocks).")
        open_aperture: float = Field(0.075, gt=0, description="Open hand before a grasp, m.")
        grip_aperture: float = Field(0.045, ge=0, description="Aperture the user aims for "
                                                              "while holding, m.")
        grasp_tol: float = Field(0.015, gt=0, description="Acceptance radius at the grasp "
                                                          "point, m (the open hand has 1.25 cm "
                                                          "to spare either side of a block).")
        tol: float = Field(0.05, gt=0, description="Acceptance radius of the pass-through "
                                                   "points (approach, lift), m.")
        drop_tol: float = Field(0.04, gt=0, description="Acceptance radius of the drop point, m.")
        min_pick_y: float = Field(0.11, ge=0, description="Blocks nearer the partition than "
                                                           "this (centre, m) are out of reach: "
                                                           "the hand would hit the partition.")
        give_up_after: int = Field(2, ge=1, description="A block whose last this many trials "
                                                        "in a row timed out is out of play "
                                                        "(stuck where the hand cannot take "
                                                        "it); the test goes on without it.")
        slots_y: tuple[float, float] = Field(
            (0.155, 0.235), description="Distances from the partition of the drop points of "
                                        "the near and far row, m: a block must land at least "
                                        "11.5 cm out to be picked up again (the hand is 20 cm "
                                        "wide across its fingers).")

        max_pick_y: float = Field(0.28, gt=0, description="Blocks farther from the partition "
                                                           "than this (centre, m) are out of "
                                                           "reach (the workspace stops the grasp "
                                                           "point at y = +-0.30).")
        reach_x: tuple[float, float] = Field(
            (-0.29, 0.09), description="Blocks whose centre lies outside this world x range "
                                       "are out of the hand's reach (the arm's workspace "
                                       "stops the grasp point at -0.30 and 0.10), m.")
        slots_x: tuple[float, ...] = Field(
            (-0.16, -0.10, -0.04), description="World x of the drop slots (the columns the "
                                               "blocks start in), m.")
        slip_s: float = Field(0.15, gt=0, description="A block out of the hand this long "
                                                      "during the lift or carry ends the "
                                                      "trial (outcome \"slip\"), s.")

    params: PickPlaceTask.Params

    def __init__(self, name: str, params=None, **kwargs: object) -> None:
        super().__init__(name, params, **kwargs)
        self.source_side = -1.0
        self._target: str = ""
        self._far_side = 1.0
        self._last_pos: np.ndarray | None = None
        self._last_t = -1
        self._lost_ns: int | None = None
        self.out_of_play: set[str] = set()

    def _side(self, pos: np.ndarray, stacked: bool = False) -> float:
        """-1 / +1 for a block resting in a compartment, 0 for anything else.

        ``stacked``: a block lying on another one (or leaning on it) counts as
        in its compartment too.
        """
        p = self.params
        top = p.table_z + p.block_size * (1.6 if stacked else 0.8)
        dy = pos[1] - p.partition_y
        if pos[2] >= top or abs(dy) < p.partition_half + p.block_size / 2:
            return 0.0
        return float(np.sign(dy))

    def _covered(self, name: str) -> bool:
        """Another block lies on this one (lifting it would drag that one along)."""
        w = self.world
        s = self.params.block_size
        pos = w.objects[name][0]
        return any(np.linalg.norm(q[:2] - pos[:2]) < s and q[2] - pos[2] > 0.5 * s
                   for n, (q, _) in w.objects.items() if n != name and n in self.params.objects)

    def _drop_point(self, b: np.ndarray) -> np.ndarray:
        """Where to release a block taken from ``b``: its own slot on the far side, or the
        free slot nearest to it if a block already lies there (a person puts a block
        where there is room; fixed slots keep blocks from creeping out of reach)."""
        p = self.params
        w = self.world
        far = -self.source_side
        row = 0 if abs(b[1] - p.partition_y) < sum(p.slots_y) / 2 else 1
        slots = [np.array([x, p.partition_y + far * y]) for y in p.slots_y for x in p.slots_x]
        own = np.array([min(p.slots_x, key=lambda x: abs(x - b[0])),
                        p.partition_y + far * p.slots_y[row]])
        others = [q[:2] for n, (q, _) in w.objects.items()
                  if n != self._target and n in p.objects and self._side(q, True) == far]

        def free(xy: np.ndarray) -> bool:
            return all(np.linalg.norm(q - xy) >= 1.1 * p.block_size for q in others)

        if not free(own):
            room = [xy for xy in slots if free(xy)]
            if room:
                own = min(room, key=lambda xy: float(np.linalg.norm(xy - own)))
        return np.array([own[0], own[1], p.drop_z])

    def plan(self) -> tuple[str, list[Step]] | None:
        w = self.world
        p = self.params
        if w is None:
            return None
        self._check_stuck()
        for _ in range(2):
            here = [n for n in p.objects if n in w.objects
                    and self._side(w.objects[n][0], stacked=True) == self.source_side
                    and p.min_pick_y <= abs(w.objects[n][0][1] - p.partition_y) <= p.max_pick_y
                    and p.reach_x[0] <= w.objects[n][0][0] <= p.reach_x[1]
                    and n not in self.out_of_play and not self._covered(n)]
            if here:
                break
            self.source_side = -self.source_side
        else:
            return None
        # Nearest the partition first: the shortest carry, as a person would.
        name = min(here, key=lambda n: abs(w.objects[n][0][1] - p.partition_y))
        b = w.objects[name][0]
        self._target = name
        self._far_side = -self.source_side
        self._last_pos = None
        self._lost_ns = None
        # Fixed slots on the far side, so blocks never creep toward the
        # partition (or out of reach) as they go back and forth.
        drop = self._drop_point(b)
        tol_rot = p.orientation_tol
        approach = b + [0, 0, p.approach_dz]
        steps = []
        if np.sign(w.hand.position[1] - p.partition_y) == -self.source_side:
            # Coming back from the far side: over the partition first (aiming
            # straight at the block, a hand that sags on the way -- decoded
            # velocity is noisy -- catches on the partition and stays there).
            steps.append(Step("return", np.array([b[0], p.partition_y, p.return_z]),
                              aperture=p.open_aperture, tol=p.tol * 1.2))
        # Lift toward the partition, steeply enough to clear the other row,
        # stopping short of the partition: the carry then goes over it and
        # down to the release point in one straight line.
        lift = self._lift_point(b)
        steps += [
            # Up to the grasp the goal follows the block: the participant aims at
            # the block where it is now, also after a finger nudged it.
            Step("approach", approach, rotation=self.wrist_goal(),
                 aperture=p.open_aperture, tol=p.tol, orientation_tol=tol_rot,
                 follow=name, offset=np.array([0, 0, p.approach_dz])),
            Step("descend", b + [0, 0, p.grasp_dz], aperture=p.open_aperture, tol=p.grasp_tol,
                 orientation_tol=tol_rot, follow=name, offset=np.array([0, 0, p.grasp_dz])),
            # Aperture goal stays open until the click closes the hand: a missed
            # grasp reopens around the block for another try.
            Step("grasp", b + [0, 0, p.grasp_dz], aperture=p.open_aperture, hold=True,
                 tol=p.grasp_tol, kind="grasp", follow=name,
                 offset=np.array([0, 0, p.grasp_dz])),
            Step("lift", lift, rotation=self.wrist_goal(),
                 aperture=p.grip_aperture, hold=True, tol=p.tol, orientation_tol=tol_rot),
            Step("carry", drop, aperture=p.grip_aperture, hold=True, tol=p.drop_tol,
                 orientation_tol=tol_rot),
            Step("release", drop, aperture=p.open_aperture, hold=False, tol=p.tol,
                 kind="release"),
            Step("land", drop, aperture=p.open_aperture, tol=p.tol, kind="settle"),
        ]
        return name, steps

    def _lift_point(self, b: np.ndarray) -> np.ndarray:
        """End of the lift of a block grasped at ``b``: up to ``carry_z`` and toward the
        partition by at most the rise / ``lift_slope``, stopping short of it."""
        p = self.params
        gap = abs(b[1] - p.partition_y) - (p.partition_half + p.block_size / 2 + 0.015)
        dy = float(np.clip((p.carry_z - b[2]) / p.lift_slope, 0.0, max(gap, 0.0)))
        return np.array([b[0], b[1] - self.source_side * dy, p.carry_z])

    def step_done(self, step) -> None:
        # The block is where the hand took it, not necessarily where it lay when
        # the trial was planned (fingers nudge it): lift from there.
        if step.kind == "grasp" and self._target in self.world.objects:
            lift = next(s for s in self.steps if s.name == "lift")
            lift.position = self._lift_point(self.world.objects[self._target][0])

    def _check_stuck(self) -> None:
        """Put a block out of play after ``give_up_after`` timeouts in a row on it."""
        k = self.params.give_up_after
        last = self.trials[-k:]
        if (len(last) == k and all(t.outcome == "timeout" for t in last)
                and len({t.item for t in last}) == 1 and last[0].item not in self.out_of_play):
            self.out_of_play.add(last[0].item)
            self.log.warning("block %s: %d timeouts in a row, left out of play", last[0].item, k)

    def watch(self) -> str | None:
        """A block that left the hand on the way over (slipped out, or let go too early)
        ends the trial as ``"slip"`` once it has been out of the hand for ``slip_s``:
        the participant sees it fall and picks it up again in the next trial, rather
        than carrying an empty hand over the partition."""
        st = self.step
        if st.name not in ("lift", "carry"):
            return None
        from bciarm.effectors.grasp import CLOSED

        w = self.world
        if w.hand_mode == CLOSED and w.holding:
            self._lost_ns = None
            return None
        if self._lost_ns is None:
            self._lost_ns = w.t_ns
        if w.t_ns - self._lost_ns >= round(self.params.slip_s * 1e9):
            return "slip"
        return None

    def settled(self) -> bool:
        # Landed: at rest (moved < 0.5 mm since the last state) below the
        # height of a block lying on another one.
        # Compared between state messages only (ticks re-run the same view).
        pos = self.world.objects[self._target][0]
        if self._last_t == self.world.t_ns:
            return False
        prev, self._last_pos, self._last_t = self._last_pos, pos.copy(), self.world.t_ns
        low = pos[2] < self.params.table_z + self.params.block_size * 1.6
        return bool(low and prev is not None and np.linalg.norm(pos - prev) < 5e-4)

    def judge(self) -> str:
        # Over the partition and at rest in the far compartment, on the table or on
        # another block (the real test counts it; blocks pile up there).
        pos = self.world.objects[self._target][0]
        return "success" if self._side(pos, stacked=True) == self._far_side else "missed"
