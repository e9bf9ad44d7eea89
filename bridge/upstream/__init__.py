"""The upstream side: line protocol, reply framing, members, pool.  Never imports HTTP code."""
