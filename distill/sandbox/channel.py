"""A request/reply channel between this process and a program in the sandbox: two pipes, one line per message.

The program gets the read end of the requests and the write end of the replies (their descriptor numbers are its
last two arguments). Everything that comes back is untrusted: a reply is read with a deadline and a byte cap, so a
program that never answers, answers forever or floods the pipe costs at most the run's timeout.
"""

from __future__ import annotations

import os
import select
import time


class ChannelClosed(Exception):
    """The program closed its end (it exited, crashed or was killed)."""


class ChannelTimeout(Exception):
    """No whole reply before the run's deadline."""


class ReplyTooLarge(Exception):
    """A reply longer than the cap: what it carried is not read."""


class Channel:
    def __init__(self, requests: int, replies: int, deadline: float, max_reply_bytes: int):
        self._requests, self._replies = requests, replies
        self.deadline, self.max_reply_bytes = deadline, max_reply_bytes
        self._pending = bytearray()  # bytes read past the last newline
        os.set_blocking(requests, False)
        os.set_blocking(replies, False)

    def ask(self, message: bytes) -> bytes:
        """Send one line, return the next line that comes back (without its newline)."""
        self._send(message + b"\n")
        return self._receive()

    def _remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ChannelTimeout
        return left

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        poller = select.poll()
        poller.register(self._requests, select.POLLOUT)
        while view:
            if not poller.poll(self._remaining() * 1000):
                raise ChannelTimeout
            try:
                written = os.write(self._requests, view)
            except BlockingIOError:
                continue
            except (BrokenPipeError, OSError) as exc:
                raise ChannelClosed from exc
            view = view[written:]

    def _receive(self) -> bytes:
        poller = select.poll()
        poller.register(self._replies, select.POLLIN)
        while True:
            end = self._pending.find(b"\n")
            if end >= 0:
                line = bytes(self._pending[:end])
                del self._pending[: end + 1]
                return line
            if len(self._pending) > self.max_reply_bytes:
                raise ReplyTooLarge
            if not poller.poll(self._remaining() * 1000):
                raise ChannelTimeout
            try:
                chunk = os.read(self._replies, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                raise ChannelClosed
            self._pending += chunk
