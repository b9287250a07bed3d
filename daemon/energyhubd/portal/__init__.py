"""Portal link: MQTT to the Ferroamp broker (health, events, pushed configuration).

Modules, each with one job (see docs/mqtt.md and docs/fleet.md): ``topics`` (names, payload
envelopes, the directional ACL), ``outbox`` (bounded event queue), ``backoff`` (full-jitter
reconnect delays), ``session`` (persisted session counter and epoch), ``link`` (the paho-mqtt
thread), ``push`` (pure decision on a pushed document), ``confirm`` (pure confirm-or-rollback
state machine), ``store`` (crash-safe last-good / candidate files) and ``controller`` (glue
run on the daemon thread). The ``portal`` config section is ``energyhubd.config.sections.portal``.

Nothing is imported here so that ``energyhubd.portal.settings`` can be loaded without paho.
"""
