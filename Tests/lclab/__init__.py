"""The test harness that the test tiers and bench/ share: the host tier's
stores, users and sessions (harness), the real PAM clients (clients), and
the full-system lab's booted Debian (systemlab). Importable as `lclab`:
pytest.ini puts Tests/ on the path, `make bench` sets PYTHONPATH."""
