"""``watcher bench``: the detection benchmark on a labelled corpus and the throughput benchmark.

This package owns the generated corpus (``corpus``, ``hardened``), window-based detection scoring
(``detection``, ``ranking``) with other libraries' detectors beside watcher's (``peers``), flag
rates on real anomaly-free series shipped inside pip packages (``flagrate``), the shipped rules'
detectors on a simulated LLM application (``llmsuite``), the per-detector timing of start-up and
steady-state ticks (``throughput``: the detector-kernel view), the real daemon path end to end
(``daemon``), an alert storm through the outbox (``storm``), and the fault campaign of issue 16
against real daemons (``faults``).
It does not own any detector. Imports stay lazy: ``watcher --help`` must not pay for numpy.
"""

from __future__ import annotations
