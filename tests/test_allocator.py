"""bridge.app.allocator: the C allocator settings of the bridge process."""

from __future__ import annotations

import ctypes.util
import platform

from twisted.trial.unittest import SynchronousTestCase

from bridge.app import allocator


class AllocatorTests(SynchronousTestCase):
    def test_glibc_takes_the_settings(self) -> None:
        if platform.libc_ver()[0] != "glibc":
            raise self.skipTest("not glibc")  # type: ignore[misc]
        self.assertTrue(allocator.keep_freed_memory())

    def test_no_c_library_found_changes_nothing(self) -> None:
        self.patch(ctypes.util, "find_library", lambda name: None)
        self.assertFalse(allocator.keep_freed_memory())
