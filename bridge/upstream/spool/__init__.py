"""The durable spool for POST /send (issue 12): an append-only log of records on disk.

:mod:`.record` lays out one record, :mod:`.walk` reads them back (damage
included), :mod:`.store` is the blocking engine run on one writer thread,
:mod:`.spool` the reactor-side face with group commit, :mod:`.lock` keeps a
second process out and :mod:`.state` remembers what is retired.
"""
