"""The peer suite: Herald beside Centrifugo (and the raw-asyncio ceiling) in one run.

``python -m bench --servers herald,centrifugo,ceiling [--quick]`` or ``make
bench-peers``. Each *variant* is a server on an engine with a number of
cores (:mod:`bench.peers.variants`): Herald on its memory bus or Redis bus,
one worker or two; Centrifugo on its memory or Redis engine, ``GOMAXPROCS``
1 or 2; the ceiling (memory, one core). Every variant is started fresh, holds
the same N streams (stream ``i`` is user ``u{i}`` and follows one resource,
:mod:`bench.loadgen.traffic`) and goes through the scenarios of
:mod:`bench.peers.suite`; variants are interleaved within each round.
:mod:`bench.peers.report` turns the results into ratio tables (Herald ÷
Centrifugo) in docs/benchmarks.md.
"""
