"""Portal link: MQTT to the Ferroamp broker (health, events, pushed configuration).

Modules, each with one job (see docs/mqtt.md): ``settings`` (the ``portal`` config section),
``topics`` (names and payload envelopes), ``outbox`` (bounded offline queue), ``backoff``
(jittered reconnect delays), ``link`` (the paho-mqtt thread), ``push`` (pure decision on a
pushed document), ``confirm`` (pure confirm-or-rollback state machine), ``store`` (crash-safe
last-good / candidate files) and ``controller`` (glue run on the daemon thread).

Nothing is imported here so that ``energyhubd.portal.settings`` can be loaded without paho.
"""
