"""The oracle decoder node (refit_compare --oracle): the simulated user's own intention."""

from __future__ import annotations

import numpy as np
import pytest

from bciarm.bus.messages import Intent
from bciarm.config import load_config
from bciarm.decoders.oracle import OracleDecoderNode, OracleSession
from bciarm.record import LOG_NAME, read_messages


@pytest.mark.slow
def test_oracle_publishes_the_intention_of_each_frame(tmp_path):
    cfg, _ = load_config("arm_refit_fixed", ("protocol.calibration.trials=4",
                                             "protocol.blocks=[{name: refit, trials: 6}]"))
    session = OracleSession(cfg, seed=0, out_dir=tmp_path)
    result = session.run()
    assert isinstance(session.runtime.node("decoder"), OracleDecoderNode)
    src = session.runtime.node("source")
    intended = dict(zip(src.history_seq, src.history_velocity))
    n = 0
    for _, msg in read_messages(result.session_dir / LOG_NAME, ("intent",)):
        if isinstance(msg, Intent) and msg.header.src == "decoder":
            np.testing.assert_array_equal(msg.velocity, intended[msg.header.neural_seq])
            n += 1
    assert n > 50
    block = result.metrics["blocks"]["refit"]
    assert block["trials"] == 6 and block["success_rate"] == 1.0
