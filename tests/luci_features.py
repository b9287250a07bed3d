"""Stand-in for rpcd's ucode plugin object ``luci`` (``getFeatures``), which luci.js calls on
every page; rpcd is built without ucode here. Run with the python3-ubus build on PYTHONPATH:
``python luci_features.py <ubus socket>``; answers ``{}`` until terminated.
"""

from __future__ import annotations

import sys

import ubus  # type: ignore[import-not-found]


def main() -> None:
    ubus.connect(socket_path=sys.argv[1])

    def features(handler, _data):  # type: ignore[no-untyped-def]
        handler.reply({})

    ubus.add("luci", {"getFeatures": {"method": features, "signature": {}}})
    print("ready", flush=True)
    while True:
        ubus.loop(1000)


if __name__ == "__main__":
    main()
