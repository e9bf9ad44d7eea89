"""The test suite.  One family of helpers, one module a job:

In memory (``SynchronousTestCase``, no sockets, time on a memory reactor):

* :mod:`tests.http_harness`: the in-memory bridge (:class:`Harness`: the real
  ``BridgeService`` assembly), its HTTP client (:class:`Client`: raw bytes to
  the real channel) and the fake sockets on both sides (:class:`SocketTransport`
  upstream, :class:`ClientSocket` for a client);
* :mod:`tests.fakes_http`: the same bridge with its pool on the fake endpoint,
  clock at 0 and only the pool started (the API and event tests);
* :mod:`tests.fakes_upstream`: the one fake upstream endpoint
  (:class:`FakeEndpoint`), resolver, and the upstream side's builders;
* :mod:`tests.http_wire`: the one HTTP request builder and response parser
  (also used by the raw-socket clients below);
* :mod:`tests.replies_support`, :mod:`tests.spool_support`: decoders and disks.

Real sockets and processes (trial ``TestCase``):

* :mod:`tests.base`: :class:`BridgeTestCase`, one bridge process per class;
* :mod:`tests.bridge_process`: the bridge (or twistd) as a real process;
* :mod:`tests.line_server`: the line server the tests script;
* :mod:`tests.servers`: redis-server, memcached, SMTP and FTP servers;
* :mod:`tests.http_client` (treq) and :mod:`tests.events_client` (raw
  ``GET /events``);
* :mod:`tests.ports`: free loopback ports; :mod:`tests.waiting`: the one wait
  helper (``wait_for`` on the reactor, ``wait_until`` blocking);
* :mod:`tests.faults_support`: what only the fault-injection tests need.

``tests.support`` and ``tests.polling`` are the old names, kept as re-exports.
"""
