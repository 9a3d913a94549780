"""Session recording: the append-only message log and the recorder node."""

from bciarm.record.log import LogReader, LogRecord, LogWriter, read_messages
from bciarm.record.recorder import LOG_NAME, Recorder

__all__ = ["LOG_NAME", "LogReader", "LogRecord", "LogWriter", "Recorder", "read_messages"]
